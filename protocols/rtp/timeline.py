"""Where each received RTP packet belongs on a recording's sample clock.

A call's recording has one clock (samples since the recording started, counted by the media
process's monotonic clock). Each direction's packets are placed on it by their RTP
timestamps, anchored to the arrival of the first packet of the stream, so network jitter does
not move audio around and silence suppression or hold leaves gaps where they really were. The
anchor is taken again when the source changes (a new SSRC after a re-INVITE, transfer or
pickup) or when the timestamps jump away from the arrival times (a sender restarting its
clock); a new anchor never goes back over audio already placed.
"""

from __future__ import annotations

from dataclasses import dataclass

_WINDOW = (1 << 64) - 1  # duplicates are recognised among the last 64 sequence numbers


@dataclass(slots=True)
class StreamTimeline:
    """Places the packets of one direction. `jump_samples`: how far a packet's timestamp may
    sit from its arrival before the timestamps count as having jumped."""

    jump_samples: int = 8000
    ssrc: int | None = None
    anchors: int = 0  # how often the stream was (re)anchored
    duplicates: int = 0  # duplicates, and packets more than 64 sequence numbers late
    _offset: int = 0  # recording position = extended timestamp + offset
    _last_ts: int = 0  # highest extended timestamp seen
    _last_seq: int = 0  # highest extended sequence number seen
    _window: int = 0  # bit i set: sequence number _last_seq - i was seen
    _end: int = 0  # end of the latest audio placed (recording position)

    def place(self, ssrc: int, sequence: int, timestamp: int, samples: int, arrival: int) -> int | None:
        """Recording position of the first sample of a packet carrying `samples` samples that
        arrived at recording position `arrival`; None for a duplicate."""
        if ssrc != self.ssrc:
            self.ssrc = ssrc
            self._last_seq = sequence
            self._window = 1
            return self._anchor(timestamp, samples, arrival)
        # Differences on the wrapping 16-bit sequence and 32-bit timestamp counters.
        delta = ((sequence - self._last_seq + 0x8000) & 0xFFFF) - 0x8000
        if delta > 0:
            self._window = ((self._window << delta) | 1) & _WINDOW
            self._last_seq += delta
        elif delta > -64 and not self._window & (1 << -delta):
            self._window |= 1 << -delta
        elif delta < -1000:  # far behind: the sender restarted its sequence (same SSRC)
            self._last_seq += delta
            self._window = 1
        else:
            self.duplicates += 1
            return None
        ts = self._last_ts + ((timestamp - self._last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        position = ts + self._offset
        if position - arrival > self.jump_samples or arrival - position > self.jump_samples:
            return self._anchor(timestamp, samples, arrival)
        if ts > self._last_ts:
            self._last_ts = ts
        if position + samples > self._end:
            self._end = position + samples
        return position

    def _anchor(self, timestamp: int, samples: int, arrival: int) -> int:
        position = max(arrival, self._end)
        self._offset = position - timestamp
        self._last_ts = timestamp
        self._end = position + samples
        self.anchors += 1
        return position


class StereoAssembler:
    """Two channels of one-byte samples (G.711) gathered from `head` onwards and handed out
    interleaved, silence where nothing was placed. Audio placed before `head` (it arrived after
    its place was written) is cut off and counted in `late_samples`."""

    def __init__(self, silence: int, max_ahead: int = 8000 * 30) -> None:
        self.head = 0
        self.late_samples = 0
        self._silence = silence
        self._max_ahead = max_ahead
        self._channels = (bytearray(), bytearray())

    def place(self, channel: int, position: int, payload: bytes) -> None:
        """Put `payload` on `channel` (0 left, 1 right) starting at `position`."""
        if position < self.head:
            cut = self.head - position
            self.late_samples += min(cut, len(payload))
            if cut >= len(payload):
                return
            payload = payload[cut:]
            position = self.head
        start = position - self.head
        if start > self._max_ahead:
            self.late_samples += len(payload)  # far in the future: a broken clock, not audio
            return
        buf = self._channels[channel]
        end = start + len(payload)
        if len(buf) < end:
            buf.extend(bytes((self._silence,)) * (end - len(buf)))
        buf[start:end] = payload

    def take(self, upto: int) -> bytes:
        """Interleaved frames from `head` to `upto` (advancing `head`)."""
        n = upto - self.head
        if n <= 0:
            return b""
        out = bytearray(2 * n)
        for i, buf in enumerate(self._channels):
            if len(buf) < n:
                buf.extend(bytes((self._silence,)) * (n - len(buf)))
            out[i::2] = buf[:n]
            del buf[:n]
        self.head = upto
        return bytes(out)

    @property
    def pending(self) -> int:
        """Samples placed beyond `head` on the longer channel."""
        return max(len(b) for b in self._channels)
