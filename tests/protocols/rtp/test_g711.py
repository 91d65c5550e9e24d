"""G.711 agrees with independent coders on every value: the reference C coder Python 3.11
still ships (audioop) and sox."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import pytest

from protocols.rtp.g711 import Codec, decode_bytes, encode, tone, transcode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13
        audioop = None  # type: ignore[assignment]

ALL_LINEAR = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))
needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop removed from this Python")


@needs_audioop
def test_every_code_decodes_like_the_reference_coder() -> None:
    assert decode_bytes(Codec.PCMU, ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert decode_bytes(Codec.PCMA, ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


@needs_audioop
def test_every_16_bit_sample_encodes_like_the_reference_coder() -> None:
    assert encode(Codec.PCMU, ALL_LINEAR) == audioop.lin2ulaw(ALL_LINEAR, 2)
    assert encode(Codec.PCMA, ALL_LINEAR) == audioop.lin2alaw(ALL_LINEAR, 2)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
@pytest.mark.parametrize("codec,sox_name", [(Codec.PCMU, "u-law"), (Codec.PCMA, "a-law")])
def test_decoding_matches_sox(codec: Codec, sox_name: str) -> None:
    out = subprocess.run(["sox", "-t", "raw", "-r", "8000", "-e", sox_name, "-b", "8", "-c", "1", "-",
                          "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", "-"],
                         input=ALL_CODES, capture_output=True, check=True).stdout
    assert decode_bytes(codec, ALL_CODES) == out


def test_decode_then_encode_is_the_identity_except_negative_zero() -> None:
    for codec in Codec:
        again = encode(codec, decode_bytes(codec, ALL_CODES))
        differing = [c for c, d in zip(ALL_CODES, again, strict=True) if c != d]
        assert differing in ([], [0x7F])  # μ-law has two zeros; 0x7F decodes to 0 = 0xFF


def test_transcoding_equals_going_through_linear() -> None:
    for src, dst in ((Codec.PCMU, Codec.PCMA), (Codec.PCMA, Codec.PCMU)):
        assert transcode(src, dst, ALL_CODES) == encode(dst, decode_bytes(src, ALL_CODES))
    assert transcode(Codec.PCMU, Codec.PCMU, b"\x01\x02") == b"\x01\x02"


def test_silence_byte_decodes_to_zero_and_tone_has_its_frequency() -> None:
    for codec in Codec:
        assert decode_bytes(codec, codec.silence_bytes(4)) in (b"\0" * 8, b"\x08\x00" * 4, b"\xf8\xff" * 4)
        pcm = np.frombuffer(decode_bytes(codec, tone(codec, (440.0,), 8000)), dtype="<i2")
        spectrum = np.abs(np.fft.rfft(pcm))
        assert int(np.argmax(spectrum)) == 440  # 1 Hz bins over one second
