"""The four RFC 3261 §17 state machines and the transaction layer, on a fake clock."""

from __future__ import annotations

import pytest

from protocols.sip.message import Headers, Request, Response, make_response, parse_message
from protocols.sip.transaction import (
    AckReceived,
    AckTimedOut,
    CancelReceived,
    Event,
    InviteClientTransaction,
    InviteServerTransaction,
    Peer,
    RequestReceived,
    ResponseReceived,
    State,
    TimerConfig,
    TransactionLayer,
    TransactionTimedOut,
    TransportFailed,
)
from protocols.sip.uri import URI

UDP = Peer("UDP", "192.0.2.10", 5060)
TCP = Peer("TCP", "192.0.2.10", 40000)
T1 = 0.5


def request(method: str, branch: str = "z9hG4bKtest1", seq: int = 1, transport: str = "UDP") -> Request:
    h = Headers()
    h.add("Via", f"SIP/2.0/{transport} 192.0.2.10:5060;branch={branch};rport")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:alice@example.com>;tag=ft")
    h.add("To", "<sip:bob@example.com>")
    h.add("Call-ID", "call-1")
    h.add("CSeq", f"{seq} {method}")
    return Request(method, URI("sip", user="bob", host="example.com"), h)


def wire(msg: Request | Response) -> Request | Response:
    """Round-trip through bytes, as the peer would see it."""
    return parse_message(msg.encode())


def events(layer: TransactionLayer) -> list[Event]:
    out = []
    while (event := layer.next_event()) is not None:
        out.append(event)
    return out


def sent(layer: TransactionLayer) -> list[bytes]:
    return [data for data, _ in layer.datagrams_to_send()]


def run_until(layer: TransactionLayer, until: float) -> list[float]:
    """Fire timers up to ``until``; return the times at which something was sent."""
    times = []
    while (deadline := layer.get_timer()) is not None and deadline <= until:
        layer.handle_timer(deadline)
        if layer.datagrams_to_send():
            times.append(round(deadline, 6))
    return times


# --- INVITE client -----------------------------------------------------------------------


def test_invite_client_retransmits_with_doubling_until_timer_b() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request("INVITE"), UDP, now=0.0)
    assert len(sent(layer)) == 1
    times = run_until(layer, 100.0)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # Timer A: T1, 2T1, 4T1, ... uncapped
    assert [type(e) for e in events(layer)] == [TransactionTimedOut]
    assert txn.state is State.TERMINATED
    assert len(layer) == 0


def test_invite_client_timer_b_fires_at_64_t1() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.1))
    layer.send_request(request("INVITE"), UDP, now=10.0)
    run_until(layer, 16.39)
    assert events(layer) == []
    run_until(layer, 16.4)
    assert [type(e) for e in events(layer)] == [TransactionTimedOut]


def test_invite_client_over_tcp_does_not_retransmit() -> None:
    layer = TransactionLayer()
    layer.send_request(request("INVITE", transport="TCP"), TCP, now=0.0)
    sent(layer)
    assert run_until(layer, 100.0) == []
    assert [type(e) for e in events(layer)] == [TransactionTimedOut]


def test_invite_client_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    txn = layer.send_request(invite, UDP, now=0.0)
    sent(layer)
    layer.receive(wire(make_response(invite, 180, to_tag="b")), UDP, now=0.1)
    assert txn.state is State.PROCEEDING
    assert run_until(layer, 1000.0) == []
    assert [type(e) for e in events(layer)] == [ResponseReceived]


def test_invite_client_acks_non2xx_itself_and_absorbs_retransmissions_until_timer_d() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    txn = layer.send_request(invite, UDP, now=0.0)
    sent(layer)
    busy = wire(make_response(invite, 486, to_tag="b"))
    layer.receive(busy, UDP, now=0.2)
    (ack_bytes,) = sent(layer)
    ack = parse_message(ack_bytes)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.top_via.branch == "z9hG4bKtest1" and ack.to_tag == "b"
    assert txn.state is State.COMPLETED
    layer.receive(busy, UDP, now=1.0)
    assert sent(layer) == [ack_bytes]  # ACK resent, TU not told twice
    assert [type(e) for e in events(layer)] == [ResponseReceived]
    run_until(layer, 0.2 + 31.9)
    assert txn.state is State.COMPLETED
    run_until(layer, 0.2 + 32.0)
    assert txn.state is State.TERMINATED


def test_invite_client_passes_every_2xx_to_tu_in_accepted_until_timer_m() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    txn = layer.send_request(invite, UDP, now=0.0)
    sent(layer)
    ok = wire(make_response(invite, 200, to_tag="b"))
    layer.receive(ok, UDP, now=0.1)
    assert txn.state is State.ACCEPTED
    assert sent(layer) == []  # the ACK for a 2xx is the dialog's job
    layer.receive(ok, UDP, now=0.6)
    assert [type(e) for e in events(layer)] == [ResponseReceived, ResponseReceived]
    run_until(layer, 0.1 + 64 * T1)
    assert txn.state is State.TERMINATED
    layer.receive(ok, UDP, now=40.0)
    (late,) = events(layer)
    assert isinstance(late, ResponseReceived) and late.transaction is None


def test_invite_client_cancel_waits_for_a_provisional() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    txn = layer.send_request(invite, UDP, now=0.0)
    assert isinstance(txn, InviteClientTransaction)
    sent(layer)
    cancel = txn.cancel(now=0.1)
    assert cancel is not None and sent(layer) == []
    layer.receive(wire(make_response(invite, 180, to_tag="b")), UDP, now=0.2)
    (cancel_bytes,) = sent(layer)
    assert cancel_bytes.startswith(b"CANCEL sip:bob@example.com SIP/2.0")


def test_transport_error_terminates_and_informs_tu() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request("INVITE"), UDP, now=0.0)
    txn.transport_error()
    assert [type(e) for e in events(layer)] == [TransportFailed]
    assert txn.state is State.TERMINATED and len(layer) == 0


# --- non-INVITE client -------------------------------------------------------------------


def test_non_invite_client_timer_e_doubles_capped_at_t2_until_timer_f() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), UDP, now=0.0)
    sent(layer)
    times = run_until(layer, 100.0)
    # E: 0.5, 1, 2, 4, 4, 4 ... intervals; F at 64*T1 = 32 s.
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [type(e) for e in events(layer)] == [TransactionTimedOut]


def test_non_invite_client_retransmits_every_t2_in_proceeding() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.send_request(options, UDP, now=0.0)
    sent(layer)
    layer.receive(wire(make_response(options, 100)), UDP, now=0.2)
    assert run_until(layer, 13.0) == [0.5, 4.5, 8.5, 12.5]


def test_non_invite_client_timer_k_absorbs_final_retransmissions() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn = layer.send_request(options, UDP, now=0.0)
    ok = wire(make_response(options, 200, to_tag="x"))
    layer.receive(ok, UDP, now=0.1)
    layer.receive(ok, UDP, now=0.2)
    assert [type(e) for e in events(layer)] == [ResponseReceived]
    run_until(layer, 0.1 + 4.99)
    assert txn.state is State.COMPLETED
    run_until(layer, 0.1 + 5.0)  # Timer K = T4
    assert txn.state is State.TERMINATED


def test_non_invite_client_over_tcp_terminates_on_final_at_once() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", transport="TCP")
    txn = layer.send_request(options, TCP, now=0.0)
    layer.receive(wire(make_response(options, 200, to_tag="x")), TCP, now=0.1)
    assert txn.state is State.TERMINATED


# --- INVITE server -----------------------------------------------------------------------


def _server_invite(layer: TransactionLayer, peer: Peer = UDP) -> InviteServerTransaction:
    layer.receive(wire(request("INVITE", transport=peer.transport)), peer, now=0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    assert isinstance(event.transaction, InviteServerTransaction)
    return event.transaction


def test_invite_server_sends_trying_and_absorbs_retransmitted_invites() -> None:
    layer = TransactionLayer()
    txn = _server_invite(layer)
    (trying,) = sent(layer)
    assert trying.startswith(b"SIP/2.0 100 Trying")
    layer.receive(wire(request("INVITE")), UDP, now=0.5)
    assert events(layer) == []
    assert sent(layer) == [trying]
    txn.reply(180, to_tag="s", now=0.6)
    ringing = sent(layer)
    layer.receive(wire(request("INVITE")), UDP, now=1.5)
    assert sent(layer) == ringing


def test_invite_server_timer_g_capped_at_t2_until_ack_then_timer_i() -> None:
    layer = TransactionLayer()
    txn = _server_invite(layer)
    sent(layer)
    txn.reply(486, to_tag="s", now=0.0)
    sent(layer)
    assert run_until(layer, 12.0) == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert txn.state is State.COMPLETED
    ack = request("ACK")
    ack.headers.set("To", "<sip:bob@example.com>;tag=s")
    layer.receive(wire(ack), UDP, now=12.0)
    assert txn.state is State.CONFIRMED
    assert events(layer) == []  # the ACK for a non-2xx stays in the transaction
    assert run_until(layer, 16.99) == []
    run_until(layer, 17.0)  # Timer I = T4
    assert txn.state is State.TERMINATED


def test_invite_server_timer_h_reports_missing_ack() -> None:
    layer = TransactionLayer()
    txn = _server_invite(layer)
    txn.reply(500, to_tag="s", now=1.0)
    run_until(layer, 1.0 + 64 * T1)
    assert [type(e) for e in events(layer)] == [TransactionTimedOut]
    assert txn.state is State.TERMINATED


def test_invite_server_retransmits_2xx_until_ack_arrives() -> None:
    layer = TransactionLayer()
    txn = _server_invite(layer)
    sent(layer)
    txn.reply(200, to_tag="s", now=0.0)
    assert len(sent(layer)) == 1
    assert txn.state is State.ACCEPTED
    assert run_until(layer, 4.0) == [0.5, 1.5, 3.5]
    ack = request("ACK", branch="z9hG4bKnewbranch")
    ack.headers.set("To", "<sip:bob@example.com>;tag=s")
    layer.receive(wire(ack), UDP, now=4.0)
    (event,) = events(layer)
    assert isinstance(event, AckReceived) and event.transaction is txn
    assert run_until(layer, 31.0) == []
    layer.receive(wire(request("INVITE")), UDP, now=20.0)  # late retransmission: absorbed
    assert events(layer) == []
    run_until(layer, 64 * T1)
    assert txn.state is State.TERMINATED
    assert events(layer) == []


def test_invite_server_reports_ack_timeout_after_timer_l() -> None:
    layer = TransactionLayer()
    txn = _server_invite(layer)
    txn.reply(200, to_tag="s", now=0.0)
    run_until(layer, 64 * T1)
    assert [type(e) for e in events(layer)] == [AckTimedOut]


def test_invite_server_over_tcp_does_not_retransmit_responses() -> None:
    layer = TransactionLayer()
    txn = _server_invite(layer, TCP)
    sent(layer)
    txn.reply(486, to_tag="s", now=0.0)
    sent(layer)
    assert run_until(layer, 100.0) == []
    assert [type(e) for e in events(layer)] == [TransactionTimedOut]  # Timer H still runs


def test_cancel_matching_an_invite_gets_200_and_reaches_the_tu() -> None:
    layer = TransactionLayer()
    txn = _server_invite(layer)
    sent(layer)
    cancel = request("CANCEL")
    layer.receive(wire(cancel), UDP, now=1.0)
    (ok,) = sent(layer)
    assert ok.startswith(b"SIP/2.0 200 OK") and b"CANCEL" in ok
    (event,) = events(layer)
    assert isinstance(event, CancelReceived) and event.invite is txn
    txn.reply(487, to_tag="s", now=1.0)
    assert sent(layer)[0].startswith(b"SIP/2.0 487")


def test_cancel_without_matching_invite_gets_481() -> None:
    layer = TransactionLayer()
    layer.receive(wire(request("CANCEL", branch="z9hG4bKother")), UDP, now=0.0)
    (reply,) = sent(layer)
    assert reply.startswith(b"SIP/2.0 481")
    assert events(layer) == []


# --- non-INVITE server -------------------------------------------------------------------


def test_non_invite_server_resends_final_until_timer_j() -> None:
    layer = TransactionLayer()
    layer.receive(wire(request("BYE")), UDP, now=0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    txn = event.transaction
    layer.receive(wire(request("BYE")), UDP, now=0.1)
    assert sent(layer) == []  # Trying: nothing to resend yet
    txn.reply(200, to_tag="s", now=0.2)
    (ok,) = sent(layer)
    layer.receive(wire(request("BYE")), UDP, now=1.0)
    assert sent(layer) == [ok]
    assert events(layer) == []
    run_until(layer, 0.2 + 64 * T1 - 0.01)
    assert txn.state is State.COMPLETED
    run_until(layer, 0.2 + 64 * T1)
    assert txn.state is State.TERMINATED
    layer.receive(wire(request("BYE")), UDP, now=40.0)
    assert [type(e) for e in events(layer)] == [RequestReceived]  # a new transaction now


def test_non_invite_server_over_tcp_terminates_after_final() -> None:
    layer = TransactionLayer()
    layer.receive(wire(request("BYE", transport="TCP")), TCP, now=0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    event.transaction.reply(200, to_tag="s", now=0.0)
    assert event.transaction.state is State.TERMINATED


def test_responses_go_to_the_source_port_when_rport_was_requested() -> None:
    layer = TransactionLayer()
    nat = Peer("UDP", "198.51.100.7", 31337)
    layer.receive(wire(request("OPTIONS")), nat, now=0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    event.transaction.reply(200, to_tag="s", now=0.0)
    ((_, dest),) = layer.datagrams_to_send()
    assert dest == nat


def test_send_request_requires_an_rfc3261_branch() -> None:
    with pytest.raises(ValueError):
        TransactionLayer().send_request(request("OPTIONS", branch="old"), UDP, now=0.0)


def test_invite_client_over_tcp_ends_at_once_after_acking_a_failure() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", transport="TCP")
    txn = layer.send_request(invite, TCP, now=0.0)
    layer.receive(wire(make_response(invite, 603, to_tag="b")), TCP, now=0.1)
    assert len(sent(layer)) == 2  # INVITE, ACK
    layer.handle_timer(0.1)  # Timer D is zero on reliable transports
    assert txn.state is State.TERMINATED


def test_timers_follow_configured_t1_t2_t4() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.1, t2=0.4, t4=1.0))
    options = request("OPTIONS")
    txn = layer.send_request(options, UDP, now=0.0)
    sent(layer)
    assert run_until(layer, 1.0) == [0.1, 0.3, 0.7]  # 0.1, 0.2, 0.4 (=T2) intervals
    layer.receive(wire(make_response(options, 200, to_tag="x")), UDP, now=1.0)
    run_until(layer, 1.99)
    assert txn.state is State.COMPLETED
    run_until(layer, 2.0)
    assert txn.state is State.TERMINATED


def test_peer_from_uri_uses_transport_param_port_defaults_and_maddr() -> None:
    assert Peer.from_uri(URI.parse("sip:1001@10.0.0.5")) == Peer("UDP", "10.0.0.5", 5060)
    assert Peer.from_uri(URI.parse("sip:10.0.0.5:5070;transport=tcp")) == Peer(
        "TCP", "10.0.0.5", 5070
    )
    assert Peer.from_uri(URI.parse("sips:10.0.0.5")) == Peer("TLS", "10.0.0.5", 5061)
    assert Peer.from_uri(URI.parse("sip:x@h.example.com;maddr=10.9.9.9")).host == "10.9.9.9"


def test_ack_for_2xx_reusing_the_invite_branch_still_reaches_the_tu() -> None:
    layer = TransactionLayer()
    txn = _server_invite(layer)
    txn.reply(200, to_tag="s", now=0.0)
    sent(layer)
    ack = request("ACK")  # same branch as the INVITE
    ack.headers.set("To", "<sip:bob@example.com>;tag=s")
    layer.receive(wire(ack), UDP, now=0.2)
    (event,) = events(layer)
    assert isinstance(event, AckReceived) and event.transaction is txn
    assert run_until(layer, 5.0) == []  # 2xx retransmissions stopped
