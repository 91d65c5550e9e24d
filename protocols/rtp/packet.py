"""RTP (RFC 3550 §5) and RTCP (§6) packets: parse and build, nothing else.

Parsing is strict about what a relay must trust (version, lengths, padding) and lenient about
what it only forwards (header extensions and CSRCs are kept, not interpreted).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
_RTCP_HEADER = struct.Struct("!BBH")

# RTCP packet types (RFC 3550 §12.1) and the range RFC 5761 §4 reserves to tell them from RTP.
RTCP_SR, RTCP_RR, RTCP_SDES, RTCP_BYE, RTCP_APP = 200, 201, 202, 203, 204


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP or RTCP packet."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet; `payload` excludes padding, `extension` is (profile, data) when present."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None

    def build(self) -> bytes:
        """The packet on the wire (never padded)."""
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range")
        if len(self.csrcs) > 15:
            raise RtpError("more than 15 CSRCs")
        first = (RTP_VERSION << 6) | (0x10 if self.extension is not None else 0) | len(self.csrcs)
        second = (0x80 if self.marker else 0) | self.payload_type
        out = [_HEADER.pack(first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF,
                            self.ssrc & 0xFFFFFFFF)]
        out.extend(struct.pack("!I", c) for c in self.csrcs)
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError("header extension length must be a multiple of 4 bytes")
            out.append(struct.pack("!HH", profile, len(data) // 4) + data)
        out.append(self.payload)
        return b"".join(out)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet; raise RtpError if it is malformed."""
    if len(data) < 12:
        raise RtpError("shorter than the RTP header")
    first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}")
    offset = 12 + 4 * (first & 0x0F)
    if len(data) < offset:
        raise RtpError("CSRC list truncated")
    csrcs = struct.unpack_from(f"!{first & 0x0F}I", data, 12)
    extension = None
    if first & 0x10:
        if len(data) < offset + 4:
            raise RtpError("header extension truncated")
        profile, words = struct.unpack_from("!HH", data, offset)
        end = offset + 4 + 4 * words
        if len(data) < end:
            raise RtpError("header extension truncated")
        extension = (profile, bytes(data[offset + 4:end]))
        offset = end
    end = len(data)
    if first & 0x20:
        pad = data[-1]
        if pad == 0 or offset + pad > end:
            raise RtpError("bad padding length")
        end -= pad
    return RtpPacket(second & 0x7F, seq, ts, ssrc, bytes(data[offset:end]), bool(second & 0x80),
                     tuple(csrcs), extension)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: a packet whose second byte is 192-223 is RTCP (when multiplexed)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def rtp_payload_offset(data: bytes) -> tuple[int, int]:
    """(start, end) of the payload of a well-formed RTP packet, skipping CSRCs, extension and
    padding; raise RtpError if the header does not fit."""
    first = data[0]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < offset + 4:
            raise RtpError("header extension truncated")
        offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
    end = len(data)
    if first & 0x20:
        end -= data[-1]
    if offset > end:
        raise RtpError("header longer than the packet")
    return offset, end


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """A reception report (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    last_sr: int
    delay_since_last_sr: int

    def build(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return struct.pack("!IIIIII", self.ssrc, (self.fraction_lost << 24) | lost,
                           self.highest_sequence, self.jitter, self.last_sr, self.delay_since_last_sr)


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """One RTCP packet of a compound datagram. Sender info is (ntp, rtp timestamp, packets, octets)
    for SR; `body` keeps the raw bytes of SDES/APP and anything else."""

    packet_type: int
    count: int
    ssrc: int | None = None
    sender_info: tuple[int, int, int, int] | None = None
    reports: tuple[ReportBlock, ...] = ()
    sources: tuple[int, ...] = ()  # BYE
    body: bytes = b""

    def build(self) -> bytes:
        """One RTCP packet on the wire, padded to 32 bits."""
        if self.packet_type in (RTCP_SR, RTCP_RR):
            body = struct.pack("!I", self.ssrc or 0)
            if self.packet_type == RTCP_SR:
                ntp, rtp_ts, packets, octets = self.sender_info or (0, 0, 0, 0)
                body += struct.pack("!QIII", ntp, rtp_ts, packets, octets)
            body += b"".join(r.build() for r in self.reports)
            count = len(self.reports)
        elif self.packet_type == RTCP_BYE:
            body = b"".join(struct.pack("!I", s) for s in self.sources)
            count = len(self.sources)
        else:
            body, count = self.body, self.count
        body += b"\0" * (-len(body) % 4)
        return _RTCP_HEADER.pack((RTP_VERSION << 6) | count, self.packet_type, len(body) // 4) + body


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP datagram; raise RtpError if any packet is malformed."""
    out: list[RtcpPacket] = []
    offset = 0
    if len(data) < 4:
        raise RtpError("shorter than the RTCP header")
    while offset < len(data):
        if len(data) - offset < 4:
            raise RtpError("trailing bytes after RTCP packet")
        first, ptype, words = _RTCP_HEADER.unpack_from(data, offset)
        if first >> 6 != RTP_VERSION:
            raise RtpError(f"RTCP version {first >> 6}")
        end = offset + 4 + 4 * words
        if end > len(data):
            raise RtpError("RTCP length beyond the datagram")
        body = bytes(data[offset + 4:end])
        if first & 0x20:
            if not body or body[-1] == 0 or body[-1] > len(body):
                raise RtpError("bad RTCP padding")
            body = body[:-body[-1]]
        out.append(_rtcp_packet(first & 0x1F, ptype, body))
        offset = end
    return out


def _rtcp_packet(count: int, ptype: int, body: bytes) -> RtcpPacket:
    if ptype in (RTCP_SR, RTCP_RR):
        fixed = 4 + (20 if ptype == RTCP_SR else 0)
        if len(body) < fixed + 24 * count:
            raise RtpError("RTCP report truncated")
        ssrc = struct.unpack_from("!I", body)[0]
        info = struct.unpack_from("!QIII", body, 4) if ptype == RTCP_SR else None
        reports = []
        for i in range(count):
            s, lost, high, jit, lsr, dlsr = struct.unpack_from("!IIIIII", body, fixed + 24 * i)
            cumulative = lost & 0xFFFFFF
            if cumulative & 0x800000:  # signed 24-bit (duplicates can make it negative)
                cumulative -= 1 << 24
            reports.append(ReportBlock(s, lost >> 24, cumulative, high, jit, lsr, dlsr))
        return RtcpPacket(ptype, count, ssrc, info, tuple(reports))
    if ptype == RTCP_BYE:
        if len(body) < 4 * count:
            raise RtpError("RTCP BYE truncated")
        return RtcpPacket(ptype, count, sources=struct.unpack_from(f"!{count}I", body))
    ssrc = struct.unpack_from("!I", body)[0] if len(body) >= 4 else None
    return RtcpPacket(ptype, count, ssrc, body=body)
