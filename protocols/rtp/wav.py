"""WAV files in the call's own G.711 law (WAVE_FORMAT_MULAW 7, WAVE_FORMAT_ALAW 6).

`WavWriter` appends frames and rewrites the sizes in the header every `sync_frames`, so a file
cut off by a crash still says how much audio it holds, up to the last rewrite.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

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


@dataclass(frozen=True, slots=True)
class WavAudio:
    """A parsed WAV: format tag, channels, rate, bits per sample and the data chunk."""

    format: int
    channels: int
    rate: int
    bits: int
    data: bytes


def read_wav(blob: bytes) -> WavAudio:
    """Parse a RIFF/WAVE file (PCM, μ-law or A-law); a data size beyond the file is cut to it."""
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    offset = 12
    fmt: tuple[int, int, int, int] | None = None
    while offset + 8 <= len(blob):
        cid, size = blob[offset:offset + 4], struct.unpack_from("<I", blob, offset + 4)[0]
        body = offset + 8
        if cid == b"fmt ":
            if size < 16:
                raise WavError("fmt chunk too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", blob, body)
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                raise WavError("data before fmt")
            return WavAudio(fmt[0], fmt[1], fmt[2], fmt[3], blob[body:body + size])
        offset = body + size + (size & 1)
    raise WavError("no data chunk")
