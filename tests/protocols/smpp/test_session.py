"""ESME session state machine, driven by hand with a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from protocols.smpp.codec import PduDecoder
from protocols.smpp.constants import CommandId, CommandStatus, Tag
from protocols.smpp.pdu import (
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitterResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
    UnbindResp,
)
from protocols.smpp.session import (
    BindFailed,
    BindMode,
    BindSucceeded,
    DeliverSmReceived,
    EsmeSession,
    Event,
    NotBoundError,
    ProtocolError,
    RequestTimedOut,
    ResponseReceived,
    SessionClosed,
    SessionConfig,
    SessionState,
    WindowFullError,
)

S = CommandStatus
T0 = 1_000.0
CONFIG = SessionConfig(
    system_id="telgate",
    password="pw",
    window=3,
    response_timeout=5.0,
    bind_timeout=2.0,
    enquire_link_interval=30.0,
)
MESSAGE = SubmitSm(source_addr="0212345678", destination_addr="01012345678", short_message=b"hi")


class Peer:
    """The SMSC side of the wire, as far as the tests need one."""

    def __init__(self, session: EsmeSession) -> None:
        self.session = session
        self.decoder = PduDecoder()

    def sent(self) -> list[Pdu]:
        out = self.decoder.feed(self.session.data_to_send())
        assert all(isinstance(p, Pdu) for p in out)
        return out  # type: ignore[return-value]

    def send(self, pdu: Pdu, now: float) -> None:
        self.session.receive_data(pdu.encode(), now)


def events(session: EsmeSession) -> list[Event]:
    out = []
    while (e := session.next_event()) is not None:
        out.append(e)
    return out


def bound_session(config: SessionConfig = CONFIG) -> tuple[EsmeSession, Peer]:
    session = EsmeSession(config)
    peer = Peer(session)
    session.bind(T0)
    (bind,) = peer.sent()
    peer.send(BindTransceiverResp(sequence_number=bind.sequence_number, system_id="SMSC"), T0)
    events(session)
    return session, peer


def test_bind_sends_credentials_and_a_bind_resp_makes_the_session_bound() -> None:
    session = EsmeSession(CONFIG)
    peer = Peer(session)
    session.bind(T0)
    (bind,) = peer.sent()
    assert isinstance(bind, BindTransceiver)
    assert (bind.system_id, bind.password, bind.interface_version) == ("telgate", "pw", 0x34)
    peer.send(
        BindTransceiverResp(
            sequence_number=bind.sequence_number,
            system_id="SMSC",
            tlvs=(Tlv.u8(Tag.SC_INTERFACE_VERSION, 0x34),),
        ),
        T0 + 0.01,
    )
    assert events(session) == [BindSucceeded("SMSC", 0x34)]
    assert session.state is SessionState.BOUND


def test_refused_bind_reports_the_status_and_closes() -> None:
    session = EsmeSession(CONFIG)
    peer = Peer(session)
    session.bind(T0)
    (bind,) = peer.sent()
    peer.send(
        BindTransceiverResp(sequence_number=bind.sequence_number, command_status=S.ESME_RINVPASWD),
        T0,
    )
    assert events(session) == [BindFailed(S.ESME_RINVPASWD), SessionClosed("bind_failed", ())]
    assert session.get_timer() is None


def test_unanswered_bind_times_out() -> None:
    session = EsmeSession(CONFIG)
    session.bind(T0)
    assert session.get_timer() == T0 + 2.0
    session.handle_timer(T0 + 1.999)
    assert events(session) == []
    session.handle_timer(T0 + 2.0)
    assert events(session) == [SessionClosed("bind_timeout", ())]


def test_submit_before_bind_is_refused() -> None:
    session = EsmeSession(CONFIG)
    with pytest.raises(NotBoundError):
        session.submit(MESSAGE, "t", T0)


def test_submit_resp_comes_back_with_the_callers_token_and_message_id() -> None:
    session, peer = bound_session()
    seq = session.submit(MESSAGE, "msg-17", T0)
    (sent,) = peer.sent()
    assert sent == dataclasses.replace(MESSAGE, sequence_number=seq)
    peer.send(SubmitSmResp(sequence_number=seq, message_id="1A2B"), T0 + 0.1)
    (event,) = events(session)
    assert isinstance(event, ResponseReceived)
    assert (event.token, event.ok, event.message_id, event.request) == ("msg-17", True, "1A2B", MESSAGE)


def test_window_refuses_submits_beyond_its_size_until_a_response_frees_a_slot() -> None:
    session, peer = bound_session()
    seqs = [session.submit(MESSAGE, i, T0) for i in range(3)]
    assert session.window_available == 0
    with pytest.raises(WindowFullError):
        session.submit(MESSAGE, 3, T0)
    peer.send(SubmitSmResp(sequence_number=seqs[1], message_id="x"), T0)
    assert session.window_available == 1
    session.submit(MESSAGE, 3, T0)


def test_throttled_answer_is_an_ordinary_response_for_the_caller_to_act_on() -> None:
    session, peer = bound_session()
    seq = session.submit(MESSAGE, "a", T0)
    peer.send(SubmitSmResp(sequence_number=seq, command_status=S.ESME_RTHROTTLED), T0)
    (event,) = events(session)
    assert isinstance(event, ResponseReceived)
    assert (event.ok, event.command_status, event.message_id) == (False, S.ESME_RTHROTTLED, None)


def test_generic_nack_to_a_submit_answers_that_submit() -> None:
    session, peer = bound_session()
    seq = session.submit(MESSAGE, "a", T0)
    peer.send(GenericNack(sequence_number=seq, command_status=S.ESME_RINVCMDLEN), T0)
    (event,) = events(session)
    assert isinstance(event, ResponseReceived) and isinstance(event.response, GenericNack)


def test_unanswered_submit_times_out_frees_its_slot_and_a_late_answer_is_ignored() -> None:
    session, peer = bound_session()
    seq = session.submit(MESSAGE, "late", T0)
    session.submit(MESSAGE, "later", T0 + 1)
    assert session.get_timer() == T0 + 5.0
    session.handle_timer(T0 + 5.0)
    assert events(session) == [RequestTimedOut("late", MESSAGE)]
    assert session.in_flight == 1
    assert session.get_timer() == T0 + 6.0
    peer.send(SubmitSmResp(sequence_number=seq, message_id="x"), T0 + 5.5)
    assert events(session) == []
    assert session.late_responses == 1


def test_idle_link_gets_an_enquire_link_and_an_answer_keeps_it_up() -> None:
    session, peer = bound_session()
    assert session.get_timer() == T0 + 30.0
    session.handle_timer(T0 + 30.0)
    (probe,) = peer.sent()
    assert isinstance(probe, EnquireLink)
    peer.send(EnquireLinkResp(sequence_number=probe.sequence_number), T0 + 30.2)
    assert session.state is SessionState.BOUND
    assert session.get_timer() == T0 + 60.2
    assert events(session) == []


def test_unanswered_enquire_link_closes_and_lists_messages_in_doubt() -> None:
    session, peer = bound_session()
    session.handle_timer(T0 + 30.0)
    peer.sent()
    session.submit(MESSAGE, "in-doubt", T0 + 31)
    session.handle_timer(T0 + 35.0)
    assert events(session) == [SessionClosed("enquire_link_timeout", (("in-doubt", MESSAGE),))]
    assert session.get_timer() is None


def test_traffic_from_the_smsc_postpones_the_enquire_link() -> None:
    session, peer = bound_session()
    seq = session.submit(MESSAGE, "a", T0 + 20)
    peer.send(SubmitSmResp(sequence_number=seq, message_id="1"), T0 + 25)
    session.handle_timer(T0 + 30)
    assert [type(p) for p in peer.sent()] == [SubmitSm]
    assert session.get_timer() == T0 + 55


def test_smsc_enquire_link_is_answered_with_its_sequence_number() -> None:
    _session, peer = bound_session()
    peer.send(EnquireLink(sequence_number=777), T0)
    assert peer.sent() == [EnquireLinkResp(sequence_number=777)]


def test_delivery_receipt_is_parsed_and_acknowledged() -> None:
    session, peer = bound_session()
    receipt = DeliverSm(
        sequence_number=5,
        esm_class=4,
        short_message=b"id:1A2B sub:001 dlvrd:001 submit date:2611231200 "
        b"done date:2611231201 stat:DELIVRD err:000 text:",
    )
    peer.send(receipt, T0)
    (event,) = events(session)
    assert isinstance(event, DeliverSmReceived) and event.is_receipt
    assert event.receipt is not None and (event.receipt.message_id, event.receipt.stat) == (
        "1A2B",
        "DELIVRD",
    )
    assert peer.sent() == [DeliverSmResp(sequence_number=5)]


def test_mobile_originated_message_arrives_without_a_receipt() -> None:
    session, peer = bound_session()
    peer.send(DeliverSm(sequence_number=6, source_addr="01099998888", short_message=b"STOP"), T0)
    (event,) = events(session)
    assert isinstance(event, DeliverSmReceived) and not event.is_receipt
    assert event.pdu.short_message == b"STOP"


def test_without_auto_ack_the_receipt_is_answered_only_when_the_caller_says() -> None:
    config = SessionConfig(system_id="a", password="b", auto_ack_deliver_sm=False)
    session, peer = bound_session(config)
    peer.send(DeliverSm(sequence_number=8, esm_class=4, short_message=b"id:1 stat:DELIVRD"), T0)
    events(session)
    assert peer.sent() == []
    session.ack_deliver_sm(8)
    assert peer.sent() == [DeliverSmResp(sequence_number=8)]


def test_transmitter_bind_refuses_deliver_sm() -> None:
    config = SessionConfig(system_id="a", password="b", bind_mode=BindMode.TRANSMITTER)
    session = EsmeSession(config)
    peer = Peer(session)
    session.bind(T0)
    (bind,) = peer.sent()
    peer.send(BindTransmitterResp(sequence_number=bind.sequence_number), T0)
    events(session)
    peer.send(DeliverSm(sequence_number=9), T0)
    assert peer.sent() == [DeliverSmResp(sequence_number=9, command_status=S.ESME_RINVBNDSTS)]
    assert events(session) == []


def test_smsc_unbind_is_answered_and_ends_the_session_with_requests_in_doubt() -> None:
    session, peer = bound_session()
    session.submit(MESSAGE, "pending", T0)
    peer.sent()
    peer.send(Unbind(sequence_number=99), T0)
    assert peer.sent() == [UnbindResp(sequence_number=99)]
    assert events(session) == [SessionClosed("peer_unbind", (("pending", MESSAGE),))]


def test_our_unbind_completes_on_unbind_resp() -> None:
    session, peer = bound_session()
    session.unbind(T0)
    (unbind,) = peer.sent()
    assert isinstance(unbind, Unbind)
    with pytest.raises(NotBoundError):
        session.submit(MESSAGE, "x", T0)
    peer.send(UnbindResp(sequence_number=unbind.sequence_number), T0)
    assert events(session) == [SessionClosed("unbound", ())]


def test_malformed_request_gets_generic_nack_and_the_session_goes_on() -> None:
    session, peer = bound_session()
    bad = struct.pack(">IIII", 17, CommandId.ENQUIRE_LINK, 0, 31) + b"\x00"
    session.receive_data(bad, T0)
    assert peer.sent() == [GenericNack(sequence_number=31, command_status=S.ESME_RINVCMDLEN)]
    (event,) = events(session)
    assert isinstance(event, ProtocolError) and event.error.sequence_number == 31
    assert session.state is SessionState.BOUND


def test_unknown_command_gets_generic_nack_invalid_command_id() -> None:
    session, peer = bound_session()
    session.receive_data(struct.pack(">IIII", 16, 0x0000_0999, 0, 12), T0)
    assert peer.sent() == [GenericNack(sequence_number=12, command_status=S.ESME_RINVCMDID)]


def test_lost_framing_nacks_and_closes() -> None:
    session, peer = bound_session()
    session.submit(MESSAGE, "m", T0)
    peer.sent()
    session.receive_data(struct.pack(">IIII", 3, 0, 0, 0), T0)
    assert peer.sent() == [GenericNack(sequence_number=0, command_status=S.ESME_RINVCMDLEN)]
    evs = events(session)
    assert isinstance(evs[0], ProtocolError)
    assert evs[1] == SessionClosed("framing_error", (("m", MESSAGE),))


def test_connection_loss_reports_every_unanswered_request() -> None:
    session, _peer = bound_session()
    session.submit(MESSAGE, 1, T0)
    session.submit(MESSAGE, 2, T0)
    session.connection_lost(T0)
    assert events(session) == [SessionClosed("connection_lost", ((1, MESSAGE), (2, MESSAGE)))]
