"""G.711 μ-law and A-law (ITU-T G.711) through lookup tables, never per-sample Python.

Decoding indexes a 256-entry table, encoding a 65,536-entry one (the whole 16-bit range,
built once at import), and μ-law<->A-law transcoding is one `bytes.translate`.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import numpy.typing as npt


class Codec(enum.Enum):
    """The two G.711 laws with their static RTP payload type (RFC 3551), SDP encoding name,
    WAV format tag and the byte a silent sample encodes to."""

    PCMU = (0, "PCMU", 7, 0xFF)
    PCMA = (8, "PCMA", 6, 0xD5)

    def __init__(self, payload_type: int, encoding: str, wav_format: int, silence: int) -> None:
        self.payload_type = payload_type
        self.encoding = encoding
        self.wav_format = wav_format
        self.silence = silence

    @classmethod
    def from_payload_type(cls, pt: int) -> Codec:
        """The codec of static payload type 0 or 8."""
        for codec in cls:
            if codec.payload_type == pt:
                return codec
        raise ValueError(f"payload type {pt} is not G.711")

    @classmethod
    def from_name(cls, name: str) -> Codec:
        """PCMU/PCMA (case-insensitive, an optional ``/8000`` suffix)."""
        return cls[name.split("/")[0].upper()]

    def silence_bytes(self, samples: int) -> bytes:
        """`samples` of digital silence in this law."""
        return bytes((self.silence,)) * samples


def _ulaw_to_linear(code: npt.NDArray[Any]) -> npt.NDArray[Any]:
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.asarray(np.where(u & 0x80, 0x84 - t, t - 0x84), dtype=np.int32)


def _alaw_to_linear(code: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.asarray(np.where(a & 0x80, t, -t), dtype=np.int32)


def _linear_to_ulaw(pcm: npt.NDArray[Any]) -> npt.NDArray[Any]:
    # The reference coder's arithmetic: 14-bit magnitude (floor shift first), bias 33.
    v = pcm >> 2
    mask = np.where(v < 0, 0x7F, 0xFF)
    mag = np.minimum(np.where(v < 0, -v, v), 8159) + 0x21
    seg = np.floor(np.log2(mag)).astype(np.int32) - 5
    code = np.where(seg > 7, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    return np.asarray(code ^ mask, dtype=np.int32)


def _linear_to_alaw(pcm: npt.NDArray[Any]) -> npt.NDArray[Any]:
    sign = np.where(pcm >= 0, 0x80, 0)
    mag = np.minimum(np.where(pcm >= 0, pcm, -pcm - 1), 32767) >> 3  # 13-bit magnitude
    seg = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    mantissa = np.where(seg == 0, mag >> 1, mag >> seg) & 0x0F
    return np.asarray(((sign | (seg << 4) | mantissa) ^ 0x55) & 0xFF, dtype=np.int32)


_CODES = np.arange(256, dtype=np.int32)
_DECODE = {
    Codec.PCMU: _ulaw_to_linear(_CODES).astype("<i2"),
    Codec.PCMA: _alaw_to_linear(_CODES).astype("<i2"),
}
_LINEAR = np.arange(-32768, 32768, dtype=np.int32)
_ENCODE = {
    Codec.PCMU: _linear_to_ulaw(_LINEAR).astype(np.uint8),
    Codec.PCMA: _linear_to_alaw(_LINEAR).astype(np.uint8),
}
_ULAW_TO_ALAW = bytes(_ENCODE[Codec.PCMA][_DECODE[Codec.PCMU].astype(np.int32) + 32768])
_ALAW_TO_ULAW = bytes(_ENCODE[Codec.PCMU][_DECODE[Codec.PCMA].astype(np.int32) + 32768])


def decode(codec: Codec, data: bytes) -> npt.NDArray[np.int16]:
    """G.711 bytes to 16-bit linear samples."""
    result: npt.NDArray[np.int16] = _DECODE[codec][np.frombuffer(data, dtype=np.uint8)]
    return result


def decode_bytes(codec: Codec, data: bytes) -> bytes:
    """G.711 bytes to little-endian 16-bit PCM bytes (what a PCM WAV holds)."""
    return decode(codec, data).tobytes()


def encode(codec: Codec, pcm: npt.NDArray[np.int16] | bytes) -> bytes:
    """16-bit linear samples (an array, or little-endian PCM bytes) to G.711 bytes."""
    samples = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray) else pcm
    return bytes(_ENCODE[codec][samples.astype(np.int32) + 32768])


def transcode(source: Codec, target: Codec, data: bytes) -> bytes:
    """μ-law <-> A-law (through the linear value, as G.711 tables do), one translate."""
    if source is target:
        return data
    return data.translate(_ULAW_TO_ALAW if source is Codec.PCMU else _ALAW_TO_ULAW)


def tone(codec: Codec, frequencies: tuple[float, ...], samples: int, *, amplitude: float = 8000.0,
         start: int = 0, rate: int = 8000) -> bytes:
    """A sum of sines (e.g. a dial tone or DTMF pair), `samples` long from sample `start`."""
    t = (np.arange(samples) + start) / rate
    wave = sum(np.sin(2 * np.pi * f * t) for f in frequencies)
    pcm = np.clip(np.asarray(wave) * (amplitude / max(len(frequencies), 1)), -32768, 32767)
    return encode(codec, pcm.astype(np.int16))
