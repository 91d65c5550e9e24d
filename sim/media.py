"""Simulated media for the simulated phones and trunk caller: an `RtpPeer` sends real RTP (a
tone pattern, a WAV file or any G.711 bytes, paced at 20 ms) and keeps every packet it
receives, so tests compare what was sent with what arrived and what was recorded."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from protocols.rtp.dtmf import encode_digit
from protocols.rtp.g711 import Codec, encode, tone, transcode
from protocols.rtp.packet import RtpError, RtpPacket, parse_rtp
from protocols.rtp.wav import read_wav

Address = tuple[str, int]


def tone_pattern(codec: Codec, seconds: float, *, frequencies: tuple[float, ...] = (440.0,),
                 on: float = 0.5, off: float = 0.25) -> bytes:
    """`seconds` of a tone switched on and off (a recognisable, non-constant signal)."""
    out = bytearray()
    total = int(seconds * 8000)
    position = 0
    while position < total:
        burst = min(int(on * 8000), total - position)
        out += tone(codec, frequencies, burst, start=position)
        position += burst
        gap = min(int(off * 8000), total - position)
        out += codec.silence_bytes(gap)
        position += gap
    return bytes(out)


def wav_payload(path: Path, codec: Codec) -> bytes:
    """The samples of a mono 8 kHz WAV (16-bit PCM, μ-law or A-law) in `codec`."""
    audio = read_wav(path.read_bytes())
    if audio.channels != 1 or audio.rate != 8000:
        raise ValueError("a mono 8000 Hz WAV is needed")
    if audio.format == 1 and audio.bits == 16:
        return encode(codec, audio.data)
    if audio.format in (6, 7):
        source = Codec.PCMA if audio.format == 6 else Codec.PCMU
        return transcode(source, codec, audio.data)
    raise ValueError(f"WAV format {audio.format}/{audio.bits} bits is not supported")


@dataclass(slots=True)
class Received:
    """One packet as it arrived."""

    at: float
    source: Address
    packet: RtpPacket


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, received: list[Received]) -> None:
        self.received = received

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        with contextlib.suppress(RtpError):
            self.received.append(Received(time.monotonic(), (str(addr[0]), int(addr[1])),
                                               parse_rtp(data)))


@dataclass(slots=True)
class RtpPeer:
    """One RTP endpoint on a loopback port."""

    transport: asyncio.DatagramTransport
    address: Address
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    sequence: int = field(default_factory=lambda: random.getrandbits(16))
    timestamp: int = field(default_factory=lambda: random.getrandbits(32))
    received: list[Received] = field(default_factory=list)
    sent: list[RtpPacket] = field(default_factory=list)

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0) -> RtpPeer:
        loop = asyncio.get_running_loop()
        received: list[Received] = []
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(received),
                                                           local_addr=(host, port))
        sockname = transport.get_extra_info("sockname")
        return cls(transport, (sockname[0], sockname[1]), received=received)

    def sdp(self, codec: Codec = Codec.PCMU, *, direction: str = "sendrecv") -> bytes:
        """An SDP body offering `codec` and telephone-events at this peer's address."""
        host, port = self.address
        return (f"v=0\r\no=sim {self.ssrc} 1 IN IP4 {host}\r\ns=sim\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
                f"m=audio {port} RTP/AVP {codec.payload_type} 101\r\n"
                f"a=rtpmap:{codec.payload_type} {codec.encoding}/8000\r\n"
                f"a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na={direction}\r\n").encode()

    def packets(self, codec: Codec, payload: bytes, *, ptime_ms: int = 20) -> list[RtpPacket]:
        """`payload` cut into packets continuing this peer's sequence and timestamps."""
        step = 8 * ptime_ms
        out = []
        for i in range(0, len(payload), step):
            chunk = payload[i:i + step]
            out.append(RtpPacket(codec.payload_type, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF,
                                 self.ssrc, chunk, marker=i == 0))
            self.sequence += 1
            self.timestamp += len(chunk)
        return out

    async def play(self, destination: Address, codec: Codec, payload: bytes, *, ptime_ms: int = 20) -> None:
        """Send `payload` in real time (one packet every `ptime_ms`, on an absolute schedule)."""
        start = time.monotonic()
        for n, packet in enumerate(self.packets(codec, payload, ptime_ms=ptime_ms)):
            delay = start + n * ptime_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send(destination, packet)

    def send(self, destination: Address, packet: RtpPacket) -> None:
        self.transport.sendto(packet.build(), destination)
        self.sent.append(packet)

    async def send_digit(self, destination: Address, digit: str, *, payload_type: int = 101) -> None:
        """An RFC 4733 digit (100 ms), paced at 20 ms; the media clock advances past it."""
        packets = encode_digit(digit, ssrc=self.ssrc, sequence=self.sequence, timestamp=self.timestamp,
                               payload_type=payload_type)
        self.sequence += len(packets)
        self.timestamp += 800
        for packet in packets:
            self.send(destination, packet)
            await asyncio.sleep(0.02)

    def new_source(self) -> None:
        """Behave like another phone: a new SSRC, sequence and timestamp base."""
        self.ssrc = random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)

    def received_payload(self, payload_type: int | None = None) -> bytes:
        """Payloads received, in arrival order, duplicates removed (by SSRC and sequence)."""
        seen: set[tuple[int, int]] = set()
        out = bytearray()
        for r in self.received:
            key = (r.packet.ssrc, r.packet.sequence)
            if key in seen or (payload_type is not None and r.packet.payload_type != payload_type):
                continue
            seen.add(key)
            out += r.packet.payload
        return bytes(out)

    def close(self) -> None:
        self.transport.close()
