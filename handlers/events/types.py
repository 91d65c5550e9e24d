"""The event types a tenant can follow, on the stream and on webhooks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventType:
    """One declared type: its name, what it reports, and whether anything emits it yet."""

    name: str
    meaning: str
    emitted: bool = True


CATALOGUE: tuple[EventType, ...] = (
    EventType("call.ringing", "a call started ringing: caller, DID, extensions rung, the "
              "customer's name from /v1/customers"),
    EventType("call.answered", "a call was answered (the extension that answered)"),
    EventType("call.ended", "a call ended, with its call record"),
    EventType("call.held", "a side of a call was put on hold (music plays to it) or taken off "
              "it: held, side, by, extension"),
    EventType("call.transferred", "a call was transferred to another extension: from, to"),
    EventType("callback.created", "a caller left a number in the callback IVR: callback_id, "
              "call_id, did, caller, number, trigger"),
    EventType("presence.changed", "an agent's presence changed: extension, name, "
                                  "department_id, presence, previous"),
    EventType("message.accepted", "a send request was queued"),
    EventType("message.canceled", "a scheduled message was canceled"),
    EventType("message.recipient.delivered", "a delivery receipt said delivered"),
    EventType("message.recipient.failed", "refused by the carrier or an undeliverable receipt"),
    EventType("message.recipient.expired", "an expired receipt, or no receipt in time"),
    EventType("verification.approved", "a verification code was confirmed"),
    EventType("verification.failed", "a verification ran out of attempts or time"),
)

NAMES: frozenset[str] = frozenset(t.name for t in CATALOGUE)

# Published as the pattern of `types`: a comma-separated list of declared names.
_ALTERNATIVES = "|".join(sorted((t.name.replace(".", r"\.") for t in CATALOGUE), key=len,
                                reverse=True))
TYPES_PATTERN = rf"^({_ALTERNATIVES})(,({_ALTERNATIVES}))*$"
