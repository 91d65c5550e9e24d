"""Session timers (RFC 4028) per leg, as pure decisions: what we offer, what a peer's request
or answer settles, when we refresh and when a silent session is declared dead.

A B2BUA runs one timer per dialog: on the A leg we are the UAS, on the B leg the UAC. The
refresher of a leg either is us (we send a refresh at half the interval) or the peer (we
end the call when no refresh arrived by the interval minus min(32, interval/3), §10).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.sip.errors import SipSyntaxError
from protocols.sip.headers import parse_params
from protocols.sip.message import Message

MIN_SE = 90  # RFC 4028 §5: the smallest interval anyone may ask for


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """A Session-Expires value: the interval and who refreshes (None: not said)."""

    interval: int
    refresher: str | None  # "uac" | "uas"


@dataclass(frozen=True, slots=True)
class LegTimer:
    """A leg's settled session timer."""

    interval: float
    we_refresh: bool

    @property
    def refresh_after(self) -> float:
        """Seconds from a refresh to our next one (when we refresh)."""
        return self.interval / 2

    @property
    def expires_after(self) -> float:
        """Seconds from a refresh until a session the peer should refresh is over (§10)."""
        return self.interval - min(32.0, self.interval / 3)

    def header(self, *, we_are_uac: bool) -> str:
        """Session-Expires for a message of ours in a transaction where we are the UAC
        (a request) or the UAS (a response)."""
        refresher = "uac" if we_are_uac == self.we_refresh else "uas"
        return f"{int(self.interval)};refresher={refresher}"


def session_expires(message: Message) -> SessionExpires | None:
    """The message's Session-Expires (compact form x), None when absent or unreadable."""
    raw = message.headers.get("Session-Expires") or message.headers.get("x")
    if not raw:
        return None
    value, _, params = raw.partition(";")
    try:
        interval = int(value.strip())
        refresher = dict(parse_params(";" + params)).get("refresher") if params else None
    except (ValueError, SipSyntaxError):
        return None
    if refresher not in ("uac", "uas"):
        refresher = None
    return SessionExpires(interval, refresher)


def supports_timer(message: Message) -> bool:
    """Whether the sender lists the `timer` option in Supported or Require."""
    for name in ("Supported", "k", "Require"):
        for value in message.headers.get_all(name):
            if any(tok.strip().lower() == "timer" for tok in value.split(",")):
                return True
    return False


def min_se(message: Message) -> int | None:
    """The Min-SE of a request or 422 response."""
    raw = message.headers.get("Min-SE")
    try:
        return int(raw.partition(";")[0]) if raw else None
    except ValueError:
        return None


def offer_headers(interval: int, minimum: int = MIN_SE) -> list[tuple[str, str]]:
    """What our INVITE to a B leg carries to ask for a session timer."""
    return [("Supported", "timer"), ("Session-Expires", str(interval)),
            ("Min-SE", str(minimum))]


def too_small(request: Message, minimum: int = MIN_SE) -> bool:
    """Whether a request's Session-Expires is under our minimum (answer 422, §8.1)."""
    asked = session_expires(request)
    return asked is not None and asked.interval < minimum


def settle_as_uas(request: Message, default: int) -> LegTimer | None:
    """The timer of a leg whose (re-)INVITE or UPDATE we answer, or None: a peer that neither
    asked for nor supports timers gets none. The peer refreshes when it supports timers
    (unless it asked us to); otherwise we do."""
    asked = session_expires(request)
    supported = supports_timer(request)
    if asked is None and not supported:
        return None
    interval = asked.interval if asked is not None else default
    if asked is not None and asked.refresher is not None:
        we_refresh = asked.refresher == "uas"
    else:
        we_refresh = not supported
    return LegTimer(float(interval), we_refresh)


def settle_as_uac(response: Message) -> LegTimer | None:
    """The timer of a leg from the 2xx to our INVITE: none when it carries no
    Session-Expires (§7.2); we refresh when it names us (uac) or nobody."""
    answered = session_expires(response)
    if answered is None:
        return None
    return LegTimer(float(answered.interval), answered.refresher != "uas")


def response_headers(timer: LegTimer, request: Message) -> list[tuple[str, str]]:
    """Session-Expires (and Require: timer when the peer refreshes) for our 2xx."""
    headers = [("Session-Expires", timer.header(we_are_uac=False))]
    if not timer.we_refresh and supports_timer(request):
        headers.append(("Require", "timer"))
    return headers
