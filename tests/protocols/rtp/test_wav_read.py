"""Reading uploaded WAVs: every common form (integer, float, G.711; plain or extensible; mono
or stereo; odd chunks around the audio) reads as the same mono signal, and a file we cannot
read is refused with the reason a person can act on."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from array import array
from pathlib import Path

import pytest

from protocols.rtp import g711
from protocols.rtp.g711 import Codec
from protocols.rtp.wav import (
    FORMAT_ALAW,
    FORMAT_EXTENSIBLE,
    FORMAT_FLOAT,
    FORMAT_MULAW,
    FORMAT_PCM,
    WavError,
    pcm_wav,
    read_pcm,
)

GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def sine(rate: int, n: int = 800, frequency: float = 440.0, level: float = 0.5) -> list[float]:
    """Samples in -1..1."""
    return [level * math.sin(2 * math.pi * frequency * i / rate) for i in range(n)]


def fmt_chunk(tag: int, channels: int, rate: int, bits: int, *, extensible: bool = False) -> bytes:
    align = channels * bits // 8
    head = struct.pack("<HHIIHH", FORMAT_EXTENSIBLE if extensible else tag, channels, rate,
                       rate * align, align, bits)
    if extensible:
        head += struct.pack("<HHI", 22, bits, 0x3 if channels == 2 else 0x4)
        head += struct.pack("<H", tag) + GUID_TAIL
    return chunk(b"fmt ", head)


def chunk(cid: bytes, body: bytes, size: int | None = None) -> bytes:
    return cid + struct.pack("<I", len(body) if size is None else size) + body + \
        b"\0" * (len(body) & 1)


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def encode(tag: int, bits: int, values: list[float]) -> bytes:
    """Samples in -1..1 in the given sample format."""
    if tag == FORMAT_FLOAT:
        return array("f" if bits == 32 else "d", values).tobytes()
    ints = [max(-32768, min(32767, round(v * 32768))) for v in values]
    if tag in (FORMAT_MULAW, FORMAT_ALAW):
        return g711.encode(Codec.PCMU if tag == FORMAT_MULAW else Codec.PCMA,
                           array("h", ints).tobytes())
    if bits == 8:
        return bytes((i >> 8) + 128 for i in ints)
    full = [round(v * (2 ** (bits - 1) - 1)) for v in values]
    return b"".join(v.to_bytes(bits // 8, "little", signed=True) for v in full)


FORMS = [(FORMAT_PCM, 8), (FORMAT_PCM, 16), (FORMAT_PCM, 24), (FORMAT_PCM, 32),
         (FORMAT_FLOAT, 32), (FORMAT_FLOAT, 64), (FORMAT_MULAW, 8), (FORMAT_ALAW, 8)]


@pytest.mark.parametrize("extensible", [False, True], ids=["plain", "extensible"])
@pytest.mark.parametrize("tag,bits", FORMS, ids=[f"{t}-{b}" for t, b in FORMS])
def test_every_format_reads_as_the_same_signal(tag: int, bits: int, extensible: bool) -> None:
    rate = 8000 if tag in (FORMAT_MULAW, FORMAT_ALAW) else 22050
    signal = sine(rate)
    pcm = read_pcm(riff(fmt_chunk(tag, 1, rate, bits, extensible=extensible),
                        chunk(b"data", encode(tag, bits, signal))))
    assert (pcm.rate, len(pcm.samples)) == (rate, len(signal))
    if tag in (FORMAT_MULAW, FORMAT_ALAW):  # exactly what G.711 decoding gives
        codec = Codec.PCMU if tag == FORMAT_MULAW else Codec.PCMA
        assert list(pcm.samples) == list(g711.decode(codec, encode(tag, bits, signal)))
    else:  # 8-bit PCM keeps 8 bits; the others agree to the 16-bit step
        tolerance = 256.0 if bits == 8 else 1.0
        assert max(abs(a - b * 32768) for a, b in zip(pcm.samples, signal, strict=True)) \
            <= tolerance
    assert pcm.duration == pytest.approx(len(signal) / rate)


def test_stereo_is_averaged_to_mono() -> None:
    left, right = sine(16000, level=0.5), sine(16000, level=0.25)
    interleaved = [v for pair in zip(left, right, strict=True) for v in pair]
    pcm = read_pcm(riff(fmt_chunk(FORMAT_PCM, 2, 16000, 16),
                        chunk(b"data", encode(FORMAT_PCM, 16, interleaved))))
    assert len(pcm.samples) == len(left)
    assert max(abs(s - (a + b) / 2 * 32767) for s, a, b in zip(pcm.samples, left, right,
                                                               strict=True)) <= 1
    assert pcm.source == "PCM 16-bit stereo 16000 Hz"
    opposite = [v for s in left for v in (s, -s)]
    silent = read_pcm(riff(fmt_chunk(FORMAT_PCM, 2, 16000, 16),
                           chunk(b"data", encode(FORMAT_PCM, 16, opposite))))
    assert max(map(abs, silent.samples)) <= 1


def test_chunks_around_the_audio_and_their_pad_bytes_are_skipped() -> None:
    data = encode(FORMAT_PCM, 16, sine(8000, 101))  # 202 bytes
    blob = riff(chunk(b"JUNK", b"\0" * 7), fmt_chunk(FORMAT_PCM, 1, 8000, 16),
                chunk(b"fact", struct.pack("<I", 101)), chunk(b"LIST", b"INFOISFT\x03\0\0\0ab\0"),
                chunk(b"data", data), chunk(b"LIST", b"x"))
    assert len(read_pcm(blob).samples) == 101


def test_a_streamed_data_size_reads_to_the_end_and_a_torn_frame_is_dropped() -> None:
    data = encode(FORMAT_PCM, 16, sine(8000, 50)) + b"\x01"
    pcm = read_pcm(riff(fmt_chunk(FORMAT_PCM, 1, 8000, 16), b"data\xff\xff\xff\xff" + data))
    assert len(pcm.samples) == 50


def test_our_own_pcm_wav_reads_back() -> None:
    samples = array("h", [0, 1, -1, 32767, -32768])
    pcm = read_pcm(pcm_wav(samples.tobytes(), 8000))
    assert list(pcm.samples) == list(samples)


_PCM = fmt_chunk(FORMAT_PCM, 1, 8000, 16)
REFUSALS = [
    (b"ID3\x03" + b"\0" * 20, "not a RIFF/WAVE file"),
    (b"RIFX\0\0\0\x24WAVE", "big-endian RIFX WAV files are not supported"),
    (riff(fmt_chunk(0x0055, 2, 44100, 0), chunk(b"data", b"\xff\xfb" * 10)),
     "unsupported format 0x0055 (MP3)"),
    (riff(fmt_chunk(0x0011, 1, 8000, 4), chunk(b"data", b"\0" * 10)),
     "unsupported format 0x0011 (IMA ADPCM)"),
    (riff(fmt_chunk(0x1234, 1, 8000, 16), chunk(b"data", b"\0" * 10)),
     "unsupported format 0x1234"),
    (riff(_PCM, chunk(b"data", b"\0" * 100, size=1000)), "truncated data chunk"),
    (riff(_PCM), "no data chunk"),
    (riff(chunk(b"data", b"\0" * 4), _PCM), "data chunk before the fmt chunk"),
    (riff(chunk(b"LIST", b"")), "no fmt chunk"),
    (riff(chunk(b"fmt ", b"\x01\0\x01\0")), "fmt chunk too short"),
    (riff(fmt_chunk(FORMAT_PCM, 1, 96000, 16), chunk(b"data", b"\0" * 4)),
     "unsupported sample rate 96000 Hz (8000-48000 Hz)"),
    (riff(fmt_chunk(FORMAT_PCM, 1, 4000, 16), chunk(b"data", b"\0" * 4)),
     "unsupported sample rate 4000 Hz"),
    (riff(fmt_chunk(FORMAT_PCM, 6, 48000, 16), chunk(b"data", b"\0" * 12)),
     "unsupported channel count 6 (mono or stereo)"),
    (riff(fmt_chunk(FORMAT_PCM, 1, 8000, 12), chunk(b"data", b"\0" * 4)),
     "unsupported sample size 12 bits for 0x0001 (PCM)"),
    (riff(fmt_chunk(FORMAT_FLOAT, 1, 8000, 16), chunk(b"data", b"\0" * 4)),
     "unsupported sample size 16 bits for 0x0003 (IEEE float)"),
    (riff(fmt_chunk(FORMAT_FLOAT, 1, 8000, 32),
          chunk(b"data", array("f", [0.0, math.nan]).tobytes())), "not finite"),
    (riff(chunk(b"fmt ", struct.pack("<HHIIHH", FORMAT_EXTENSIBLE, 1, 8000, 16000, 2, 16)
                + b"\0\0")), "WAVE_FORMAT_EXTENSIBLE fmt chunk too short"),
    (riff(chunk(b"fmt ", struct.pack("<HHIIHHHHI", FORMAT_EXTENSIBLE, 1, 8000, 16000, 2, 16,
                                     22, 16, 4) + b"\x01\0" + b"\x11" * 14),
          chunk(b"data", b"\0\0")), "unsupported extensible subformat"),
]


@pytest.mark.parametrize("blob,reason", REFUSALS, ids=[r for _, r in REFUSALS])
def test_a_file_we_cannot_read_is_refused_with_its_reason(blob: bytes, reason: str) -> None:
    with pytest.raises(WavError) as refused:
        read_pcm(blob)
    assert reason in str(refused.value)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
@pytest.mark.parametrize("options", [["-b", "24"], ["-e", "floating-point", "-b", "32"],
                                     ["-e", "u-law"], ["-b", "8"]])
def test_files_sox_writes_are_read(tmp_path: Path, options: list[str]) -> None:
    path = tmp_path / "tone.wav"
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", *options, str(path), "synth", "0.5",
                    "sine", "440", "vol", "0.5"], check=True)
    pcm = read_pcm(path.read_bytes())
    assert (pcm.rate, len(pcm.samples)) == (44100, 22050)
    assert 0.45 * 32768 < max(pcm.samples) < 0.55 * 32768
