"""Anchoring SDP: whatever a phone offers, the body we pass on sends audio to us and only us,
keeps the phone's codecs and direction, and tells us where the phone listens."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.media.sdp import SdpError, anchor, far_end
from protocols.rtp.g711 import Codec
from protocols.sip.sdp import SessionDescription

BODY = (
    "v=0\r\no=phone 42 7 IN IP4 192.168.1.20\r\ns=call\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n"
    "a=ice-ufrag:abcd\r\n"
    "m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp:4001 IN IP4 192.168.1.20\r\n"
    "a=candidate:1 1 udp 2122260223 192.168.1.20 4000 typ host\r\na={direction}\r\n"
    "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
)


@given(st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]), st.integers(1024, 65534))
def test_anchored_body_points_only_at_us_and_keeps_codecs_and_direction(direction: str, port: int) -> None:
    body, target = anchor(BODY.format(direction=direction).encode(), "203.0.113.5", port)
    assert (target.address, target.port, target.payload_types) == ("192.168.1.20", 4000, (8, 0, 101))
    assert target.codec is Codec.PCMA
    assert target.on_hold == (direction in ("sendonly", "inactive"))
    text = body.decode()
    assert "192.168.1.20" not in text  # no private address leaks to the other side
    assert "candidate" not in text and "a=rtcp:" not in text and "ice-ufrag" not in text
    sdp = SessionDescription.parse(body)
    audio, video = sdp.media
    assert (sdp.address_for(audio), audio.port, audio.formats) == ("203.0.113.5", port, ["8", "0", "101"])
    assert audio.direction == direction
    assert video.port == 0  # refused: the relay carries audio only
    assert far_end(body).port == port


def test_hold_by_null_address_is_recognised() -> None:
    body = BODY.format(direction="sendrecv").replace("c=IN IP4 192.168.1.20", "c=IN IP4 0.0.0.0")
    assert far_end(body.encode()).on_hold


@pytest.mark.parametrize("bad", [b"", b"v=0\r\ns=-\r\nm=video 5000 RTP/AVP 96\r\n", b"garbage",
                                 b"v=0\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\n"])
def test_bodies_without_an_anchorable_audio_stream_are_refused(bad: bytes) -> None:
    with pytest.raises(SdpError):
        anchor(bad, "203.0.113.5", 30000)
