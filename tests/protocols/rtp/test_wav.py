"""Recordings as a listener's tools see them: sox reads our G.711 WAVs with the right format,
channels and duration, also when the writer was killed before closing the file."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from protocols.rtp.g711 import Codec, decode_bytes
from protocols.rtp.wav import HEADER_BYTES, WavError, WavWriter, read_wav, wav_header

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")


def soxi(path: Path) -> dict[str, str]:
    out = subprocess.run(["sox", "--i", str(path)], capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def sox_pcm(path: Path) -> bytes:
    """The samples sox decodes from the file, as interleaved 16-bit little-endian PCM."""
    return subprocess.run(["sox", str(path), "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", "-"],
                          capture_output=True, check=True).stdout


@needs_sox
@pytest.mark.parametrize("codec,encoding", [(Codec.PCMU, "u-law"), (Codec.PCMA, "A-law")])
def test_sox_reads_format_channels_duration_and_samples(tmp_path: Path, codec: Codec, encoding: str) -> None:
    frames = bytes((i * 7) & 0xFF for i in range(2 * 12000))
    path = tmp_path / "call.wav"
    with path.open("wb") as f:
        writer = WavWriter(f, codec)
        for i in range(0, len(frames), 320):
            writer.write(frames[i:i + 320])
        writer.close()
    info = soxi(path)
    assert info["Channels"] == "2" and info["Sample Rate"] == "8000"
    assert encoding in info["Sample Encoding"]
    assert info["Duration"].startswith("00:00:01.50")
    assert sox_pcm(path) == decode_bytes(codec, frames)
    assert read_wav(path.read_bytes()).data == frames


@needs_sox
def test_file_of_a_killed_writer_plays_up_to_the_last_header_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    f = path.open("wb", buffering=0)
    writer = WavWriter(f, Codec.PCMA, sync_frames=8000)
    for _ in range(130):  # 2.6 s, never closed: like a kill -9 of the writer
        writer.write(b"\xd5" * 320)
    info = soxi(path)
    assert info["Duration"].startswith("00:00:02.00")  # the last rewrite, at 2 s
    assert len(sox_pcm(path)) == 2 * 2 * 16000
    f.close()


def test_header_fields_follow_the_riff_layout() -> None:
    header = wav_header(Codec.PCMU, 2, 3)
    assert len(header) == HEADER_BYTES
    audio = read_wav(header + b"\x00" * 6)
    assert (audio.format, audio.channels, audio.rate, audio.bits, audio.data) == (7, 2, 8000, 8, bytes(6))
    odd = io.BytesIO()
    writer = WavWriter(odd, Codec.PCMU, channels=1)
    writer.write(b"\x01")
    writer.sync()
    assert read_wav(odd.getvalue()).data == b"\x01"


def test_non_wav_is_refused() -> None:
    with pytest.raises(WavError):
        read_wav(b"RIFX0000WAVE")
