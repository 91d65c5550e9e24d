"""The call model: a call, its legs, their states and the only transitions allowed between
them; the commands the engine takes and the outputs it gives.

A call has an A leg (the caller's dialog, where we are the UAS) and, while it rings, one B
leg per contact rung (we are the UAC); the B leg that answers stays, the others are
cancelled. Every state change goes through `Call.move` / `Leg.move`, which refuse a
transition the table does not list.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field

from config.sip import TrunkConfig
from handlers.calls.cdr import CallRecord, Direction, EndReason
from handlers.calls.events import CallEvent
from handlers.calls.media import MediaBridge, Side
from handlers.calls.routing import RingPlan
from handlers.calls.session_timer import LegTimer
from handlers.ivr.flow import FlowRun
from protocols.sip.auth import DigestClient
from protocols.sip.dialog import Dialog
from protocols.sip.message import Request
from protocols.sip.transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    Peer,
    ServerTransaction,
)


class CallState(enum.Enum):
    """Where a call is."""

    ROUTING = "routing"  # attempts sent, nothing heard back
    RINGING = "ringing"  # an attempt is ringing (the caller heard 180/183)
    ANSWERED = "answered"
    ENDED = "ended"


class LegState(enum.Enum):
    """Where one dialog of a call is."""

    OFFERED = "offered"  # A: INVITE received, not answered yet
    CALLING = "calling"  # B: INVITE sent, nothing heard but 100
    EARLY = "early"  # A: 18x sent / B: 18x received
    CANCELLING = "cancelling"  # B: CANCEL sent, waiting for the final response
    CONFIRMED = "confirmed"  # 2xx sent (A) or received (B)
    FAILED = "failed"  # a final failure sent (A) or received (B)
    ENDED = "ended"  # BYE sent or received


CALL_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.ROUTING: frozenset({CallState.RINGING, CallState.ANSWERED, CallState.ENDED}),
    CallState.RINGING: frozenset({CallState.ANSWERED, CallState.ENDED}),
    CallState.ANSWERED: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}

LEG_TRANSITIONS: dict[LegState, frozenset[LegState]] = {
    LegState.OFFERED: frozenset({LegState.EARLY, LegState.CONFIRMED, LegState.FAILED}),
    LegState.CALLING: frozenset({LegState.EARLY, LegState.CANCELLING, LegState.CONFIRMED,
                                 LegState.FAILED}),
    LegState.EARLY: frozenset({LegState.CANCELLING, LegState.CONFIRMED, LegState.FAILED,
                               LegState.ENDED}),
    # A 2xx may cross our CANCEL: the leg is confirmed, then hung up at once.
    LegState.CANCELLING: frozenset({LegState.CONFIRMED, LegState.FAILED}),
    LegState.CONFIRMED: frozenset({LegState.ENDED}),
    LegState.FAILED: frozenset(),
    LegState.ENDED: frozenset(),
}

RINGING_STATES = frozenset({CallState.ROUTING, CallState.RINGING})
LIVE_ATTEMPT = frozenset({LegState.CALLING, LegState.EARLY})  # may still answer for us
FINAL_SEEN = frozenset({LegState.CONFIRMED, LegState.FAILED, LegState.ENDED})


class IllegalTransition(RuntimeError):
    """A programming error: the engine asked for a move the tables do not allow."""


@dataclass(eq=False, slots=True)
class Leg:
    """One dialog of a call, from our point of view."""

    call: Call
    side: Side
    peer: Peer
    invite: Request
    local_tag: str
    state: LegState
    dialog: Dialog | None = None
    server_txn: InviteServerTransaction | None = None
    client_txn: InviteClientTransaction | None = None
    extension: str | None = None
    auth: DigestClient | None = None
    last_ack: Request | None = None
    last_sdp: bytes = b""  # the last SDP we sent on this leg (a refresh repeats it)
    received_sdp: bytes = b""  # the last SDP this leg sent us (a transfer offers it again)
    timer: LegTimer | None = None  # RFC 4028, once settled
    allows_update: bool = False

    def move(self, new: LegState) -> None:
        """Change state, refusing transitions the table does not list."""
        if new not in LEG_TRANSITIONS[self.state]:
            raise IllegalTransition(f"leg {self.side.value}: {self.state.value} -> {new.value}")
        self.state = new


@dataclass(slots=True)
class Relay:
    """An in-dialog request relayed from one leg to the other, awaiting the other's answer, or
    (`txn` None) a re-INVITE of our own (hold through the API). Only one INVITE may be open
    per call (a second gets 491, RFC 3261 §14.2)."""

    source: Leg
    txn: ServerTransaction | None
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
    started: float  # engine times; wall-clock times only in the record
    a: Leg | None = None
    b: Leg | None = None
    state: CallState = CallState.ROUTING
    did: str | None = None
    extension: str | None = None
    peer_extension: str | None = None
    trunk: TrunkConfig | None = None
    plan: RingPlan | None = None
    stage: int = -1
    attempts: list[Leg] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)  # final statuses of attempts
    timers: dict[str, float] = field(default_factory=dict)  # name -> deadline
    rang: float | None = None  # when the caller first heard ringing
    answered: float | None = None
    reinvite: Relay | None = None
    ack_waits: Leg | None = None  # late offer: this leg's ACK waits for the other's answer
    ivr: FlowRun | None = None  # answered by the gateway's IVR instead of an agent
    ivr_trigger: str | None = None  # why the IVR took it: closed, no_agent, no_answer
    blocking: bool = False  # abuse block: the customer hears the warning, then BYE
    held: set[Side] = field(default_factory=set)  # sides on hold (hearing music)
    originated: bool = False  # click-to-call: the agent (A) was called first, by us
    transferring: str | None = None  # the extension (or number) a blind transfer rings now
    transfer_trunk: TrunkConfig | None = None  # a transfer out: its trunk and caller ID
    transfer_caller_id: str = ""
    transferred_out: str | None = None  # the outside number a transfer handed the call to
    transfers: list[str] = field(default_factory=list)  # extensions the call went to, in order

    def move(self, new: CallState) -> None:
        """Change state, refusing transitions the table does not list."""
        if new not in CALL_TRANSITIONS[self.state]:
            raise IllegalTransition(f"call: {self.state.value} -> {new.value}")
        self.state = new

    def other(self, leg: Leg) -> Leg | None:
        """The leg bridged to `leg`."""
        return self.b if leg is self.a else self.a

    @property
    def ringing(self) -> bool:
        """Still looking for someone to answer."""
        return self.state in RINGING_STATES


# -- commands (from the control API, IVRs and media) ----------------------------------------


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call now (either state): BYE answered legs, refuse or cancel the rest."""

    call_id: uuid.UUID
    reason: EndReason = EndReason.COMMAND


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the A leg ourselves with media's SDP (IVRs): the ring attempts stop."""

    call_id: uuid.UUID
    sdp: bytes


@dataclass(frozen=True, slots=True)
class Hold:
    """Put one side on hold (re-INVITE a=sendonly towards it), or take it off (`held`)."""

    call_id: uuid.UUID
    side: Side
    held: bool = True


@dataclass(frozen=True, slots=True)
class Transfer:
    """Replace the B side by a call to `extension` (blind transfer)."""

    call_id: uuid.UUID
    extension: str


@dataclass(frozen=True, slots=True)
class CompleteTransfer:
    """Attended transfer, completed: the agent consulted `consult_id` (its own call to
    another extension) while the caller of `call_id` waited; the caller now talks to that
    extension and the agent leaves both calls."""

    call_id: uuid.UUID
    consult_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Pickup:
    """당겨받기: a call ringing elsewhere rings `extension` instead (its attempts elsewhere
    are cancelled)."""

    call_id: uuid.UUID
    extension: str


@dataclass(frozen=True, slots=True)
class Originate:
    """Click-to-call: ring the agent's `extension`, then call `number` presenting
    `caller_id` (already checked against the sender-number registry)."""

    call_id: uuid.UUID
    tenant_id: uuid.UUID
    extension: str
    number: str
    caller_id: str


@dataclass(frozen=True, slots=True)
class BridgeToMedia:
    """Connect one side to the media process instead of the other side (IVR, announcement)."""

    call_id: uuid.UUID
    side: Side


@dataclass(frozen=True, slots=True)
class Play:
    """Play a prompt to one side (through the media process)."""

    call_id: uuid.UUID
    side: Side
    prompt: str


@dataclass(frozen=True, slots=True)
class CollectDigits:
    """Collect up to `max_digits` RFC 4733 digits from one side, ending on `terminator`."""

    call_id: uuid.UUID
    side: Side
    max_digits: int
    timeout_seconds: float
    terminator: str = "#"


@dataclass(frozen=True, slots=True)
class AbuseBlock:
    """Seed 002 §14: release the agent at once; the customer hears the abuse warning to its
    end, then BYE."""

    call_id: uuid.UUID


Command = (Hangup | Answer | Hold | Transfer | BridgeToMedia | Play | CollectDigits | AbuseBlock
           | Pickup | CompleteTransfer)


class CommandRefused(Exception):
    """The engine cannot carry out a command; `code` is stable for the API."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# -- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticate:
    """A phone's INVITE or REGISTER needs its extension's credentials (from the database):
    the driver authenticates it and hands an INVITE back with `CallEngine.admitted`."""

    request: Request
    peer: Peer
    transaction: ServerTransaction


@dataclass(frozen=True, slots=True)
class ResolveTenants:
    """A trunk call's DID names a tenant not resolved yet: the driver looks tenant names up
    and hands the call back with `CallEngine.trunk_invite(..., resolved=True)`."""

    request: Request
    peer: Peer
    transaction: InviteServerTransaction
    trunk: TrunkConfig


@dataclass(frozen=True, slots=True)
class RecordReady:
    """A call ended: its record, to store."""

    record: CallRecord


@dataclass(frozen=True, slots=True)
class Published:
    """A call event for the CRM stream."""

    event: CallEvent


@dataclass(frozen=True, slots=True)
class CallbackCaptured:
    """The callback IVR took a request: the driver stores it on the tenant's callback list."""

    tenant_id: uuid.UUID
    call_id: uuid.UUID
    did: str | None
    caller: str
    number: str
    trigger: str


Output = Authenticate | ResolveTenants | RecordReady | Published | CallbackCaptured
