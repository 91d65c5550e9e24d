"""Silent TCP connections are closed: idle ones after `idle`, accepted ones that never speak
SIP after `first_message`; CRLF keep-alives and work in progress keep a connection open."""

from __future__ import annotations

import asyncio

from protocols.sip.core import StreamStatus
from protocols.sip.message import Response, make_response, parse_message
from protocols.sip.transaction import Event, RequestReceived, TransactionLayer
from protocols.sip.transport import SipEndpoint, StreamTimeouts, TcpTransport
from tests.protocols.sip.test_transport import options

SPOKEN = StreamStatus(spoken=True, busy=False)
SILENT = StreamStatus(spoken=False, busy=False)


def test_an_idle_connection_is_due_after_idle_seconds_and_a_keep_alive_moves_it() -> None:
    timeouts = StreamTimeouts(idle=300.0)
    assert timeouts.first_check(0.0, accepted=True) == 300.0
    assert timeouts.check(299.0, opened_at=0.0, received_at=0.0, accepted=True,
                          status=SPOKEN) == (None, 300.0)
    assert timeouts.check(300.0, opened_at=0.0, received_at=0.0, accepted=True,
                          status=SPOKEN) == ("idle", None)
    # A CRLF keep-alive at 250 s: looked at again 300 s after it.
    assert timeouts.check(300.0, opened_at=0.0, received_at=250.0, accepted=True,
                          status=SPOKEN) == (None, 550.0)


def test_a_busy_connection_is_not_idle_and_is_looked_at_a_period_later() -> None:
    timeouts = StreamTimeouts(idle=300.0)
    busy = StreamStatus(spoken=True, busy=True)
    assert timeouts.check(400.0, opened_at=0.0, received_at=0.0, accepted=False,
                          status=busy) == (None, 700.0)


def test_only_an_accepted_connection_must_speak_within_first_message_seconds() -> None:
    timeouts = StreamTimeouts(idle=300.0, first_message=30.0)
    assert timeouts.first_check(0.0, accepted=True) == 30.0
    assert timeouts.first_check(0.0, accepted=False) == 300.0
    # Keep-alives are bytes, not a message: they do not save a connection that never spoke.
    assert timeouts.check(30.0, opened_at=0.0, received_at=29.0, accepted=True,
                          status=SILENT) == ("first_message", None)
    assert timeouts.check(30.0, opened_at=0.0, received_at=29.0, accepted=True,
                          status=SPOKEN) == (None, 329.0)
    assert timeouts.check(30.0, opened_at=0.0, received_at=0.0, accepted=False,
                          status=SILENT) == (None, 300.0)


def test_zero_turns_the_bounds_off() -> None:
    assert StreamTimeouts().first_check(0.0, accepted=True) is None
    assert StreamTimeouts().check(1e9, opened_at=0.0, received_at=0.0, accepted=True,
                                  status=SILENT) == (None, None)


async def serve(*, idle: float, first_message: float = 0.0, answer: bool = True,
                ) -> tuple[SipEndpoint, TcpTransport, list[RequestReceived]]:
    """A TCP listener whose TU answers OPTIONS 200 (or keeps every request waiting)."""
    received: list[RequestReceived] = []

    def on_event(event: Event) -> None:
        if isinstance(event, RequestReceived):
            received.append(event)
            if answer:
                endpoint.respond(event.transaction, make_response(event.request, 200))

    endpoint = SipEndpoint(TransactionLayer(), on_event)
    tcp = TcpTransport(endpoint.on_message, on_closed=endpoint.on_stream_closed,
                       status=endpoint.stream_status, idle_seconds=idle,
                       first_message_seconds=first_message)
    await tcp.listen("127.0.0.1", 0)
    endpoint.add_transport(tcp)
    return endpoint, tcp, received


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    response = parse_message(head)
    assert isinstance(response, Response)
    return response.status


async def closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the other side closed the connection (EOF or reset) within ``within`` s."""
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_a_connection_silent_after_its_request_is_closed_after_idle_seconds() -> None:
    endpoint, tcp, _ = await serve(idle=0.2)
    reader, writer = await asyncio.open_connection(*tcp.local_address)
    try:
        writer.write(options("TCP", writer.get_extra_info("sockname")[1]).encode())
        assert await read_response(reader) == 200
        assert await closed_by_peer(reader, within=5.0)
    finally:
        writer.close()
        endpoint.close()


async def test_crlf_keep_alives_keep_an_idle_connection_open() -> None:
    endpoint, tcp, _ = await serve(idle=0.5)
    reader, writer = await asyncio.open_connection(*tcp.local_address)
    port = writer.get_extra_info("sockname")[1]
    try:
        writer.write(options("TCP", port).encode())
        assert await read_response(reader) == 200
        for _ in range(15):  # 1.5 s: three idle periods
            writer.write(b"\r\n\r\n")
            assert not await closed_by_peer(reader, within=0.1)
        writer.write(options("TCP", port).encode())
        assert await read_response(reader) == 200
    finally:
        writer.close()
        endpoint.close()


async def test_a_request_waiting_for_its_answer_keeps_the_connection_open() -> None:
    endpoint, tcp, received = await serve(idle=0.2, answer=False)
    reader, writer = await asyncio.open_connection(*tcp.local_address)
    try:
        writer.write(options("TCP", writer.get_extra_info("sockname")[1]).encode())
        assert not await closed_by_peer(reader, within=0.8)
        [event] = received
        endpoint.respond(event.transaction, make_response(event.request, 200))
        assert await read_response(reader) == 200
        assert await closed_by_peer(reader, within=5.0)  # answered: now it may go idle
    finally:
        writer.close()
        endpoint.close()


async def test_a_connection_that_never_completes_a_message_is_closed_first() -> None:
    endpoint, tcp, _ = await serve(idle=60.0, first_message=0.2)
    silent = await asyncio.open_connection(*tcp.local_address)
    pinging = await asyncio.open_connection(*tcp.local_address)
    partial = await asyncio.open_connection(*tcp.local_address)
    try:
        pinging[1].write(b"\r\n\r\n")
        partial[1].write(options("TCP", 5060).encode()[:60])
        for reader, _ in (silent, pinging, partial):
            assert await closed_by_peer(reader, within=5.0)
    finally:
        for _, writer in (silent, pinging, partial):
            writer.close()
        endpoint.close()
