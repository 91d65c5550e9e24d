"""The narrow interface between the call engine and the media side.

The engine sees a `MediaService` that makes one `MediaSession` per call; a session rewrites the
SDP crossing the B2BUA so both legs send RTP to us, is told when the call is answered, put on
hold or re-pointed at a new phone, plays prompts to a leg, reports RTP timeouts, digits and
finished prompts as `MediaEvent`s, and hands back the recording when closed. The verbs are
rtpengine's NG commands (offer, answer, delete, block/unblock media, play/stop media), so an
rtpengine-backed service can implement the same protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from protocols.rtp.g711 import Codec


class Side(enum.Enum):
    """The calling leg (A) or the called leg (B); same values as the engine's own Side."""

    A = "a"
    B = "b"

    @property
    def other(self) -> Side:
        return Side.B if self is Side.A else Side.A


class RecordingStatus(enum.Enum):
    """How a call's recording ended: complete, failed (disk full, write error), or none made."""

    OK = "ok"
    FAILED = "failed"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """The recording of a closed session: stereo WAV, customer left, agent right."""

    status: RecordingStatus
    path: str | None = None
    bytes: int = 0
    sha256: str | None = None
    duration: float = 0.0  # seconds of audio in the file
    error: str | None = None


class EventKind(enum.Enum):
    """What the media side tells the engine without being asked."""

    TIMEOUT = "timeout"  # no RTP for the configured time: end the call with reason rtp_timeout
    DTMF = "dtmf"  # an RFC 4733 digit from one leg
    RECORDING_FAILED = "recording_failed"  # relaying goes on; the recording will be marked failed
    PLAYED = "played"  # a prompt sent to `side` ended by itself; `detail` is its play id
    LOST = "lost"  # the media process went away: the session's media is gone


@dataclass(frozen=True, slots=True)
class MediaEvent:
    """One event of one call; `side` is the leg it concerns, when it concerns one."""

    call_id: str
    kind: EventKind
    side: Side | None = None
    detail: str = ""


EventHandler = Callable[[MediaEvent], None]


@dataclass(frozen=True, slots=True)
class RecordingRequest:
    """Record this call; `customer` is the leg recorded on the left channel; `path` overrides
    the default file (<recordings>/YYYY/MM/DD/<call id>.wav)."""

    customer: Side = Side.A
    path: str | None = None


class MediaSession(Protocol):
    """The media of one call."""

    call_id: str

    async def offer(self, side: Side, sdp: bytes) -> bytes:
        """An SDP offer received from `side`: learn that leg's far end, return the body to send on
        the other leg (pointing at our port for it). Also used for re-INVITE offers."""
        ...

    async def answer(self, side: Side, sdp: bytes) -> bytes:
        """An SDP answer received from `side`, as `offer`."""
        ...

    async def answered(self) -> None:
        """The call was answered: the recording starts and RTP timeouts are watched."""
        ...

    async def hold(self, side: Side) -> None:
        """`side` is put on hold: nothing is forwarded to it; the recording keeps running."""
        ...

    async def unhold(self, side: Side) -> None:
        """`side` is taken off hold."""
        ...

    async def play(self, side: Side, file: Path, *, loop: bool = False, play_id: str,
                   codec: Codec | None = None) -> float:
        """Send `file` (raw G.711, 8 kHz, in the call's law unless `codec` says otherwise) to
        `side` instead of the other leg's audio, replacing any prompt playing there; `loop`
        repeats it until `stop` (hold music). A prompt that ends by itself is reported as a
        `played` event carrying `play_id`. Returns the file's length in seconds."""
        ...

    async def stop(self, side: Side) -> bool:
        """Stop the prompt playing to `side` (no `played` event); the other leg's audio reaches
        it again. False if none was playing."""
        ...

    async def repoint(self, side: Side, sdp: bytes) -> bytes:
        """`side` now goes to another phone (transfer, pickup): `sdp` is that phone's; latching
        starts again, the recording file stays the same. Returns the body for the other leg, as
        `offer` does: our relay keeps that leg's port (no re-INVITE needed); rtpengine may move
        it, and then the engine re-INVITEs the other leg with it."""
        ...

    async def close(self) -> RecordingResult:
        """The call ended (any way): ports are released and the recording is finished."""
        ...


class MediaService(Protocol):
    """Makes sessions; started once with the daemon."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def create(self, call_id: str, codec: Codec, *, record: RecordingRequest | None,
                     on_event: EventHandler | None = None, timeout: float | None = None) -> MediaSession:
        """A session with our ports for both legs; `timeout` overrides the RTP timeout."""
        ...
