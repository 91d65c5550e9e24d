"""The recorder on an injected clock: the file is exactly as long as the recorded time, both
channels stay aligned by RTP timestamps through jitter, hold, transfer and pickup, and audio
that arrives too late for its place is cut rather than shifting what follows."""

from __future__ import annotations

import random
from pathlib import Path

from handlers.media.interface import RecordingStatus
from handlers.media.recorder import Recorder
from protocols.rtp.g711 import Codec
from protocols.rtp.wav import read_wav


class Stream:
    """One phone's packets: 20 ms frames with a constant byte per frame number."""

    def __init__(self, ssrc: int, ts: int, seq: int) -> None:
        self.ssrc, self.ts, self.seq = ssrc, ts, seq

    def next(self, fill: int) -> tuple[int, int, int, bytes]:
        packet = (self.seq & 0xFFFF, self.ts & 0xFFFFFFFF, self.ssrc, bytes([fill]) * 160)
        self.seq += 1
        self.ts += 160
        return packet


def frames(path: Path) -> tuple[bytes, bytes]:
    data = read_wav(path.read_bytes()).data
    return data[0::2], data[1::2]


def test_hold_transfer_and_pickup_leave_one_file_as_long_as_the_call(tmp_path: Path) -> None:
    path = tmp_path / "r.wav"
    rec = Recorder(path, Codec.PCMU, start=100.0)
    rnd = random.Random(4)
    customer = Stream(1, 0xFFFFFF00, 65530)  # wraps both counters early on
    agent = Stream(2, 5000, 10)
    now = 100.0
    for n in range(100):  # 2 s of talk; after the first packets (the anchors) jitter up to 15 ms
        rec.feed(0, 0, *customer.next(0x10), now + n * 0.02 + (rnd.uniform(0, 0.015) if n else 0))
        rec.feed(1, 0, *agent.next(0x20), now + n * 0.02 + (rnd.uniform(0, 0.015) if n else 0))
        rec.flush(now + n * 0.02)
    # 3 s hold: the customer's phone goes on sending, the agent's sends nothing
    for n in range(100, 250):
        rec.feed(0, 0, *customer.next(0x11), now + n * 0.02)
        rec.flush(now + n * 0.02)
    # transfer: another agent's phone (new SSRC and clock) answers 1 s later
    transferred = Stream(3, 777, 300)
    for n in range(300, 400):
        rec.feed(1, 0, *transferred.next(0x30), now + n * 0.02)
        rec.flush(now + n * 0.02)
    # pickup: a third phone, at once
    picked = Stream(4, 99, 4)
    for n in range(400, 450):
        rec.feed(1, 0, *picked.next(0x40), now + n * 0.02)
    rec.close(now + 10.0)
    result = rec.result()
    assert result.status is RecordingStatus.OK
    assert result.duration == 10.0
    left, right = frames(path)
    assert len(left) == len(right) == 80000
    assert left[:16000] == b"\x10" * 16000 and right[:16000] == b"\x20" * 16000  # aligned from sample 0
    assert left[16000:40000] == b"\x11" * 24000
    assert right[16000:48000] == b"\xff" * 32000  # hold and ringing: silence, not a cut
    assert right[48000:64000] == b"\x30" * 16000
    assert right[64000:72000] == b"\x40" * 8000
    assert left[40000:] == b"\xff" * 40000


def test_audio_too_late_for_the_jitter_window_is_cut_not_shifted(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "late.wav", Codec.PCMA, start=0.0, delay=0.2)
    s = Stream(9, 0, 0)
    packets = [s.next(i + 1) for i in range(20)]
    for i, p in enumerate(packets):
        if i != 5:
            rec.feed(0, 8, *p, i * 0.02)
        rec.flush(i * 0.02)
    rec.flush(0.5)
    rec.feed(0, 8, *packets[5], 0.5)  # 400 ms late: its place is already written
    rec.close(0.5)
    left, _ = frames(tmp_path / "late.wav")
    assert left[800:960] == b"\xd5" * 160
    assert left[960:1120] == b"\x07" * 160
    assert rec.late_samples == 160


def test_other_law_is_transcoded_and_telephone_events_are_not_recorded(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "t.wav", Codec.PCMA, start=0.0)
    rec.feed(0, 0, 1, 0, 5, b"\xff" * 160, 0.0)  # μ-law silence in an A-law call
    rec.feed(1, 101, 1, 0, 6, b"\x01\x0a\x00\xa0", 0.0)
    rec.close(0.02)
    left, right = frames(tmp_path / "t.wav")
    assert left == b"\xd5" * 160 and right == b"\xd5" * 160


def test_file_work_waits_for_the_disk_and_lands_in_order(tmp_path: Path) -> None:
    """With the disk stalled (its jobs held back), the relay's calls return at once and the
    file appears complete when the disk catches up."""
    held: list[object] = []
    path = tmp_path / "stalled.wav"
    rec = Recorder(path, Codec.PCMU, start=0.0, disk=held.append)
    s = Stream(1, 0, 0)
    for n in range(100):
        rec.feed(0, 0, *s.next(0x42), n * 0.02)
        rec.flush(n * 0.02)
    rec.close(2.0)
    assert not path.exists()  # nothing touched the disk yet
    for job in held:
        job()  # type: ignore[operator]
    left, right = frames(path)
    assert left == b"\x42" * 16000 and right == b"\xff" * 16000
    assert rec.result().duration == 2.0
