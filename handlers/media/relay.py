"""The relay's state for one call, without sockets: where each leg's packets come from and go
to (latching), what is forwarded (nothing to a held leg, nor to one hearing a prompt), what
the recorder gets, and when the call has gone silent.

`MediaLoop` (process.py) owns the sockets and calls `rtp_from`/`rtcp_from` with each datagram;
they answer where to send it, or None to drop it.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from handlers.media.recorder import Recorder
from protocols.rtp.dtmf import DtmfDecoder
from protocols.rtp.packet import RtpError, parse_rtp, rtp_payload_offset

Address = tuple[str, int]
_SEQ_TS_SSRC = struct.Struct("!HII")


class LegState(enum.Enum):
    """Where a leg's outgoing packets go: nowhere yet, the SDP's address, or the latched source."""

    UNKNOWN = "unknown"
    SIGNALLED = "signalled"
    LATCHED = "latched"


@dataclass(slots=True)
class Leg:
    """One side of the call as the relay sees it."""

    index: int  # 0 for A, 1 for B
    signalled: Address | None = None  # from its SDP (c=/m=)
    rtp: Address | None = None  # latched source, once a packet came
    rtcp: Address | None = None
    held: bool = False
    playing: bool = False  # a prompt is sent to it instead of the other leg's audio
    received: int = 0
    forwarded: int = 0
    played: int = 0  # prompt packets sent to it
    foreign: int = 0  # packets from another source after latching: dropped
    stale: Address | None = None  # the phone this leg was re-pointed away from
    last_packet: float | None = None

    @property
    def state(self) -> LegState:
        if self.rtp is not None:
            return LegState.LATCHED
        return LegState.SIGNALLED if self.signalled is not None else LegState.UNKNOWN

    def rtcp_destination(self) -> Address | None:
        if self.rtcp is not None:
            return self.rtcp
        if self.signalled is not None:
            return (self.signalled[0], self.signalled[1] + 1)
        return None

    def rtp_destination(self) -> Address | None:
        """Where RTP for this leg goes: its latched source, else the address in its SDP."""
        return self.rtp or self.signalled

    def set_remote(self, address: Address, *, relatch: bool) -> None:
        """Its SDP named `address`; a re-pointed leg (or a new address) latches again."""
        if relatch or address != self.signalled:
            if relatch and self.rtp is not None:
                self.stale = self.rtp  # its stragglers must not latch the leg back to it
            self.rtp = None
            self.rtcp = None
        self.signalled = address


@dataclass(slots=True)
class RelayCall:
    """Both legs of one call, the recorder and the timers."""

    call_id: str
    created: float
    timeout: float = 60.0
    hold_timeout: float = 3600.0
    telephone_event_pt: int = 101
    legs: tuple[Leg, Leg] = field(default_factory=lambda: (Leg(0), Leg(1)))
    recorder: Recorder | None = None
    customer: int = 0  # the leg recorded on the left channel
    answered_at: float | None = None
    timed_out: bool = False
    digits: list[tuple[int, str]] = field(default_factory=list)  # (leg, digit) not yet reported
    _dtmf: tuple[DtmfDecoder, DtmfDecoder] = field(default_factory=lambda: (DtmfDecoder(), DtmfDecoder()))

    def rtp_from(self, leg_index: int, data: bytes, source: Address, now: float) -> Address | None:
        """An RTP datagram arrived on leg `leg_index`'s port from `source`; where to forward it."""
        leg = self.legs[leg_index]
        if leg.rtp is None and source != leg.stale:
            leg.rtp = source  # symmetric RTP: the first packets' real source wins (NAT)
        elif leg.rtp != source:
            leg.foreign += 1
            return None
        if len(data) < 12 or data[0] & 0xC0 != 0x80:
            return None  # not RTP version 2
        leg.received += 1
        leg.last_packet = now
        pt = data[1] & 0x7F
        if pt == self.telephone_event_pt:
            self._digit(leg_index, data, now)
        elif self.recorder is not None:  # set once answered
            seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
            if data[0] == 0x80:  # the usual packet: no CSRC, extension or padding
                payload = data[12:]
            else:
                try:
                    start, end = rtp_payload_offset(data)
                except RtpError:
                    return None
                payload = data[start:end]
            self.recorder.feed(0 if leg_index == self.customer else 1, pt, seq, ts, ssrc, payload, now)
        other = self.legs[1 - leg_index]
        if other.held or other.playing:
            return None
        destination = other.rtp or other.signalled
        if destination is not None:
            other.forwarded += 1
        return destination

    def rtcp_from(self, leg_index: int, source: Address) -> Address | None:
        """An RTCP datagram on leg `leg_index`'s RTCP port; where to forward it."""
        leg = self.legs[leg_index]
        if leg.rtcp is None:
            leg.rtcp = source
        elif leg.rtcp != source:
            return None
        other = self.legs[1 - leg_index]
        return None if other.held else other.rtcp_destination()

    def answered(self, now: float, recorder: Recorder | None) -> None:
        """Recording and the RTP timeout start now."""
        if self.answered_at is None:
            self.answered_at = now
            self.recorder = recorder

    def idle_for(self, now: float) -> float:
        """Seconds since the last packet from either leg (or since the answer)."""
        if self.answered_at is None:
            return 0.0
        last = max([self.answered_at] + [leg.last_packet for leg in self.legs if leg.last_packet])
        return now - last

    def check_timeout(self, now: float) -> bool:
        """True once, when the call has had no RTP for its timeout (longer while on hold)."""
        if self.timed_out or self.answered_at is None:
            return False
        limit = self.hold_timeout if any(leg.held for leg in self.legs) else self.timeout
        if self.idle_for(now) >= limit:
            self.timed_out = True
            return True
        return False

    def _digit(self, leg_index: int, data: bytes, now: float) -> None:
        try:
            packet = parse_rtp(data)
            for digit in self._dtmf[leg_index].receive(packet, now):
                self.digits.append((leg_index, digit.digit))
        except RtpError:
            return
