"""The typed errors the SIP stack raises for bad input from a peer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocols.sip.message import Request


class SipError(Exception):
    """Base class: anything raised because of what a peer sent."""


class SipSyntaxError(SipError, ValueError):
    """A header value, URI or other element does not follow the SIP grammar."""


class MalformedMessage(SipError):
    """A whole message could not be accepted.

    ``request`` is set when the input was a request carrying Via, From, To, Call-ID and
    CSeq, which a response copies back raw: answer it with ``status`` (400, or 505 for an
    unsupported SIP version). Otherwise (responses, headerless junk) drop it.
    """

    def __init__(self, reason: str, request: Request | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request = request
        self.status = status  # 505 for an unsupported SIP version

    @property
    def answerable(self) -> bool:
        """True when a 400 response can be built from ``request``."""
        return self.request is not None
