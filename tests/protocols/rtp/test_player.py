"""Prompts as a phone receives them: one packet every 20 ms on an absolute schedule, contiguous
sequence and timestamps, a marker where a play begins, the last frame padded with silence,
hold music looping without a gap, and a late sender catching up by at most a second."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.rtp.g711 import Codec
from protocols.rtp.packet import RtpPacket, parse_rtp
from protocols.rtp.player import FRAME_SECONDS, MAX_BACKLOG_FRAMES, Playback, RtpStream

ONE_SECOND = bytes(range(256)) * 31 + bytes(64)  # 8000 samples, no two frames alike


def stream() -> RtpStream:
    return RtpStream(ssrc=0x1234ABCD, sequence=65500, timestamp=4_294_960_000)


def run(playback: Playback, until: float) -> list[RtpPacket]:
    """Call the player whenever its timer says, up to `until`."""
    out: list[RtpPacket] = []
    timer = playback.get_timer()
    while timer is not None and timer <= until:
        out += [parse_rtp(p) for p in playback.packets_due(timer)]
        timer = playback.get_timer()
    return out


def assert_contiguous(packets: list[RtpPacket]) -> None:
    for before, after in itertools.pairwise(packets):
        assert after.sequence == (before.sequence + 1) & 0xFFFF
        assert after.timestamp == (before.timestamp + 160) & 0xFFFFFFFF
        assert after.ssrc == before.ssrc


def test_one_second_prompt_is_fifty_packets_then_done() -> None:
    playback = Playback(ONE_SECOND, Codec.PCMU, stream(), start=100.0)
    packets = run(playback, until=200.0)
    assert len(packets) == 50
    assert b"".join(p.payload for p in packets) == ONE_SECOND
    assert [p.marker for p in packets] == [True] + [False] * 49
    assert {p.payload_type for p in packets} == {0}
    assert_contiguous(packets)  # across the 16-bit and 32-bit wraps of this stream
    assert (packets[0].sequence, packets[0].timestamp) == (65500, 4_294_960_000)
    assert playback.done and playback.get_timer() is None
    assert playback.packets_due(300.0) == []


def test_last_frame_is_padded_with_the_codecs_silence() -> None:
    audio = ONE_SECOND[:200]
    packets = run(Playback(audio, Codec.PCMA, stream(), start=0.0), until=10.0)
    assert [len(p.payload) for p in packets] == [160, 160]
    assert packets[1].payload == audio[160:] + b"\xd5" * 120
    assert {p.payload_type for p in packets} == {8}


def test_nothing_is_sent_before_start_and_the_first_packet_goes_at_start() -> None:
    playback = Playback(ONE_SECOND, Codec.PCMU, stream(), start=5.0)
    assert playback.packets_due(4.999) == []
    assert playback.get_timer() == 5.0
    assert len(playback.packets_due(5.0)) == 1
    assert playback.get_timer() == 5.0 + FRAME_SECONDS


@given(st.lists(st.floats(min_value=0.0001, max_value=0.9), min_size=1, max_size=60))
def test_packet_k_is_due_at_start_plus_k_frames_however_irregular_the_wake_ups(gaps: list[float]) -> None:
    start = 1000.0
    playback = Playback(ONE_SECOND * 60, Codec.PCMU, stream(), start=start)
    now, sent = start, 0
    for gap in gaps:
        now += gap
        sent += len(playback.packets_due(now))
        # Every frame whose time has come is out, none early, and no drift accumulates.
        assert sent == int((now - start) / FRAME_SECONDS + 1e-6) + 1
        assert playback.get_timer() == start + sent * FRAME_SECONDS


def test_late_sender_catches_up_by_one_second_and_skips_older_frames() -> None:
    playback = Playback(ONE_SECOND * 10, Codec.PCMU, stream(), start=0.0)
    first = [parse_rtp(p) for p in playback.packets_due(0.0)]
    late = [parse_rtp(p) for p in playback.packets_due(3.0)]  # the loop stalled for 3 s
    assert len(late) == MAX_BACKLOG_FRAMES
    # Frames 101..150 go; 1..100 are skipped: the sequence has no gap, the media clock has.
    assert late[0].sequence == first[0].sequence + 1
    assert late[0].timestamp == (first[0].timestamp + 101 * 160) & 0xFFFFFFFF
    assert late[0].payload == (ONE_SECOND * 10)[101 * 160:102 * 160]
    assert_contiguous(late)
    assert not any(p.marker for p in late)
    assert playback.get_timer() == 151 * FRAME_SECONDS


def test_late_sender_past_the_end_of_a_prompt_still_sends_its_last_second() -> None:
    playback = Playback(ONE_SECOND * 3, Codec.PCMU, stream(), start=0.0)
    packets = [parse_rtp(p) for p in playback.packets_due(60.0)]
    assert len(packets) == MAX_BACKLOG_FRAMES
    assert b"".join(p.payload for p in packets) == (ONE_SECOND * 3)[-8000:]
    assert packets[0].marker  # the first packet this play sent
    assert playback.done


def test_looping_play_restarts_without_a_gap_and_marks_only_its_first_packet() -> None:
    audio = ONE_SECOND[:250]  # not a whole number of frames: the loop joins mid-frame
    playback = Playback(audio, Codec.PCMA, stream(), start=0.0, loop=True)
    packets = run(playback, until=2.0)
    assert len(packets) == 101
    assert b"".join(p.payload for p in packets) == (audio * 65)[:101 * 160]
    assert [p.marker for p in packets].count(True) == 1 and packets[0].marker
    assert_contiguous(packets)
    assert not playback.done and playback.get_timer() == 101 * FRAME_SECONDS


def test_looping_play_of_less_than_a_frame_fills_every_packet() -> None:
    playback = Playback(b"\x01\x02\x03", Codec.PCMU, stream(), start=0.0, loop=True)
    packets = [parse_rtp(p) for p in playback.packets_due(0.1)]
    assert len(packets) == 6
    assert b"".join(p.payload for p in packets) == (b"\x01\x02\x03" * 320)[:6 * 160]


def test_next_play_on_the_leg_keeps_the_ssrc_and_continues_sequence_and_clock() -> None:
    leg = stream()
    first = run(Playback(ONE_SECOND, Codec.PCMU, leg, start=10.0), until=20.0)
    # The last packet was due at 10.98; the next play starts 5.02 s later.
    second = run(Playback(ONE_SECOND[:320], Codec.PCMU, leg, start=16.0), until=20.0)
    assert second[0].ssrc == first[0].ssrc
    assert second[0].sequence == (first[-1].sequence + 1) & 0xFFFF
    assert second[0].timestamp == (first[-1].timestamp + round(5.02 * 8000)) & 0xFFFFFFFF
    assert second[0].marker and not second[1].marker


def test_play_replacing_another_at_once_still_moves_the_clock_a_whole_frame() -> None:
    leg = stream()
    replaced = Playback(ONE_SECOND, Codec.PCMU, leg, start=0.0, loop=True)
    last = parse_rtp(replaced.packets_due(0.0)[-1])
    new = parse_rtp(Playback(ONE_SECOND, Codec.PCMU, leg, start=0.005).packets_due(0.005)[0])
    assert new.timestamp == (last.timestamp + 160) & 0xFFFFFFFF
    assert new.sequence == (last.sequence + 1) & 0xFFFF and new.marker


def test_empty_audio_is_refused() -> None:
    with pytest.raises(ValueError):
        Playback(b"", Codec.PCMU, stream(), start=0.0)


def test_random_streams_differ() -> None:
    assert len({RtpStream.random().ssrc for _ in range(8)}) > 1
