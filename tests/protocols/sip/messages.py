"""Shared sample messages for the SIP tests."""

from __future__ import annotations


def crlf(text: str) -> bytes:
    """Turn a readable multi-line literal into CRLF wire bytes, fixing Content-Length."""
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    raw_body = body.replace("\n", "\r\n").encode()
    fixed = [
        f"Content-Length: {len(raw_body)}" if line.startswith("Content-Length: AUTO") else line
        for line in lines
    ]
    return ("\r\n".join(fixed) + "\r\n\r\n").encode() + raw_body


INVITE = crlf(
    """INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.example.com>
Content-Type: application/sdp
Content-Length: AUTO

v=0
o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com
s=-
c=IN IP4 192.0.2.101
t=0 0
m=audio 49172 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""
)

RESPONSE_180 = crlf(
    """SIP/2.0 180 Ringing
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
Contact: <sip:bob@192.0.2.4>
CSeq: 314159 INVITE
Content-Length: 0

"""
)
