"""The gateway answering calls itself, through the call engine on a fake clock: the callback
IVR (closed, nobody available, nobody answering), keys by RFC 4733 and SIP INFO, the abuse
block, and phone-initiated hold with music.

The media process is outside this test: `Media` stands where the anchored media bridge is and
answers as it does (our SDP, prompts that end when the test says so)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

import pytest

from handlers.calls.call import AbuseBlock, CallbackCaptured, CommandRefused, Published
from handlers.calls.media import Side
from protocols.sip.dialog import Dialog
from protocols.sip.message import Request, Response
from tests.integration.test_calls_engine import (
    ANSWER,
    CARRIER,
    OFFER,
    Caller,
    Net,
    Phone,
    answered_call,
    phone_peer,
)

OUR_SDP = b"v=0\r\no=telgate 1 1 IN IP4 192.0.2.1\r\ns=telgate\r\nc=IN IP4 192.0.2.1\r\n" \
          b"t=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
HOLD = ANSWER.replace(b"m=audio 5000 RTP/AVP 0\r\n", b"m=audio 5000 RTP/AVP 0\r\na=sendonly\r\n")
RESUME = ANSWER.replace(b"m=audio 5000 RTP/AVP 0\r\n",
                        b"m=audio 5000 RTP/AVP 0\r\na=sendrecv\r\n")


@dataclasses.dataclass
class Played:
    side: Side
    prompt: str
    play_id: int
    loop: bool


class Bridge:
    """One call's media as the engine sees it: what it was asked to play, stop, hold."""

    def __init__(self) -> None:
        self.plays: list[Played] = []
        self.stops: list[Side] = []
        self.holds: list[tuple[str, Side]] = []
        self.answered_locally = False
        self.repointed: list[tuple[Side, bytes]] = []
        self.offered = b""

    def offer(self, source: Side, sdp: bytes) -> bytes:
        return sdp

    def answer(self, source: Side, sdp: bytes) -> bytes:
        return sdp

    def answered(self) -> None:
        return None

    def hold(self, side: Side) -> None:
        self.holds.append(("hold", side))

    def unhold(self, side: Side) -> None:
        self.holds.append(("unhold", side))

    def close(self) -> None:
        return None

    def can_play(self) -> bool:
        return True

    def anchored(self) -> bool:
        return True

    def repoint(self, side: Side, sdp: bytes) -> None:
        self.repointed.append((side, sdp))

    def local_answer(self, source: Side, offer: bytes) -> bytes | None:
        self.answered_locally = True
        return OUR_SDP

    def local_offer(self, side: Side) -> bytes | None:
        self.offered = OUR_SDP
        return OUR_SDP

    def play(self, side: Side, prompt: str, play_id: int, *, loop: bool = False) -> None:
        self.plays.append(Played(side, prompt, play_id, loop))

    def stop(self, side: Side) -> None:
        self.stops.append(side)


class Media:
    def __init__(self) -> None:
        self.bridges: dict[uuid.UUID, Bridge] = {}

    def __call__(self, call_id: uuid.UUID) -> Bridge:
        self.bridges[call_id] = Bridge()
        return self.bridges[call_id]


@dataclasses.dataclass
class Features:
    """A tenant's business hours (open or not, whatever the time) and callback triggers."""

    open: bool = True
    callback_on: frozenset[str] = frozenset({"closed", "no_agent", "no_answer"})
    asked: list[tuple[str | None, datetime]] = dataclasses.field(default_factory=list)

    def open_at(self, did: str | None, at: datetime) -> bool:
        self.asked.append((did, at))
        return self.open


class Ivr:
    """A trunk call and the engine's IVR, with a hand on the prompts' ends."""

    def __init__(self, *, features: Features, available: bool = True, **options: object) -> None:
        self.media = Media()
        self.features = features
        self.net = Net(media=self.media, features=lambda _t: features,
                       accepts_calls=lambda _t, _e: available, **options)

    @property
    def call_id(self) -> uuid.UUID:
        [call_id] = self.media.bridges
        return call_id

    @property
    def bridge(self) -> Bridge:
        return self.media.bridges[self.call_id]

    def heard(self) -> list[str]:
        return [p.prompt for p in self.bridge.plays]

    def finish_prompt(self) -> None:
        """The prompt playing now reaches its end."""
        last = self.bridge.plays[-1]
        self.net.engine.played(self.call_id, last.side, last.play_id, self.net.now)
        self.net._pump()

    def finish_prompts(self, until: str) -> None:
        for _ in range(40):
            if self.heard()[-1] == until:
                self.finish_prompt()
                return
            self.finish_prompt()
        raise AssertionError(f"{until} never played: {self.heard()}")

    def key(self, key: str) -> None:
        self.net.engine.digit(self.call_id, Side.A, key, self.net.now)
        self.net._pump()

    def callbacks(self) -> list[CallbackCaptured]:
        return [o for o in self.net.outputs if isinstance(o, CallbackCaptured)]


def answered_by_ivr(ivr: Ivr) -> Caller:
    caller = Caller.dial(ivr.net)
    ok = ivr.net.expect(CARRIER, "200")
    assert isinstance(ok, Response) and ok.body == OUR_SDP
    caller.answered(ok)
    return caller


def test_outside_business_hours_the_ivr_answers_and_a_request_lands_on_the_list() -> None:
    ivr = Ivr(features=Features(open=False))
    ivr.net.register("1001", 1)
    answered_by_ivr(ivr)
    assert ivr.net.take(phone_peer(1)) == []  # no agent was rung
    assert ivr.heard() == ["callback_closed"]
    ivr.finish_prompts(until="callback_menu")
    ivr.key("1")  # call me back on this number
    assert ivr.bridge.stops == []  # the menu had ended: nothing to cut
    ivr.finish_prompts(until="callback_confirm")
    assert ivr.heard()[2:] == ["callback_number_is", *[f"digit_{d}" for d in "01012345678"],
                               "callback_confirm"]
    ivr.key("1")
    [request] = ivr.callbacks()
    assert (request.number, request.caller, request.did, request.trigger) == \
        ("01012345678", "01012345678", "0212345678", "closed")
    assert ivr.heard()[-1] == "callback_saved"
    assert ivr.net.take(CARRIER) == []  # the thanks are heard to their end
    ivr.finish_prompt()
    ivr.net.expect(CARRIER, "BYE")
    record = ivr.net.record()
    assert (record.call_class, record.end_reason, record.hangup_by) == \
        ("missed", "callback_requested", "system")
    assert record.answered_at is None and record.talk_seconds == 0


def test_the_did_and_the_time_of_the_call_decide_whether_it_is_open() -> None:
    features = Features(open=False)
    ivr = Ivr(features=features)
    answered_by_ivr(ivr)
    [(did, at)] = features.asked
    assert did == "0212345678" and at.tzinfo is not None


def test_closed_without_the_callback_feature_rings_as_always() -> None:
    ivr = Ivr(features=Features(open=False, callback_on=frozenset()))
    ivr.net.register("1001", 1)
    Caller.dial(ivr.net)
    Phone.rung(ivr.net)
    assert ivr.bridge.plays == []


def test_every_agent_on_do_not_disturb_sends_the_caller_to_the_ivr() -> None:
    ivr = Ivr(features=Features(), available=False)
    ivr.net.register("1001", 1)
    answered_by_ivr(ivr)
    assert ivr.net.take(phone_peer(1)) == []
    assert ivr.heard() == ["callback_busy"]


def test_nobody_answering_in_time_sends_the_caller_to_the_ivr() -> None:
    ivr = Ivr(features=Features())
    ivr.net.register("1001", 1)
    Caller.dial(ivr.net)
    phone = Phone.rung(ivr.net)
    phone.respond(180)
    ivr.net.advance(60.1)  # (before our 200 is retransmitted)
    assert "CANCEL" in [m.method for m in ivr.net.take(phone.peer) if isinstance(m, Request)]
    ok = [m for m in ivr.net.take(CARRIER) if isinstance(m, Response) and m.status == 200]
    assert len(ok) == 1 and ok[0].body == OUR_SDP
    assert ivr.heard() == ["callback_busy"]
    [bridge] = ivr.media.bridges.values()
    assert bridge.answered_locally


def test_a_typed_number_by_sip_info_is_the_one_stored() -> None:
    ivr = Ivr(features=Features(open=False))
    caller = answered_by_ivr(ivr)
    for key in "0311112222#":
        caller.request("INFO", headers=[("Content-Type", "application/dtmf-relay")],
                       body=f"Signal={key}\r\nDuration=160\r\n".encode())
        ivr.net.expect(CARRIER, "200")
    assert ivr.bridge.stops == [Side.A]  # the first key cut the announcement
    caller.request("INFO", headers=[("Content-Type", "application/dtmf")], body=b"1")
    [request] = ivr.callbacks()
    assert request.number == "0311112222"


def test_the_caller_hanging_up_in_the_ivr_stores_nothing_and_says_so() -> None:
    ivr = Ivr(features=Features(open=False))
    caller = answered_by_ivr(ivr)
    ivr.finish_prompt()
    caller.request("BYE")
    ivr.net.expect(CARRIER, "200")
    assert ivr.callbacks() == []
    record = ivr.net.record()
    assert (record.call_class, record.end_reason, record.hangup_by) == \
        ("missed", "callback_ivr", "caller")


def test_no_key_at_all_ends_the_call_after_the_goodbye() -> None:
    ivr = Ivr(features=Features(open=False))
    answered_by_ivr(ivr)
    for _ in range(3):
        ivr.finish_prompts(until="callback_menu")
        ivr.net.advance(6.5)  # nothing pressed
    assert ivr.heard()[-1] == "callback_goodbye"
    ivr.finish_prompt()
    ivr.net.expect(CARRIER, "BYE")
    assert ivr.net.record().end_reason == "callback_ivr" and ivr.callbacks() == []


def test_a_caller_refreshing_its_session_in_the_ivr_gets_our_sdp_again() -> None:
    ivr = Ivr(features=Features(open=False))
    caller = answered_by_ivr(ivr)
    caller.request("INVITE", headers=[("Content-Type", "application/sdp")], body=OFFER)
    ok = ivr.net.expect(CARRIER, "200")
    assert isinstance(ok, Response) and ok.body == OUR_SDP


# -- abuse block ------------------------------------------------------------------------------


def anchored_call() -> tuple[Ivr, Caller, Phone]:
    ivr = Ivr(features=Features())
    caller, phone = answered_call(ivr.net)
    ivr.net.take(phone.peer)
    return ivr, caller, phone


def test_abuse_block_frees_the_agent_at_once_and_ends_after_the_warning() -> None:
    ivr, _caller, phone = anchored_call()
    ivr.net.engine.command(AbuseBlock(ivr.call_id), ivr.net.now)
    ivr.net._pump()
    ivr.net.expect(phone.peer, "BYE")
    assert [(p.side, p.prompt) for p in ivr.bridge.plays] == [(Side.A, "abuse_warning")]
    assert ivr.net.take(CARRIER) == []  # the customer hears the warning first
    ivr.net.engine.command(AbuseBlock(ivr.call_id), ivr.net.now)  # said twice: no harm
    ivr.finish_prompt()
    ivr.net.expect(CARRIER, "BYE")
    record = ivr.net.record()
    assert (record.call_class, record.end_reason, record.hangup_by) == \
        ("incoming", "abuse_blocked", "system")


def test_a_customer_hanging_up_during_the_warning_is_still_recorded_as_blocked() -> None:
    ivr, caller, _phone = anchored_call()
    ivr.net.engine.command(AbuseBlock(ivr.call_id), ivr.net.now)
    caller.request("BYE")
    assert ivr.net.record().end_reason == "abuse_blocked"


def test_a_warning_that_never_reports_its_end_still_ends_the_call() -> None:
    ivr, _caller, _phone = anchored_call()
    ivr.net.engine.command(AbuseBlock(ivr.call_id), ivr.net.now)
    ivr.net.advance(150.1)
    ivr.net.expect(CARRIER, "BYE")
    assert ivr.net.record().end_reason == "abuse_blocked"


def test_a_ringing_call_cannot_be_blocked() -> None:
    ivr = Ivr(features=Features(callback_on=frozenset()))
    ivr.net.register("1001", 1)
    Caller.dial(ivr.net)
    with pytest.raises(CommandRefused) as refused:
        ivr.net.engine.command(AbuseBlock(ivr.call_id), ivr.net.now)
    assert refused.value.code == "call_not_answered"


# -- hold -------------------------------------------------------------------------------------


def carrier_accepts_reinvite(ivr: Ivr, caller: Caller) -> None:
    reinvite = ivr.net.expect(CARRIER, "INVITE")
    assert isinstance(reinvite, Request) and caller.dialog is not None
    ivr.net.send(caller.dialog.create_response(
        reinvite, 200, headers=[("Content-Type", "application/sdp")], body=OFFER), CARRIER)


def test_a_phone_putting_the_caller_on_hold_plays_music_to_the_caller() -> None:
    ivr, caller, phone = anchored_call()
    phone.request("INVITE", body=HOLD)
    carrier_accepts_reinvite(ivr, caller)
    assert ivr.bridge.holds == [("hold", Side.A)]
    held = [o.event for o in ivr.net.outputs if isinstance(o, Published)
            and o.event.type == "call.held"]
    assert [e.data["held"] for e in held] == [True]
    phone.request("INVITE", body=RESUME)
    carrier_accepts_reinvite(ivr, caller)
    assert ivr.bridge.holds == [("hold", Side.A), ("unhold", Side.A)]


def test_the_api_holds_the_caller_with_a_sendonly_reinvite_and_music() -> None:
    from handlers.calls.call import Hold

    ivr, caller, phone = anchored_call()
    ivr.net.take(CARRIER)
    ivr.net.engine.command(Hold(ivr.call_id, Side.A), ivr.net.now)
    ivr.net._pump()
    reinvite = ivr.net.expect(CARRIER, "INVITE")
    assert isinstance(reinvite, Request) and b"a=sendonly" in reinvite.body
    assert ivr.bridge.holds == [("hold", Side.A)]
    # A phone's own re-INVITE crossing ours waits its turn (491).
    phone.request("INVITE", body=HOLD)
    ivr.net.expect(phone.peer, "491")
    assert caller.dialog is not None
    ivr.net.send(caller.dialog.create_response(
        reinvite, 200, headers=[("Content-Type", "application/sdp")], body=OFFER), CARRIER)
    ivr.net.expect(CARRIER, "ACK")
    ivr.net.engine.command(Hold(ivr.call_id, Side.A), ivr.net.now)  # already held: nothing
    ivr.net._pump()
    assert ivr.net.take(CARRIER) == []
    ivr.net.engine.command(Hold(ivr.call_id, Side.A, held=False), ivr.net.now)
    ivr.net._pump()
    resume = ivr.net.expect(CARRIER, "INVITE")
    assert isinstance(resume, Request) and b"a=sendrecv" in resume.body
    assert ivr.bridge.holds == [("hold", Side.A), ("unhold", Side.A)]
    held = [o.event.data for o in ivr.net.outputs if isinstance(o, Published)
            and o.event.type == "call.held"]
    assert [(d["held"], d["side"], d["by"]) for d in held] == [(True, "a", "api"),
                                                               (False, "a", "api")]


# -- blind transfer ---------------------------------------------------------------------------


def test_a_blind_transfer_frees_the_agent_and_connects_the_caller_to_the_new_extension() -> None:
    from handlers.calls.call import Transfer

    ivr, caller, phone = anchored_call()
    ivr.net.register("1002", 2)
    ivr.net.take(CARRIER)
    ivr.net.engine.command(Transfer(ivr.call_id, "1002"), ivr.net.now)
    ivr.net._pump()
    ivr.net.expect(phone.peer, "BYE")  # the agent is free at once
    assert ivr.bridge.holds == [("hold", Side.A)]  # music while 1002 rings
    second = Phone.rung(ivr.net, 2)
    assert second.invite.body  # our offer, for the caller's media
    second.respond(180)
    ivr.net.take(CARRIER)
    second.respond(200, sdp=ANSWER)
    ivr.net.expect(second.peer, "ACK")
    assert ivr.bridge.holds == [("hold", Side.A), ("unhold", Side.A)]
    assert ivr.bridge.repointed == [(Side.B, ANSWER)]  # the B side latches on the new phone
    assert ivr.net.take(CARRIER) == []  # the caller was never re-INVITEd: same media session
    moved = [o.event.data for o in ivr.net.outputs if isinstance(o, Published)
             and o.event.type == "call.transferred"]
    assert moved == [{"from": "1001", "to": "1002", "extension": "1002", "attended": False}]
    caller.request("BYE")
    ivr.net.expect(second.peer, "BYE")
    record = ivr.net.record()
    assert (record.extension, record.end_reason, record.call_class) == \
        ("1002", "normal", "incoming")


def test_a_transfer_nobody_answers_ends_the_call_with_its_reason() -> None:
    from handlers.calls.call import Transfer

    ivr, _caller, _phone = anchored_call()
    ivr.net.register("1002", 2)
    ivr.net.engine.command(Transfer(ivr.call_id, "1002"), ivr.net.now)
    ivr.net._pump()
    second = Phone.rung(ivr.net, 2)
    second.respond(180)
    ivr.net.advance(30.1)
    assert "CANCEL" in [m.method for m in ivr.net.take(second.peer) if isinstance(m, Request)]
    ivr.net.expect(CARRIER, "BYE")
    assert ivr.net.record().end_reason == "transfer_failed"


def test_a_transfer_to_an_extension_nobody_can_answer_is_refused_and_the_call_stays() -> None:
    from handlers.calls.call import Transfer

    ivr, _caller, phone = anchored_call()
    with pytest.raises(CommandRefused) as refused:
        ivr.net.engine.command(Transfer(ivr.call_id, "1009"), ivr.net.now)
    assert refused.value.code == "transfer_target_unavailable"
    ivr.net._pump()
    assert ivr.net.take(phone.peer) == [] and ivr.net.records == []


def test_the_caller_hanging_up_while_the_transfer_rings_cancels_it() -> None:
    from handlers.calls.call import Transfer

    ivr, caller, _phone = anchored_call()
    ivr.net.register("1002", 2)
    ivr.net.engine.command(Transfer(ivr.call_id, "1002"), ivr.net.now)
    ivr.net._pump()
    second = Phone.rung(ivr.net, 2)
    second.respond(180)
    caller.request("BYE")
    assert "CANCEL" in [m.method for m in ivr.net.take(second.peer) if isinstance(m, Request)]
    assert ivr.net.record().end_reason == "normal"


def test_a_phone_transferring_by_refer_gets_202_a_notify_and_its_caller_moves_on() -> None:
    ivr, _caller, phone = anchored_call()
    ivr.net.register("1002", 2)
    request = phone.dialog.create_request("REFER", branch="z9hG4bK-refer-1",
                                          headers=[("Refer-To", "<sip:1002@192.0.2.1>")])
    ivr.net.send(request, phone.peer)
    got = ivr.net.take(phone.peer)
    labels = [m.status if isinstance(m, Response) else m.method for m in got]
    assert labels[:3] == [202, "NOTIFY", "BYE"], labels
    notify = got[1]
    assert isinstance(notify, Request) and notify.body.startswith(b"SIP/2.0 200")
    assert notify.headers.get("Subscription-State", "").startswith("terminated")
    second = Phone.rung(ivr.net, 2)
    second.respond(200, sdp=ANSWER)
    moved = [o.event.data for o in ivr.net.outputs if isinstance(o, Published)
             and o.event.type == "call.transferred"]
    assert moved == [{"from": "1001", "to": "1002", "extension": "1002", "attended": False}]


def test_a_refer_to_an_unavailable_extension_is_refused_and_the_call_stays() -> None:
    ivr, _caller, phone = anchored_call()
    request = phone.dialog.create_request("REFER", branch="z9hG4bK-refer-2",
                                          headers=[("Refer-To", "<sip:1009@192.0.2.1>")])
    ivr.net.send(request, phone.peer)
    ivr.net.expect(phone.peer, "480")
    assert ivr.net.records == []


# -- click-to-call ----------------------------------------------------------------------------


def click_to_call(ivr: Ivr) -> uuid.UUID:
    from handlers.calls.call import Originate

    ivr.net.register("1001", 1)
    call_id = uuid.uuid4()
    ivr.net.engine.originate(Originate(call_id, ivr.net.engine.tenants["acme"], "1001",
                                       "01099998888", "0215550000"), ivr.net.now)
    ivr.net._pump()
    return call_id


def test_click_to_call_rings_the_agent_first_then_the_customer_and_both_talk() -> None:
    ivr = Ivr(features=Features())
    call_id = click_to_call(ivr)
    assert ivr.net.take(CARRIER) == []  # nothing towards the customer yet
    agent = Phone.rung(ivr.net, 1)
    assert agent.invite.body == ivr.media.bridges[call_id].offered  # our own offer
    agent.respond(180)
    agent.respond(200, sdp=ANSWER)
    ivr.net.expect(agent.peer, "ACK")
    customer = ivr.net.expect(CARRIER, "INVITE")
    assert isinstance(customer, Request)
    assert customer.uri.user == "01099998888" and customer.from_.uri.user == "0215550000"
    assert customer.body == ANSWER  # the agent's media, offered through our (here: no) anchor
    from protocols.sip.dialog import Dialog
    dialog = Dialog.from_uas_request(customer, local_tag="cust", local_contact="<sip:c@x>",
                                     via_transport="UDP", via_sent_by="192.0.2.10:5060")
    ivr.net.send(dialog.create_response(customer, 180), CARRIER)
    ringing = [o.event for o in ivr.net.outputs if isinstance(o, Published)
               and o.event.type == "call.ringing"]
    assert len(ringing) == 1 and ringing[0].data["click_to_call"] is True
    ivr.net.send(dialog.create_response(customer, 200, headers=[
        ("Content-Type", "application/sdp")], body=OFFER), CARRIER)
    ivr.net.expect(CARRIER, "ACK")
    assert ivr.net.engine.calls[call_id].state.value == "answered"
    dialog.confirm()
    ivr.net.send(dialog.create_request("BYE", branch="z9hG4bK-c2c-bye"), CARRIER)
    ivr.net.expect(agent.peer, "BYE")
    record = ivr.net.record()
    assert (record.direction, record.call_class, record.caller, record.callee,
            record.extension) == ("outgoing", "outgoing", "0215550000", "01099998888", "1001")


def test_a_customer_who_does_not_answer_releases_the_waiting_agent() -> None:
    ivr = Ivr(features=Features())
    click_to_call(ivr)
    agent = Phone.rung(ivr.net, 1)
    agent.respond(200, sdp=ANSWER)
    customer = ivr.net.expect(CARRIER, "INVITE")
    assert isinstance(customer, Request)
    from protocols.sip.dialog import Dialog
    dialog = Dialog.from_uas_request(customer, local_tag="cust", local_contact="<sip:c@x>",
                                     via_transport="UDP", via_sent_by="192.0.2.10:5060")
    ivr.net.send(dialog.create_response(customer, 486), CARRIER)
    assert "BYE" in [m.method for m in ivr.net.take(agent.peer) if isinstance(m, Request)]
    assert ivr.net.record().call_class == "outgoing_failed"


def test_an_agent_who_does_not_answer_ends_the_click_to_call_before_any_customer_call() -> None:
    ivr = Ivr(features=Features())
    click_to_call(ivr)
    agent = Phone.rung(ivr.net, 1)
    agent.respond(180)
    ivr.net.advance(30.1)
    assert "CANCEL" in [m.method for m in ivr.net.take(agent.peer) if isinstance(m, Request)]
    assert [m for m in ivr.net.take(CARRIER) if isinstance(m, Request)
            and m.method == "INVITE"] == []
    assert ivr.net.record().call_class == "outgoing_failed"


def test_click_to_call_to_an_agent_on_dnd_is_refused() -> None:
    from handlers.calls.call import Originate

    ivr = Ivr(features=Features(), available=False)
    ivr.net.register("1001", 1)
    with pytest.raises(CommandRefused) as refused:
        ivr.net.engine.originate(Originate(uuid.uuid4(), ivr.net.engine.tenants["acme"],
                                           "1001", "01099998888", "0215550000"), ivr.net.now)
    assert refused.value.code == "agent_unavailable"


# -- pickup -----------------------------------------------------------------------------------


def test_a_call_ringing_at_one_agent_is_picked_up_by_another() -> None:
    from handlers.calls.call import Pickup

    ivr = Ivr(features=Features(callback_on=frozenset()))
    ivr.net.register("1001", 1)
    ivr.net.register("1002", 2)
    Caller.dial(ivr.net)
    first = Phone.rung(ivr.net, 1)
    first.respond(180)
    ivr.net.engine.command(Pickup(ivr.call_id, "1002"), ivr.net.now)
    ivr.net._pump()
    cancel = [m for m in ivr.net.take(first.peer) if isinstance(m, Request)]
    assert [m.method for m in cancel] == ["CANCEL"]
    first.respond(487)
    second = Phone.rung(ivr.net, 2)
    second.respond(200, sdp=ANSWER)
    ok = [m for m in ivr.net.take(CARRIER) if isinstance(m, Response) and m.status == 200]
    assert len(ok) == 1 and ok[0].body == ANSWER
    assert ivr.net.engine.calls[ivr.call_id].extension == "1002"


def test_an_answered_call_cannot_be_picked_up() -> None:
    from handlers.calls.call import Pickup

    ivr, _caller, _phone = anchored_call()
    ivr.net.register("1002", 2)
    with pytest.raises(CommandRefused) as refused:
        ivr.net.engine.command(Pickup(ivr.call_id, "1002"), ivr.net.now)
    assert refused.value.code == "call_not_ringing"


# -- attended transfer ------------------------------------------------------------------------


def consultation(ivr: Ivr) -> tuple[uuid.UUID, uuid.UUID, Phone, Dialog]:
    """The agent (1001, in a call with the caller) calls 1002 from the same phone, and 1002
    answers: (the call's id, the consultation's id, 1002's phone, the agent's consult dialog)."""
    from datetime import UTC, datetime

    from handlers.calls.call import Authenticate
    from handlers.calls.extensions import Extension
    from protocols.sip.headers import NameAddr
    from protocols.sip.message import make_request
    from protocols.sip.uri import URI
    from tests.integration.test_calls_engine import GATEWAY, IDS, TENANT

    [first] = list(ivr.net.engine.calls)
    ivr.net.register("1002", 2)
    agent = phone_peer(1)
    uri = URI("sip", user="1002", host=GATEWAY)
    invite = make_request(
        "INVITE", uri, via=f"SIP/2.0/UDP {agent.host}:5060;branch={IDS.branch()}",
        from_=NameAddr(URI("sip", user="1001", host=GATEWAY), params=(("tag", IDS.tag()),)),
        to=NameAddr(uri), call_id=IDS.call_id(), cseq=1, contact=f"<sip:1001@{agent.host}>",
        headers=[("Content-Type", "application/sdp")], body=ANSWER)
    ivr.net.send(invite, agent)
    [pending] = [o for o in ivr.net.outputs if isinstance(o, Authenticate)]
    now = datetime.now(UTC)
    ext = Extension(TENANT, "1001", "", "telgate", "", "", "0215559999", None, False, now, now)
    ivr.net.engine.admitted(pending, ext, ivr.net.now)
    ivr.net._pump()
    colleague = Phone.rung(ivr.net, 2)
    colleague.respond(200, sdp=ANSWER)
    ok = [m for m in ivr.net.take(agent) if isinstance(m, Response) and m.status == 200]
    dialog = Dialog.from_uac_response(invite, ok[-1])
    ivr.net.send(dialog.create_ack(1, branch=IDS.branch()), agent)
    [second] = [c for c in ivr.net.engine.calls if c != first]
    return first, second, colleague, dialog


def test_an_attended_transfer_joins_the_caller_with_the_consulted_colleague() -> None:
    from handlers.calls.call import CompleteTransfer

    ivr, caller, phone = anchored_call()
    phone.request("INVITE", body=HOLD)  # the agent holds the caller, then consults
    carrier_accepts_reinvite(ivr, caller)
    first, second, colleague, _dialog = consultation(ivr)
    ivr.net.take(phone.peer)
    ivr.net.engine.command(CompleteTransfer(first, second), ivr.net.now)
    ivr.net._pump()
    reinvite = ivr.net.expect(colleague.peer, "INVITE")  # into the caller's media session
    assert isinstance(reinvite, Request) and b"a=sendrecv" in reinvite.body
    colleague.respond(200, sdp=ANSWER, to=reinvite)
    byes = [m for m in ivr.net.take(phone.peer) if isinstance(m, Request) and m.method == "BYE"]
    assert len(byes) == 2  # the agent leaves the call and the consultation
    resume = ivr.net.expect(CARRIER, "INVITE")  # the caller is taken off hold
    assert isinstance(resume, Request) and b"a=sendrecv" in resume.body
    bridge = ivr.media.bridges[first]
    assert bridge.repointed == [(Side.B, ANSWER)]
    moved = [o.event.data for o in ivr.net.outputs if isinstance(o, Published)
             and o.event.type == "call.transferred"]
    assert moved == [{"from": "1001", "to": "1002", "extension": "1002", "attended": True}]
    [consulted] = ivr.net.records
    assert (consulted.end_reason, consulted.internal) == ("transferred", True)
    assert ivr.net.engine.calls[first].extension == "1002"


def test_a_phone_completes_an_attended_transfer_with_refer_replaces() -> None:
    ivr, _caller, phone = anchored_call()
    first, second, colleague, dialog = consultation(ivr)
    ivr.net.take(phone.peer)
    # The agent's phone names its consultation dialog (call-id, to-tag: ours, from-tag: its).
    replaces = f"{dialog.call_id}%3Bto-tag%3D{dialog.remote_tag}%3Bfrom-tag%3D{dialog.local_tag}"
    request = phone.dialog.create_request(
        "REFER", branch="z9hG4bK-refer-att",
        headers=[("Refer-To", f"<sip:1002@192.0.2.1?Replaces={replaces}>")])
    ivr.net.send(request, phone.peer)
    got = [m.status if isinstance(m, Response) else m.method for m in ivr.net.take(phone.peer)]
    assert got[:2] == [202, "NOTIFY"], got
    reinvite = ivr.net.expect(colleague.peer, "INVITE")
    assert isinstance(reinvite, Request)
    colleague.respond(200, sdp=ANSWER, to=reinvite)
    assert ivr.net.engine.calls[first].extension == "1002" and second not in ivr.net.engine.calls


def test_completing_a_transfer_with_an_unrelated_call_is_refused() -> None:
    from handlers.calls.call import CompleteTransfer

    ivr, _caller, _phone = anchored_call()
    with pytest.raises(CommandRefused) as refused:
        ivr.net.engine.command(CompleteTransfer(ivr.call_id, ivr.call_id), ivr.net.now)
    assert refused.value.code == "not_a_consultation"


def test_a_blind_transfer_to_an_outside_number_goes_out_through_the_trunk() -> None:
    from handlers.calls.call import Transfer

    ivr, _caller, phone = anchored_call()
    ivr.net.engine.may_send = lambda _t, number: number == "0212345678"  # the DID: registered
    ivr.net.take(CARRIER)
    ivr.net.engine.command(Transfer(ivr.call_id, "01077778888"), ivr.net.now)
    ivr.net._pump()
    ivr.net.expect(phone.peer, "BYE")
    out = ivr.net.expect(CARRIER, "INVITE")
    assert isinstance(out, Request)
    assert (out.uri.user, out.from_.uri.user) == ("01077778888", "0212345678")
    from protocols.sip.dialog import Dialog as UasDialog
    dialog = UasDialog.from_uas_request(out, local_tag="far", local_contact="<sip:f@x>",
                                        via_transport="UDP", via_sent_by="192.0.2.10:5060")
    ivr.net.send(dialog.create_response(out, 200, headers=[("Content-Type", "application/sdp")],
                                        body=ANSWER), CARRIER)
    moved = [o.event.data for o in ivr.net.outputs if isinstance(o, Published)
             and o.event.type == "call.transferred"]
    assert moved == [{"from": "1001", "to": "01077778888", "extension": None,
                      "attended": False}]


def test_a_transfer_out_needs_the_did_registered_to_present_it() -> None:
    from handlers.calls.call import Transfer

    ivr, _caller, _phone = anchored_call()
    with pytest.raises(CommandRefused) as refused:
        ivr.net.engine.command(Transfer(ivr.call_id, "01077778888"), ivr.net.now)
    assert refused.value.code == "sender_not_registered"
