"""Real loopback UDP and TCP: requests reach the TU, responses come back, bad input is handled."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from protocols.sip.message import (
    Headers,
    IdGenerator,
    Request,
    Response,
    make_response,
    parse_message,
)
from protocols.sip.transaction import (
    Event,
    Peer,
    RequestReceived,
    ResponseReceived,
    TransactionLayer,
)
from protocols.sip.transport import SipEndpoint, TcpTransport, UdpTransport, stamp_via
from protocols.sip.uri import URI

IDS = IdGenerator()


def options(transport: str, port: int) -> Request:
    h = Headers()
    h.add("Via", f"SIP/2.0/{transport} 127.0.0.1:{port};branch={IDS.branch()};rport")
    h.add("Max-Forwards", "70")
    h.add("From", f"<sip:caller@127.0.0.1>;tag={IDS.tag()}")
    h.add("To", "<sip:gw@127.0.0.1>")
    h.add("Call-ID", IDS.call_id())
    h.add("CSeq", "1 OPTIONS")
    return Request("OPTIONS", URI("sip", user="gw", host="127.0.0.1"), h)


async def start_endpoint(on_event: object) -> tuple[SipEndpoint, UdpTransport, TcpTransport]:
    endpoint = SipEndpoint(TransactionLayer(), on_event)  # type: ignore[arg-type]
    udp = await UdpTransport.listen("127.0.0.1", 0, endpoint.on_message)
    tcp = TcpTransport(endpoint.on_message, on_error=endpoint.on_transport_error)
    await tcp.listen("127.0.0.1", 0)
    endpoint.add_transport(udp)
    endpoint.add_transport(tcp)
    return endpoint, udp, tcp


async def test_options_round_trip_over_loopback_udp_and_tcp() -> None:
    seen: list[Request] = []

    def server_events(event: Event) -> None:
        if isinstance(event, RequestReceived):
            seen.append(event.request)
            server.respond(event.transaction, make_response(event.request, 200, to_tag="srv"))

    server, server_udp, server_tcp = await start_endpoint(server_events)
    answers: asyncio.Queue[Response] = asyncio.Queue()

    def client_events(event: Event) -> None:
        if isinstance(event, ResponseReceived):
            answers.put_nowait(event.response)

    client, client_udp, client_tcp = await start_endpoint(client_events)
    try:
        for name, target, local in (
            ("UDP", server_udp.local_address, client_udp.local_address),
            ("TCP", server_tcp.local_address, client_tcp.local_address),
        ):
            peer = Peer(name, "127.0.0.1", target[1])
            client.send_request(options(name, local[1]), peer)
            response = await asyncio.wait_for(answers.get(), 5)
            assert response.status == 200 and response.to_tag == "srv"
            via = seen[-1].top_via
            assert via.received == "127.0.0.1" and via.rport is not None
    finally:
        client.close()
        server.close()


async def test_malformed_request_gets_400_and_garbage_is_dropped_and_logged() -> None:
    server, server_udp, _ = await start_endpoint(lambda event: None)
    loop = asyncio.get_running_loop()
    replies: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            replies.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(
        Client, remote_addr=server_udp.local_address
    )
    try:
        bad = options("UDP", 1).encode().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
        with capture_logs() as logs:
            transport.sendto(bad)
            reply = parse_message(await asyncio.wait_for(replies.get(), 5))
            assert isinstance(reply, Response) and reply.status == 400
            transport.sendto(b"\x00\xffnot sip at all\r\n\r\n")
            await asyncio.sleep(0.1)
        assert replies.empty()
        assert any(
            entry["event"] == "sip_message_dropped" and entry["reason"] for entry in logs
        )
    finally:
        transport.close()
        server.close()


async def test_tcp_connect_failure_fails_the_client_transaction() -> None:
    failures: list[Event] = []
    client, _, client_tcp = await start_endpoint(failures.append)
    try:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        peer = Peer("TCP", "127.0.0.1", port)
        client.layer.send_request(options("TCP", client_tcp.local_address[1]), peer, client.now())
        client.flush()
        for _ in range(50):
            if failures:
                break
            await asyncio.sleep(0.02)
        assert [type(e).__name__ for e in failures] == ["TransportFailed"]
    finally:
        client.close()


def test_via_gets_received_and_rport_from_the_source() -> None:
    request = options("UDP", 5060)
    stamp_via(request, Peer("UDP", "198.51.100.7", 40123))
    via = request.top_via
    assert via.received == "198.51.100.7" and via.rport == 40123
    assert len(request.headers.get_all("Via")) == 1
