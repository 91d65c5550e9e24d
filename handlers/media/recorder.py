"""One call's stereo recording: packets of each direction placed by their RTP timestamps,
written as a G.711 WAV in the call's codec, customer left and agent right.

Audio is held back `delay` seconds (a jitter window) before it is written, then written as
silence where nothing arrived, so the file is as long as the recorded time and both channels
stay aligned through gaps, hold and re-pointed legs. Any OSError (disk full, I/O error) turns
the recording into a failed one and stops writing; it never raises into the relay.

File work (open, write, header rewrites, close, the digest) runs through `disk`, a function
that queues a job: the media process passes one worker thread, so a stalled disk delays the
recording, never a packet; in order, since one thread runs the jobs one after another.
Without `disk` the jobs run at once (tests on an injected clock).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from handlers.media.interface import RecordingResult, RecordingStatus
from protocols.rtp.g711 import Codec, transcode
from protocols.rtp.timeline import StereoAssembler, StreamTimeline
from protocols.rtp.wav import WavWriter

RATE = 8000
Job = Callable[[], None]


def _run_now(job: Job) -> None:
    job()


class Recorder:
    """Records two channels from `start` (monotonic seconds) until `close`."""

    def __init__(self, path: Path, codec: Codec, start: float, *, delay: float = 0.2,
                 sync_seconds: float = 1.0, disk: Callable[[Job], object] = _run_now) -> None:
        self.path = path
        self.codec = codec
        self.error: str | None = None  # set by the disk jobs, read by the loop
        self._start = start
        self._delay = int(delay * RATE)
        self._timelines = (StreamTimeline(), StreamTimeline())
        self._assembler = StereoAssembler(codec.silence)
        self._writer: WavWriter | None = None  # touched by disk jobs only
        self._closed = False
        self._disk = disk
        self._sync_frames = int(sync_seconds * RATE)
        disk(self._open)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def position(self, now: float) -> int:
        """Recording clock at `now`, in samples."""
        return int((now - self._start) * RATE)

    def feed(self, channel: int, payload_type: int, sequence: int, timestamp: int, ssrc: int,
             payload: bytes, now: float) -> None:
        """One audio packet of `channel` (0 customer, 1 agent) that arrived at `now`."""
        if self.error is not None or self._closed:
            return
        if payload_type != self.codec.payload_type:
            try:
                other = Codec.from_payload_type(payload_type)
            except ValueError:
                return  # comfort noise, telephone-events: not audio we store
            payload = transcode(other, self.codec, payload)
        position = self._timelines[channel].place(ssrc, sequence, timestamp, len(payload),
                                                  int((now - self._start) * RATE))
        if position is not None:
            self._assembler.place(channel, position, payload)

    def flush(self, now: float) -> None:
        """Write what the jitter window has released by `now`."""
        self._write_upto(self.position(now) - self._delay)

    def close(self, now: float) -> None:
        """Write everything up to `now` (pending audio included) and finish the header."""
        if self._closed:
            return
        # Up to now, and past it for audio already placed (a last packet's 20 ms, early packets).
        self._write_upto(max(self.position(now), self._assembler.head + self._assembler.pending))
        self._closed = True
        self._disk(self._finish)

    def result(self) -> RecordingResult:
        """After `close` (and its disk jobs): the file's size, digest and duration."""
        if self.error is not None:
            return RecordingResult(RecordingStatus.FAILED, str(self.path), error=self.error)
        digest = hashlib.sha256()
        size = 0
        try:
            with self.path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            return RecordingResult(RecordingStatus.FAILED, str(self.path), error=f"read back: {exc}")
        return RecordingResult(RecordingStatus.OK, str(self.path), size, digest.hexdigest(),
                               self._assembler.head / RATE)

    @property
    def late_samples(self) -> int:
        return self._assembler.late_samples

    def _write_upto(self, upto: int) -> None:
        if self.error is not None or self._closed:
            return
        data = self._assembler.take(upto)
        if data:
            self._disk(lambda: self._write(data))

    # ---- disk jobs ----------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = WavWriter(self.path.open("wb"), self.codec, sync_frames=self._sync_frames)
        except OSError as exc:
            self._fail(exc)
        except ValueError as exc:  # a path the OS cannot take (NUL byte)
            self.error = f"bad recording path: {exc}"

    def _write(self, data: bytes) -> None:
        if self._writer is None:
            return
        try:
            self._writer.write(data)
        except OSError as exc:
            self._fail(exc)

    def _finish(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.close()
        except OSError as exc:
            self._fail(exc)
        self._writer = None

    def _fail(self, exc: OSError) -> None:
        self.error = f"{type(exc).__name__}: {os.strerror(exc.errno) if exc.errno else exc}"
        if self._writer is not None:
            with contextlib.suppress(OSError):  # the error that matters is already recorded
                self._writer.file.close()
            self._writer = None
