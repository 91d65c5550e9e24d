"""RFC 4733 digits: each pressed key is reported once, however many update and end packets
carry it, including SIPp's captured DTMF streams (three identical end packets each)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.rtp.dtmf import EVENTS, DtmfDecoder, encode_digit, parse_event
from protocols.rtp.packet import RtpError, parse_rtp
from tests.protocols.rtp.pcap import SIPP_PCAPS, udp_payloads

CAPTURES = {"0": "0", "1": "1", "5": "5", "9": "9", "star": "*", "pound": "#"}


@pytest.mark.skipif(not SIPP_PCAPS.exists(), reason="sip-tester not installed")
@pytest.mark.parametrize("name,digit", sorted(CAPTURES.items()))
def test_sipp_capture_yields_its_digit_once(name: str, digit: str) -> None:
    decoder = DtmfDecoder()
    capture = udp_payloads(SIPP_PCAPS / f"dtmf_2833_{name}.pcap")
    got = [d for p in capture for d in decoder.receive(parse_rtp(p))]
    assert [(d.digit, d.ended, d.duration) for d in got] == [(digit, True, 0x08C0)]
    assert decoder.flush() == []


def test_encoded_digit_has_marker_first_and_three_end_packets() -> None:
    packets = encode_digit("7", ssrc=1, sequence=65534, timestamp=4000, duration_ms=100)
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert {p.timestamp for p in packets} == {4000}
    ends = [parse_event(p.payload) for p in packets if parse_event(p.payload).end]
    assert len(ends) == 3 and {e.duration for e in ends} == {800}
    assert [p.sequence for p in packets[-2:]] == [(65534 + len(packets) - 2) & 0xFFFF,
                                                  (65534 + len(packets) - 1) & 0xFFFF]


@given(st.lists(st.sampled_from(EVENTS), min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_digits_survive_duplicated_and_reordered_end_packets(digits: list[str], rnd: object) -> None:
    decoder = DtmfDecoder()
    got: list[str] = []
    seq, ts = 100, 1000
    for digit in digits:
        packets = encode_digit(digit, ssrc=5, sequence=seq, timestamp=ts)
        seq += len(packets)
        ts += 1600
        stream = packets + packets[-3:] + packets[:2]  # retransmissions after the end
        rnd.shuffle(stream[-5:])  # type: ignore[attr-defined]
        for p in stream:
            got.extend(d.digit for d in decoder.receive(p))
    got.extend(d.digit for d in decoder.flush())
    assert got == digits


def test_lost_end_packets_still_report_the_digit_when_the_next_one_starts() -> None:
    decoder = DtmfDecoder()
    first = [p for p in encode_digit("1", ssrc=5, sequence=1, timestamp=0) if not parse_event(p.payload).end]
    second = encode_digit("2", ssrc=5, sequence=20, timestamp=1600)
    out = [d for p in first + second for d in decoder.receive(p)]
    assert [(d.digit, d.ended) for d in out] == [("1", False), ("2", True)]


def test_short_payload_is_refused() -> None:
    with pytest.raises(RtpError):
        parse_event(b"\x01\x0a")


def test_the_same_capture_replayed_later_is_a_second_key_press():
    """SIPp plays its RFC 2833 pcaps with their own timestamps: pressing 1 twice replays the
    same event. Copies within the repeat window are one key; a replay later is another."""
    decoder = DtmfDecoder()
    packets = encode_digit("1", ssrc=7, sequence=100, timestamp=8000)
    first = [d.digit for p in packets for d in decoder.receive(p, now=10.0)]
    again = [d.digit for p in packets[-1:] for d in decoder.receive(p, now=10.05)]
    later = [d.digit for p in packets for d in decoder.receive(p, now=14.0)]
    assert (first, again, later) == (["1"], [], ["1"])
