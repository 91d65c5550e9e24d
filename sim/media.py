"""Simulated media for the simulated phones and trunk caller: an `RtpPeer` sends real RTP (a
tone pattern, a WAV file or any G.711 bytes, paced at 20 ms) and keeps every packet it
receives, so tests compare what was sent with what arrived and what was recorded.

`CallMedia` is one call's audio at a simulated UA: the peer, the SDP advertising it, and a
`Playback` streaming to wherever the far end's SDP says (re-pointed by a re-INVITE, paused by
hold) until the call ends."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from protocols.rtp.dtmf import encode_digit
from protocols.rtp.g711 import Codec, encode, tone, transcode
from protocols.rtp.packet import RtpError, RtpPacket, parse_rtp
from protocols.rtp.wav import read_wav
from protocols.sip.errors import SipSyntaxError
from protocols.sip.headers import is_digits
from protocols.sip.sdp import SessionDescription

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

    def sent_payload(self, payload_type: int | None = None) -> bytes:
        """Payloads sent, in order (only `payload_type`'s if given)."""
        return b"".join(p.payload for p in self.sent
                        if payload_type is None or p.payload_type == payload_type)

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


# -- one call's audio at a simulated UA -----------------------------------------------------

TELEPHONE_EVENT = 101
_G711 = (Codec.PCMU.payload_type, Codec.PCMA.payload_type)
# The direction answering each offered one (RFC 3264 §6.1).
_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
                     "inactive": "inactive"}


def answer_direction(offer: bytes) -> str:
    """The direction answering `offer`'s (sendrecv when it has none we can read)."""
    line = audio_line(offer)
    return _ANSWER_DIRECTION[line.direction] if line is not None else "sendrecv"


@dataclass(frozen=True, slots=True)
class Tone:
    """`seconds` of a tone switched on and off (see `tone_pattern`)."""

    seconds: float = 3.0
    frequencies: tuple[float, ...] = (440.0,)
    on: float = 0.5
    off: float = 0.25


@dataclass(frozen=True, slots=True)
class Audio:
    """What a simulated UA sends once a call is established.

    `play` is a `Tone`, a mono 8 kHz WAV (converted to the negotiated codec), G.711 bytes (sent
    as they are, whatever the codec) or None (receive only); `loop` starts it again at its end,
    otherwise the UA falls silent after one pass."""

    play: Tone | Path | bytes | None = Tone()
    loop: bool = True


@functools.lru_cache(maxsize=16)
def _tone_payload(spec: Tone, codec: Codec) -> bytes:
    return tone_pattern(codec, spec.seconds, frequencies=spec.frequencies, on=spec.on,
                        off=spec.off)


def audio_payload(play: Tone | Path | bytes, codec: Codec) -> bytes:
    """The G.711 bytes `play` sends on a call negotiated to `codec`."""
    if isinstance(play, Tone):
        return _tone_payload(play, codec)
    if isinstance(play, Path):
        return wav_payload(play, codec)
    return play


def sdp_body(host: str, port: int, *, payload_types: tuple[int, ...] = _G711,
             event_type: int | None = TELEPHONE_EVENT, direction: str = "sendrecv",
             session: int = 1, version: int = 1) -> bytes:
    """SDP receiving audio at `host`:`port` in the G.711 `payload_types`, in that order of
    preference, and telephone-events as `event_type` unless None."""
    formats = [*payload_types, *(() if event_type is None else (event_type,))]
    lines = ["v=0", f"o=sim {session} {version} IN IP4 {host}", "s=sim", f"c=IN IP4 {host}",
             "t=0 0", f"m=audio {port} RTP/AVP {' '.join(map(str, formats))}"]
    lines += [f"a=rtpmap:{pt} {Codec.from_payload_type(pt).encoding}/8000" for pt in payload_types]
    if event_type is not None:
        lines.append(f"a=rtpmap:{event_type} telephone-event/8000")
    lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass(frozen=True, slots=True)
class AudioLine:
    """An SDP body's first audio stream: where it receives, its direction and payload types."""

    address: str
    port: int
    direction: str
    payload_types: tuple[int, ...]
    event_type: int | None

    @property
    def codec(self) -> Codec | None:
        """The first G.711 law listed (the negotiated one, read from an answer)."""
        for pt in self.payload_types:
            if pt in _G711:
                return Codec.from_payload_type(pt)
        return None

    @property
    def sends(self) -> bool:
        """Whether this side sends audio."""
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        """Whether this side takes audio: not held (sendonly/inactive, c=0.0.0.0) nor refused."""
        return (self.direction in ("sendrecv", "recvonly") and self.address != "0.0.0.0"
                and self.port != 0)


def audio_line(body: bytes) -> AudioLine | None:
    """The first audio stream `body` describes; None without SDP, audio or a c= address."""
    try:
        sdp = SessionDescription.parse(body)
    except SipSyntaxError:
        return None
    for media in sdp.media:
        if media.media != "audio":
            continue
        address = sdp.address_for(media)
        if address is None:
            return None
        events = [pt for pt, name in media.rtpmap.items()
                  if name.lower().startswith("telephone-event/") and is_digits(pt)]
        return AudioLine(address, media.port, media.direction,
                         tuple(int(f) for f in media.formats if is_digits(f)),
                         int(events[0]) if events else None)
    return None


class Playback:
    """`payload` sent from `peer` in `ptime_ms` packets on an absolute schedule toward
    `destination`, from byte `position` on. While `destination` is None (hold) nothing is sent
    but the media clock and the audio run on, as with a phone's microphone; the marker bit
    starts each talkspurt."""

    def __init__(self, peer: RtpPeer, codec: Codec, payload: bytes, *, loop: bool,
                 destination: Address | None, position: int = 0, ptime_ms: int = 20) -> None:
        if not payload:
            raise ValueError("nothing to play")
        self.peer = peer
        self.codec = codec
        self.payload = payload
        self.loop = loop
        self.destination = destination
        self.position = position % len(payload) if loop else position
        self.ptime_ms = ptime_ms
        self.task = asyncio.create_task(self._run(), name="sim-rtp-playback")

    async def _run(self) -> None:
        peer, size, step = self.peer, len(self.payload), 8 * self.ptime_ms
        # Looping, a packet may straddle the end and the start of the payload.
        source = (self.payload * (step // size + 2))[:size + step] if self.loop else self.payload
        start = time.monotonic()
        n = 0
        talking = False
        while self.loop or self.position < size:
            delay = start + n * self.ptime_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            position = self.position
            chunk = source[position:position + step]
            if self.destination is None:
                talking = False
            else:
                peer.send(self.destination, RtpPacket(
                    self.codec.payload_type, peer.sequence & 0xFFFF, peer.timestamp & 0xFFFFFFFF,
                    peer.ssrc, chunk, marker=not talking))
                peer.sequence += 1
                talking = True
            peer.timestamp += len(chunk)
            self.position = (position + step) % size if self.loop else position + step
            n += 1

    def stop(self) -> None:
        """Send nothing more."""
        self.task.cancel()


class CallMedia:
    """One call's audio at a simulated UA: its RTP endpoint, the SDP advertising it, and the
    stream of `audio` toward the far end's SDP once the call is established, until `close()`.

    Each offer/answer re-aims the stream: a new address or port re-points it, hold (sendonly,
    inactive, c=0.0.0.0, on either side) pauses it. The codec is the first G.711 law of the
    answer; answers list the offer's laws in the offer's order, so both ends agree."""

    def __init__(self, peer: RtpPeer, audio: Audio) -> None:
        self.peer = peer
        self.audio = audio
        self.codec: Codec | None = None
        self.local: AudioLine | None = None  # our side of the last offer/answer
        self.remote: AudioLine | None = None
        self.playback: Playback | None = None
        self._established = False
        self._offer: bytes | None = None  # our last offer, which an answer answers
        self._session = random.getrandbits(31)
        self._version = 0
        self._advertised: tuple[object, ...] = ()  # what the last body said, for o= versions

    @classmethod
    async def open(cls, host: str, audio: Audio) -> CallMedia:
        """Bind the call's RTP endpoint on `host`, any free port."""
        return cls(await RtpPeer.open(host), audio)

    @property
    def sending_to(self) -> Address | None:
        """Where audio goes now; None before the answer, on hold, silent or ended."""
        playback = self.playback
        return None if playback is None or playback.task.done() else playback.destination

    def offer(self, direction: str = "sendrecv", *, body: bytes | None = None) -> bytes:
        """Our SDP offer (or `body`, an SDP made elsewhere taken as ours), until its answer."""
        self._offer = body if body is not None else self._sdp(_G711, TELEPHONE_EVENT, direction)
        return self._offer

    def answer(self, offer: bytes) -> bytes:
        """Our answer to the far end's `offer`, which the stream follows from now on."""
        remote = audio_line(offer)
        if remote is None or remote.codec is None:
            return self._sdp(_G711, TELEPHONE_EVENT, "sendrecv")  # nothing we can negotiate
        laws = tuple(pt for pt in remote.payload_types if pt in _G711)
        body = self._sdp(laws, remote.event_type, _ANSWER_DIRECTION[remote.direction])
        self._negotiated(body, remote)
        return body

    def answered(self, answer: bytes) -> None:
        """The far end's answer (a 183, 200 or ACK body) to our last offer; one we cannot
        read changes nothing."""
        remote = audio_line(answer)
        if self._offer is not None and remote is not None:
            self._negotiated(self._offer, remote)

    def start(self) -> None:
        """The call is established: stream from now on."""
        if not self.peer.transport.is_closing():
            self._established = True
            self._steer()

    def close(self) -> None:
        """Stop sending and release the socket; what was sent and received stays readable."""
        self._established = False
        if self.playback is not None:
            self.playback.stop()
        self.peer.close()

    def _negotiated(self, local: bytes, remote: AudioLine) -> None:
        self.local, self.remote = audio_line(local), remote
        if remote.codec is not None:
            self.codec = remote.codec
        self._steer()

    def _steer(self) -> None:
        play, codec, remote = self.audio.play, self.codec, self.remote
        if not self._established or play is None or codec is None or remote is None:
            return
        sends = self.local is None or self.local.sends
        target = (remote.address, remote.port) if sends and remote.receives else None
        current = self.playback
        if current is not None and current.codec is codec:
            current.destination = target
            return
        position = 0
        if current is not None:  # a new codec: the same audio goes on in the new law
            current.stop()
            position = current.position
        payload = audio_payload(play, codec)
        self.playback = Playback(self.peer, codec, payload, loop=self.audio.loop,
                                 destination=target, position=position) if payload else None

    def _sdp(self, laws: tuple[int, ...], event_type: int | None, direction: str) -> bytes:
        host, port = self.peer.address
        said = (laws, event_type, direction)
        if said != self._advertised:  # RFC 3264 §8: a changed description, a new version
            self._version += 1
            self._advertised = said
        return sdp_body(host, port, payload_types=laws, event_type=event_type,
                        direction=direction, session=self._session, version=self._version)
