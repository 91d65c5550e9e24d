"""WAV files: written in the call's own G.711 law (WAVE_FORMAT_MULAW 7, WAVE_FORMAT_ALAW 6)
or 16-bit PCM, read in any common PCM form.

`WavWriter` appends frames and rewrites the sizes in the header every `sync_frames`, so a file
cut off by a crash still says how much audio it holds, up to the last rewrite. `read_pcm` turns
an uploaded WAV (integer, float or G.711; plain or extensible; mono or stereo) into mono linear
samples, or says in one WavError why it cannot.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from protocols.rtp import g711
from protocols.rtp.g711 import Codec

HEADER_BYTES = 58  # RIFF + fmt (18-byte WAVEFORMATEX) + fact + data chunk headers
_FACT_AT = 46  # offset of the fact chunk's sample count
_DATA_SIZE_AT = 54


class WavError(ValueError):
    """Not a WAV file this module reads."""


def wav_header(codec: Codec, channels: int, frames: int, rate: int = 8000) -> bytes:
    """The 58-byte header of a G.711 WAV holding `frames` frames."""
    data = frames * channels
    return b"".join((
        b"RIFF", struct.pack("<I", HEADER_BYTES - 8 + data + (data & 1)), b"WAVE",
        b"fmt ", struct.pack("<IHHIIHHH", 18, codec.wav_format, channels, rate, rate * channels,
                             channels, 8, 0),
        b"fact", struct.pack("<II", 4, frames),
        b"data", struct.pack("<I", data),
    ))


class WavWriter:
    """Writes a G.711 WAV incrementally to a seekable binary file opened for writing."""

    def __init__(self, file: BinaryIO, codec: Codec, channels: int = 2, rate: int = 8000,
                 sync_frames: int = 8000) -> None:
        self.file = file
        self.codec = codec
        self.channels = channels
        self.rate = rate
        self.frames = 0
        self._sync_frames = sync_frames
        self._synced = 0
        file.write(wav_header(codec, channels, 0, rate))

    def write(self, interleaved: bytes) -> None:
        """Append whole frames (one byte per channel each); rewrite the sizes when due."""
        self.file.write(interleaved)
        self.frames += len(interleaved) // self.channels
        if self.frames - self._synced >= self._sync_frames:
            self.sync()

    def sync(self) -> None:
        """Rewrite the RIFF, fact and data sizes to the frames written so far."""
        data = self.frames * self.channels
        self.file.seek(4)
        self.file.write(struct.pack("<I", HEADER_BYTES - 8 + data + (data & 1)))
        self.file.seek(_FACT_AT)
        self.file.write(struct.pack("<I", self.frames))
        self.file.seek(_DATA_SIZE_AT)
        self.file.write(struct.pack("<I", data))
        self.file.seek(0, 2)
        self._synced = self.frames

    def close(self) -> None:
        """Pad the data chunk to an even size (RIFF rule), rewrite the header, close."""
        if (self.frames * self.channels) & 1:
            self.file.write(b"\0")
        self.sync()
        self.file.close()

    @property
    def duration(self) -> float:
        """Seconds of audio written."""
        return self.frames / self.rate


def pcm_wav(pcm: bytes, rate: int = 8000, channels: int = 1) -> bytes:
    """A plain 16-bit PCM WAV (WAVE_FORMAT_PCM) holding little-endian samples `pcm`."""
    return b"".join((
        b"RIFF", struct.pack("<I", 36 + len(pcm) + (len(pcm) & 1)), b"WAVE",
        b"fmt ", struct.pack("<IHHIIHH", 16, FORMAT_PCM, channels, rate, rate * channels * 2,
                             channels * 2, 16),
        b"data", struct.pack("<I", len(pcm)), pcm, b"\0" * (len(pcm) & 1),
    ))


# -- reading ----------------------------------------------------------------------------------

FORMAT_PCM = 0x0001
FORMAT_FLOAT = 0x0003
FORMAT_ALAW = 0x0006
FORMAT_MULAW = 0x0007
FORMAT_EXTENSIBLE = 0xFFFE
# The tail every KSDATAFORMAT_SUBTYPE GUID shares; its first two bytes are the format tag.
_SUBTYPE_TAIL = bytes.fromhex("000000001000800000aa00389b71")
# Tags met in the wild that we do not decode, named so that a refusal says what the file is.
_NAMES = {
    0x0002: "MS ADPCM", 0x0011: "IMA ADPCM", 0x0022: "TrueSpeech", 0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM", 0x0045: "G.726 ADPCM", 0x0050: "MPEG audio", 0x0055: "MP3",
    0x0064: "G.726 ADPCM", 0x0092: "AC-3", 0x0161: "WMA", 0x0162: "WMA Pro", 0x1610: "AAC",
    0x00FF: "AAC", 0x2000: "AC-3", 0x674F: "Ogg Vorbis", 0x6750: "Ogg Vorbis", 0xF1AC: "FLAC",
}
_SIZES = {FORMAT_PCM: (8, 16, 24, 32), FORMAT_FLOAT: (32, 64), FORMAT_ALAW: (8,),
          FORMAT_MULAW: (8,)}
_STREAMED = 0xFFFFFFFF  # the data size a writer piping to a stream leaves: "to the end"
MIN_RATE, MAX_RATE = 8000, 48000
_BIG_ENDIAN = sys.byteorder == "big"


@dataclass(frozen=True, slots=True)
class WavAudio:
    """A parsed WAV: format tag (an extensible file's subformat), channels, rate, bits per
    sample and the data chunk; `truncated` when the chunk claims more than the file holds."""

    format: int
    channels: int
    rate: int
    bits: int
    data: bytes
    truncated: bool = False


def read_wav(blob: bytes) -> WavAudio:
    """Parse a RIFF/WAVE file's fmt and data chunks, skipping any other chunk (LIST, fact,
    bext, ...) and its pad byte; a data size beyond the file is cut to it (`truncated`)."""
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        kind = {b"RIFX": "big-endian RIFX", b"RF64": "RF64", b"BW64": "BW64"}.get(blob[:4])
        raise WavError(f"{kind} WAV files are not supported" if kind and blob[8:12] == b"WAVE"
                       else "not a RIFF/WAVE file")
    offset = 12
    fmt: tuple[int, int, int, int] | None = None
    while offset + 8 <= len(blob):
        cid, size = blob[offset:offset + 4], struct.unpack_from("<I", blob, offset + 4)[0]
        body = offset + 8
        if cid == b"fmt ":
            if size < 16 or body + size > len(blob):
                raise WavError("fmt chunk too short" if size < 16 else "truncated fmt chunk")
            fmt = _format(blob[body:body + size])
        elif cid == b"data":
            if fmt is None:
                raise WavError("data chunk before the fmt chunk")
            end = len(blob) if size == _STREAMED else body + size
            return WavAudio(*fmt, blob[body:end], truncated=end > len(blob))
        offset = body + size + (size & 1)
    raise WavError("no fmt chunk" if fmt is None else "no data chunk")


def _format(chunk: bytes) -> tuple[int, int, int, int]:
    """(tag, channels, rate, bits) of a fmt chunk, resolving WAVE_FORMAT_EXTENSIBLE."""
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", chunk)
    if tag == FORMAT_EXTENSIBLE:
        if len(chunk) < 40:
            raise WavError("WAVE_FORMAT_EXTENSIBLE fmt chunk too short")
        guid = chunk[24:40]
        if guid[2:] != _SUBTYPE_TAIL:
            raise WavError(f"unsupported extensible subformat {guid.hex()}")
        tag = struct.unpack_from("<H", guid)[0]
    return tag, channels, rate, bits


@dataclass(frozen=True, slots=True)
class Pcm:
    """Mono linear audio on the 16-bit scale (full scale ±32768) at `rate` Hz; `source`
    describes the file it came from ("PCM 16-bit stereo 44100 Hz")."""

    rate: int
    samples: Sequence[float]
    source: str

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.samples) / self.rate


def format_name(tag: int) -> str:
    """`0x0055 (MP3)`: a format tag as a refusal names it."""
    known = {FORMAT_PCM: "PCM", FORMAT_FLOAT: "IEEE float", FORMAT_ALAW: "A-law",
             FORMAT_MULAW: "μ-law", **_NAMES}
    return f"0x{tag:04X}" + (f" ({known[tag]})" if tag in known else "")


def read_pcm(blob: bytes) -> Pcm:
    """The audio of a WAV file of any common kind as mono linear samples: integer PCM
    8/16/24/32-bit, IEEE float 32/64-bit, G.711 A-law/μ-law, plain or WAVE_FORMAT_EXTENSIBLE,
    mono or stereo (averaged), 8-48 kHz. Raises WavError saying why a file is refused."""
    audio = read_wav(blob)
    tag, channels, rate, bits = audio.format, audio.channels, audio.rate, audio.bits
    if audio.truncated:
        raise WavError("truncated data chunk: the header promises more audio than the file "
                       "holds")
    if tag not in _SIZES:
        raise WavError(f"unsupported format {format_name(tag)}")
    if bits not in _SIZES[tag]:
        raise WavError(f"unsupported sample size {bits} bits for {format_name(tag)}")
    if channels not in (1, 2):
        raise WavError(f"unsupported channel count {channels} (mono or stereo)")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise WavError(f"unsupported sample rate {rate} Hz ({MIN_RATE}-{MAX_RATE} Hz)")
    frame = channels * bits // 8
    data = audio.data[:len(audio.data) - len(audio.data) % frame]  # a torn last frame
    samples = _linear(tag, bits, data)
    if channels == 2:
        samples = [(left + right) * 0.5 for left, right in zip(samples[0::2], samples[1::2],
                                                                 strict=True)]
    kind = {FORMAT_FLOAT: "float", FORMAT_ALAW: "A-law", FORMAT_MULAW: "μ-law"}.get(tag, "PCM")
    layout = "mono" if channels == 1 else "stereo"
    return Pcm(rate, samples, f"{kind} {bits}-bit {layout} {rate} Hz")


_FLIP_SIGN = bytes((b ^ 0x80) for b in range(256))  # unsigned 8-bit to two's complement


def _linear(tag: int, bits: int, data: bytes) -> Sequence[float]:
    """Interleaved samples on the 16-bit scale; integer PCM keeps its top 16 bits (G.711
    carries 13-14), and slicing bytes does it without a Python step per sample."""
    if tag in (FORMAT_ALAW, FORMAT_MULAW):
        raw = g711.decode_bytes(Codec.PCMA if tag == FORMAT_ALAW else Codec.PCMU, data)
    elif tag == FORMAT_FLOAT:
        values = array("f" if bits == 32 else "d")
        values.frombytes(data)
        if _BIG_ENDIAN:
            values.byteswap()
        if not all(map(math.isfinite, values)):
            raise WavError("float samples that are not finite numbers (NaN or infinity)")
        return [v * 32768.0 for v in values]
    elif bits == 16:
        raw = data
    else:
        width = bits // 8
        top = bytearray(2 * (len(data) // width))
        if bits == 8:  # unsigned, 128 is silence: becomes the high byte
            top[1::2] = data.translate(_FLIP_SIGN)
        else:
            top[0::2] = data[width - 2::width]
            top[1::2] = data[width - 1::width]
        raw = bytes(top)
    samples = array("h")
    samples.frombytes(raw)
    if _BIG_ENDIAN:  # every form above is little-endian
        samples.byteswap()
    return samples
