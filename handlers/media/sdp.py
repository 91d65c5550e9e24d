"""SDP rewriting for anchoring: the body one leg sent, pointed at our port for the other leg.

Only the first active audio stream is anchored; other streams are refused (port 0) since the
relay carries audio only. ICE candidates and a=rtcp lines are dropped: they name the far end's
addresses, which the other side must not use.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.rtp.g711 import Codec
from protocols.sip.errors import SipSyntaxError
from protocols.sip.sdp import SessionDescription

_DROPPED = ("rtcp", "candidate", "ice-ufrag", "ice-pwd", "ice-options", "end-of-candidates",
            "remote-candidates", "rtcp-mux")


class SdpError(ValueError):
    """A body with no audio stream the relay can anchor."""


@dataclass(frozen=True, slots=True)
class FarEnd:
    """What a leg's SDP says about its media: where it receives, in which direction, codecs."""

    address: str
    port: int
    direction: str
    payload_types: tuple[int, ...]

    @property
    def on_hold(self) -> bool:
        """sendonly/inactive or the RFC 2543 hold address 0.0.0.0."""
        return self.direction in ("sendonly", "inactive") or self.address == "0.0.0.0"

    @property
    def codec(self) -> Codec | None:
        """The first G.711 law offered, if any."""
        for pt in self.payload_types:
            if pt in (0, 8):
                return Codec.from_payload_type(pt)
        return None


def far_end(body: bytes) -> FarEnd:
    """The audio far end a body describes."""
    try:
        sdp = SessionDescription.parse(body)
    except SipSyntaxError as exc:
        raise SdpError(str(exc)) from exc
    for media in sdp.media:
        if media.media == "audio" and media.port != 0:
            address = sdp.address_for(media)
            if address is None:
                raise SdpError("audio stream without a c= address")
            pts = tuple(int(f) for f in media.formats if f.isdigit())
            return FarEnd(address, media.port, media.direction, pts)
    raise SdpError("no active audio stream")


def anchor(body: bytes, address: str, port: int) -> tuple[bytes, FarEnd]:
    """`body` rewritten to send audio to `address`:`port`, and the far end it described."""
    target = far_end(body)
    sdp = SessionDescription.parse(body)
    anchored = False
    for media in sdp.media:
        if media.media == "audio" and media.port != 0 and not anchored:
            media.port = port
            media.lines = [(k, v) for k, v in media.lines
                           if not (k == "a" and v.split(":", 1)[0] in _DROPPED)]
            anchored = True
        else:
            media.port = 0
    sdp.rewrite_address(address)
    sdp.lines = [(k, v) for k, v in sdp.lines if not (k == "a" and v.split(":", 1)[0] in _DROPPED)]
    sdp.lines = [(k, _origin(v, address) if k == "o" else v) for k, v in sdp.lines]
    return sdp.encode(), target


def _origin(value: str, address: str) -> str:
    parts = value.split()
    if len(parts) == 6:
        parts[5] = address
    return " ".join(parts)


def direction(body: bytes) -> str:
    """The direction of a body's audio stream (`inactive` for the RFC 2543 hold address);
    `sendrecv` when it has none we can read."""
    try:
        target = far_end(body)
    except SdpError:
        return "sendrecv"
    return "inactive" if target.address == "0.0.0.0" else target.direction


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """Our answer to an offer whose media ends here (an IVR): the body and what it chose."""

    body: bytes
    far: FarEnd
    codec: Codec
    telephone_event: int | None


def local_answer(offer: bytes, address: str, port: int, *, session: int) -> LocalAnswer:
    """Answer `offer` with audio received at `address`:`port`: the first G.711 law it offers,
    and RFC 4733 telephone-events when it offers them (keys for the IVR)."""
    target = far_end(offer)
    codec = target.codec
    if codec is None:
        raise SdpError("no G.711 codec offered")
    sdp = SessionDescription.parse(offer)
    media = next(m for m in sdp.media if m.media == "audio" and m.port != 0)
    events: int | None = None
    for key, value in media.lines:
        if key == "a" and value.lower().startswith("rtpmap:"):
            pt, _, encoding = value[7:].partition(" ")
            if encoding.lower().startswith("telephone-event/8000") and pt.isdigit():
                events = int(pt)
                break
    formats = f"{codec.payload_type}" + (f" {events}" if events is not None else "")
    answer_direction = {"sendonly": "recvonly", "recvonly": "sendonly",
                        "inactive": "inactive"}.get(target.direction, "sendrecv")
    lines = [
        "v=0", f"o=telgate {session} 1 IN IP4 {address}", "s=telgate",
        f"c=IN IP4 {address}", "t=0 0", f"m=audio {port} RTP/AVP {formats}",
        f"a=rtpmap:{codec.payload_type} {codec.encoding}/8000",
    ]
    if events is not None:
        lines += [f"a=rtpmap:{events} telephone-event/8000", f"a=fmtp:{events} 0-15"]
    lines += ["a=ptime:20", f"a={answer_direction}"]
    body = ("\r\n".join(lines) + "\r\n").encode()
    return LocalAnswer(body, target, codec, events)


def with_direction(body: bytes, direction: str) -> bytes:
    """`body` (an SDP we sent before) offered again with its audio stream `direction`
    (sendonly to hold the far end, sendrecv to take it off hold) and a new o= version."""
    sdp = SessionDescription.parse(body)
    audio = next((m for m in sdp.media if m.media == "audio" and m.port != 0), None)
    if audio is None:
        raise SdpError("no active audio stream")
    audio.direction = direction
    sdp.lines = [(k, v) for k, v in sdp.lines if not (k == "a" and v in _DIRECTIONS)]
    sdp.lines = [(k, _next_version(v) if k == "o" else v) for k, v in sdp.lines]
    return sdp.encode()


_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


def _next_version(origin: str) -> str:
    parts = origin.split()
    if len(parts) == 6 and parts[2].isdigit():
        parts[2] = str(int(parts[2]) + 1)
    return " ".join(parts)


def local_offer(address: str, port: int, *, session: int) -> bytes:
    """Our offer of audio received at `address`:`port`: both G.711 laws and RFC 4733 keys."""
    lines = [
        "v=0", f"o=telgate {session} 1 IN IP4 {address}", "s=telgate",
        f"c=IN IP4 {address}", "t=0 0", f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15", "a=ptime:20", "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()
