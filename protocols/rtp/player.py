"""Stored G.711 audio sent as RTP at 20 ms a packet, sans-I/O: the caller owns socket and clock.

`RtpStream` is what every prompt sent on one leg shares (one SSRC, a sequence that never
restarts, a media clock that keeps running between prompts); `Playback` is one play of one
file on that stream. Call `packets_due(now)` when `get_timer()` falls due and send what it
returns; a non-looping play is `done` once its last frame is out.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from protocols.rtp.g711 import Codec

FRAME_SAMPLES = 160  # 20 ms at 8 kHz, one byte a sample
FRAME_SECONDS = FRAME_SAMPLES / 8000
# A sender that fell behind (a stalled loop) catches up by at most one second of audio at once;
# anything older is skipped rather than burst into the phone's jitter buffer.
MAX_BACKLOG_FRAMES = 50
_HEADER = struct.Struct("!BBHII")
_EPSILON = 1e-6  # of a frame: a clock reading of exactly start + k*20 ms counts as frame k


@dataclass(slots=True)
class RtpStream:
    """The RTP identity of what we send on one leg: SSRC, the next sequence number and the
    media clock (timestamp and schedule time of the last packet sent)."""

    ssrc: int
    sequence: int
    timestamp: int  # of the last packet sent; before any, the first packet's
    last_sent: float | None = None  # when the last packet was due

    @classmethod
    def random(cls) -> RtpStream:
        """A stream with random SSRC, sequence and timestamp bases (RFC 3550 §5.1)."""
        return cls(random.getrandbits(32), random.getrandbits(16), random.getrandbits(32))

    def first_timestamp(self, start: float) -> int:
        """The timestamp of a play starting at `start`: the clock advanced by the real time
        since the last packet, and by at least that packet's length."""
        if self.last_sent is None:
            return self.timestamp
        elapsed = round((start - self.last_sent) * 8000)
        return (self.timestamp + max(FRAME_SAMPLES, elapsed)) & 0xFFFFFFFF

    def packet(self, payload_type: int, marker: bool, timestamp: int, payload: bytes, due: float) -> bytes:
        """The next packet of the stream on the wire (no CSRC, extension or padding)."""
        data = _HEADER.pack(0x80, (payload_type | 0x80) if marker else payload_type,
                            self.sequence, timestamp, self.ssrc) + payload
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = timestamp
        self.last_sent = due
        return data


class Playback:
    """One play of `audio` (raw G.711 in `codec`'s law) on `stream`, frame k due at
    `start` + k × 20 ms; `loop` restarts it at its end without a gap (music on hold)."""

    def __init__(self, audio: bytes, codec: Codec, stream: RtpStream, start: float, *,
                 loop: bool = False) -> None:
        if not audio:
            raise ValueError("nothing to play")
        self.start = start
        self.loop = loop
        self.duration = len(audio) / 8000
        self.sent = 0
        self._stream = stream
        self._payload_type = codec.payload_type
        self._length = len(audio)
        if loop:
            # Enough copies that a frame starting anywhere in the first copy is one slice.
            self._audio = audio * (-(-FRAME_SAMPLES // len(audio)) + 1)
            self._frames: int | None = None
        else:
            self._audio = audio + codec.silence_bytes(-len(audio) % FRAME_SAMPLES)
            self._frames = len(self._audio) // FRAME_SAMPLES
        self._next = 0  # the next frame to send
        self._first_timestamp = stream.first_timestamp(start)

    @property
    def done(self) -> bool:
        """A non-looping play has sent (or skipped) its last frame."""
        return self._frames is not None and self._next >= self._frames

    def get_timer(self) -> float | None:
        """When the next frame is due, or None once done."""
        return None if self.done else self.start + self._next * FRAME_SECONDS

    def packets_due(self, now: float) -> list[bytes]:
        """The packets due by `now`, in order: what is overdue goes at once, but never more
        than `MAX_BACKLOG_FRAMES` (older frames are skipped, their time passes)."""
        if self.done or now < self.start:
            return []
        newest = int((now - self.start) / FRAME_SECONDS + _EPSILON)
        if self._frames is not None:
            newest = min(newest, self._frames - 1)
        first = max(self._next, newest - MAX_BACKLOG_FRAMES + 1)
        out = []
        stream, audio, length, pt = self._stream, self._audio, self._length, self._payload_type
        for k in range(first, newest + 1):
            offset = (k * FRAME_SAMPLES) % length if self._frames is None else k * FRAME_SAMPLES
            timestamp = (self._first_timestamp + k * FRAME_SAMPLES) & 0xFFFFFFFF
            out.append(stream.packet(pt, self.sent == 0, timestamp, audio[offset:offset + FRAME_SAMPLES],
                                     self.start + k * FRAME_SECONDS))
            self.sent += 1
        self._next = max(self._next, newest + 1)
        return out
