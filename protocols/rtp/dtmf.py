"""RFC 4733 telephone-events (DTMF digits carried as RTP events).

An event is one RTP timestamp (its start): every packet of it repeats that timestamp with a
growing duration, and the end is sent three times. Receivers therefore key events by
timestamp, which collapses retransmitted end packets and repeated updates into one digit.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from protocols.rtp.packet import RtpError, RtpPacket

EVENTS = "0123456789*#ABCD"
_PAYLOAD = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The 4-byte payload: event code (0-15 are DTMF), end bit, volume (-dBm0), duration (ticks)."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        """The DTMF character of events 0-15."""
        return EVENTS[self.event] if self.event < len(EVENTS) else None

    def build(self) -> bytes:
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | (self.volume & 0x3F),
                             self.duration & 0xFFFF)


def parse_event(payload: bytes) -> TelephoneEvent:
    """Parse a telephone-event payload (only its first event; RFC 4733 §2.5.1.1 allows more)."""
    if len(payload) < 4:
        raise RtpError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


@dataclass(frozen=True, slots=True)
class Digit:
    """One received DTMF digit: `timestamp` is the RTP timestamp it started at."""

    digit: str
    timestamp: int
    duration: int
    ended: bool


class DtmfDecoder:
    """Turns a stream's telephone-event packets into digits, once each.

    `receive()` returns the digit when its first end packet arrives (or when a new event starts
    without the old one having ended: the end was lost); later copies return None. With arrival
    times (`now`), a copy counts only within `repeat_window` seconds of the event's end: a
    sender replaying the same capture (SIPp's RFC 2833 pcaps) or restarting its clock may use
    an event's timestamp again for the next key press.
    """

    def __init__(self, memory: int = 32, repeat_window: float = 2.0) -> None:
        self._done: deque[tuple[int, float | None]] = deque(maxlen=memory)  # reported: (ts, when)
        self._current: tuple[int, TelephoneEvent] | None = None
        self._window = repeat_window

    def _seen(self, ts: int, now: float | None) -> bool:
        return any(done == ts and (now is None or when is None or now - when < self._window)
                   for done, when in self._done)

    def receive(self, packet: RtpPacket, now: float | None = None) -> list[Digit]:
        """Digits completed by this packet (usually none or one); `now`: its arrival."""
        ev = parse_event(packet.payload)
        ts = packet.timestamp
        if ev.digit is None or self._seen(ts, now):
            return []
        out: list[Digit] = []
        if self._current is not None and self._current[0] != ts:
            old_ts, old = self._current
            self._done.append((old_ts, now))
            out.append(Digit(old.digit or "", old_ts, old.duration, ended=False))
            self._current = None
        if ev.end:
            self._done.append((ts, now))
            self._current = None
            out.append(Digit(ev.digit, ts, ev.duration, ended=True))
        elif self._current is None or ev.duration >= self._current[1].duration:
            self._current = (ts, ev)
        return out

    def flush(self) -> list[Digit]:
        """The digit still in progress (its end never came), at the end of the stream."""
        if self._current is None:
            return []
        ts, ev = self._current
        self._current = None
        self._done.append((ts, None))
        return [Digit(ev.digit or "", ts, ev.duration, ended=False)]


def encode_digit(digit: str, *, ssrc: int, sequence: int, timestamp: int, payload_type: int = 101,
                 duration_ms: int = 100, packet_ms: int = 20, volume: int = 10,
                 rate: int = 8000) -> list[RtpPacket]:
    """The packets of one digit: a marked first packet, updates every `packet_ms`, and three
    identical end packets (RFC 4733 §2.5.1.4), all with the event's start timestamp."""
    code = EVENTS.index(digit.upper())
    step = rate * packet_ms // 1000
    total = rate * duration_ms // 1000
    packets: list[RtpPacket] = []
    elapsed = step
    seq = sequence
    while elapsed < total:
        ev = TelephoneEvent(code, False, volume, elapsed)
        packets.append(RtpPacket(payload_type, seq & 0xFFFF, timestamp, ssrc, ev.build(),
                                 marker=not packets))
        seq += 1
        elapsed += step
    end = TelephoneEvent(code, True, volume, total).build()
    for _ in range(3):
        packets.append(RtpPacket(payload_type, seq & 0xFFFF, timestamp, ssrc, end, marker=not packets))
        seq += 1
    return packets
