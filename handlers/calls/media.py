"""Where media anchoring plugs into a call: the call engine's media commands.

The engine allocates one `MediaBridge` per call and tells it every SDP offer and answer that
crosses between the legs (it returns the body to send on the other side), when the call is
answered, when a side is put on hold or taken off it (music on hold plays to it), when a
prompt is to be played to a side, and when the call ends. An IVR answers a caller through
`local_answer`. `PassThrough`
leaves SDP untouched (media flows end to end); the RTP relay/recorder (handlers/media with
protocols/rtp) and rtpengine's NG protocol implement the same interface.
"""

from __future__ import annotations

import enum
import uuid
from typing import Protocol


class Side(enum.Enum):
    """The calling side (A leg) or the called side (B leg)."""

    A = "a"
    B = "b"

    @property
    def other(self) -> Side:
        """The opposite side."""
        return Side.B if self is Side.A else Side.A


class MediaBridge(Protocol):
    """Media of one call, driven by the engine."""

    def offer(self, source: Side, sdp: bytes) -> bytes:
        """An SDP offer from `source`: the offer to send to the other side."""
        ...

    def answer(self, source: Side, sdp: bytes) -> bytes:
        """An SDP answer from `source`: the answer to send to the other side."""
        ...

    def answered(self) -> None:
        """The call was answered: media may flow both ways (and recording starts)."""
        ...

    def hold(self, side: Side) -> None:
        """`side` is on hold: stop sending it the other side's media."""
        ...

    def unhold(self, side: Side) -> None:
        """`side` is back from hold."""
        ...

    def close(self) -> None:
        """The call ended: release ports and complete the recording."""
        ...

    def can_play(self) -> bool:
        """Whether prompts can be played into this call (its media goes through us)."""
        ...

    def anchored(self) -> bool:
        """Whether this call's media goes through our ports (it can be re-pointed, held)."""
        ...

    def repoint(self, side: Side, sdp: bytes) -> None:
        """`side` now goes to another phone (transfer) whose SDP is `sdp`: its media latches
        again there; the other side and the recording stay as they are."""
        ...

    def local_answer(self, source: Side, offer: bytes) -> bytes | None:
        """Answer `source`'s SDP offer ourselves (an IVR talks to it): the SDP answer, or None
        when its media cannot end here."""
        ...

    def local_offer(self, side: Side) -> bytes | None:
        """An SDP offer of our own towards `side` (a call we place: click-to-call), or None
        when the media cannot end here."""
        ...

    def play(self, side: Side, prompt: str, play_id: int, *, loop: bool = False) -> None:
        """Play the tenant's prompt `prompt` to `side` (instead of the other side's audio);
        when it ends the engine hears `played(play_id)`."""
        ...

    def stop(self, side: Side) -> None:
        """Stop what is playing to `side`."""
        ...


class PassThrough:
    """No anchoring: SDP crosses unchanged and media flows end to end."""

    __slots__ = ()

    def offer(self, source: Side, sdp: bytes) -> bytes:
        return sdp

    def answer(self, source: Side, sdp: bytes) -> bytes:
        return sdp

    def answered(self) -> None:
        return None

    def hold(self, side: Side) -> None:
        return None

    def unhold(self, side: Side) -> None:
        return None

    def close(self) -> None:
        return None

    def can_play(self) -> bool:
        return False

    def anchored(self) -> bool:
        return False

    def repoint(self, side: Side, sdp: bytes) -> None:
        return None

    def local_answer(self, source: Side, offer: bytes) -> bytes | None:
        return None

    def local_offer(self, side: Side) -> bytes | None:
        return None

    def play(self, side: Side, prompt: str, play_id: int, *, loop: bool = False) -> None:
        return None

    def stop(self, side: Side) -> None:
        return None


class MediaFactory(Protocol):
    """Allocates the bridge of a new call."""

    def __call__(self, call_id: uuid.UUID) -> MediaBridge: ...


def pass_through(call_id: uuid.UUID) -> MediaBridge:
    """The default factory: no anchoring."""
    del call_id
    return _PASS


_PASS = PassThrough()
