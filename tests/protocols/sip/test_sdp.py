"""SDP parsing and the rewrites media anchoring needs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sip.errors import SipSyntaxError
from protocols.sip.sdp import SessionDescription

OFFER = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 198.51.100.1\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.1\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)


def test_offer_parses_connection_media_rtpmap_ptime_and_direction() -> None:
    sdp = SessionDescription.parse(OFFER.encode())
    assert sdp.connection is not None and sdp.connection.address == "198.51.100.1"
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio", 49170, "RTP/AVP", ["0", "8", "101"],
    )
    assert audio.rtpmap == {"0": "PCMU/8000", "8": "PCMA/8000", "101": "telephone-event/8000"}
    assert audio.ptime == 20
    assert audio.direction == "sendrecv"
    assert sdp.address_for(audio) == "198.51.100.1"


def test_unchanged_sdp_serialises_byte_for_byte() -> None:
    assert SessionDescription.parse(OFFER).encode() == OFFER.encode()


def test_rewriting_address_port_and_direction_for_the_relay() -> None:
    sdp = SessionDescription.parse(OFFER)
    sdp.rewrite_address("203.0.113.5")
    sdp.media[0].port = 30000
    sdp.media[0].direction = "sendonly"
    again = SessionDescription.parse(sdp.encode())
    assert again.connection is not None and again.connection.address == "203.0.113.5"
    assert again.media[0].port == 30000
    assert again.media[0].direction == "sendonly"
    assert again.media[0].attributes("fmtp") == ["101 0-15"]


def test_media_level_connection_overrides_session_level() -> None:
    text = OFFER.replace("a=sendrecv\r\n", "c=IN IP4 192.0.2.77\r\na=inactive\r\n")
    sdp = SessionDescription.parse(text)
    assert sdp.address_for(sdp.media[0]) == "192.0.2.77"
    assert sdp.media[0].direction == "inactive"
    sdp.rewrite_address("203.0.113.5")
    assert sdp.address_for(sdp.media[0]) == "203.0.113.5"


@pytest.mark.parametrize("body", ["", "o=x\r\n", "v=0\r\nm=audio x RTP/AVP 0\r\n", "v=0\r\nbad"])
def test_malformed_sdp_raises_syntax_error(body: str) -> None:
    with pytest.raises(SipSyntaxError):
        SessionDescription.parse(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_sdp_bodies_raise_only_syntax_error(body: bytes) -> None:
    try:
        sdp = SessionDescription.parse(OFFER.encode() + body)
    except SipSyntaxError:
        return
    sdp.rewrite_address("203.0.113.5")
    for media in sdp.media:
        _ = (media.rtpmap, media.ptime, media.direction)
    SessionDescription.parse(sdp.encode())
