"""Where media anchoring plugs into a call: every SDP body crossing the B2BUA goes through the
call's `MediaBridge`.

This issue passes SDP through untouched; the RTP relay of the next issue implements the same
interface, rewriting c=/m= to its own sockets, and starts relaying on answer.
"""

from __future__ import annotations

import enum
from typing import Protocol


class Side(enum.Enum):
    """The calling side (A leg) or the called side (B leg)."""

    A = "a"
    B = "b"


class MediaBridge(Protocol):
    """Media of one call, seen through the SDP bodies the legs exchange."""

    def relay_sdp(self, source: Side, body: bytes, content_type: str | None) -> bytes:
        """The body to send on the other leg for one received from `source`."""
        ...

    def answered(self) -> None:
        """The call was answered: media may start flowing both ways."""
        ...

    def close(self) -> None:
        """The call ended: release sockets and recordings."""
        ...


class PassThrough:
    """No anchoring: SDP crosses unchanged and media flows end to end."""

    __slots__ = ()

    def relay_sdp(self, source: Side, body: bytes, content_type: str | None) -> bytes:
        return body

    def answered(self) -> None:
        return None

    def close(self) -> None:
        return None


class MediaFactory(Protocol):
    """Makes the bridge of a new call."""

    def __call__(self) -> MediaBridge: ...
