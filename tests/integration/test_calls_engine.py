"""Call flows through the call engine on a fake clock: no sockets, no sleeps.

The carrier and the phones are scripted peers speaking SIP bytes to a real `SipCore` and
`CallEngine`; time only moves when a test advances it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest

from config.sip import DidConfig, SipConfig, TrunkConfig
from handlers.calls.call import CallState, Hangup, Play, RecordReady
from handlers.calls.cdr import CallRecord
from handlers.calls.engine import CallEngine
from handlers.calls.extensions import Extension
from handlers.calls.registrar import Binding, Registrar
from handlers.calls.trunks import TrunkGate
from protocols.sip.core import SipCore
from protocols.sip.dialog import Dialog
from protocols.sip.headers import NameAddr
from protocols.sip.message import (
    IdGenerator,
    Request,
    Response,
    make_request,
    parse_message,
)
from protocols.sip.transaction import Peer
from protocols.sip.uri import URI

TENANT = uuid.UUID("00000000-0000-0000-0000-00000000a11c")
DID = "0212345678"
CARRIER = Peer("UDP", "192.0.2.10", 5060)
GATEWAY = "192.0.2.1"
OFFER = b"v=0\r\no=carrier 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n" \
        b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=phone 7 7 IN IP4 192.0.2.21\r\ns=-\r\nc=IN IP4 192.0.2.21\r\n" \
         b"t=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
IDS = IdGenerator()


def phone_peer(n: int) -> Peer:
    return Peer("UDP", f"192.0.2.{20 + n}", 5060)


class Net:
    """The engine and its SIP core, with an inbox of parsed messages per peer."""

    def __init__(self, *, strategy: str = "simultaneous", extensions: tuple[str, ...] = ("1001",),
                 session_expires: int = 1800, max_call: float | None = None,
                 **engine_options: Any) -> None:
        self.now = 1000.0
        did = DidConfig(number=DID, tenant="acme", extensions=list(extensions),
                        strategy=strategy,  # type: ignore[arg-type]
                        ring_seconds=20.0, no_answer_seconds=60.0)
        config = SipConfig(host=GATEWAY, port=5060, dids=[did],
                           session_expires_seconds=session_expires,
                           trunks=[TrunkConfig(name="carrier", addresses=[CARRIER.host],
                                               host=CARRIER.host)])
        self.core = SipCore()
        self.registrar = Registrar(config)
        self.engine = CallEngine(
            self.core.layer, config, registrar=self.registrar,
            trunks=TrunkGate(config, secret=b"k" * 32), tenants={"acme": TENANT},
            may_send=lambda _t, number: number == "0215550000",
            max_call_seconds=lambda _t: max_call, epoch=1_767_000_000.0 - 1000.0,
            **engine_options)
        self.inbox: dict[Peer, list[Request | Response]] = defaultdict(list)
        self.records: list[CallRecord] = []
        self.outputs: list[Any] = []

    def register(self, extension: str, n: int) -> None:
        peer = phone_peer(n)
        uri = URI("sip", user=extension, host=peer.host, port=peer.port)
        old = self.registrar.bindings((TENANT, extension))
        self.registrar.replace((TENANT, extension), [*old, Binding(
            uri, f"<{uri}>", peer, self.now + 3600, IDS.call_id(), 1)])

    def send(self, message: Request | Response, source: Peer) -> None:
        """A peer sends `message`; the engine reacts."""
        self.core.receive_datagram(message.encode(), source, self.now)
        self._pump()

    def advance(self, seconds: float) -> None:
        """Let time pass, firing every transaction and call timer due on the way."""
        end = self.now + seconds
        while True:
            due = [t for t in (self.core.get_timer(), self.engine.get_timer()) if t is not None]
            step = min(due) if due else None
            if step is None or step > end:
                break
            self.now = max(self.now, step)
            self.core.handle_timer(self.now)
            self.engine.handle_timer(self.now)
            self._pump()
        self.now = end

    def _pump(self) -> None:
        while (event := self.core.next_event()) is not None:
            self.engine.handle_event(event, self.now)
        for data, dest in self.core.datagrams_to_send():
            self.inbox[dest].append(parse_message(data))
        while (out := self.engine.next_output()) is not None:
            if isinstance(out, RecordReady):
                self.records.append(out.record)
            else:
                self.outputs.append(out)

    def take(self, peer: Peer) -> list[Request | Response]:
        """Everything sent to `peer` since the last take."""
        out, self.inbox[peer] = self.inbox[peer], []
        return out

    def expect(self, peer: Peer, what: str) -> Request | Response:
        """The one message `peer` got that matches `what` ("INVITE", "180", ...)."""
        found = [m for m in self.take(peer) if _label(m) == what]
        assert len(found) == 1, f"{peer.host} expected one {what}, got {found}"
        return found[0]

    def record(self) -> CallRecord:
        [record] = self.records
        return record


def _label(message: Request | Response) -> str:
    return str(message.status) if isinstance(message, Response) else message.method


@dataclasses.dataclass
class Caller:
    """The carrier's side of one call (a UAC)."""

    net: Net
    invite: Request
    dialog: Dialog | None = None

    @classmethod
    def dial(cls, net: Net, *, sdp: bytes = OFFER, headers: list[tuple[str, str]] | None = None,
             ) -> Caller:
        uri = URI("sip", user=DID, host=GATEWAY)
        invite = make_request(
            "INVITE", uri, via=f"SIP/2.0/UDP {CARRIER.host}:5060;branch={IDS.branch()}",
            from_=NameAddr(URI("sip", user="01012345678", host=CARRIER.host),
                           params=(("tag", IDS.tag()),)),
            to=NameAddr(uri), call_id=IDS.call_id(), cseq=1,
            contact=f"<sip:carrier@{CARRIER.host}:5060>",
            headers=[*(headers or []), *([("Content-Type", "application/sdp")] if sdp else [])],
            body=sdp)
        net.send(invite, CARRIER)
        return cls(net, invite)

    def answered(self, response: Response, *, sdp: bytes = b"") -> None:
        """Our 200 arrived: confirm it with an ACK (carrying `sdp` for a late offer)."""
        self.dialog = Dialog.from_uac_response(self.invite, response)
        headers = [("Content-Type", "application/sdp")] if sdp else None
        ack = self.dialog.create_ack(self.invite.cseq.seq, branch=IDS.branch(),
                                     headers=headers, body=sdp)
        self.net.send(ack, CARRIER)

    def request(self, method: str, *, headers: list[tuple[str, str]] | None = None,
                body: bytes = b"") -> Request:
        assert self.dialog is not None
        request = self.dialog.create_request(method, branch=IDS.branch(), headers=headers,
                                             body=body)
        self.net.send(request, CARRIER)
        return request

    def cancel(self) -> None:
        via = self.invite.headers.get("Via") or ""
        cancel = make_request(
            "CANCEL", self.invite.uri, via=via, from_=self.invite.from_, to=self.invite.to,
            call_id=self.invite.call_id, cseq=self.invite.cseq.seq)
        self.net.send(cancel, CARRIER)


@dataclasses.dataclass
class Phone:
    """An extension's side of one B leg (a UAS)."""

    net: Net
    peer: Peer
    invite: Request
    dialog: Dialog

    @classmethod
    def rung(cls, net: Net, n: int = 1) -> Phone:
        peer = phone_peer(n)
        invite = net.expect(peer, "INVITE")
        assert isinstance(invite, Request)
        dialog = Dialog.from_uas_request(
            invite, local_tag=IDS.tag(), local_contact=f"<sip:phone@{peer.host}:5060>",
            via_transport="UDP", via_sent_by=f"{peer.host}:5060")
        return cls(net, peer, invite, dialog)

    def respond(self, status: int, *, sdp: bytes = b"", to: Request | None = None,
                headers: list[tuple[str, str]] | None = None) -> None:
        request = to or self.invite
        extra = list(headers or [])
        if sdp:
            extra.append(("Content-Type", "application/sdp"))
        self.net.send(self.dialog.create_response(request, status, headers=extra, body=sdp),
                      self.peer)

    def request(self, method: str, *, body: bytes = b"") -> Request:
        headers = [("Content-Type", "application/sdp")] if body else None
        request = self.dialog.create_request(method, branch=IDS.branch(), headers=headers,
                                             body=body)
        self.net.send(request, self.peer)
        return request


def answered_call(net: Net, **phone_headers: Any) -> tuple[Caller, Phone]:
    """A trunk call to 1001, answered; the carrier has ACKed."""
    net.register("1001", 1)
    caller = Caller.dial(net)
    phone = Phone.rung(net)
    phone.respond(180)
    phone.respond(200, sdp=ANSWER, headers=phone_headers.get("headers"))
    ok = net.expect(CARRIER, "200")
    assert isinstance(ok, Response)
    caller.answered(ok)
    return caller, phone


# -- ring, answer, hang up ------------------------------------------------------------------

def test_trunk_call_rings_is_answered_and_the_caller_hangs_up() -> None:
    net = Net()
    net.register("1001", 1)
    caller = Caller.dial(net)
    assert [_label(m) for m in net.take(CARRIER)] == ["100"]
    phone = Phone.rung(net)
    assert phone.invite.body == OFFER
    phone.respond(180)
    net.expect(CARRIER, "180")
    net.advance(3)
    phone.respond(200, sdp=ANSWER)
    ok = net.expect(CARRIER, "200")
    assert isinstance(ok, Response) and ok.body == ANSWER
    net.expect(phone.peer, "ACK")
    caller.answered(ok)
    net.advance(42)
    caller.request("BYE")
    net.expect(CARRIER, "200")
    bye = net.expect(phone.peer, "BYE")
    phone.respond(200, to=bye)  # type: ignore[arg-type]
    record = net.record()
    assert (record.call_class, record.hangup_by, record.end_reason) == \
        ("incoming", "caller", "normal")
    assert record.extension == "1001" and record.talk_seconds == 42.0
    assert record.answered_at == datetime.fromtimestamp(1_767_000_003.0, UTC)
    assert not net.engine.calls


def test_the_extension_hanging_up_ends_the_call_towards_the_carrier() -> None:
    net = Net()
    _caller, phone = answered_call(net)
    phone.request("BYE")
    net.expect(phone.peer, "200")
    net.expect(CARRIER, "BYE")
    assert (net.record().hangup_by, net.record().call_class) == ("callee", "incoming")


def test_cancel_racing_the_answer_acks_and_hangs_up_the_late_answer() -> None:
    net = Net()
    net.register("1001", 1)
    caller = Caller.dial(net)
    phone = Phone.rung(net)
    phone.respond(180)
    net.take(CARRIER)
    caller.cancel()
    assert sorted(_label(m) for m in net.take(CARRIER)) == ["200", "487"]
    cancel = net.expect(phone.peer, "CANCEL")
    phone.respond(200, sdp=ANSWER)  # crossed our CANCEL
    phone.respond(200, to=cancel)  # type: ignore[arg-type]
    assert sorted(_label(m) for m in net.take(phone.peer)) == ["ACK", "BYE"]
    assert net.take(CARRIER) == []
    record = net.record()
    assert (record.call_class, record.end_reason, record.final_status) == \
        ("ended_before_answer", "cancelled", 487)


def test_a_cancel_arriving_after_the_answer_leaves_the_call_up() -> None:
    net = Net()
    caller, phone = answered_call(net)
    net.take(phone.peer)
    caller.cancel()
    assert [_label(m) for m in net.take(CARRIER)] == ["200"]  # to the CANCEL only
    assert net.take(phone.peer) == []
    assert [c.state for c in net.engine.calls.values()] == [CallState.ANSWERED]


def test_busy_extension_gives_busy_to_the_carrier() -> None:
    net = Net()
    net.register("1001", 1)
    Caller.dial(net)
    Phone.rung(net).respond(486)
    net.expect(CARRIER, "486")
    record = net.record()
    assert (record.call_class, record.end_reason, record.final_status) == \
        ("busy_missed", "busy", 486)


def test_sequential_ring_group_moves_to_the_next_extension_after_its_ring_time() -> None:
    net = Net(strategy="sequential", extensions=("1001", "1002"))
    net.register("1001", 1)
    net.register("1002", 2)
    Caller.dial(net)
    first = Phone.rung(net, 1)
    first.respond(180)
    net.advance(19.9)
    assert net.take(phone_peer(2)) == []
    net.advance(0.2)
    cancel = net.expect(first.peer, "CANCEL")
    first.respond(200, to=cancel)  # type: ignore[arg-type]
    first.respond(487)
    second = Phone.rung(net, 2)
    second.respond(200, sdp=ANSWER)
    assert any(_label(m) == "200" for m in net.take(CARRIER))
    [call] = net.engine.calls.values()
    assert call.state is CallState.ANSWERED and call.extension == "1002"


def test_nobody_answering_within_the_no_answer_time_is_missed() -> None:
    net = Net()
    net.register("1001", 1)
    Caller.dial(net)
    phone = Phone.rung(net)
    phone.respond(180)
    net.advance(60)
    net.expect(phone.peer, "CANCEL")
    assert any(_label(m) == "480" for m in net.take(CARRIER))
    record = net.record()
    assert (record.call_class, record.end_reason) == ("missed", "no_answer")


# -- in-dialog ------------------------------------------------------------------------------

def test_reinvites_crossing_get_491_for_the_second() -> None:
    net = Net()
    caller, phone = answered_call(net)
    net.take(phone.peer)
    caller.request("INVITE", headers=[("Content-Type", "application/sdp")], body=OFFER)
    relayed = net.expect(phone.peer, "INVITE")
    phone.request("INVITE", body=ANSWER)  # glare: ours is still open
    net.expect(phone.peer, "491")
    phone.respond(200, sdp=ANSWER, to=relayed)  # type: ignore[arg-type]
    ok = net.expect(CARRIER, "200")
    assert ok.body == ANSWER


def test_late_offer_takes_the_answer_from_the_callers_ack() -> None:
    net = Net()
    net.register("1001", 1)
    caller = Caller.dial(net, sdp=b"")
    phone = Phone.rung(net)
    assert phone.invite.body == b""
    phone.respond(200, sdp=ANSWER)  # the phone's offer
    ok = net.expect(CARRIER, "200")
    assert ok.body == ANSWER
    assert net.take(phone.peer) == []  # the ACK waits for the caller's answer
    caller.answered(ok, sdp=OFFER)  # type: ignore[arg-type]
    ack = net.expect(phone.peer, "ACK")
    assert ack.body == OFFER


# -- calls that cannot hang forever ---------------------------------------------------------

def test_we_refresh_the_session_of_a_phone_that_asks_us_to() -> None:
    net = Net()
    _caller, phone = answered_call(
        net, headers=[("Session-Expires", "120;refresher=uac"), ("Allow", "INVITE, UPDATE")])
    assert "timer" in (phone.invite.headers.get("Supported") or "")
    net.take(phone.peer)
    for _ in range(3):
        net.advance(59)
        assert net.take(phone.peer) == []
        net.advance(1)
        update = net.expect(phone.peer, "UPDATE")
        assert (update.headers.get("Session-Expires") or "").startswith("120")
        phone.respond(200, to=update, headers=[("Session-Expires", "120;refresher=uac")])  # type: ignore[arg-type]
    assert net.records == []


def test_a_caller_that_stops_refreshing_its_session_is_hung_up() -> None:
    net = Net()
    net.register("1001", 1)
    caller = Caller.dial(net, headers=[("Supported", "timer"), ("Session-Expires", "90")])
    phone = Phone.rung(net)
    phone.respond(200, sdp=ANSWER)
    ok = net.expect(CARRIER, "200")
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    caller.answered(ok)  # type: ignore[arg-type]
    net.take(phone.peer)
    net.advance(40)
    caller.request("UPDATE", headers=[("Session-Expires", "90;refresher=uac")])
    update = net.expect(phone.peer, "UPDATE")
    phone.respond(200, to=update)  # type: ignore[arg-type]
    net.expect(CARRIER, "200")
    net.advance(59)  # refreshed at 40: alive until 40 + 60
    assert net.records == []
    net.advance(1)
    net.expect(CARRIER, "BYE")
    net.expect(phone.peer, "BYE")
    record = net.record()
    assert (record.end_reason, record.hangup_by, record.talk_seconds) == \
        ("session_expired", "system", 100.0)


def test_a_session_our_refresh_cannot_renew_is_ended() -> None:
    net = Net()
    _caller, phone = answered_call(net, headers=[("Session-Expires", "120;refresher=uac")])
    net.take(phone.peer)
    net.advance(60)
    refresh = net.expect(phone.peer, "INVITE")  # no UPDATE in its Allow: a re-INVITE
    assert refresh.body == OFFER  # the offer it already had: no change of session
    phone.respond(481, to=refresh)  # type: ignore[arg-type]
    net.expect(CARRIER, "BYE")
    assert net.record().end_reason == "session_refresh_failed"


def test_an_answered_call_ends_at_the_maximum_duration() -> None:
    net = Net(max_call=3600)
    answered_call(net)
    net.advance(3599)
    assert net.records == []
    net.advance(1)
    net.expect(CARRIER, "BYE")
    record = net.record()
    assert (record.end_reason, record.talk_seconds) == ("max_duration", 3600.0)


def test_a_leg_that_stops_answering_ends_the_call_with_the_reason() -> None:
    net = Net()
    caller, phone = answered_call(net)
    net.take(phone.peer)
    caller.request("INFO", headers=[("Content-Type", "application/dtmf-relay")],
                   body=b"Signal=5\r\nDuration=160\r\n")
    net.expect(phone.peer, "INFO")
    net.advance(32)  # Timer F: the phone never answered
    labels = sorted(_label(m) for m in net.take(CARRIER))
    assert labels == ["408", "BYE"]
    assert net.record().end_reason == "peer_lost"


# -- commands -------------------------------------------------------------------------------

def test_hangup_command_ends_an_answered_call_on_both_legs() -> None:
    net = Net()
    _caller, phone = answered_call(net)
    net.take(phone.peer)
    [call_id] = net.engine.calls
    net.engine.command(Hangup(call_id), net.now)
    net._pump()
    net.expect(CARRIER, "BYE")
    net.expect(phone.peer, "BYE")
    assert (net.record().end_reason, net.record().hangup_by) == ("command", "system")


def test_media_commands_are_refused_until_a_media_process_is_plugged_in() -> None:
    from handlers.calls.call import CommandRefused
    from handlers.calls.media import Side

    net = Net()
    answered_call(net)
    [call_id] = net.engine.calls
    with pytest.raises(CommandRefused) as refused:
        net.engine.command(Play(call_id, Side.A, "welcome"), net.now)
    assert refused.value.code == "not_supported"


def test_outgoing_call_with_an_unregistered_caller_id_is_refused() -> None:
    net = Net()
    phone = phone_peer(1)
    uri = URI("sip", user="01099998888", host=GATEWAY)
    invite = make_request(
        "INVITE", uri, via=f"SIP/2.0/UDP {phone.host}:5060;branch={IDS.branch()}",
        from_=NameAddr(URI("sip", user="1001", host=GATEWAY), params=(("tag", IDS.tag()),)),
        to=NameAddr(uri), call_id=IDS.call_id(), cseq=1, contact=f"<sip:1001@{phone.host}>")
    net.send(invite, phone)
    [pending] = net.outputs  # the driver authenticates the phone against the database
    now = datetime.now(UTC)
    ext = Extension(TENANT, "1001", "", "telgate", "", "", "0215559999", None, False, now, now)
    net.engine.admitted(pending, ext, net.now)
    net._pump()
    assert any(_label(m) == "403" for m in net.take(phone))
    record = net.record()
    assert (record.call_class, record.end_reason) == ("outgoing_failed", "refused")


def test_a_session_interval_under_our_minimum_is_refused_with_422() -> None:
    net = Net()
    net.register("1001", 1)
    Caller.dial(net, headers=[("Supported", "timer"), ("Session-Expires", "30")])
    too_small = net.expect(CARRIER, "422")
    assert too_small.headers.get("Min-SE") == "90"
    assert net.take(phone_peer(1)) == [] and not net.engine.calls


def test_a_phone_asking_for_a_longer_minimum_gets_the_invite_again_with_it() -> None:
    net = Net(session_expires=100)
    net.register("1001", 1)
    Caller.dial(net)
    phone = Phone.rung(net)
    assert phone.invite.headers.get("Session-Expires") == "100"
    phone.respond(422, headers=[("Min-SE", "300")])
    sent = net.take(phone.peer)
    assert sorted(_label(m) for m in sent) == ["ACK", "INVITE"]  # ACK for the 422, then again
    [retry] = [m for m in sent if _label(m) == "INVITE"]
    assert retry.headers.get("Session-Expires") == "300"
    assert retry.cseq.seq == phone.invite.cseq.seq + 1
