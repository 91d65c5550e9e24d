"""Placing packets on the recording clock: audio lands where its RTP timestamps say, whatever
the network jitter, across sequence and timestamp wrap, SSRC changes and clock jumps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.rtp.timeline import StereoAssembler, StreamTimeline


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
       st.lists(st.integers(0, 400), min_size=50, max_size=50))
def test_jitter_does_not_move_audio_and_wraps_are_invisible(seq0: int, ts0: int, jitter: list[int]) -> None:
    line = StreamTimeline()
    first = line.place(1, seq0, ts0, 160, arrival=1000)
    assert first == 1000
    for i in range(1, 50):
        pos = line.place(1, (seq0 + i) & 0xFFFF, (ts0 + 160 * i) & 0xFFFFFFFF, 160,
                         arrival=1000 + 160 * i + jitter[i])
        assert pos == 1000 + 160 * i


def test_duplicates_are_dropped_and_reordered_packets_keep_their_place() -> None:
    line = StreamTimeline()
    assert line.place(7, 10, 0, 160, 0) == 0
    assert line.place(7, 12, 320, 160, 330) == 320
    assert line.place(7, 11, 160, 160, 340) == 160  # late, but its own place
    assert line.place(7, 12, 320, 160, 350) is None
    assert line.duplicates == 1


def test_new_ssrc_is_anchored_at_its_arrival_after_a_gap() -> None:
    line = StreamTimeline()
    for i in range(5):
        line.place(1, i, 1000 + 160 * i, 160, 160 * i)
    # transfer: a new phone with its own SSRC and clock starts 2 s later
    assert line.place(2, 999, 5_000_000, 160, 16800) == 16800
    assert line.place(2, 1000, 5_000_160, 160, 16960) == 16960
    assert line.anchors == 2


def test_new_ssrc_never_overwrites_audio_already_placed() -> None:
    line = StreamTimeline()
    line.place(1, 0, 0, 160, 0)
    line.place(1, 1, 160, 160, 100)  # arrived early: placed up to 320
    assert line.place(2, 0, 77, 160, 200) == 320


def test_timestamp_jump_without_new_ssrc_reanchors() -> None:
    line = StreamTimeline(jump_samples=8000)
    line.place(1, 0, 0, 160, 0)
    line.place(1, 1, 160, 160, 160)
    assert line.place(1, 2, 3_000_000, 160, 320) == 320
    assert line.place(1, 3, 3_000_160, 160, 480) == 480


def test_silence_suppression_gap_stays_a_gap() -> None:
    line = StreamTimeline()
    line.place(1, 0, 0, 160, 0)
    assert line.place(1, 1, 4000, 160, 4010) == 4000  # 0.5 s without packets (VAD)


def test_assembler_interleaves_with_silence_and_cuts_late_audio() -> None:
    asm = StereoAssembler(silence=0xFF)
    asm.place(0, 0, b"\x01\x02")
    asm.place(1, 1, b"\x03")
    assert asm.take(3) == bytes([1, 0xFF, 2, 3, 0xFF, 0xFF])
    asm.place(0, 2, b"\x04\x05")  # first sample is behind the head: cut
    assert asm.late_samples == 1
    assert asm.take(4) == bytes([5, 0xFF])
    assert asm.take(4) == b""


def test_sequence_restart_under_the_same_ssrc_is_not_taken_for_duplicates() -> None:
    line = StreamTimeline()
    for i in range(5):
        line.place(1, 40000 + i, 160 * i, 160, 160 * i)
    assert line.place(1, 7, 800, 160, 800) == 800  # a PBX renumbering after a re-INVITE
    assert line.place(1, 8, 960, 160, 960) == 960
    assert line.place(1, 8, 960, 160, 970) is None
