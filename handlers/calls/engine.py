"""The call engine: the B2BUA as a sans-I/O state machine over a SIP transaction layer.

It is the transaction user of a `TransactionLayer`: `handle_event(event, now)` takes the
layer's events, commands (`command(cmd, now)`) come from the control API and IVRs, and
`handle_timer(now)` runs its own timers (ring times, session timers, maximum duration) when
`get_timer()` says. What it does shows up as SIP messages queued in the layer, media
commands on each call's `MediaBridge`, and `next_output()` items: call records, call events
and requests for the driver's database work (authenticating a phone, resolving a tenant).
It never imports asyncio, never reads a clock and never touches SQL.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

import structlog

from config.sip import DidConfig, SipConfig, TrunkConfig
from handlers import numbers
from handlers.calls import routing
from handlers.calls import session_timer as st
from handlers.calls.call import (
    FINAL_SEEN,
    LIVE_ATTEMPT,
    AbuseBlock,
    Answer,
    Authenticate,
    Call,
    CallbackCaptured,
    CallState,
    Command,
    CommandRefused,
    CompleteTransfer,
    Hangup,
    Hold,
    Leg,
    LegState,
    Originate,
    Output,
    Pickup,
    Published,
    RecordReady,
    Relay,
    ResolveTenants,
    Transfer,
)
from handlers.calls.cdr import BUSY_STATUSES, CallRecord, Direction, EndReason, HangupBy, classify
from handlers.calls.events import CallEvent
from handlers.calls.extensions import Extension
from handlers.calls.media import MediaFactory, Side, pass_through
from handlers.calls.registrar import Registrar
from handlers.calls.routing import Refusal, RingPlan, Target
from handlers.calls.trunks import TrunkGate
from handlers.ivr import flow as ivr
from handlers.ivr.callback_flow import CALLBACK
from handlers.media.sdp import SdpError, with_direction
from handlers.media.sdp import direction as sdp_direction
from protocols.sip.auth import DigestClient
from protocols.sip.dialog import Dialog, DialogState
from protocols.sip.errors import SipSyntaxError
from protocols.sip.headers import NameAddr
from protocols.sip.message import (
    IdGenerator,
    Message,
    Request,
    Response,
    make_request,
    make_response,
)
from protocols.sip.transaction import (
    AckReceived,
    AckTimedOut,
    CancelReceived,
    ClientTransaction,
    Event,
    InviteClientTransaction,
    InviteServerTransaction,
    Peer,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    Transaction,
    TransactionLayer,
    TransactionTimedOut,
    TransportFailed,
)
from protocols.sip.uri import URI

log = structlog.get_logger("telgate.calls")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, REGISTER"
SDP = "application/sdp"
# Requests relayed to the other leg as they are, answered with the other leg's answer.
_RELAYED = frozenset({"UPDATE", "INFO", "MESSAGE", "NOTIFY", "OPTIONS"})
_RELAYED_HEADERS = ("Content-Type", "Event", "Subscription-State", "Info-Package")
ResponseCallback = Callable[[Response | None], None]
GLARE_RETRY_SECONDS = 2.0  # a refresh that met 491 is tried again this much later
IVR_MAX_SECONDS = 300.0  # a call in the callback IVR is ended after this long, whatever
AGENT_RING_SECONDS = 30.0  # click-to-call: how long the agent's phone rings first
PICKUP_GROUP = "*8"  # feature code: pick up the oldest call ringing at another extension
PICKUP_DIRECTED = "**"  # **1001: pick up the call ringing at extension 1001
WARNING_MAX_SECONDS = 150.0  # the abuse warning (≤ 120 s) has ended by then, played or not
HOLD_MUSIC = "hold_music"
ABUSE_WARNING = "abuse_warning"
_DTMF_INFO = frozenset({"application/dtmf-relay", "application/dtmf"})


class CallFeatures(Protocol):
    """A tenant's business hours and which situations send callers to the callback IVR
    (handlers/ivr/hours.py)."""

    @property
    def callback_on(self) -> frozenset[str]: ...

    def open_at(self, did: str | None, at: datetime) -> bool: ...


class CallEngine:
    """Routes and bridges calls; see the module docstring for inputs and outputs."""

    def __init__(
        self,
        layer: TransactionLayer,
        config: SipConfig,
        *,
        registrar: Registrar,
        trunks: TrunkGate,
        tenants: Mapping[str, uuid.UUID],
        may_send: Callable[[uuid.UUID, str], bool],
        max_call_seconds: Callable[[uuid.UUID], float | None] = lambda _t: None,
        features: Callable[[uuid.UUID], CallFeatures | None] = lambda _t: None,
        accepts_calls: Callable[[uuid.UUID, str], bool] = lambda _t, _e: True,
        media: MediaFactory = pass_through,
        ids: IdGenerator | None = None,
        epoch: float = 0.0,
    ) -> None:
        self.layer = layer
        self.config = config
        self.registrar = registrar
        self.trunks = trunks
        self.tenants = tenants  # configured tenant names -> ids (the driver fills it)
        self.may_send = may_send
        self.max_call_seconds = max_call_seconds
        self.features = features  # business hours and callback triggers per tenant
        self.accepts_calls = accepts_calls  # presence: offline and DND extensions are skipped
        self.media = media
        self.ids = ids or IdGenerator()
        self.epoch = epoch  # wall-clock seconds at engine time 0, for the records
        self.host = config.advertised_host
        self.port = config.port
        self.dids: dict[str, DidConfig] = {d.number: d for d in config.dids}
        self.monitor = routing.TrunkMonitor()
        self.calls: dict[uuid.UUID, Call] = {}
        self._legs: dict[tuple[str, str], Leg] = {}  # (Call-ID, our tag) -> leg
        self._invites: dict[Transaction, Leg] = {}  # INVITE transactions of legs
        self._callbacks: dict[Transaction, ResponseCallback] = {}
        self._heap: list[tuple[float, int, Call, str]] = []
        self._seq = itertools.count()
        self._out: deque[Output] = deque()
        self._now = 0.0

    # -- outputs ----------------------------------------------------------------------------

    def next_output(self) -> Output | None:
        """Pop the next record, event or database request, or None."""
        return self._out.popleft() if self._out else None

    def get_timer(self) -> float | None:
        """When `handle_timer` should next run, or None."""
        heap = self._heap
        while heap:
            deadline, _, call, name = heap[0]
            if call.timers.get(name) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        """Fire the call timers due at `now`."""
        self._now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, call, name = heapq.heappop(heap)
            if call.timers.get(name) != deadline:
                continue
            del call.timers[name]
            self._fire(call, name)

    # -- inputs -----------------------------------------------------------------------------

    def handle_event(self, event: Event, now: float) -> None:
        """One transaction-layer event."""
        self._now = now
        try:
            self._dispatch(event)
        except SipSyntaxError as exc:
            log.info("sip_event_unusable", error=str(exc))

    def command(self, command: Command, now: float) -> None:
        """Carry out a command on a live call; CommandRefused when it cannot be."""
        self._now = now
        call = self.calls.get(command.call_id)
        if call is None:
            raise CommandRefused("call_not_found", "no such call in progress")
        if isinstance(command, Hangup):
            self._terminate(call, HangupBy.SYSTEM, command.reason)
        elif isinstance(command, Answer):
            self._answer_locally(call, command.sdp)
        elif isinstance(command, AbuseBlock):
            self._abuse_block(call)
        elif isinstance(command, Hold):
            self._hold(call, command.side, command.held)
        elif isinstance(command, Transfer):
            self._transfer(call, command.extension)
        elif isinstance(command, Pickup):
            self._pickup(call, command.extension)
        elif isinstance(command, CompleteTransfer):
            consult = self.calls.get(command.consult_id)
            if consult is None or consult.tenant_id != call.tenant_id:
                raise CommandRefused("call_not_found", "no such consultation call")
            self._attended(call, consult)
        else:
            # Hold, transfer and the media commands need the media process (next issues).
            raise CommandRefused("not_supported", f"{type(command).__name__} is not available")

    def originate(self, command: Originate, now: float) -> Call:
        """Click-to-call (seed 002 §5, §19-6): ring the agent's phones with our own offer; when
        the agent answers, call the number through the trunk presenting `caller_id`."""
        self._now = now
        tenant = command.tenant_id
        targets = self._targets(tenant, command.extension)
        if not targets:
            raise CommandRefused("agent_unavailable", f"extension {command.extension} is "
                                 "offline, on do-not-disturb or not registered")
        trunk = routing.choose_trunk(self.config.trunks, self.tenants, tenant,
                                     self.monitor.down)
        if trunk is None:
            raise CommandRefused("no_trunk", "no trunk to call out through")
        call = Call(command.call_id, tenant, Direction.OUTGOING, command.caller_id,
                    command.number, self.media(command.call_id), now)
        offer = call.media.local_offer(Side.A)
        if offer is None:
            call.media.close()
            raise CommandRefused("media_not_anchored",
                                 "click-to-call needs the media anchored in the gateway")
        self.calls[call.id] = call
        call.originated = True
        call.extension, call.trunk = command.extension, trunk
        for target in targets:
            self._invite_agent(call, target, offer)
        self._set_timer(call, "agent_ring", AGENT_RING_SECONDS)
        log.info("call_originate", call=str(call.id), tenant=str(tenant),
                 extension=command.extension, callee=numbers.mask(command.number))
        return call

    def _invite_agent(self, call: Call, target: Target, offer: bytes) -> None:
        transport = target.peer.transport
        tag = self.ids.tag()
        call_id = self.ids.call_id(self.host)
        # The agent's phone shows the number it is about to be connected to.
        from_uri = URI("sip", user=call.callee, host=self.host)
        to_uri = URI("sip", user=target.extension or "", host=self.host)
        request = make_request(
            "INVITE", target.uri, via=self._via(transport), from_=NameAddr(from_uri, params=(
                ("tag", tag),)), to=NameAddr(to_uri), call_id=call_id, cseq=1,
            contact=self._contact(transport),
            headers=[("Allow", ALLOW), ("Content-Type", SDP)], body=offer)
        leg = Leg(call, Side.A, target.peer, request, tag, LegState.CALLING,
                  extension=target.extension, last_sdp=offer)
        self._legs[(call_id, tag)] = leg
        call.attempts.append(leg)
        self._send_invite(leg, request)

    def _agent_answered(self, call: Call, leg: Leg, response: Response, crossed: bool) -> None:
        """The agent's phone answered a click-to-call: now the customer is called."""
        self._ack(leg, response.cseq.seq, b"", None)
        if crossed or call.a is not None or call.state is CallState.ENDED:
            self._bye(leg)  # another of the agent's phones was first, or it was called off
            self._forget_leg(leg)
            return
        call.timers.pop("agent_ring", None)
        self._cancel_attempts(call, keep=leg)
        call.attempts = []
        call.failures = []
        call.a = leg
        if leg.extension:
            call.extension = leg.extension
        if response.body:
            leg.received_sdp = response.body
            call.media.answer(Side.A, response.body)  # where the agent's phone listens
        assert call.trunk is not None
        log.info("call_originate_agent_answered", call=str(call.id), extension=call.extension)
        self._start_ringing(call, routing.outgoing_plan(call.trunk, call.callee))

    def _originate_answered(self, call: Call, leg: Leg, response: Response) -> None:
        """The customer answered a click-to-call: both talk through our media."""
        self._ack(leg, response.cseq.seq, b"", None)
        call.b = leg
        call.move(CallState.ANSWERED)
        call.answered = self._now
        for name in [n for n in call.timers if n == "no_answer" or n.startswith("stage:")]:
            del call.timers[name]
        self._cancel_attempts(call, keep=leg)
        call.attempts = [leg]
        if response.body:
            leg.received_sdp = response.body
            call.media.answer(Side.B, response.body)
        call.media.answered()
        limit = self.max_call_seconds(call.tenant_id)
        if limit:
            self._set_timer(call, "max_duration", limit)
        log.info("call_answered", call=str(call.id), extension=call.extension)
        self._publish(call, "call.answered", {"extension": call.extension})

    def live(self, tenant: uuid.UUID) -> list[Call]:
        """The tenant's calls in progress, oldest first."""
        return sorted((c for c in self.calls.values() if c.tenant_id == tenant),
                      key=lambda c: (c.started, c.id))

    def wall(self, at: float) -> datetime:
        """The UTC time of engine time `at`."""
        return self._wall(at)

    def digit(self, call_id: uuid.UUID, side: Side, key: str, now: float) -> None:
        """A DTMF key from `side` of a call (RFC 4733 through the media process)."""
        self._now = now
        call = self.calls.get(call_id)
        if call is not None and call.ivr is not None and side is Side.A:
            call.ivr.digit(key, now)
            self._run_ivr(call)

    def played(self, call_id: uuid.UUID, side: Side, play_id: int, now: float) -> None:
        """A prompt the engine asked for finished playing to `side`."""
        self._now = now
        call = self.calls.get(call_id)
        if call is None:
            return
        if call.blocking:
            self._hangup(call, HangupBy.SYSTEM, EndReason.ABUSE_BLOCKED)
        elif call.ivr is not None:
            call.ivr.played(play_id, now)
            self._run_ivr(call)

    def admitted(self, pending: Authenticate, extension: Extension, now: float) -> None:
        """An extension's INVITE passed digest: route it (internal or outgoing)."""
        self._now = now
        txn = pending.transaction
        if not isinstance(txn, InviteServerTransaction) or txn.state is not State.PROCEEDING:
            return  # answered meanwhile (CANCEL)
        request = pending.request
        code = request.uri.user or ""
        if code == PICKUP_GROUP or (code.startswith(PICKUP_DIRECTED)
                                    and code[len(PICKUP_DIRECTED):].isdigit()):
            self._pickup_code(request, pending.peer, txn, extension,
                              code[len(PICKUP_DIRECTED):] if code != PICKUP_GROUP else None)
            return
        dialled = routing.dialled_digits(request.uri.user) or ""
        if routing.is_internal(dialled):
            self._internal(request, pending.peer, txn, extension, dialled)
        else:
            self._outgoing(request, pending.peer, txn, extension, dialled)

    def trunk_invite(self, request: Request, peer: Peer, txn: InviteServerTransaction,
                     trunk: TrunkConfig, now: float, *, resolved: bool = False) -> None:
        """A carrier's INVITE (already authenticated as `trunk`): route it by DID."""
        self._now = now
        if txn.state is not State.PROCEEDING:
            return
        dialled = routing.dialled_digits(request.uri.user) or \
            routing.dialled_digits(request.to.uri.user)
        route = routing.route_did(self.dids, self.tenants, dialled)
        if isinstance(route, DidConfig):
            if not resolved:
                self._out.append(ResolveTenants(request, peer, txn, trunk))
                return
            route = Refusal(404)
        if isinstance(route, Refusal):
            txn.respond(make_response(request, route.status, to_tag=self.ids.tag()), now)
            return
        did, tenant = route
        caller = routing.dialled_digits(request.from_.uri.user) or "anonymous"
        call = self._new_call(tenant, Direction.INCOMING, caller, dialled or "")
        call.did, call.trunk = did.number, trunk
        if self._a_leg(call, request, peer, txn) is None:
            return
        features = self.features(tenant)
        if features is not None and "closed" in features.callback_on and \
                not features.open_at(did.number, self._wall()):
            log.info("call_incoming_closed", call=str(call.id), tenant=str(tenant),
                     caller=numbers.mask(caller), did=numbers.mask(did.number))
            if self._start_ivr(call, "closed"):
                return
        plan = routing.did_plan(did, lambda ext: self._targets(tenant, ext))
        log.info("call_incoming", call=str(call.id), tenant=str(tenant),
                 caller=numbers.mask(caller), did=numbers.mask(did.number),
                 targets=sum(len(s) for s in plan.stages))
        self._start_ringing(call, plan)

    def probe_trunks(self, now: float) -> None:
        """Send OPTIONS to every trunk we call out through; the monitor tracks answers."""
        self._now = now
        for trunk in self.config.trunks:
            if not trunk.host:
                continue
            transport = trunk.transport.upper()
            uri = URI("sip", host=trunk.host, port=trunk.port)
            me = URI("sip", user="telgate", host=self.host)
            request = make_request(
                "OPTIONS", uri, via=self._via(transport),
                from_=NameAddr(me, params=(("tag", self.ids.tag()),)), to=NameAddr(uri),
                call_id=self.ids.call_id(self.host), cseq=1, contact=self._contact(transport))

            def answered(response: Response | None, name: str = trunk.name) -> None:
                if response is None:
                    if self.monitor.timed_out(name):
                        log.warning("trunk_down", trunk=name)
                elif self.monitor.answered(name):
                    log.info("trunk_up", trunk=name)

            self._send(request, Peer(transport, trunk.host, trunk.port), answered)

    def shutdown(self, now: float) -> None:
        """The process is stopping: hang up answered calls, refuse ringing ones (503)."""
        self._now = now
        for call in list(self.calls.values()):
            self._terminate(call, HangupBy.SYSTEM, EndReason.SHUTDOWN, status=503)

    # -- plumbing ---------------------------------------------------------------------------

    def _contact(self, transport: str) -> str:
        suffix = ";transport=tcp" if transport == "TCP" else ""
        return f"<sip:telgate@{self.host}:{self.port}{suffix}>"

    def _via(self, transport: str) -> str:
        return f"SIP/2.0/{transport} {self.host}:{self.port};branch={self.ids.branch()};rport"

    def _wall(self, at: float | None = None) -> datetime:
        return datetime.fromtimestamp(self.epoch + (self._now if at is None else at), UTC)

    def _send(self, request: Request, peer: Peer, on_response: ResponseCallback | None = None,
              ) -> ClientTransaction:
        txn = self.layer.send_request(request, peer, self._now)
        if on_response is not None:
            self._callbacks[txn] = on_response
        return txn

    def _set_timer(self, call: Call, name: str, delay: float) -> None:
        deadline = self._now + delay
        call.timers[name] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), call, name))

    def _fire(self, call: Call, name: str) -> None:
        if name == "no_answer":
            self._no_answer(call)
        elif name.startswith("stage:"):
            self._stage_timeout(call, int(name[6:]))
        elif name == "max_duration":
            log.info("call_max_duration", call=str(call.id))
            self._terminate(call, HangupBy.SYSTEM, EndReason.MAX_DURATION)
        elif name.startswith("refresh:"):
            leg = call.a if name.endswith("a") else call.b
            if leg is not None:
                self._refresh(leg)
        elif name.startswith("expire:"):
            log.info("call_session_expired", call=str(call.id), leg=name[-1])
            self._terminate(call, HangupBy.SYSTEM, EndReason.SESSION_EXPIRED)
        elif name == "ivr" and call.ivr is not None:
            call.ivr.handle_timer(self._now)
            self._run_ivr(call)
        elif name == "ivr_limit":
            log.info("call_ivr_too_long", call=str(call.id))
            self._hangup(call, HangupBy.SYSTEM, self._ivr_reason(call))
        elif name == "warning_limit":
            self._hangup(call, HangupBy.SYSTEM, EndReason.ABUSE_BLOCKED)
        elif name == "agent_ring" and call.a is None:
            self._cancel_attempts(call)
            self._end(call, HangupBy.SYSTEM, 408, EndReason.NO_ANSWER, caller_gave_up=True)
        elif name == "transfer":
            self._cancel_attempts(call)
            self._transfer_failed(call)

    def _targets(self, tenant: uuid.UUID, extension: str) -> list[Target]:
        if not self.accepts_calls(tenant, extension):
            return []  # offline or do-not-disturb: as if unregistered
        return [Target(extension, b.uri, b.peer)
                for b in self.registrar.contacts((tenant, extension), self._now)]

    def _body(self, call: Call, source: Leg, message: Message, *, offer: bool,
              ) -> tuple[list[tuple[str, str]], bytes]:
        """The one offer/answer relay: an SDP body received on `source` becomes the body
        (and Content-Type) to send on the other leg, through the call's media bridge. Other
        bodies cross unchanged."""
        body = message.body
        if not body:
            return [], b""
        content_type = message.headers.get("Content-Type")
        if message.content_type in (SDP, None):
            source.received_sdp = body
            body = (call.media.offer if offer else call.media.answer)(source.side, body)
        return [("Content-Type", content_type or SDP)], body

    # -- events -----------------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            self._on_response(event.response, event.transaction)
        elif isinstance(event, RequestReceived):
            self._on_request(event.request, event.peer, event.transaction)
        elif isinstance(event, AckReceived):
            self._on_ack(event.ack)
        elif isinstance(event, CancelReceived):
            self._on_cancel(event.invite)
        elif isinstance(event, TransactionTimedOut | TransportFailed):
            txn = event.transaction
            callback = self._callbacks.pop(txn, None)
            if callback is not None:
                callback(None)
            leg = self._invites.get(txn)
            if leg is not None and isinstance(txn, ClientTransaction) and (
                    leg.side is Side.B or leg.call.originated):
                self._b_failed(leg, 408 if isinstance(event, TransactionTimedOut) else 503)
        elif isinstance(event, AckTimedOut):
            leg = self._invites.get(event.transaction)
            if leg is not None and leg.call.state is CallState.ANSWERED:
                self._terminate(leg.call, HangupBy.SYSTEM, EndReason.ACK_TIMEOUT)

    def _on_response(self, response: Response, txn: ClientTransaction | None) -> None:
        if txn is None:
            self._reack(response)  # a 2xx retransmitted after the INVITE transaction ended
            return
        leg = self._invites.get(txn)
        if leg is not None:
            self._on_b_response(leg, response)
            return
        if response.status < 200:
            return
        callback = self._callbacks.pop(txn, None)
        if callback is not None:
            callback(response)
        elif response.cseq.method == "INVITE" and response.status < 300:
            self._reack(response)  # a re-INVITE's 2xx retransmitted

    def _reack(self, response: Response) -> None:
        leg = self._legs.get((response.call_id, response.from_tag or ""))
        if leg is not None and leg.last_ack is not None and \
                leg.last_ack.cseq.seq == response.cseq.seq:
            self.layer.send_stateless(leg.last_ack, leg.peer)

    def _on_request(self, request: Request, peer: Peer, txn: ServerTransaction) -> None:
        method = request.method
        now = self._now
        if request.to_tag:
            leg = self._legs.get((request.call_id, request.to_tag))
            if leg is None:
                txn.respond(make_response(request, 481), now)
            else:
                self._in_dialog(leg, request, txn)
            return
        if method == "INVITE":
            assert isinstance(txn, InviteServerTransaction)
            trunk = self.trunks.trunk_for(request, peer)
            if trunk is None:
                self._out.append(Authenticate(request, peer, txn))
                return
            if trunk.username:
                challenge = self.trunks.challenge(trunk, request, now, to_tag=self.ids.tag())
                if challenge is not None:
                    txn.respond(challenge, now)
                    return
            self.trunk_invite(request, peer, txn, trunk, now)
        elif method == "REGISTER":
            self._out.append(Authenticate(request, peer, txn))
        elif method == "OPTIONS":
            txn.respond(make_response(request, 200, to_tag=self.ids.tag(),
                                      headers=[("Allow", ALLOW)]), now)
        elif method == "BYE":
            txn.respond(make_response(request, 481), now)
        else:
            txn.respond(make_response(request, 405, headers=[("Allow", ALLOW)]), now)

    # -- new calls ---------------------------------------------------------------------------

    def _new_call(self, tenant: uuid.UUID, direction: Direction, caller: str,
                  callee: str) -> Call:
        call_id = uuid.uuid4()
        call = Call(call_id, tenant, direction, caller, callee, self.media(call_id), self._now)
        self.calls[call.id] = call
        return call

    def _a_leg(self, call: Call, request: Request, peer: Peer,
               txn: InviteServerTransaction) -> Leg | None:
        tag = self.ids.tag()
        try:
            dialog = Dialog.from_uas_request(
                request, local_tag=tag, local_contact=self._contact(peer.transport),
                via_transport=peer.transport, via_sent_by=f"{self.host}:{self.port}")
        except SipSyntaxError as exc:
            txn.respond(make_response(request, 400, str(exc)[:60], to_tag=tag), self._now)
            del self.calls[call.id]
            return None
        if self.config.session_expires_seconds and st.too_small(request):
            txn.respond(make_response(request, 422, to_tag=tag,
                                      headers=[("Min-SE", str(st.MIN_SE))]), self._now)
            del self.calls[call.id]
            return None
        leg = Leg(call, Side.A, peer, request, tag, LegState.OFFERED, dialog=dialog,
                  server_txn=txn, allows_update="UPDATE" in (request.headers.get("Allow") or ""))
        call.a = leg
        self._legs[(request.call_id, tag)] = leg
        self._invites[txn] = leg
        return leg

    def _internal(self, request: Request, peer: Peer, txn: InviteServerTransaction,
                  caller: Extension, dialled: str) -> None:
        call = self._new_call(caller.tenant_id, Direction.INTERNAL, caller.extension, dialled)
        call.extension, call.peer_extension = dialled, caller.extension
        if self._a_leg(call, request, peer, txn) is None:
            return
        tenant = caller.tenant_id
        self._start_ringing(call, routing.internal_plan(
            dialled, lambda ext: self._targets(tenant, ext)))

    def _outgoing(self, request: Request, peer: Peer, txn: InviteServerTransaction,
                  caller: Extension, dialled: str) -> None:
        tag = self.ids.tag()
        tenant = caller.tenant_id
        presented = routing.caller_id(caller.presented_number,
                                      lambda number: self.may_send(tenant, number))
        if isinstance(presented, Refusal):
            number = caller.presented_number or ""
            log.info("call_caller_id_refused", extension=caller.extension,
                     tenant=str(tenant), number=numbers.mask(number))
            call = self._new_call(tenant, Direction.OUTGOING, number, dialled)
            call.extension = caller.extension
            txn.respond(make_response(request, presented.status, presented.reason, to_tag=tag),
                        self._now)
            call.failures.append(presented.status)
            self._end(call, HangupBy.SYSTEM, presented.status, EndReason.REFUSED)
            return
        trunk = routing.choose_trunk(self.config.trunks, self.tenants, tenant,
                                     self.monitor.down)
        if trunk is None or not dialled:
            txn.respond(make_response(request, 404 if trunk else 503, to_tag=tag), self._now)
            return
        call = self._new_call(tenant, Direction.OUTGOING, presented, dialled)
        call.extension, call.trunk = caller.extension, trunk
        if self._a_leg(call, request, peer, txn) is None:
            return
        self._start_ringing(call, routing.outgoing_plan(trunk, dialled))

    # -- ringing ----------------------------------------------------------------------------

    def _start_ringing(self, call: Call, plan: RingPlan) -> None:
        call.plan = plan
        self._set_timer(call, "no_answer", plan.no_answer_seconds)
        self._next_stage(call)

    def _next_stage(self, call: Call) -> None:
        plan = call.plan
        assert plan is not None
        call.stage += 1
        if call.stage >= len(plan.stages):
            self._fail(call)
            return
        stage = call.stage
        for target in plan.stages[stage]:
            self._invite_b(call, target)
        if plan.stage_seconds is not None and stage + 1 < len(plan.stages):
            self._set_timer(call, f"stage:{stage}", plan.stage_seconds)

    def _stage_timeout(self, call: Call, stage: int) -> None:
        if call.stage != stage or not call.ringing:
            return
        self._cancel_attempts(call)
        self._next_stage(call)

    def _no_answer(self, call: Call) -> None:
        if not call.ringing:
            return
        self._cancel_attempts(call)
        assert call.plan is not None
        call.stage = len(call.plan.stages)
        self._fail(call, timed_out=True)

    def _invite_b(self, call: Call, target: Target) -> None:
        a = call.a
        assert a is not None
        transport = target.peer.transport
        tag = self.ids.tag()
        call_id = self.ids.call_id(self.host)
        outside = call.transferring is not None and target.extension is None
        presented = call.transfer_caller_id if outside else call.caller
        from_uri = URI("sip", user=presented, host=self.host)
        if call.direction is Direction.OUTGOING:
            to_uri = URI("sip", user=call.callee, host=target.uri.host)
        elif outside:  # a transfer to an outside number, through the trunk
            to_uri = URI("sip", user=target.uri.user, host=target.uri.host)
        else:
            to_uri = URI("sip", user=target.extension or call.callee, host=self.host)
        headers = [("Allow", ALLOW)]
        if self.config.session_expires_seconds:
            headers.extend(st.offer_headers(self.config.session_expires_seconds))
        if (call.transferring is not None or call.originated) and a.received_sdp:
            # The caller's media as it is now (it may have changed since its INVITE).
            content = [("Content-Type", SDP)]
            body = call.media.offer(Side.A, a.received_sdp)
        else:
            content, body = self._body(call, a, a.invite, offer=True)
        headers.extend(content)
        if call.direction is Direction.OUTGOING or outside:
            headers.append(("P-Asserted-Identity", f"<sip:{presented}@{self.host}>"))
        request = make_request(
            "INVITE", target.uri, via=self._via(transport), from_=NameAddr(from_uri, params=(
                ("tag", tag),)), to=NameAddr(to_uri), call_id=call_id, cseq=1,
            contact=self._contact(transport), headers=headers, body=body)
        leg = Leg(call, Side.B, target.peer, request, tag, LegState.CALLING,
                  extension=target.extension, last_sdp=body)
        trunk = call.transfer_trunk if outside else call.trunk
        if (call.direction is Direction.OUTGOING or outside) and trunk is not None and \
                trunk.outbound_username:
            leg.auth = DigestClient(trunk.outbound_username, trunk.outbound_password)
        self._legs[(call_id, tag)] = leg
        call.attempts.append(leg)
        self._send_invite(leg, request)

    def _send_invite(self, leg: Leg, request: Request) -> None:
        if leg.client_txn is not None:
            self._invites.pop(leg.client_txn, None)
        leg.invite = request
        txn = self._send(request, leg.peer)
        assert isinstance(txn, InviteClientTransaction)
        leg.client_txn = txn
        self._invites[txn] = leg

    def _cancel_attempts(self, call: Call, keep: Leg | None = None) -> None:
        for leg in call.attempts:
            if leg is not keep and leg.state in LIVE_ATTEMPT:
                leg.move(LegState.CANCELLING)
                if leg.client_txn is not None:
                    leg.client_txn.cancel(self._now)

    def _on_b_response(self, leg: Leg, response: Response) -> None:
        call = leg.call
        status = response.status
        if status < 200:
            if status == 100:
                return
            if response.to_tag and leg.dialog is None:
                leg.dialog = Dialog.from_uac_response(leg.invite, response)
            if leg.state is LegState.CALLING:
                leg.move(LegState.EARLY)
            if leg.state is LegState.EARLY and call.ringing and leg.side is Side.B:
                self._ringing(call, leg, response)  # (not a click-to-call's agent ringing)
            return
        if status < 300:
            self._b_answered(leg, response)
            return
        if leg.state in LIVE_ATTEMPT:
            retry = self._retry(leg, response)
            if retry is not None:
                self._send_invite(leg, retry)
                return
        self._b_failed(leg, status)

    def _retry(self, leg: Leg, response: Response) -> Request | None:
        """The INVITE to send again after a 401/407 (our trunk credentials) or a 422 (a
        larger session interval, RFC 4028 §7.4), else None."""
        status = response.status
        if status in (401, 407) and leg.auth is not None:
            auth, leg.auth = leg.auth, None
            return auth.retry(leg.invite, response, branch=self.ids.branch())
        if status == 422:
            wanted = st.min_se(response)
            asked = st.session_expires(leg.invite)
            if wanted is None or asked is None or wanted <= asked.interval:
                return None
            retry = leg.invite.copy()
            retry.headers.set("Session-Expires", str(wanted))
            retry.headers.set("Min-SE", str(wanted))
            retry.headers.replace_first("Via", self._via(leg.peer.transport))
            retry.headers.set("CSeq", f"{leg.invite.cseq.seq + 1} INVITE")
            return retry
        return None

    def _ringing(self, call: Call, leg: Leg, response: Response) -> None:
        a = call.a
        first = call.state is CallState.ROUTING
        if call.originated:
            if first:  # the agent hears silence; the CRM sees the customer ringing
                call.move(CallState.RINGING)
                call.rang = self._now
                self._publish(call, "call.ringing", {
                    "direction": call.direction.value, "caller": call.caller,
                    "callee": call.callee, "did": None, "extensions": [call.extension],
                    "click_to_call": True})
            return
        assert a is not None and a.dialog is not None and a.server_txn is not None
        if first:
            call.move(CallState.RINGING)
        headers, body = self._body(call, leg, response, offer=not a.invite.body)
        status = 183 if body else 180
        a.server_txn.respond(a.dialog.create_response(a.invite, status, headers=headers,
                                                      body=body), self._now)
        if a.state is LegState.OFFERED:
            a.move(LegState.EARLY)
        if first:
            call.rang = self._now
            self._publish(call, "call.ringing", {
                "direction": call.direction.value, "caller": call.caller,
                "callee": call.callee, "did": call.did,
                "extensions": sorted({leg.extension for leg in call.attempts
                                      if leg.extension})})

    def _b_answered(self, leg: Leg, response: Response) -> None:
        call = leg.call
        if leg.state in (LegState.CONFIRMED, LegState.ENDED):  # retransmitted 2xx
            if leg.last_ack is not None:
                self.layer.send_stateless(leg.last_ack, leg.peer)
            return
        crossed = leg.state is LegState.CANCELLING
        leg.move(LegState.CONFIRMED)
        leg.dialog = Dialog.from_uac_response(leg.invite, response)
        if call.originated and leg.side is Side.A:
            self._agent_answered(call, leg, response, crossed)
            return
        if call.transferring is not None and not crossed and call.state is CallState.ANSWERED:
            self._transfer_answered(call, leg, response)
            return
        if call.originated and call.ringing and not crossed and leg.side is Side.B:
            self._originate_answered(call, leg, response)
            return
        if not call.ringing or crossed:
            # Too late (another leg answered, or the caller gave up): ACK and hang up.
            self._ack(leg, response.cseq.seq, b"", None)
            self._bye(leg)
            self._forget_leg(leg)
            return
        a = call.a
        assert a is not None and a.dialog is not None and a.server_txn is not None
        call.b = leg
        call.move(CallState.ANSWERED)
        call.answered = self._now
        for name in [n for n in call.timers if n == "no_answer" or n.startswith("stage:")]:
            del call.timers[name]
        if leg.extension is not None and call.direction is Direction.INCOMING:
            call.extension = leg.extension
        self._cancel_attempts(call, keep=leg)
        call.attempts = [leg]
        leg.allows_update = "UPDATE" in (response.headers.get("Allow") or "")
        if a.invite.body:
            self._ack(leg, response.cseq.seq, b"", None)
        else:
            call.ack_waits = leg  # late offer: B's ACK carries A's answer
        headers, body = self._body(call, leg, response, offer=not a.invite.body)
        a.last_sdp = body
        self._settle_timers(call, response)
        if a.timer is not None:
            headers.extend(st.response_headers(a.timer, a.invite))
        a.server_txn.respond(a.dialog.create_response(a.invite, 200, headers=headers,
                                                      body=body), self._now)
        a.dialog.confirm()
        a.move(LegState.CONFIRMED)
        call.media.answered()
        limit = self.max_call_seconds(call.tenant_id)
        if limit:
            self._set_timer(call, "max_duration", limit)
        log.info("call_answered", call=str(call.id), extension=call.extension)
        self._publish(call, "call.answered", {"extension": call.extension})

    def _settle_timers(self, call: Call, b_answer: Response) -> None:
        """RFC 4028 at answer: the A leg's timer from its INVITE, the B leg's from its 2xx."""
        default = self.config.session_expires_seconds
        if not default:
            return
        a, b = call.a, call.b
        assert a is not None and b is not None
        a.timer = st.settle_as_uas(a.invite, default)
        b.timer = st.settle_as_uac(b_answer)
        for leg in (a, b):
            self._restart_session(leg)

    def _restart_session(self, leg: Leg) -> None:
        timer = leg.timer
        if timer is None:
            return
        call = leg.call
        side = leg.side.value
        call.timers.pop(f"refresh:{side}", None)
        call.timers.pop(f"expire:{side}", None)
        if timer.we_refresh:
            self._set_timer(call, f"refresh:{side}", timer.refresh_after)
        else:
            self._set_timer(call, f"expire:{side}", timer.expires_after)

    def _refresh(self, leg: Leg) -> None:
        """Our session refresh on `leg`: UPDATE when the peer allows it, else a re-INVITE
        repeating the last SDP we sent (no change of session)."""
        call = leg.call
        dialog, timer = leg.dialog, leg.timer
        if call.state is not CallState.ANSWERED or dialog is None or timer is None:
            return
        if call.reinvite is not None:
            self._set_timer(call, f"refresh:{leg.side.value}", GLARE_RETRY_SECONDS)
            return
        headers = [("Supported", "timer"),
                   ("Session-Expires", timer.header(we_are_uac=True))]
        body = b""
        method = "UPDATE" if leg.allows_update or not leg.last_sdp else "INVITE"
        if method == "INVITE":
            headers.append(("Content-Type", SDP))
            body = leg.last_sdp
        request = dialog.create_request(method, branch=self.ids.branch(), headers=headers,
                                        body=body)

        def answered(response: Response | None) -> None:
            if response is not None and method == "INVITE" and response.status < 300:
                self._ack(leg, request.cseq.seq, b"", None)
            if call.state is not CallState.ANSWERED:
                return
            if response is not None and response.status == 491:
                self._set_timer(call, f"refresh:{leg.side.value}", GLARE_RETRY_SECONDS)
            elif response is not None and response.status < 300:
                settled = st.settle_as_uac(response)
                if settled is not None:
                    leg.timer = settled
                self._restart_session(leg)
            else:
                log.info("call_session_refresh_failed", call=str(call.id),
                         status=response.status if response else None)
                self._terminate(call, HangupBy.SYSTEM, EndReason.SESSION_REFRESH_FAILED)

        self._send(request, leg.peer, answered)

    def _b_failed(self, leg: Leg, status: int) -> None:
        call = leg.call
        if leg.state in FINAL_SEEN:
            return
        cancelled = leg.state is LegState.CANCELLING
        leg.move(LegState.FAILED)
        self._forget_leg(leg)
        if leg not in call.attempts:
            return
        call.attempts.remove(leg)
        if not cancelled:
            call.failures.append(status)
        if call.transferring is not None and call.state is CallState.ANSWERED:
            if not any(c.state in LIVE_ATTEMPT for c in call.attempts):
                self._transfer_failed(call)
            return
        if call.originated and call.a is None:  # the agent's phones refused
            if not any(c.state in LIVE_ATTEMPT for c in call.attempts):
                call.timers.pop("agent_ring", None)
                self._end(call, HangupBy.CALLER, status, EndReason.REFUSED,
                          caller_gave_up=True)
            return
        if call.ringing and not any(c.state in LIVE_ATTEMPT for c in call.attempts):
            self._next_stage(call)

    def _fail(self, call: Call, *, timed_out: bool = False) -> None:
        """No attempt answered: tell the caller and end the call."""
        a = call.a
        if call.state is CallState.ENDED or a is None or (a.server_txn is None
                                                             and not call.originated):
            return
        if call.direction is Direction.INCOMING and call.trunk is not None:
            features = self.features(call.tenant_id)
            trigger = "no_answer" if timed_out else "no_agent"
            if features is not None and trigger in features.callback_on and \
                    self._start_ivr(call, trigger):
                return
        status = routing.failure_status(call.direction, call.failures, timed_out=timed_out)
        if call.originated and a.state is LegState.CONFIRMED:
            self._bye(a)  # the agent waited for a customer who did not answer
        self._refuse_a(call, status)
        if timed_out:
            reason = EndReason.NO_ANSWER
        elif status in BUSY_STATUSES:
            reason = EndReason.BUSY
        elif status in (403, 603):
            reason = EndReason.DECLINED
        else:
            reason = EndReason.UNREACHABLE
        by = HangupBy.SYSTEM if timed_out or status >= 500 else HangupBy.CALLEE
        self._end(call, by, status, reason)

    def _refuse_a(self, call: Call, status: int) -> None:
        a = call.a
        if a is not None and a.dialog is not None and a.server_txn is not None and \
                a.state in (LegState.OFFERED, LegState.EARLY):
            a.server_txn.respond(a.dialog.create_response(a.invite, status), self._now)
            a.move(LegState.FAILED)

    def _on_cancel(self, invite: InviteServerTransaction) -> None:
        leg = self._invites.get(invite)
        if leg is None:
            # Still authenticating: nothing was routed yet.
            if invite.state is State.PROCEEDING:
                invite.respond(make_response(invite.request, 487, to_tag=self.ids.tag()),
                               self._now)
            return
        call = leg.call
        if not call.ringing:
            return  # the 200 crossed the CANCEL: the call goes on (RFC 3261 §9.2)
        self._refuse_a(call, 487)
        self._cancel_attempts(call)
        self._end(call, HangupBy.CALLER, 487, EndReason.CANCELLED, caller_gave_up=True)

    def _answer_locally(self, call: Call, sdp: bytes) -> None:
        a = call.a
        if not call.ringing or a is None or a.dialog is None or a.server_txn is None:
            raise CommandRefused("call_not_ringing", "only a ringing call can be answered")
        self._cancel_attempts(call)
        call.move(CallState.ANSWERED)
        call.answered = self._now
        call.timers.clear()
        headers = [("Content-Type", SDP)] if sdp else []
        a.last_sdp = sdp
        a.server_txn.respond(a.dialog.create_response(a.invite, 200, headers=headers,
                                                      body=sdp), self._now)
        a.dialog.confirm()
        a.move(LegState.CONFIRMED)
        call.media.answered()
        self._publish(call, "call.answered", {"extension": None,
                                              "ivr": CALLBACK.name if call.ivr else None})

    # -- the gateway answering: callback IVR, abuse block ---------------------------------

    def _start_ivr(self, call: Call, trigger: str) -> bool:
        """Answer a ringing incoming call with the callback IVR; False when its media cannot
        end here (no anchoring, no usable offer), and the call goes on as without it."""
        a = call.a
        if a is None or a.server_txn is None or not call.ringing or not a.invite.body or \
                not call.media.can_play():
            return False
        sdp = call.media.local_answer(Side.A, a.invite.body)
        if sdp is None:
            return False
        self._cancel_attempts(call)
        caller = call.caller if call.caller.isdigit() else ""
        call.ivr = ivr.FlowRun(CALLBACK, {
            "announcement": "callback_closed" if trigger == "closed" else "callback_busy",
            "caller": caller})
        call.ivr_trigger = trigger
        log.info("call_callback_ivr", call=str(call.id), trigger=trigger)
        self._answer_locally(call, sdp)
        self._set_timer(call, "ivr_limit", IVR_MAX_SECONDS)
        call.ivr.start(self._now)
        self._run_ivr(call)
        return True

    def _run_ivr(self, call: Call) -> None:
        """Carry out what the call's IVR asks for, and keep its timer."""
        run = call.ivr
        if run is None or call.state is not CallState.ANSWERED:
            return
        while (action := run.next_action()) is not None:
            if isinstance(action, ivr.PlayPrompt):
                call.media.play(Side.A, action.prompt, action.play_id)
            elif isinstance(action, ivr.StopPlaying):
                call.media.stop(Side.A)
            elif isinstance(action, ivr.StoreEntry):
                number = action.values.get("number", "")
                self._out.append(CallbackCaptured(call.tenant_id, call.id, call.did, call.caller,
                                                  number, call.ivr_trigger or ""))
                log.info("call_callback_requested", call=str(call.id),
                         number=numbers.mask(number))
            elif isinstance(action, ivr.EndCall):
                self._hangup(call, HangupBy.SYSTEM, self._ivr_reason(call))
                return
        call.timers.pop("ivr", None)
        deadline = run.get_timer()
        if deadline is not None:
            self._set_timer(call, "ivr", max(0.0, deadline - self._now))

    @staticmethod
    def _ivr_reason(call: Call) -> EndReason:
        if call.ivr is not None and "callback" in call.ivr.stored:
            return EndReason.CALLBACK_REQUESTED
        return EndReason.CALLBACK_IVR

    def _abuse_block(self, call: Call) -> None:
        if call.blocking:
            return  # said twice: once is enough
        if call.state is not CallState.ANSWERED or call.ivr is not None or call.b is None:
            raise CommandRefused("call_not_answered",
                                 "only a call answered by an agent can be blocked")
        if call.direction is Direction.INTERNAL:
            raise CommandRefused("not_a_customer_call", "an internal call has no customer")
        if call.transferring is not None:
            raise CommandRefused("call_busy", "the call is being transferred")
        if not call.media.can_play():
            raise CommandRefused("media_not_anchored",
                                 "the call's audio does not pass through the gateway")
        customer = Side.B if call.direction is Direction.OUTGOING else Side.A
        agent = call.a if customer is Side.B else call.b
        assert agent is not None
        call.blocking = True
        call.timers.pop("max_duration", None)
        log.info("call_abuse_blocked", call=str(call.id), extension=call.extension)
        self._bye(agent)  # the agent is free at once
        for side in list(call.held):
            call.media.stop(side)
        call.held.clear()
        call.media.play(customer, ABUSE_WARNING, 1)
        self._set_timer(call, "warning_limit", WARNING_MAX_SECONDS)

    def _hold(self, call: Call, side: Side, held: bool) -> None:
        """The control API puts `side` on hold (a re-INVITE offering a=sendonly: it hears
        music from us) or takes it off (sendrecv). Saying what already is changes nothing."""
        if call.state is not CallState.ANSWERED or call.ivr is not None or call.blocking \
                or call.b is None:
            raise CommandRefused("call_not_answered", "only a call answered by an agent can "
                                                      "be held")
        if call.transferring is not None:
            raise CommandRefused("call_busy", "the call is being transferred")
        if held == (side in call.held):
            return
        if not call.media.anchored():
            raise CommandRefused("media_not_anchored",
                                 "the call's audio does not pass through the gateway")
        leg = call.a if side is Side.A else call.b
        if call.reinvite is not None or leg is None or leg.dialog is None or not leg.last_sdp:
            raise CommandRefused("call_busy", "the call is renegotiating its media; try again")
        try:
            body = with_direction(leg.last_sdp, "sendonly" if held else "sendrecv")
        except SdpError as exc:
            raise CommandRefused("call_busy", f"the call's SDP cannot be changed: {exc}") \
                from None
        headers = [("Content-Type", SDP), *self._session_headers(leg)]
        request = leg.dialog.create_request("INVITE", branch=self.ids.branch(),
                                            headers=headers, body=body)
        leg.last_sdp = body
        # Marked as the call's open re-INVITE, so a phone's own crossing one gets 491.
        call.reinvite = Relay(leg, None, request, leg, request)

        def answered(response: Response | None) -> None:
            if call.reinvite is not None and call.reinvite.sent is request:
                call.reinvite = None
            if response is not None and response.status < 300:
                self._ack(leg, request.cseq.seq, b"", None)
                if leg.dialog is not None:
                    leg.dialog.receive_response(request, response)
            elif response is None or response.status == 481:
                self._lost(call, leg)

        self._send(request, leg.peer, answered)
        if held:
            call.held.add(side)
            call.media.hold(side)
        else:
            call.held.discard(side)
            call.media.unhold(side)
        log.info("call_held" if held else "call_resumed", call=str(call.id), side=side.value,
                 by="api")
        self._publish(call, "call.held", {"held": held, "side": side.value, "by": "api",
                                          "extension": call.extension})

    TRANSFER_RING_SECONDS = 30.0

    def _transfer(self, call: Call, extension: str) -> None:
        """Blind transfer (돌려주기) of an incoming call's caller to `extension`: the agent is
        released at once, the caller hears hold music while the extension rings, and the
        first of its phones to answer takes the call (same media session, one recording)."""
        targets = self._transfer_targets(call, extension)
        self._start_transfer(call, extension, targets)

    def _transfer_targets(self, call: Call, extension: str) -> list[Target]:
        """Where a transfer of `call` to `extension` would ring; CommandRefused when it
        cannot be done now."""
        if call.state is not CallState.ANSWERED or call.ivr is not None or call.blocking \
                or call.b is None or call.direction is Direction.OUTGOING:
            raise CommandRefused("call_not_answered", "only an incoming call answered by an "
                                                      "agent can be transferred")
        if call.transferring is not None or call.reinvite is not None:
            raise CommandRefused("call_busy", "the call is already being transferred or "
                                              "renegotiating its media")
        if not call.media.anchored():
            raise CommandRefused("media_not_anchored",
                                 "the call's audio does not pass through the gateway")
        if extension == call.extension:
            raise CommandRefused("transfer_target_unavailable", "the call is already there")
        if not routing.is_internal(extension):
            return self._outside_targets(call, extension)
        targets = self._targets(call.tenant_id, extension)
        if not targets:
            raise CommandRefused("transfer_target_unavailable", f"extension {extension} is "
                                 "offline, on do-not-disturb or not registered")
        return targets

    def _outside_targets(self, call: Call, number: str) -> list[Target]:
        """A transfer to an outside number: through a trunk, presenting the DID the caller
        dialled (a registered number of the tenant), since the caller's own number may not be
        presented by us."""
        trunk = routing.choose_trunk(self.config.trunks, self.tenants, call.tenant_id,
                                     self.monitor.down)
        if trunk is None:
            raise CommandRefused("no_trunk", "no trunk to call out through")
        presented = call.did or ""
        if not presented or not self.may_send(call.tenant_id, presented):
            raise CommandRefused("sender_not_registered", "the DID the caller dialled must be a "
                                 "registered sender number to be presented on a transfer out")
        call.transfer_trunk, call.transfer_caller_id = trunk, presented
        return list(routing.outgoing_plan(trunk, number).stages[0])

    def _start_transfer(self, call: Call, extension: str, targets: list[Target]) -> None:
        agent = call.b
        assert agent is not None
        log.info("call_transfer", call=str(call.id), source=call.extension, target=extension)
        call.transferring = extension
        call.transfers.append(call.extension or "")
        call.timers.pop("refresh:b", None)
        call.timers.pop("expire:b", None)
        self._bye(agent)  # blind: the agent is free at once
        self._forget_leg(agent)
        call.attempts = []
        call.failures = []
        call.media.hold(Side.A)  # the caller hears music while the extension rings
        for target in targets:
            self._invite_b(call, target)
        self._set_timer(call, "transfer", self.TRANSFER_RING_SECONDS)

    def _pickup(self, call: Call, extension: str) -> None:
        """당겨받기 through the API: an incoming or internal call still ringing stops ringing
        where it rang and rings `extension`'s phones instead, for the rest of its ring time."""
        if not call.ringing or call.originated or call.ivr is not None \
                or call.direction is Direction.OUTGOING:
            raise CommandRefused("call_not_ringing", "only an incoming call still ringing "
                                                     "can be picked up")
        if extension == call.peer_extension:
            raise CommandRefused("agent_unavailable", "a caller cannot pick up its own call")
        targets = self._targets(call.tenant_id, extension)
        if not targets:
            raise CommandRefused("agent_unavailable", f"extension {extension} is offline, "
                                 "on do-not-disturb or not registered")
        log.info("call_pickup", call=str(call.id), extension=extension)
        self._cancel_attempts(call)
        for name in [n for n in call.timers if n.startswith("stage:")]:
            del call.timers[name]
        plan = call.plan
        call.plan = RingPlan((tuple(targets),), None,
                             plan.no_answer_seconds if plan is not None else 60.0)
        call.stage = 0
        for target in targets:
            self._invite_b(call, target)

    def _attended(self, call: Call, consult: Call) -> None:
        """Attended transfer: `call` (caller A, agent B) and `consult` (the same agent's call
        to another extension). The extension's leg is re-INVITEd into `call`'s media session
        (so the recording stays one file); once it answers, the agent leaves both calls and
        the caller, taken off hold, talks to the extension."""
        if call.state is not CallState.ANSWERED or call.ivr is not None or call.blocking \
                or call.b is None or call.a is None or call.direction is Direction.OUTGOING \
                or call.transferring is not None:
            raise CommandRefused("call_not_answered", "only an incoming call answered by an "
                                                      "agent can be transferred")
        target = consult.b
        if consult.state is not CallState.ANSWERED or consult.direction is not \
                Direction.INTERNAL or consult.a is None or target is None or \
                consult.peer_extension != call.extension or consult is call:
            raise CommandRefused("not_a_consultation",
                                 "the second call must be the agent's answered call to "
                                 "another extension")
        if call.reinvite is not None or consult.reinvite is not None or \
                target.dialog is None or not call.a.received_sdp:
            raise CommandRefused("call_busy", "a re-INVITE of one of the calls is open")
        if not call.media.anchored():
            raise CommandRefused("media_not_anchored",
                                 "the call's audio does not pass through the gateway")
        try:
            offer = with_direction(call.media.offer(Side.A, call.a.received_sdp), "sendrecv")
        except SdpError as exc:
            raise CommandRefused("call_busy", f"the caller's SDP cannot be offered: {exc}") \
                from None
        request = target.dialog.create_request(
            "INVITE", branch=self.ids.branch(),
            headers=[("Content-Type", SDP), *self._session_headers(target)], body=offer)
        target.last_sdp = offer
        consult.reinvite = Relay(target, None, request, target, request)
        call.transferring = target.extension or ""
        log.info("call_attended_transfer", call=str(call.id), consult=str(consult.id),
                 target=target.extension)

        def answered(response: Response | None) -> None:
            consult.reinvite = None
            if response is not None and response.status < 300:
                self._ack(target, request.cseq.seq, b"", None)
                target.dialog.receive_response(request, response)  # type: ignore[union-attr]
                self._hand_over(call, consult, target, response)
                return
            call.transferring = None
            log.info("call_attended_transfer_failed", call=str(call.id),
                     status=response.status if response else None)
            if response is None or response.status == 481:
                self._lost(consult, target)

        self._send(request, target.peer, answered)

    def _hand_over(self, call: Call, consult: Call, target: Leg, response: Response) -> None:
        call.transferring = None
        if call.state is not CallState.ANSWERED or consult.state is not CallState.ANSWERED:
            return  # someone hung up meanwhile: each call ends its own way
        agent = call.b
        assert agent is not None and consult.a is not None
        previous = call.extension
        # The extension's leg moves from the consultation into the call.
        consult.b = None
        consult.attempts = []
        for name in ("refresh:b", "expire:b"):
            consult.timers.pop(name, None)
            call.timers.pop(name, None)
        target.call = call
        call.b = target
        call.attempts = [target]
        call.extension = target.extension
        call.transfers.append(previous or "")
        if response.body:
            target.received_sdp = response.body
            call.media.repoint(Side.B, response.body)
        self._restart_session(target)
        self._bye(agent)
        self._forget_leg(agent)
        self._hangup(consult, HangupBy.SYSTEM, EndReason.TRANSFERRED)  # BYE the agent's leg
        if Side.A in call.held:
            self._hold(call, Side.A, False)  # the caller was on hold during the consultation
        log.info("call_transferred", call=str(call.id), extension=target.extension,
                 attended=True)
        self._publish(call, "call.transferred", {"from": previous, "to": target.extension,
                                                 "extension": target.extension,
                                                 "attended": True})

    def _refer(self, call: Call, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        """A phone's blind transfer (RFC 3515 REFER to an extension of the tenant): accepted,
        reported done at once (NOTIFY sipfrag 200, the subscription ends), then carried out
        as the API's transfer. Attended transfer (Replaces) is not offered."""
        assert leg.dialog is not None
        refer_to = request.headers.get("Refer-To") or ""
        try:
            uri = NameAddr.parse(refer_to).uri
        except SipSyntaxError:
            txn.respond(leg.dialog.create_response(request, 400, "Bad Refer-To"), self._now)
            return
        extension = routing.dialled_digits(uri.user) or ""
        replaces = _replaces(refer_to)
        if replaces is not None:
            self._refer_attended(call, leg, request, txn, replaces)
            return
        if leg is not call.b or not routing.is_internal(extension):
            txn.respond(leg.dialog.create_response(request, 403, "Only Agents To Extensions"),
                        self._now)
            return
        try:
            targets = self._transfer_targets(call, extension)
        except CommandRefused as exc:
            status = 480 if exc.code == "transfer_target_unavailable" else 491
            txn.respond(leg.dialog.create_response(request, status), self._now)
            return
        self._refer_accepted(leg, request, txn)
        self._start_transfer(call, extension, targets)

    def _pickup_code(self, request: Request, peer: Peer, txn: InviteServerTransaction,
                     picker: Extension, at: str | None) -> None:
        """A phone dialled the pickup code (`*8`, or `**` and an extension): the call ringing
        there (the oldest one of the tenant ringing at another extension for `*8`) is answered
        on this phone. Both legs' media end at our ports, each answered from its own offer."""
        tag = self.ids.tag()
        candidates = [c for c in self.calls.values()
                      if c.tenant_id == picker.tenant_id and c.ringing and c.ivr is None
                      and not c.originated and c.direction is not Direction.OUTGOING
                      and c.a is not None and c.a.server_txn is not None and c.a.invite.body
                      and any(leg.state in LIVE_ATTEMPT and leg.extension not in
                              (None, picker.extension) and (at is None or leg.extension == at)
                              for leg in c.attempts)]
        if not candidates:
            txn.respond(make_response(request, 404, "Nothing To Pick Up", to_tag=tag),
                        self._now)
            return
        if not request.body:  # a late offer cannot be answered from our side here
            txn.respond(make_response(request, 488, to_tag=tag), self._now)
            return
        call = min(candidates, key=lambda c: (c.started, c.id))
        a = call.a
        assert a is not None and a.dialog is not None and a.server_txn is not None
        to_caller = call.media.local_answer(Side.A, a.invite.body)
        to_picker = call.media.local_answer(Side.B, request.body)
        if to_caller is None or to_picker is None:
            txn.respond(make_response(request, 488, to_tag=tag), self._now)
            return
        try:
            dialog = Dialog.from_uas_request(
                request, local_tag=tag, local_contact=self._contact(peer.transport),
                via_transport=peer.transport, via_sent_by=f"{self.host}:{self.port}")
        except SipSyntaxError as exc:
            txn.respond(make_response(request, 400, str(exc)[:60], to_tag=tag), self._now)
            return
        log.info("call_picked_up", call=str(call.id), extension=picker.extension)
        call.media.repoint(Side.B, request.body)  # whatever rang before latches no more
        self._cancel_attempts(call)
        leg = Leg(call, Side.B, peer, request, tag, LegState.OFFERED, dialog=dialog,
                  server_txn=txn, extension=picker.extension, last_sdp=to_picker,
                  received_sdp=request.body)
        self._legs[(request.call_id, tag)] = leg
        self._invites[txn] = leg
        txn.respond(dialog.create_response(request, 200, headers=[("Content-Type", SDP)],
                                           body=to_picker), self._now)
        dialog.confirm()
        leg.move(LegState.CONFIRMED)
        a.last_sdp = to_caller
        a.server_txn.respond(a.dialog.create_response(
            a.invite, 200, headers=[("Content-Type", SDP)], body=to_caller), self._now)
        a.dialog.confirm()
        a.move(LegState.CONFIRMED)
        call.b = leg
        call.attempts = [leg]
        call.move(CallState.ANSWERED)
        call.answered = self._now
        for name in [n for n in call.timers if n == "no_answer" or n.startswith("stage:")]:
            del call.timers[name]
        call.extension = picker.extension
        call.media.answered()
        limit = self.max_call_seconds(call.tenant_id)
        if limit:
            self._set_timer(call, "max_duration", limit)
        self._publish(call, "call.answered", {"extension": call.extension,
                                              "picked_up": True})

    def _refer_accepted(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        """202 to the REFER, and at once the NOTIFY saying it succeeded (the subscription
        ends there: the transfer is ours to carry out from now on)."""
        assert leg.dialog is not None
        txn.respond(leg.dialog.create_response(request, 202), self._now)
        notify = leg.dialog.create_request(
            "NOTIFY", branch=self.ids.branch(),
            headers=[("Event", "refer"), ("Subscription-State", "terminated;reason=noresource"),
                     ("Content-Type", "message/sipfrag")], body=b"SIP/2.0 200 OK\r\n")
        self._send(notify, leg.peer, lambda _response: None)

    def _refer_attended(self, call: Call, leg: Leg, request: Request, txn: ServerTransaction,
                        replaces: tuple[str, str, str]) -> None:
        """REFER with Replaces (RFC 3891): the agent's phone asks to join the caller of this
        call with the extension of its consultation dialog (call-id, to-tag, from-tag)."""
        assert leg.dialog is not None
        call_id, to_tag, from_tag = replaces
        other = self._legs.get((call_id, to_tag)) or self._legs.get((call_id, from_tag))
        try:
            if other is None or leg is not call.b:
                raise CommandRefused("not_a_consultation", "unknown dialog to replace")
            self._attended(call, other.call)
        except CommandRefused as exc:
            status = 481 if exc.code == "not_a_consultation" else 491
            txn.respond(leg.dialog.create_response(request, status), self._now)
            return
        self._refer_accepted(leg, request, txn)

    def _transfer_answered(self, call: Call, leg: Leg, response: Response) -> None:
        self._ack(leg, response.cseq.seq, b"", None)
        self._cancel_attempts(call, keep=leg)
        call.attempts = [leg]
        call.timers.pop("transfer", None)
        previous = call.transfers[-1] if call.transfers else None
        moved_to = leg.extension or call.transferring
        if leg.extension is None:
            call.transferred_out = call.transferring
        call.b = leg
        call.extension = leg.extension
        call.transferring = None
        leg.allows_update = "UPDATE" in (response.headers.get("Allow") or "")
        if response.body:
            leg.received_sdp = response.body
            call.media.repoint(Side.B, response.body)
        call.media.unhold(Side.A)
        if self.config.session_expires_seconds:
            leg.timer = st.settle_as_uac(response)
            self._restart_session(leg)
        log.info("call_transferred", call=str(call.id), extension=leg.extension)
        self._publish(call, "call.transferred", {"from": previous, "to": moved_to,
                                                 "extension": leg.extension,
                                                 "attended": False})

    def _transfer_failed(self, call: Call) -> None:
        """Nobody at the transfer's extension answered: the caller, alone with the music, is
        hung up (the agent was already released)."""
        if call.transferring is None or call.state is not CallState.ANSWERED:
            return
        log.info("call_transfer_failed", call=str(call.id), target=call.transferring)
        call.transferring = None
        call.b = None
        self._hangup(call, HangupBy.SYSTEM, EndReason.TRANSFER_FAILED)

    def _answer_here(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        """An in-dialog request on a call whose other side is the gateway itself (IVR, abuse
        warning): keys by SIP INFO are taken, offers get our SDP again, the rest is refused."""
        call = leg.call
        assert leg.dialog is not None
        method = request.method
        if method == "INFO" and request.content_type in _DTMF_INFO:
            key = _info_digit(request.body)
            txn.respond(leg.dialog.create_response(request, 200), self._now)
            if key is not None and call.ivr is not None:
                call.ivr.digit(key, self._now)
                self._run_ivr(call)
            return
        if method in ("INVITE", "UPDATE"):
            body = leg.last_sdp if method == "INVITE" or request.body else b""
            headers = [("Content-Type", SDP)] if body else []
            txn.respond(leg.dialog.create_response(request, 200, headers=headers, body=body),
                        self._now)
            return
        status = 200 if method == "OPTIONS" else 405
        txn.respond(leg.dialog.create_response(request, status, headers=[("Allow", ALLOW)]),
                    self._now)

    def _hold_changed(self, call: Call, source: Leg, target: Leg, offer: bytes) -> None:
        """`source` offered to put `target` on hold (a=sendonly/inactive) or to take it off:
        music plays to the held side; the recording goes on."""
        if not offer:
            return
        held = sdp_direction(offer) in ("sendonly", "inactive")
        if held == (target.side in call.held):
            return
        if held:
            call.held.add(target.side)
            call.media.hold(target.side)
        else:
            call.held.discard(target.side)
            call.media.unhold(target.side)
        log.info("call_held" if held else "call_resumed", call=str(call.id),
                 side=target.side.value)
        self._publish(call, "call.held", {"held": held, "side": target.side.value,
                                          "by": source.side.value,
                                          "extension": call.extension})

    # -- in-dialog --------------------------------------------------------------------------

    def _in_dialog(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        call = leg.call
        dialog = leg.dialog
        now = self._now
        if dialog is None:
            txn.respond(make_response(request, 481), now)
            return
        error = dialog.receive_request(request)
        if error is not None:
            txn.respond(error, now)
            return
        if leg.server_txn is not None and not leg.server_txn.acked:
            # A request in the dialog proves our 2xx arrived even if its ACK was lost: stop
            # retransmitting the 2xx (it would reach the peer after its BYE).
            leg.server_txn.ack_2xx(request)
        method = request.method
        other = call.other(leg)
        if method == "BYE":
            txn.respond(dialog.create_response(request, 200), now)
            if call.state is CallState.ANSWERED:
                by = HangupBy.CALLER if leg.side is Side.A else HangupBy.CALLEE
                if leg.state is LegState.CONFIRMED:
                    leg.move(LegState.ENDED)
                if call.ivr is not None:
                    call.ivr.caller_hung_up(now)
                    reason = self._ivr_reason(call)
                else:
                    reason = EndReason.ABUSE_BLOCKED if call.blocking else EndReason.NORMAL
                self._hangup(call, by, reason)
            elif leg.side is Side.B:
                self._b_failed(leg, 487)  # an early dialog ended by the callee
            elif call.originated and leg is call.a:
                leg.move(LegState.ENDED)  # the agent gave up before the customer answered
                self._cancel_attempts(call)
                self._end(call, HangupBy.CALLER, 487, EndReason.CANCELLED, caller_gave_up=True)
            else:
                self._forget_leg(leg)
            return
        if call.state is CallState.ANSWERED and (
                call.ivr is not None or call.blocking or call.transferring is not None):
            self._answer_here(leg, request, txn)
            return
        if call.state is not CallState.ANSWERED or other is None or other.dialog is None:
            txn.respond(dialog.create_response(request, 491 if method == "INVITE" else 481),
                        now)
            return
        if method == "INVITE":
            self._relay_reinvite(call, leg, other, request, txn)
        elif method == "REFER":
            self._refer(call, leg, request, txn)
        elif method in _RELAYED:
            self._relay_request(call, leg, other, request, txn)
        else:
            txn.respond(dialog.create_response(request, 405, headers=[("Allow", ALLOW)]), now)

    def _on_ack(self, ack: Request) -> None:
        leg = self._legs.get((ack.call_id, ack.to_tag or ""))
        if leg is None or leg.dialog is None:
            return
        leg.dialog.receive_request(ack)
        call = leg.call
        target = call.ack_waits
        if target is not None and target is not leg:
            call.ack_waits = None
            headers, body = self._body(call, leg, ack, offer=False)
            seq = target.last_ack.cseq.seq if target.last_ack is not None else \
                target.invite.cseq.seq
            if call.reinvite is not None and call.reinvite.target is target:
                seq = call.reinvite.sent.cseq.seq
                call.reinvite = None
            target.last_sdp = body or target.last_sdp
            self._ack(target, seq, body, headers[0][1] if headers else None)

    def _ack(self, leg: Leg, seq: int, body: bytes, content_type: str | None) -> None:
        if leg.dialog is None:
            return
        headers = [("Content-Type", content_type or SDP)] if body else None
        ack = leg.dialog.create_ack(seq, branch=self.ids.branch(), headers=headers, body=body)
        leg.last_ack = ack
        self.layer.send_stateless(ack, leg.peer)

    def _session_headers(self, leg: Leg) -> list[tuple[str, str]]:
        """Session-Expires for a request we send on `leg` (it refreshes that leg too)."""
        if leg.timer is None:
            return []
        return [("Supported", "timer"), ("Session-Expires", leg.timer.header(we_are_uac=True))]

    def _relay_reinvite(self, call: Call, source: Leg, target: Leg, request: Request,
                        txn: ServerTransaction) -> None:
        assert source.dialog is not None and target.dialog is not None
        if call.reinvite is not None:
            txn.respond(source.dialog.create_response(request, 491), self._now)  # glare
            return
        self._hold_changed(call, source, target, request.body)
        headers, body = self._body(call, source, request, offer=True)
        headers.extend(self._session_headers(target))
        sent = target.dialog.create_request("INVITE", branch=self.ids.branch(),
                                            headers=headers, body=body)
        if body:
            target.last_sdp = body
        relay = Relay(source, txn, request, target, sent)
        call.reinvite = relay
        self._send(sent, target.peer, lambda response: self._reinvite_answered(call, relay,
                                                                               response))

    def _reinvite_answered(self, call: Call, relay: Relay, response: Response | None) -> None:
        source, target = relay.source, relay.target
        assert relay.txn is not None
        assert source.dialog is not None and target.dialog is not None
        if response is None:
            call.reinvite = None
            relay.txn.respond(source.dialog.create_response(relay.request, 408), self._now)
            self._lost(call, target)
            return
        target.dialog.receive_response(relay.sent, response)
        status = response.status
        offer = not relay.request.body
        headers, body = self._body(call, target, response, offer=offer)
        if 200 <= status < 300:
            if relay.request.body:
                self._ack(target, relay.sent.cseq.seq, b"", None)
                call.reinvite = None
            else:
                call.ack_waits = target
            if body:
                source.last_sdp = body
            self._refreshed(call, source, relay.request, headers)
            self._refreshed(call, target, None, None)
        else:
            call.reinvite = None
        relay.txn.respond(source.dialog.create_response(relay.request, status,
                                                        headers=headers, body=body), self._now)
        if status == 481:
            self._lost(call, target)

    def _refreshed(self, call: Call, leg: Leg, request: Request | None,
                   headers: list[tuple[str, str]] | None) -> None:
        """A successful (re-)INVITE or UPDATE on `leg` refreshes its session (RFC 4028)."""
        if request is not None and self.config.session_expires_seconds:
            settled = st.settle_as_uas(request, self.config.session_expires_seconds)
            if settled is not None:
                leg.timer = settled
        if leg.timer is None or call.state is not CallState.ANSWERED:
            return
        if headers is not None and request is not None:
            headers.extend(st.response_headers(leg.timer, request))
        self._restart_session(leg)

    def _relay_request(self, call: Call, source: Leg, target: Leg, request: Request,
                       txn: ServerTransaction) -> None:
        assert source.dialog is not None and target.dialog is not None
        method = request.method
        headers = [(name, value) for name in _RELAYED_HEADERS
                   if name != "Content-Type" and (value := request.headers.get(name))]
        content, body = self._body(call, source, request, offer=True)
        headers = content + headers
        if method == "UPDATE":
            headers.extend(self._session_headers(target))
        sent = target.dialog.create_request(method, branch=self.ids.branch(),
                                            headers=headers, body=body)
        source_dialog = source.dialog

        def answered(response: Response | None) -> None:
            if response is None:
                txn.respond(source_dialog.create_response(request, 408), self._now)
                self._lost(call, target)
                return
            extra, reply = self._body(call, target, response, offer=False)
            if method == "UPDATE" and response.status < 300:
                self._refreshed(call, source, request, extra)
                self._refreshed(call, target, None, None)
            txn.respond(source_dialog.create_response(request, response.status, headers=extra,
                                                      body=reply), self._now)
            if response.status == 481:
                self._lost(call, target)

        self._send(sent, target.peer, answered)

    def _lost(self, call: Call, leg: Leg) -> None:
        """`leg` no longer answers in its dialog (timeout or 481): the call is over."""
        if call.state is CallState.ANSWERED:
            log.info("call_peer_lost", call=str(call.id), leg=leg.side.value)
            if leg.dialog is not None:
                leg.dialog.terminate()  # no BYE into a dialog the peer forgot
            self._terminate(call, HangupBy.SYSTEM, EndReason.PEER_LOST)

    # -- ending -----------------------------------------------------------------------------

    def _bye(self, leg: Leg) -> None:
        if leg.dialog is None or leg.dialog.state is DialogState.TERMINATED:
            return
        bye = leg.dialog.create_request("BYE", branch=self.ids.branch())
        leg.dialog.terminate()
        if leg.state is LegState.CONFIRMED:
            leg.move(LegState.ENDED)
        self._send(bye, leg.peer, lambda _response: None)

    def _hangup(self, call: Call, by: HangupBy, reason: EndReason) -> None:
        self._cancel_attempts(call)  # a transfer still ringing
        for leg in (call.a, call.b):
            if leg is not None and leg.state is LegState.CONFIRMED:
                self._bye(leg)
        self._end(call, by, 200, reason)

    def _terminate(self, call: Call, by: HangupBy, reason: EndReason, *, status: int = 480,
                   ) -> None:
        """End a call from our side, whatever its state."""
        if call.state is CallState.ANSWERED:
            self._hangup(call, by, reason)
            return
        self._cancel_attempts(call)
        if call.originated and call.a is not None and call.a.state is LegState.CONFIRMED:
            self._bye(call.a)
        self._refuse_a(call, status)
        self._end(call, by, status, reason)

    def _forget_leg(self, leg: Leg) -> None:
        self._legs.pop((leg.invite.call_id, leg.local_tag), None)
        for txn in (leg.client_txn, leg.server_txn):
            if txn is not None:
                self._invites.pop(txn, None)

    def _end(self, call: Call, by: HangupBy, status: int, reason: EndReason, *,
             caller_gave_up: bool = False) -> None:
        if call.state is CallState.ENDED:
            return
        answered = call.state is CallState.ANSWERED
        call.move(CallState.ENDED)
        call.timers.clear()
        for leg in [call.a, call.b, *call.attempts]:
            # A cancelled attempt stays known until its final response, so that a 2xx
            # crossing our CANCEL is still ACKed and hung up.
            if leg is not None and (leg.side is Side.A or leg.state in FINAL_SEEN):
                self._forget_leg(leg)
        self.calls.pop(call.id, None)
        call.media.close()
        final = 200 if answered else status
        # A call the IVR answered was not answered by anyone: it is a missed call whose
        # record says how it ended (callback_requested / callback_ivr).
        by_agent = answered and call.ivr is None
        klass = classify(call.direction, answered=by_agent, final_status=final,
                         caller_gave_up=caller_gave_up)
        if not by_agent:
            call.answered = None
        talk = self._now - call.answered if call.answered is not None else 0.0
        sip_call_id = call.a.invite.call_id if call.a is not None else ""
        record = CallRecord(
            call.id, call.tenant_id, sip_call_id, call.direction.value,
            call.direction is Direction.INTERNAL, klass.value, call.caller, call.callee,
            call.did, call.extension, call.peer_extension,
            call.trunk.name if call.trunk else None, self._wall(call.started),
            None if call.rang is None else self._wall(call.rang),
            None if call.answered is None else self._wall(call.answered), self._wall(),
            round(talk, 3), final, by.value, reason.value,
            tuple([*call.transfers, call.extension or call.transferred_out or ""])
            if call.transfers else ())
        self._out.append(RecordReady(record))
        log.info("call_ended", call=str(call.id), tenant=str(call.tenant_id),
                 call_class=klass.value, status=final, hangup_by=by.value, reason=reason.value,
                 caller=numbers.mask(call.caller), callee=numbers.mask(call.callee))
        self._publish(call, "call.ended", {"class": klass.value, "final_status": final,
                                           "hangup_by": by.value, "reason": reason.value,
                                           "talk_seconds": record.talk_seconds,
                                           "transfers": list(record.transfers)})

    def _publish(self, call: Call, kind: str, data: dict[str, object]) -> None:
        self._out.append(Published(CallEvent(kind, call.id, call.tenant_id, self._wall(), data)))


def _info_digit(body: bytes) -> str | None:
    """The key of a SIP INFO DTMF body: `Signal=5` (application/dtmf-relay) or `5`
    (application/dtmf)."""
    text = body.decode("ascii", "replace").strip()
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip().lower() == "signal":
            text = value.strip()
            break
    key = text[:1].upper()
    return key if len(text) == 1 and key in ivr.DIGITS else None


def _replaces(refer_to: str) -> tuple[str, str, str] | None:
    """(call-id, to-tag, from-tag) of a Refer-To URI's Replaces header, or None."""
    from urllib.parse import unquote

    lowered = refer_to.lower()
    at = lowered.find("replaces=")
    if at < 0:
        return None
    value = refer_to[at + len("replaces="):]
    for end in (">", "&"):
        value = value.split(end, 1)[0]
    parts = unquote(value).split(";")
    tags = dict(p.strip().split("=", 1) for p in parts[1:] if "=" in p)
    to_tag, from_tag = tags.get("to-tag"), tags.get("from-tag")
    if not parts[0] or to_tag is None or from_tag is None:
        return None
    return parts[0].strip(), to_tag, from_tag
