"""RTP/RTCP packets as peers send them: built packets parse back identically, and malformed
datagrams are refused with RtpError rather than misread."""

from __future__ import annotations

import contextlib
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.rtp.packet import (
    RTCP_BYE,
    RTCP_RR,
    RTCP_SR,
    ReportBlock,
    RtcpPacket,
    RtpError,
    RtpPacket,
    is_rtcp,
    parse_rtcp,
    parse_rtp,
    rtp_payload_offset,
)
from tests.protocols.rtp.pcap import SIPP_PCAPS, udp_payloads

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=400),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 0xFFFF),
                                    st.binary(max_size=64).map(lambda b: b + b"\0" * (-len(b) % 4))),
)


@given(packets)
def test_built_packet_parses_back_identically(packet: RtpPacket) -> None:
    wire = packet.build()
    assert parse_rtp(wire) == packet
    start, end = rtp_payload_offset(wire)
    assert wire[start:end] == packet.payload


@given(st.binary(max_size=80))
def test_any_datagram_either_parses_or_raises_rtp_error(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        parse_rtp(data)
    with contextlib.suppress(RtpError):
        parse_rtcp(data)


def test_padding_is_removed_from_the_payload() -> None:
    wire = bytearray(RtpPacket(0, 1, 160, 7, b"abcd").build() + b"\0\0\x03")
    wire[0] |= 0x20
    assert parse_rtp(bytes(wire)).payload == b"abcd"
    assert rtp_payload_offset(bytes(wire)) == (12, 16)


@pytest.mark.parametrize("wire", [
    b"\x80\x00\x00",  # short
    b"\x40" + bytes(11),  # version 1
    b"\x81" + bytes(11),  # one CSRC announced, none present
    b"\x90" + bytes(11) + b"\x00\x00\x00\x05",  # extension longer than the packet
    b"\xa0" + bytes(11) + b"\x20",  # padding longer than the packet
])
def test_malformed_rtp_is_refused(wire: bytes) -> None:
    with pytest.raises(RtpError):
        parse_rtp(wire)


def test_sender_report_with_reception_reports_round_trips() -> None:
    block = ReportBlock(ssrc=0x1234, fraction_lost=25, cumulative_lost=-3, highest_sequence=70000,
                        jitter=12, last_sr=0xABCD, delay_since_last_sr=99)
    sr = RtcpPacket(RTCP_SR, 1, ssrc=0x55, sender_info=(1 << 40, 16000, 100, 16000), reports=(block,))
    bye = RtcpPacket(RTCP_BYE, 2, sources=(0x55, 0x66))
    wire = sr.build() + bye.build()
    assert is_rtcp(wire)
    parsed = parse_rtcp(wire)
    assert parsed[0] == sr
    assert parsed[1].sources == (0x55, 0x66)


def test_receiver_report_and_sdes_are_told_from_rtp() -> None:
    rr = RtcpPacket(RTCP_RR, 0, ssrc=9).build()
    assert is_rtcp(rr)
    assert not is_rtcp(RtpPacket(8, 1, 1, 1, b"x").build())
    assert parse_rtcp(rr)[0].ssrc == 9


def test_rtcp_length_beyond_datagram_is_refused() -> None:
    with pytest.raises(RtpError):
        parse_rtcp(struct.pack("!BBH", 0x80, RTCP_RR, 5) + bytes(4))


@pytest.mark.skipif(not (SIPP_PCAPS / "g711a.pcap").exists(), reason="sip-tester not installed")
def test_sipp_g711a_capture_parses_as_one_pcma_stream() -> None:
    parsed = [parse_rtp(p) for p in udp_payloads(SIPP_PCAPS / "g711a.pcap")]
    assert len(parsed) > 100
    assert {p.payload_type for p in parsed} == {8}
    assert len({p.ssrc for p in parsed}) == 1
    assert all(b.sequence == (a.sequence + 1) & 0xFFFF for a, b in itertools.pairwise(parsed))
    assert {len(p.payload) for p in parsed} == {240}  # 30 ms packets
    assert all(b.timestamp - a.timestamp == 240 for a, b in itertools.pairwise(parsed))
