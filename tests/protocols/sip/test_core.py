"""RFC 3261 §18 receive behaviour of the sans-I/O core: bytes in, events and bytes out."""

from __future__ import annotations

from protocols.sip.core import SipCore
from protocols.sip.message import Request, Response, make_response, parse_message
from protocols.sip.transaction import Peer, RequestReceived
from tests.protocols.sip.messages import INVITE

PHONE = Peer("UDP", "198.51.100.7", 40123)
STREAM = Peer("TCP", "198.51.100.7", 40123)


def sent(core: SipCore) -> list[tuple[Request | Response, Peer]]:
    return [(parse_message(data), peer) for data, peer in core.datagrams_to_send()]


def test_a_datagram_request_reaches_the_tu_with_its_via_stamped() -> None:
    core = SipCore()
    core.receive_datagram(INVITE.replace(b"branch=z9hG4bK776asdhds",
                                         b"branch=z9hG4bK776asdhds;rport"), PHONE, 0.0)
    event = core.next_event()
    assert isinstance(event, RequestReceived)
    via = event.request.top_via
    assert (via.received, via.rport) == ("198.51.100.7", 40123)
    # The automatic 100 Trying goes back to the source port rport asked for.
    [(trying, dest)] = sent(core)
    assert isinstance(trying, Response) and trying.status == 100 and dest == PHONE


def test_answering_queues_the_response_and_wakes_the_sender() -> None:
    core = SipCore()
    wakes: list[None] = []
    core.layer.on_output = lambda: wakes.append(None)
    core.receive_datagram(INVITE, PHONE, 0.0)
    event = core.next_event()
    assert isinstance(event, RequestReceived)
    core.datagrams_to_send()
    event.transaction.respond(make_response(event.request, 486, to_tag="x"), 0.1)
    assert len(wakes) == 2  # once for the 100, once for the 486: nobody has to flush
    [(busy, _)] = sent(core)
    assert isinstance(busy, Response) and busy.status == 486


def test_a_bad_request_is_answered_400_and_junk_is_dropped() -> None:
    core = SipCore()
    core.receive_datagram(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), PHONE,
                          0.0)
    [(reply, _)] = sent(core)
    assert isinstance(reply, Response) and reply.status == 400
    core.receive_datagram(b"\x00\xffnot sip\r\n\r\n", PHONE, 0.0)
    core.receive_datagram(b"\r\n\r\n", PHONE, 0.0)  # keep-alive
    assert sent(core) == [] and core.next_event() is None


def test_another_sip_version_is_answered_505() -> None:
    core = SipCore()
    core.receive_datagram(INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), PHONE, 0.0)
    [(reply, _)] = sent(core)
    assert isinstance(reply, Response) and reply.status == 505


def test_a_stream_message_split_across_reads_is_framed_once_complete() -> None:
    core = SipCore()
    data = INVITE.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    assert core.receive_stream(data[:100], STREAM, 0.0)
    assert core.next_event() is None
    assert core.receive_stream(data[100:] + b"\r\n", STREAM, 0.0)
    assert isinstance(core.next_event(), RequestReceived)


def test_lost_stream_framing_asks_for_the_connection_to_close() -> None:
    core = SipCore()
    no_length = INVITE.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP").split(b"Content-Length")[0]
    assert not core.receive_stream(no_length + b"\r\n", STREAM, 0.0)
    [(reply, dest)] = sent(core)
    assert isinstance(reply, Response) and reply.status == 400 and dest == STREAM


def test_a_stream_has_spoken_once_a_message_is_complete_not_on_keep_alives() -> None:
    core = SipCore()
    data = INVITE.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    core.receive_stream(b"\r\n\r\n" + data[:100], STREAM, 0.0)
    assert not core.stream_status(STREAM).spoken
    core.receive_stream(data[100:], STREAM, 0.0)
    status = core.stream_status(STREAM)
    assert status.spoken and status.busy  # the INVITE waits for our answer
    event = core.next_event()
    assert isinstance(event, RequestReceived)
    event.transaction.respond(make_response(event.request, 486, to_tag="x"), 0.1)
    core.handle_timer(60.0)  # no ACK came: Timer H (64*T1) ends the transaction
    assert not core.stream_status(STREAM).busy
