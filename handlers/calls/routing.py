"""Routing policy: pure decisions the call engine asks for, testable as tables.

Which tenant and ring plan a dialled DID gets, how a ring group rings (simultaneous or
sequential with a per-extension ring time), which trunk an outgoing call leaves by (skipping
trunks that stopped answering keep-alives), which caller ID it presents (only numbers in
the sender-number registry, Telecommunications Business Act art. 84-2), and what the caller
hears when nobody answered. Nothing here keeps time, sockets or SQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from config.sip import DidConfig, TrunkConfig
from handlers import numbers
from handlers.calls.cdr import BUSY_STATUSES, Direction
from protocols.sip.transaction import Peer
from protocols.sip.uri import URI

EXTENSION_DIGITS = 4
INTERNAL_RING_SECONDS = 60.0  # an internal call nobody answers ends as missed
OUTGOING_RING_SECONDS = 120.0  # carriers end unanswered calls sooner; this is a backstop


@dataclass(frozen=True, slots=True)
class Target:
    """One contact to ring: its extension (None for a trunk), its URI and where it is."""

    extension: str | None
    uri: URI
    peer: Peer


@dataclass(frozen=True, slots=True)
class RingPlan:
    """Stages rung one after another (each stage's targets at once), the ring time of a
    stage before the next one starts (None: until no_answer), and the overall limit."""

    stages: tuple[tuple[Target, ...], ...]
    stage_seconds: float | None
    no_answer_seconds: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """The call is refused at once with this status."""

    status: int
    reason: str = ""


Contacts = Callable[[str], Sequence[Target]]  # extension -> its live contacts as targets


def dialled_digits(user: str | None) -> str | None:
    """Digits of a dialled user part: an extension as is, a longer number canonical."""
    if not user:
        return None
    text = user.lstrip("+")
    if not text.isdigit():
        return None
    try:
        return numbers.normalise(user) if len(text) > EXTENSION_DIGITS else text
    except numbers.NumberError:
        return text


def is_internal(dialled: str) -> bool:
    """Whether an extension's call is to another extension (≤ 4 digits, seed 002)."""
    return 0 < len(dialled) <= EXTENSION_DIGITS


def route_did(dids: Mapping[str, DidConfig], tenants: Mapping[str, uuid.UUID],
              dialled: str | None) -> tuple[DidConfig, uuid.UUID] | Refusal | DidConfig:
    """The DID and tenant of a trunk call; the bare DID when its tenant is not known yet
    (the caller resolves tenant names and asks again); 404 for numbers we do not serve."""
    did = dids.get(dialled or "")
    if did is None:
        return Refusal(404)
    tenant = tenants.get(did.tenant)
    if tenant is None:
        return did
    return did, tenant


def did_plan(did: DidConfig, contacts: Contacts) -> RingPlan:
    """How a DID's ring group rings; unregistered extensions are skipped."""
    stages = [tuple(contacts(ext)) for ext in did.extensions]
    if did.strategy == "simultaneous":
        flat = tuple(t for stage in stages for t in stage)
        return RingPlan((flat,) if flat else (), None, did.no_answer_seconds)
    return RingPlan(tuple(s for s in stages if s), did.ring_seconds, did.no_answer_seconds)


def internal_plan(dialled: str, contacts: Contacts) -> RingPlan:
    """An extension calling another: every contact of the callee at once."""
    targets = tuple(contacts(dialled))
    return RingPlan((targets,) if targets else (), None, INTERNAL_RING_SECONDS)


def outgoing_plan(trunk: TrunkConfig, dialled: str) -> RingPlan:
    """An outgoing call: the dialled number at the trunk's host."""
    transport = trunk.transport.upper()
    uri = URI("sip", user=dialled, host=trunk.host, port=trunk.port)
    target = Target(None, uri, Peer(transport, trunk.host, trunk.port))
    return RingPlan(((target,),), None, OUTGOING_RING_SECONDS)


def choose_trunk(trunks: Iterable[TrunkConfig], tenants: Mapping[str, uuid.UUID],
                 tenant_id: uuid.UUID, down: set[str]) -> TrunkConfig | None:
    """The trunk an outgoing call of `tenant_id` leaves by: the first usable one answering
    its keep-alives; if none answers, the first usable one anyway (better than nothing)."""
    usable = [t for t in trunks if t.host and (
        not t.tenant or tenants.get(t.tenant) == tenant_id)]
    return next((t for t in usable if t.name not in down), usable[0] if usable else None)


def caller_id(presented: str | None, may_send: Callable[[str], bool]) -> str | Refusal:
    """The caller ID an outgoing call presents, or 403 when it is not a registered number."""
    if presented is None or not may_send(presented):
        return Refusal(403, "Caller ID Not Registered")
    return presented


def failure_status(direction: Direction, statuses: Sequence[int], *, timed_out: bool) -> int:
    """What the caller hears when no attempt answered (`statuses`: the attempts' finals).

    An outgoing call passes the carrier's answer on. Towards extensions: busy when any was
    busy, declined when the last declined, else temporarily unavailable (no answer, no
    contact, timeout).
    """
    last = statuses[-1] if statuses else 480
    if direction is Direction.OUTGOING:
        return 480 if timed_out or not statuses else last
    if timed_out:
        return 480
    if any(s in BUSY_STATUSES for s in statuses):
        return 486
    if last == 603:
        return 603
    return 480


class TrunkMonitor:
    """Keep-alive state of the trunks: which stopped answering OPTIONS."""

    def __init__(self) -> None:
        self.down: set[str] = set()

    def answered(self, name: str) -> bool:
        """Any answer, even 404 or 405, shows the carrier is alive; True when it was down."""
        if name in self.down:
            self.down.discard(name)
            return True
        return False

    def timed_out(self, name: str) -> bool:
        """The probe got no answer; True when the trunk just went down."""
        if name in self.down:
            return False
        self.down.add(name)
        return True
