"""The B2BUA: every call is two dialogs bridged, an A leg (the caller's) and a B leg (the one
that answered), with the attempts of a ring group as candidate B legs until one answers.

The engine reacts to transaction-layer events synchronously; only admission (`admission.py`,
which reads extensions from the database) awaits. It knows calls, legs and routing; dialogs,
transactions and bytes belong to `protocols.sip`, SDP to the call's `MediaBridge`.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from config.sip import DidConfig, SipConfig, TrunkConfig
from handlers import numbers
from handlers.calls import extensions as ext_db
from handlers.calls.admission import EXTENSION_DIGITS, Admission
from handlers.calls.cdr import CallRecord, CdrWriter, Direction, HangupBy, classify
from handlers.calls.events import CallEvent, EventBus
from handlers.calls.media import MediaBridge, MediaFactory, PassThrough, Side
from handlers.calls.registrar import Registrar
from protocols.sip.auth import DigestClient
from protocols.sip.dialog import Dialog, DialogState
from protocols.sip.errors import SipSyntaxError
from protocols.sip.headers import NameAddr
from protocols.sip.message import IdGenerator, Request, Response, make_request, make_response
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
from protocols.sip.transport import SipEndpoint
from protocols.sip.uri import URI

log = structlog.get_logger("telgate.calls")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REGISTER"
INTERNAL_RING_SECONDS = 60.0  # an internal call nobody answers ends as missed
OUTGOING_RING_SECONDS = 120.0  # carriers end unanswered calls sooner; this is a backstop

# Requests relayed to the other leg as they are, answered with the other leg's answer.
_RELAYED = frozenset({"UPDATE", "INFO", "MESSAGE", "NOTIFY", "OPTIONS"})
ResponseCallback = Callable[[Response | None], None]


class CallState(enum.Enum):
    """Where a call is: attempts out, answered, or over."""

    ROUTING = "routing"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Target:
    """One contact to ring: the extension it belongs to (None for a trunk), its URI and the
    address it is reached at."""

    extension: str | None
    uri: URI
    peer: Peer


@dataclass(eq=False, slots=True)
class Leg:
    """One dialog of a call, from our point of view."""

    call: Call
    side: Side
    peer: Peer
    invite: Request
    local_tag: str
    dialog: Dialog | None = None
    server_txn: InviteServerTransaction | None = None
    client_txn: InviteClientTransaction | None = None
    extension: str | None = None
    cancelled: bool = False
    finished: bool = False  # final response received (B) or sent (A)
    auth: DigestClient | None = None
    last_ack: Request | None = None


@dataclass(slots=True)
class ReInvite:
    """A re-INVITE relayed from one leg to the other, waiting for the other's answer."""

    source: Leg
    txn: ServerTransaction
    request: Request
    target: Leg
    sent: Request


@dataclass(eq=False, slots=True)
class Call:
    """One call through the gateway and what its record will say."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    direction: Direction
    caller: str
    callee: str
    media: MediaBridge
    started_at: datetime
    a: Leg | None = None
    b: Leg | None = None
    state: CallState = CallState.ROUTING
    did: str | None = None
    extension: str | None = None
    peer_extension: str | None = None
    trunk: TrunkConfig | None = None
    stages: list[list[Target]] = field(default_factory=list)
    stage: int = -1
    stage_seconds: float | None = None
    candidates: list[Leg] = field(default_factory=list)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    ringing_at: datetime | None = None
    answered_at: datetime | None = None
    answered_mono: float = 0.0
    busy_seen: bool = False
    last_status: int = 480
    reinvite: ReInvite | None = None
    deferred_ack: Leg | None = None

    def other(self, leg: Leg) -> Leg | None:
        """The leg bridged to `leg`."""
        return self.b if leg is self.a else self.a


class B2bua:
    """Routes and bridges calls; the transaction user of our SIP endpoint."""

    def __init__(
        self,
        config: SipConfig,
        pool: asyncpg.Pool,
        *,
        may_send: Callable[[uuid.UUID, str], bool],
        cdrs: CdrWriter,
        bus: EventBus,
        tenants: dict[str, uuid.UUID],
        media: MediaFactory = PassThrough,
        secret: bytes,
    ) -> None:
        self.config = config
        self.pool = pool
        self.may_send = may_send
        self.cdrs = cdrs
        self.bus = bus
        self.tenants = tenants  # configured tenant names -> ids, shared with admission
        self.media = media
        self.registrar = Registrar(config)
        self.ids = IdGenerator()
        self.layer = TransactionLayer()
        self.endpoint = SipEndpoint(self.layer, self.on_event)
        self.admission = Admission(config, pool, self.registrar, tenants, secret=secret,
                                   ids=self.ids, clock=self.endpoint.now)
        self.dids: dict[str, DidConfig] = {d.number: d for d in config.dids}
        self.host = config.advertised_host
        self.port = config.port
        self.calls: dict[uuid.UUID, Call] = {}
        self._legs: dict[tuple[str, str], Leg] = {}  # (Call-ID, our tag) -> leg
        self._invites: dict[Transaction, Leg] = {}  # INVITE transactions of legs
        self._callbacks: dict[Transaction, ResponseCallback] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_record: Callable[[CallRecord], None] | None = None  # metrics hook
        self.trunk_down: set[str] = set()  # trunks that stopped answering OPTIONS

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.endpoint.now()

    def _contact(self, transport: str) -> str:
        suffix = ";transport=tcp" if transport == "TCP" else ""
        return f"<sip:telgate@{self.host}:{self.port}{suffix}>"

    def _via(self, transport: str) -> str:
        return f"SIP/2.0/{transport} {self.host}:{self.port};branch={self.ids.branch()};rport"

    def _send(self, request: Request, peer: Peer, on_response: ResponseCallback | None = None,
              ) -> ClientTransaction:
        txn = self.layer.send_request(request, peer, self.now)
        if on_response is not None:
            self._callbacks[txn] = on_response
        return txn

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sip_task_failed", error=repr(task.exception()))
        self.endpoint.flush()

    def probe_trunks(self) -> None:
        """Send OPTIONS to every trunk we call out through; track which answer."""
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
                # Any answer, even 404 or 405, shows the carrier is alive.
                if response is None and name not in self.trunk_down:
                    self.trunk_down.add(name)
                    log.warning("trunk_down", trunk=name)
                elif response is not None and name in self.trunk_down:
                    self.trunk_down.discard(name)
                    log.info("trunk_up", trunk=name)

            self._send(request, Peer(transport, trunk.host, trunk.port), answered)
        self.endpoint.flush()

    async def sweep(self) -> None:
        """Housekeeping: expired bindings and lock-outs, and bindings of deleted extensions."""
        now = self.now
        self.registrar.prune(now)
        self.admission.lockout.prune(now)
        aors = self.registrar.aors()
        if not aors:
            return
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT e.tenant_id, e.extension FROM extensions e "
                "JOIN unnest($1::uuid[], $2::text[]) AS b(tenant_id, extension) "
                "ON e.tenant_id = b.tenant_id AND e.extension = b.extension",
                [a[0] for a in aors], [a[1] for a in aors])
        alive = {(r["tenant_id"], r["extension"]) for r in rows}
        for aor in aors:
            if aor not in alive:
                self.registrar.forget(aor)
                log.info("extension_bindings_dropped", extension=aor[1], tenant=str(aor[0]))

    async def close(self) -> None:
        """The process is stopping: hang up answered calls (BYE both legs), refuse ringing
        ones (503, CANCEL the attempts), then close the sockets."""
        for task in list(self._tasks):
            task.cancel()
        for call in list(self.calls.values()):
            if call.state is CallState.ANSWERED:
                self._hangup(call, HangupBy.SYSTEM, exclude=None)
                continue
            for leg in list(call.candidates):
                self._cancel_leg(leg)
            a = call.a
            if a is not None and a.dialog is not None and a.server_txn is not None and \
                    not a.finished:
                a.server_txn.respond(a.dialog.create_response(a.invite, 503), self.now)
                a.finished = True
            self._end(call, HangupBy.SYSTEM, 503)
        self.endpoint.flush()
        await asyncio.sleep(0.05)  # let the last datagrams and stream writes leave
        self.endpoint.close()

    # -- events -----------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Transaction-layer event dispatcher (runs inside the endpoint's flush)."""
        try:
            self._dispatch(event)
        except SipSyntaxError as exc:
            log.info("sip_event_unusable", error=str(exc))

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
            status = 408 if isinstance(event, TransactionTimedOut) else 503
            callback = self._callbacks.pop(txn, None)
            if callback is not None:
                callback(None)
            leg = self._invites.get(txn)
            if leg is not None and leg.side is Side.B and isinstance(txn, ClientTransaction):
                self._b_failed(leg, status)
        elif isinstance(event, AckTimedOut):
            leg = self._invites.get(event.transaction)
            if leg is not None and leg.call.state is CallState.ANSWERED:
                self._hangup(leg.call, HangupBy.SYSTEM, exclude=None)

    def _on_response(self, response: Response, txn: ClientTransaction | None) -> None:
        if txn is None:
            # A 2xx retransmitted after the INVITE transaction ended: ACK it again.
            leg = self._legs.get((response.call_id, response.from_tag or ""))
            if leg is not None and leg.last_ack is not None and \
                    leg.last_ack.cseq.seq == response.cseq.seq:
                self.layer.send_stateless(leg.last_ack, leg.peer)
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
            self._reack(response)  # a re-INVITE's 2xx retransmitted: ACK it again

    def _reack(self, response: Response) -> None:
        leg = self._legs.get((response.call_id, response.from_tag or ""))
        if leg is not None and leg.last_ack is not None:
            self.layer.send_stateless(leg.last_ack, leg.peer)

    def _on_request(self, request: Request, peer: Peer, txn: ServerTransaction) -> None:
        method = request.method
        if request.to_tag:
            leg = self._legs.get((request.call_id, request.to_tag))
            if leg is None:
                txn.respond(make_response(request, 481), self.now)
                return
            self._in_dialog(leg, request, txn)
            return
        if method == "INVITE":
            assert isinstance(txn, InviteServerTransaction)
            self._on_invite(request, peer, txn)
        elif method == "REGISTER":
            self._spawn(self.admission.register(request, peer, txn))
        elif method == "OPTIONS":
            txn.respond(make_response(request, 200, to_tag=self.ids.tag(),
                                      headers=[("Allow", ALLOW)]), self.now)
        elif method == "BYE":
            txn.respond(make_response(request, 481), self.now)
        else:
            txn.respond(make_response(request, 405, headers=[("Allow", ALLOW)]), self.now)

    # -- new calls ---------------------------------------------------------------------------

    def _on_invite(self, request: Request, peer: Peer, txn: InviteServerTransaction) -> None:
        admission = self.admission
        trunk = admission.trunk_by_address(peer) or admission.digest_trunk(request)
        if trunk is not None:
            if trunk.username and not admission.trunk_auth(trunk, request, txn):
                return
            self._incoming(request, peer, txn, trunk)
            return
        self._spawn(self._extension_invite(request, peer, txn))

    def _new_call(self, tenant: uuid.UUID, direction: Direction, caller: str,
                  callee: str) -> Call:
        call = Call(uuid.uuid4(), tenant, direction, caller, callee, self.media(),
                    datetime.now(UTC))
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
            txn.respond(make_response(request, 400, str(exc)[:60], to_tag=tag), self.now)
            del self.calls[call.id]
            return None
        leg = Leg(call, Side.A, peer, request, tag, dialog=dialog, server_txn=txn)
        call.a = leg
        self._legs[(request.call_id, tag)] = leg
        self._invites[txn] = leg
        return leg

    async def _incoming_later(self, request: Request, peer: Peer,
                              txn: InviteServerTransaction, trunk: TrunkConfig) -> None:
        await self.admission.resolve_tenants()
        if txn.state is State.PROCEEDING:
            self._incoming(request, peer, txn, trunk, resolved=True)

    def _incoming(self, request: Request, peer: Peer, txn: InviteServerTransaction,
                  trunk: TrunkConfig, *, resolved: bool = False) -> None:
        dialled = _digits(request.uri.user) or _digits(request.to.uri.user)
        did = self.dids.get(dialled or "")
        tenant = self.tenants.get(did.tenant) if did is not None else None
        if did is not None and tenant is None and not resolved:
            self._spawn(self._incoming_later(request, peer, txn, trunk))
            return
        if did is None or tenant is None:
            txn.respond(make_response(request, 404, to_tag=self.ids.tag()), self.now)
            return
        caller = _digits(request.from_.uri.user) or "anonymous"
        call = self._new_call(tenant, Direction.INCOMING, caller, dialled or "")
        call.did, call.trunk = did.number, trunk
        if self._a_leg(call, request, peer, txn) is None:
            return
        now = self.now
        stages = [[Target(ext, b.uri, b.peer)
                   for b in self.registrar.contacts((tenant, ext), now)]
                  for ext in did.extensions]
        if did.strategy == "simultaneous":
            stages = [[t for stage in stages for t in stage]]
        else:
            call.stage_seconds = did.ring_seconds
        call.stages = [s for s in stages if s]  # unregistered extensions are skipped
        self._start_timer(call, did.no_answer_seconds, self._no_answer)
        log.info("call_incoming", call=str(call.id), tenant=str(tenant),
                 caller=numbers.mask(caller), did=numbers.mask(did.number),
                 targets=sum(len(s) for s in call.stages))
        self._next_stage(call)

    async def _extension_invite(self, request: Request, peer: Peer,
                                txn: InviteServerTransaction) -> None:
        extension = await self.admission.authenticate(request, peer, txn, request.from_.uri,
                                                      proxy=True)
        if extension is None or txn.state is not State.PROCEEDING:
            return
        await self.admission.resolve_tenants()
        dialled = _digits(request.uri.user) or ""
        if 0 < len(dialled) <= EXTENSION_DIGITS:
            self._internal(request, peer, txn, extension, dialled)
        else:
            self._outgoing(request, peer, txn, extension, dialled)

    def _internal(self, request: Request, peer: Peer, txn: InviteServerTransaction,
                  caller: ext_db.Extension, dialled: str) -> None:
        call = self._new_call(caller.tenant_id, Direction.INTERNAL, caller.extension, dialled)
        call.extension, call.peer_extension = dialled, caller.extension
        if self._a_leg(call, request, peer, txn) is None:
            return
        targets = [Target(dialled, b.uri, b.peer)
                   for b in self.registrar.contacts((caller.tenant_id, dialled), self.now)]
        call.stages = [targets] if targets else []
        self._start_timer(call, INTERNAL_RING_SECONDS, self._no_answer)
        self._next_stage(call)

    def _outgoing(self, request: Request, peer: Peer, txn: InviteServerTransaction,
                  caller: ext_db.Extension, dialled: str) -> None:
        presented = caller.presented_number
        tag = self.ids.tag()
        if presented is None or not self.may_send(caller.tenant_id, presented):
            # Telecommunications Business Act art. 84-2: only registered numbers go out.
            log.info("call_caller_id_refused", extension=caller.extension,
                     tenant=str(caller.tenant_id), number=numbers.mask(presented or ""))
            call = self._new_call(caller.tenant_id, Direction.OUTGOING, presented or "", dialled)
            call.extension = caller.extension
            txn.respond(make_response(request, 403, "Caller ID Not Registered", to_tag=tag),
                        self.now)
            call.last_status = 403
            self._end(call, HangupBy.SYSTEM, 403)
            return
        usable = [t for t in self.config.trunks if t.host and (
            not t.tenant or self.tenants.get(t.tenant) == caller.tenant_id)]
        # Prefer a trunk answering its keep-alives; if none does, try anyway.
        trunk = next((t for t in usable if t.name not in self.trunk_down),
                     usable[0] if usable else None)
        if trunk is None or not dialled:
            txn.respond(make_response(request, 404 if trunk else 503, to_tag=tag), self.now)
            return
        call = self._new_call(caller.tenant_id, Direction.OUTGOING, presented, dialled)
        call.extension, call.trunk = caller.extension, trunk
        if self._a_leg(call, request, peer, txn) is None:
            return
        transport = trunk.transport.upper()
        uri = URI("sip", user=dialled, host=trunk.host, port=trunk.port)
        call.stages = [[Target(None, uri, Peer(transport, trunk.host, trunk.port))]]
        self._start_timer(call, OUTGOING_RING_SECONDS, self._no_answer)
        self._next_stage(call)

    # -- ringing ----------------------------------------------------------------------------

    def _start_timer(self, call: Call, delay: float, action: Callable[[Call], None]) -> None:
        def fire() -> None:
            action(call)
            self.endpoint.flush()
        call.timers.append(asyncio.get_running_loop().call_later(delay, fire))

    def _next_stage(self, call: Call) -> None:
        call.stage += 1
        if call.stage >= len(call.stages):
            self._fail(call)
            return
        stage = call.stage
        for target in call.stages[stage]:
            self._invite_b(call, target)
        if call.stage_seconds is not None and stage + 1 < len(call.stages):
            self._start_timer(call, call.stage_seconds,
                              lambda c: self._stage_timeout(c, stage))

    def _stage_timeout(self, call: Call, stage: int) -> None:
        if call.stage != stage or call.state not in (CallState.ROUTING, CallState.RINGING):
            return
        for leg in list(call.candidates):
            self._cancel_leg(leg)
        call.candidates.clear()
        self._next_stage(call)

    def _no_answer(self, call: Call) -> None:
        if call.state in (CallState.ROUTING, CallState.RINGING):
            for leg in list(call.candidates):
                self._cancel_leg(leg)
            call.candidates.clear()
            call.last_status = 480
            call.stage = len(call.stages)
            self._fail(call, timed_out=True)

    def _invite_b(self, call: Call, target: Target) -> None:
        a = call.a
        assert a is not None
        transport = target.peer.transport
        tag = self.ids.tag()
        call_id = self.ids.call_id(self.host)
        from_uri = URI("sip", user=call.caller, host=self.host)
        if call.direction is Direction.OUTGOING:
            to_uri = URI("sip", user=call.callee, host=target.uri.host)
        else:
            to_uri = URI("sip", user=target.extension or call.callee, host=self.host)
        headers = [("Allow", ALLOW)]
        content_type = a.invite.headers.get("Content-Type")
        body = a.invite.body
        if body:
            body = call.media.relay_sdp(Side.A, body, content_type)
            headers.append(("Content-Type", content_type or "application/sdp"))
        if call.direction is Direction.OUTGOING:
            headers.append(("P-Asserted-Identity", f"<sip:{call.caller}@{self.host}>"))
        request = make_request(
            "INVITE", target.uri, via=self._via(transport), from_=NameAddr(from_uri, params=(
                ("tag", tag),)), to=NameAddr(to_uri), call_id=call_id, cseq=1,
            contact=self._contact(transport), headers=headers, body=body)
        leg = Leg(call, Side.B, target.peer, request, tag, extension=target.extension)
        trunk = call.trunk
        if call.direction is Direction.OUTGOING and trunk is not None and \
                trunk.outbound_username:
            leg.auth = DigestClient(trunk.outbound_username, trunk.outbound_password)
        self._legs[(call_id, tag)] = leg
        call.candidates.append(leg)
        txn = self._send(request, target.peer)
        assert isinstance(txn, InviteClientTransaction)
        leg.client_txn = txn
        self._invites[txn] = leg

    def _cancel_leg(self, leg: Leg) -> None:
        if leg.finished or leg.cancelled:
            return
        leg.cancelled = True
        if leg.client_txn is not None:
            leg.client_txn.cancel(self.now)

    def _on_b_response(self, leg: Leg, response: Response) -> None:
        call = leg.call
        status = response.status
        if status < 200:
            if status == 100:
                return
            if response.to_tag and leg.dialog is None:
                leg.dialog = Dialog.from_uac_response(leg.invite, response)
            if leg in call.candidates and call.state in (CallState.ROUTING, CallState.RINGING):
                self._ringing(call, response)
            return
        if status < 300:
            self._b_answered(leg, response)
            return
        if status in (401, 407) and leg.auth is not None and not leg.finished:
            retry = leg.auth.retry(leg.invite, response, branch=self.ids.branch())
            leg.auth = None
            if retry is not None:
                if leg.client_txn is not None:
                    self._invites.pop(leg.client_txn, None)
                leg.invite = retry
                txn = self._send(retry, leg.peer)
                assert isinstance(txn, InviteClientTransaction)
                leg.client_txn = txn
                self._invites[txn] = leg
                return
        self._b_failed(leg, status)

    def _ringing(self, call: Call, response: Response) -> None:
        a = call.a
        assert a is not None and a.dialog is not None and a.server_txn is not None
        first = call.state is CallState.ROUTING
        call.state = CallState.RINGING
        body = response.body
        headers: list[tuple[str, str]] = []
        if body:
            body = call.media.relay_sdp(Side.B, body, response.content_type)
            headers.append(("Content-Type", response.headers.get("Content-Type")
                            or "application/sdp"))
        status = 183 if body else 180
        a.server_txn.respond(a.dialog.create_response(a.invite, status, headers=headers,
                                                      body=body), self.now)
        if first:
            call.ringing_at = datetime.now(UTC)
            self._publish(call, "call.ringing", {
                "direction": call.direction.value, "caller": call.caller,
                "callee": call.callee, "did": call.did,
                "extensions": sorted({leg.extension for leg in call.candidates
                                      if leg.extension})})

    def _b_answered(self, leg: Leg, response: Response) -> None:
        call = leg.call
        if leg.finished:  # retransmitted 2xx: the same ACK again
            if leg.last_ack is not None:
                self.layer.send_stateless(leg.last_ack, leg.peer)
            return
        leg.finished = True
        leg.dialog = Dialog.from_uac_response(leg.invite, response)
        if call.state not in (CallState.ROUTING, CallState.RINGING) or leg.cancelled:
            # Too late (another leg answered, or the caller gave up): ACK and hang up.
            self._ack(leg, response.cseq.seq, b"", None)
            self._bye(leg)
            self._forget_leg(leg)
            return
        a = call.a
        assert a is not None and a.dialog is not None and a.server_txn is not None
        call.b = leg
        call.state = CallState.ANSWERED
        call.answered_at = datetime.now(UTC)
        call.answered_mono = time.monotonic()
        if leg.extension is not None and call.direction is Direction.INCOMING:
            call.extension = leg.extension
        for other in call.candidates:
            if other is not leg:
                self._cancel_leg(other)
        call.candidates = [leg]
        for timer in call.timers:
            timer.cancel()
        call.timers.clear()
        if a.invite.body:
            self._ack(leg, response.cseq.seq, b"", None)
        else:
            call.deferred_ack = leg  # late offer: B's ACK carries A's answer
        headers: list[tuple[str, str]] = []
        body = response.body
        if body:
            body = call.media.relay_sdp(Side.B, body, response.content_type)
            headers.append(("Content-Type", response.headers.get("Content-Type")
                            or "application/sdp"))
        a.server_txn.respond(a.dialog.create_response(a.invite, 200, headers=headers,
                                                      body=body), self.now)
        a.dialog.confirm()
        a.finished = True
        call.media.answered()
        log.info("call_answered", call=str(call.id), extension=call.extension)
        self._publish(call, "call.answered", {"extension": call.extension})

    def _b_failed(self, leg: Leg, status: int) -> None:
        call = leg.call
        if leg.finished:
            return
        leg.finished = True
        self._forget_leg(leg)
        if leg not in call.candidates:
            return
        call.candidates.remove(leg)
        if not leg.cancelled:
            call.last_status = status
            if status in (486, 600):
                call.busy_seen = True
        if call.state in (CallState.ROUTING, CallState.RINGING) and not any(
                not c.cancelled for c in call.candidates):
            self._next_stage(call)

    def _fail(self, call: Call, *, timed_out: bool = False) -> None:
        """No attempt answered: tell the caller and end the call."""
        a = call.a
        if call.state is CallState.ENDED or a is None or a.server_txn is None:
            return
        if call.direction is Direction.OUTGOING:
            status = call.last_status
        elif call.busy_seen and not timed_out:
            status = 486
        elif call.last_status == 603 and not timed_out:
            status = 603
        else:
            status = 480
        if a.dialog is not None and not a.finished:
            a.server_txn.respond(a.dialog.create_response(a.invite, status), self.now)
            a.finished = True
        self._end(call, HangupBy.SYSTEM if timed_out or status >= 500 else HangupBy.CALLEE,
                  status)

    def _on_cancel(self, invite: InviteServerTransaction) -> None:
        leg = self._invites.get(invite)
        if leg is None:
            # Still authenticating: nothing was routed yet.
            if invite.state is State.PROCEEDING:
                invite.respond(make_response(invite.request, 487, to_tag=self.ids.tag()),
                               self.now)
            return
        call = leg.call
        if call.state not in (CallState.ROUTING, CallState.RINGING) or leg.dialog is None:
            return
        invite.respond(leg.dialog.create_response(leg.invite, 487), self.now)
        leg.finished = True
        for candidate in call.candidates:
            self._cancel_leg(candidate)
        self._end(call, HangupBy.CALLER, 487, caller_gave_up=True)

    # -- in-dialog --------------------------------------------------------------------------

    def _in_dialog(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        call = leg.call
        dialog = leg.dialog
        if dialog is None:
            txn.respond(make_response(request, 481), self.now)
            return
        error = dialog.receive_request(request)
        if error is not None:
            txn.respond(error, self.now)
            return
        if leg.server_txn is not None and not leg.server_txn.acked:
            # A request in the dialog proves our 2xx arrived even if its ACK was lost: stop
            # retransmitting the 2xx (it would reach the peer after its BYE).
            leg.server_txn.ack_2xx(request)
        method = request.method
        other = call.other(leg)
        if method == "BYE":
            txn.respond(dialog.create_response(request, 200), self.now)
            if call.state is CallState.ANSWERED:
                by = HangupBy.CALLER if leg.side is Side.A else HangupBy.CALLEE
                self._hangup(call, by, exclude=leg)
            elif leg.side is Side.B:
                self._b_failed(leg, 487)  # an early dialog ended by the callee
            else:
                self._forget_leg(leg)
            return
        if call.state is not CallState.ANSWERED or other is None or other.dialog is None:
            txn.respond(dialog.create_response(request, 491 if method == "INVITE" else 481),
                        self.now)
            return
        if method == "INVITE":
            self._relay_reinvite(call, leg, other, request, txn)
        elif method in _RELAYED:
            self._relay_request(call, leg, other, request, txn)
        else:
            txn.respond(dialog.create_response(request, 405, headers=[("Allow", ALLOW)]),
                        self.now)

    def _on_ack(self, ack: Request) -> None:
        leg = self._legs.get((ack.call_id, ack.to_tag or ""))
        if leg is None or leg.dialog is None:
            return
        leg.dialog.receive_request(ack)
        call = leg.call
        target = call.deferred_ack
        if target is not None and target is not leg:
            call.deferred_ack = None
            source = Side.A if leg.side is Side.A else Side.B
            body = call.media.relay_sdp(source, ack.body, ack.content_type) if ack.body else b""
            seq = target.last_ack.cseq.seq if target.last_ack is not None else \
                target.invite.cseq.seq
            if call.reinvite is not None and call.reinvite.target is target:
                seq = call.reinvite.sent.cseq.seq
                call.reinvite = None
            self._ack(target, seq, body, ack.headers.get("Content-Type"))

    def _ack(self, leg: Leg, seq: int, body: bytes, content_type: str | None) -> None:
        if leg.dialog is None:
            return
        headers = [("Content-Type", content_type or "application/sdp")] if body else None
        ack = leg.dialog.create_ack(seq, branch=self.ids.branch(), headers=headers, body=body)
        leg.last_ack = ack
        self.layer.send_stateless(ack, leg.peer)

    def _relay_reinvite(self, call: Call, source: Leg, target: Leg, request: Request,
                        txn: ServerTransaction) -> None:
        assert source.dialog is not None and target.dialog is not None
        if call.reinvite is not None:
            txn.respond(source.dialog.create_response(request, 491), self.now)
            return
        headers: list[tuple[str, str]] = []
        body = request.body
        if body:
            body = call.media.relay_sdp(source.side, body, request.content_type)
            headers.append(("Content-Type", request.headers.get("Content-Type")
                            or "application/sdp"))
        sent = target.dialog.create_request("INVITE", branch=self.ids.branch(), headers=headers,
                                            body=body)
        relay = ReInvite(source, txn, request, target, sent)
        call.reinvite = relay

        def answered(response: Response | None) -> None:
            self._reinvite_answered(call, relay, response)

        self._send(sent, target.peer, answered)

    def _reinvite_answered(self, call: Call, relay: ReInvite, response: Response | None) -> None:
        source, target = relay.source, relay.target
        assert source.dialog is not None and target.dialog is not None
        if response is None:
            relay.txn.respond(source.dialog.create_response(relay.request, 408), self.now)
            call.reinvite = None
            return
        target.dialog.receive_response(relay.sent, response)
        status = response.status
        headers: list[tuple[str, str]] = []
        body = response.body
        if body:
            body = call.media.relay_sdp(target.side, body, response.content_type)
            headers.append(("Content-Type", response.headers.get("Content-Type")
                            or "application/sdp"))
        if 200 <= status < 300:
            if relay.request.body:
                self._ack(target, relay.sent.cseq.seq, b"", None)
                call.reinvite = None
            else:
                call.deferred_ack = target
        else:
            call.reinvite = None
        relay.txn.respond(source.dialog.create_response(relay.request, status,
                                                        headers=headers, body=body), self.now)

    def _relay_request(self, call: Call, source: Leg, target: Leg, request: Request,
                       txn: ServerTransaction) -> None:
        assert source.dialog is not None and target.dialog is not None
        headers: list[tuple[str, str]] = []
        for name in ("Content-Type", "Event", "Subscription-State", "Info-Package"):
            value = request.headers.get(name)
            if value is not None:
                headers.append((name, value))
        body = request.body
        if body and request.content_type == "application/sdp":
            body = call.media.relay_sdp(source.side, body, request.content_type)
        sent = target.dialog.create_request(request.method, branch=self.ids.branch(),
                                            headers=headers, body=body)
        source_dialog = source.dialog

        def answered(response: Response | None) -> None:
            if response is None:
                txn.respond(source_dialog.create_response(request, 408), self.now)
                return
            extra: list[tuple[str, str]] = []
            reply = response.body
            if reply:
                extra.append(("Content-Type", response.headers.get("Content-Type")
                              or "application/sdp"))
                if response.content_type == "application/sdp":
                    reply = call.media.relay_sdp(target.side, reply, response.content_type)
            txn.respond(source_dialog.create_response(request, response.status, headers=extra,
                                                      body=reply), self.now)

        self._send(sent, target.peer, answered)

    # -- ending -----------------------------------------------------------------------------

    def _bye(self, leg: Leg) -> None:
        if leg.dialog is None or leg.dialog.state is DialogState.TERMINATED:
            return
        bye = leg.dialog.create_request("BYE", branch=self.ids.branch())
        leg.dialog.terminate()
        self._send(bye, leg.peer, lambda _response: None)

    def _hangup(self, call: Call, by: HangupBy, *, exclude: Leg | None) -> None:
        for leg in (call.a, call.b):
            if leg is not None and leg is not exclude:
                self._bye(leg)
        self._end(call, by, 200)

    def _forget_leg(self, leg: Leg) -> None:
        self._legs.pop((leg.invite.call_id, leg.local_tag), None)
        for txn in (leg.client_txn, leg.server_txn):
            if txn is not None:
                self._invites.pop(txn, None)

    def _end(self, call: Call, by: HangupBy, status: int, *, caller_gave_up: bool = False,
             ) -> None:
        if call.state is CallState.ENDED:
            return
        answered = call.state is CallState.ANSWERED
        call.state = CallState.ENDED
        for timer in call.timers:
            timer.cancel()
        call.timers.clear()
        for leg in [call.a, call.b, *call.candidates]:
            # A cancelled attempt stays known until its final response, so that a 2xx
            # crossing our CANCEL is still ACKed and hung up.
            if leg is not None and (leg.side is Side.A or leg.finished):
                self._forget_leg(leg)
        self.calls.pop(call.id, None)
        call.media.close()
        ended = datetime.now(UTC)
        final = 200 if answered else status
        klass = classify(call.direction, answered=answered, final_status=final,
                         caller_gave_up=caller_gave_up)
        talk = time.monotonic() - call.answered_mono if answered else 0.0
        sip_call_id = call.a.invite.call_id if call.a is not None else ""
        record = CallRecord(
            call.id, call.tenant_id, sip_call_id, call.direction.value,
            call.direction is Direction.INTERNAL, klass.value, call.caller, call.callee,
            call.did, call.extension, call.peer_extension,
            call.trunk.name if call.trunk else None, call.started_at, call.ringing_at,
            call.answered_at, ended, round(talk, 3), final, by.value)
        self.cdrs.submit(record)
        if self.on_record is not None:
            self.on_record(record)
        log.info("call_ended", call=str(call.id), tenant=str(call.tenant_id),
                 call_class=klass.value, status=final, hangup_by=by.value,
                 caller=numbers.mask(call.caller), callee=numbers.mask(call.callee))
        self._publish(call, "call.ended", {"class": klass.value, "final_status": final,
                                           "hangup_by": by.value,
                                           "talk_seconds": record.talk_seconds})

    def _publish(self, call: Call, kind: str, data: dict[str, object]) -> None:
        self.bus.publish(CallEvent(kind, call.id, call.tenant_id, datetime.now(UTC), data))


def _digits(user: str | None) -> str | None:
    if not user:
        return None
    text = user.lstrip("+")
    if not text.isdigit():
        return None
    try:
        return numbers.normalise(user) if len(text) > EXTENSION_DIGITS else text
    except numbers.NumberError:
        return text
