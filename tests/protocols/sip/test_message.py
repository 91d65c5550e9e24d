"""Parsing, serialising and building SIP messages."""

from __future__ import annotations

import pytest

from protocols.sip.errors import MalformedMessage
from protocols.sip.headers import NameAddr, Via, parse_name_addr, split_values
from protocols.sip.message import (
    Headers,
    IdGenerator,
    Limits,
    Request,
    Response,
    StreamFramer,
    make_cancel,
    make_non2xx_ack,
    make_request,
    make_response,
    parse_message,
)
from protocols.sip.uri import URI, unescape
from tests.protocols.sip.messages import INVITE, RESPONSE_180, crlf


def test_request_parses_start_line_headers_and_body() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.uri == URI("sip", user="bob", host="biloxi.example.com")
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert (msg.cseq.seq, msg.cseq.method) == (314159, "INVITE")
    assert msg.from_tag == "1928301774"
    assert msg.to_tag is None
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.body.startswith(b"v=0\r\n")
    assert msg.content_type == "application/sdp"


def test_response_parses_status_and_reason() -> None:
    msg = parse_message(RESPONSE_180)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason, msg.method) == (180, "Ringing", "INVITE")
    assert msg.top_via.received == "192.0.2.1"
    assert msg.to_tag == "a6c85cf"


def test_serialised_message_parses_back_to_the_same_values() -> None:
    msg = parse_message(INVITE)
    again = parse_message(msg.encode())
    assert list(again.headers) == list(msg.headers)
    assert again.body == msg.body


def test_compact_header_forms_expand_to_full_names() -> None:
    raw = crlf(
        """OPTIONS sip:x@example.com SIP/2.0
v: SIP/2.0/UDP h.example.com;branch=z9hG4bKa
f: <sip:a@example.com>;tag=1
t: <sip:x@example.com>
i: cid1
CSeq: 1 OPTIONS
m: <sip:a@h.example.com>
k: timer, 100rel
c: text/plain
s: hello
o: refer
r: <sip:c@example.com>
l: 0

"""
    )
    msg = parse_message(raw)
    assert msg.call_id == "cid1"
    assert msg.headers.get("Supported") == "timer, 100rel"
    assert msg.headers.get_all("Supported") == ["timer", "100rel"]
    assert msg.headers.get("subject") == "hello"
    assert msg.headers.get("Event") == "refer"
    assert msg.headers.get("Refer-To") == "<sip:c@example.com>"
    assert b"Call-ID: cid1\r\n" in msg.encode()


def test_folded_header_lines_are_joined_with_a_space() -> None:
    raw = INVITE.replace(b"Max-Forwards: 70\r\n", b"Subject: one\r\n  two\r\n\tthree\r\n")
    assert parse_message(raw).headers.get("Subject") == "one two three"


def test_lf_only_line_endings_are_tolerated() -> None:
    head, _, body = INVITE.partition(b"\r\n\r\n")
    msg = parse_message(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    assert isinstance(msg, Request)
    assert msg.cseq.seq == 314159


def test_comma_lists_keep_commas_inside_quotes_and_angle_brackets() -> None:
    value = '"Doe, John" <sip:j@example.com;x=a,b>, <sip:k@example.com>;q=0.5'
    assert split_values(value) == [
        '"Doe, John" <sip:j@example.com;x=a,b>',
        "<sip:k@example.com>;q=0.5",
    ]


def test_repeated_and_comma_separated_headers_are_one_list() -> None:
    raw = INVITE.replace(
        b"Max-Forwards: 70\r\n",
        b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
        b"Record-Route: <sip:p3.example.com;lr>\r\n",
    )
    msg = parse_message(raw)
    assert [r.uri.host for r in msg.record_routes] == [
        "p1.example.com",
        "p2.example.com",
        "p3.example.com",
    ]


def test_header_names_are_case_insensitive() -> None:
    h = Headers([("call-id", "x"), ("CONTENT-TYPE", "a/b")])
    assert h.get("Call-ID") == "x"
    assert h.get("i") == "x"
    assert "content-type" in h


def test_quoted_display_names_unescape() -> None:
    na = parse_name_addr('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>;tag=98')
    assert na.display_name == 'J Rosenberg \\"'
    assert na.tag == "98"
    assert parse_name_addr(str(na)) == na


def test_addr_spec_params_belong_to_the_header() -> None:
    na = NameAddr.parse("sip:alice@example.com;tag=abc")
    assert na.tag == "abc"
    assert na.uri.params == ()


def test_sip_uri_with_password_params_and_headers() -> None:
    uri = URI.parse("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi&x=y")
    assert (uri.scheme, uri.user, uri.password) == ("sips", "alice", "secret")
    assert (uri.host, uri.port) == ("[2001:db8::1]", 5061)
    assert uri.transport == "tcp"
    assert uri.has_param("lr")
    assert uri.headers == (("subject", "hi"), ("x", "y"))
    assert URI.parse(str(uri)) == uri


def test_tel_uri_and_escaped_user() -> None:
    tel = URI.parse("tel:+82-2-555-1234;phone-context=+82")
    assert tel.user == "+82-2-555-1234"
    assert tel.param("phone-context") == "+82"
    assert unescape(URI.parse("sip:%75se%72@example.com").user or "") == "user"


def test_via_parses_branch_received_rport_maddr() -> None:
    via = Via.parse("SIP/2.0/udp 10.0.0.1:5070;branch=z9hG4bKx;rport;maddr=224.2.0.1")
    assert (via.transport, via.host, via.port) == ("UDP", "10.0.0.1", 5070)
    assert via.branch == "z9hG4bKx"
    assert via.wants_rport and via.rport is None
    assert via.maddr == "224.2.0.1"
    stamped = via.with_params(received="192.0.2.9", rport="4000")
    assert stamped.rport == 4000 and stamped.received == "192.0.2.9"
    assert str(stamped) == (
        "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKx;rport=4000;maddr=224.2.0.1;received=192.0.2.9"
    )


def test_datagram_bytes_past_content_length_are_ignored() -> None:
    msg = parse_message(INVITE + b"garbage")
    assert not msg.body.endswith(b"garbage")


def test_body_shorter_than_content_length_is_answerable_with_400() -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_message(INVITE[:-10])
    assert info.value.answerable
    assert info.value.status == 400


def test_response_errors_are_never_answerable() -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_message(RESPONSE_180.replace(b"CSeq: 314159 INVITE", b"CSeq: x INVITE"))
    assert not info.value.answerable


def test_size_limits_reject_oversized_messages() -> None:
    with pytest.raises(MalformedMessage, match="too large"):
        parse_message(INVITE, Limits(max_message=100))
    with pytest.raises(MalformedMessage, match="too many headers"):
        parse_message(INVITE, Limits(max_headers=3))
    with pytest.raises(MalformedMessage, match="too long"):
        parse_message(INVITE, Limits(max_line=20))


def test_make_response_copies_dialog_headers_and_adds_to_tag() -> None:
    request = parse_message(INVITE.replace(b"Max-Forwards: 70\r\n", b"Timestamp: 54\r\n"))
    assert isinstance(request, Request)
    ok = make_response(request, 200, to_tag="xyz", headers=[("Contact", "<sip:b@h>")])
    assert ok.to_tag == "xyz"
    assert ok.headers.get_all("Via") == request.headers.get_all("Via")
    assert ok.call_id == request.call_id and ok.cseq == request.cseq
    assert ok.headers.get("Timestamp") is None
    trying = make_response(request, 100, to_tag="xyz")
    assert trying.to_tag is None
    assert trying.headers.get("Timestamp") == "54"
    parsed = parse_message(ok.encode())
    assert isinstance(parsed, Response) and parsed.status == 200


def test_cancel_and_non2xx_ack_reuse_the_invite_branch() -> None:
    invite = parse_message(INVITE)
    assert isinstance(invite, Request)
    cancel = make_cancel(invite)
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.top_via.branch == invite.top_via.branch
    assert (cancel.cseq.seq, cancel.cseq.method) == (314159, "CANCEL")
    busy = make_response(invite, 486, to_tag="t1")
    ack = make_non2xx_ack(invite, busy)
    assert ack.top_via.branch == invite.top_via.branch
    assert ack.to_tag == "t1" and ack.cseq.method == "ACK"


def test_id_generator_uses_the_injected_random_source() -> None:
    ids = IdGenerator(lambda n: bytes(range(n)))
    assert ids.branch() == "z9hG4bK0001020304050607"
    assert ids.tag() == "000102030405"
    assert ids.call_id("h") == "000102030405060708090a0b@h"


def test_stream_framer_splits_concatenated_and_partial_messages() -> None:
    framer = StreamFramer()
    data = b"\r\n\r\n" + INVITE + RESPONSE_180
    out = framer.feed(data[:50])
    assert out == []
    out = framer.feed(data[50:-5])
    assert len(out) == 1 and isinstance(out[0], Request)
    out = framer.feed(data[-5:])
    assert len(out) == 1 and isinstance(out[0], Response)


def test_stream_framer_breaks_without_content_length() -> None:
    framer = StreamFramer()
    raw = INVITE.replace(b"Content-Length", b"X-Length")
    out = framer.feed(raw)
    assert len(out) == 1
    error = out[0]
    assert isinstance(error, MalformedMessage) and error.answerable
    assert framer.broken
    assert framer.feed(INVITE) == []


def test_stream_framer_reports_a_bad_message_and_keeps_framing() -> None:
    framer = StreamFramer()
    bad = INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    out = framer.feed(bad + INVITE)
    assert isinstance(out[0], MalformedMessage) and out[0].answerable
    assert isinstance(out[1], Request)
    assert not framer.broken


def test_make_request_builds_a_parseable_out_of_dialog_request() -> None:
    ids = IdGenerator()
    invite = make_request(
        "INVITE",
        URI("sip", user="1001", host="pbx.example.com"),
        via=f"SIP/2.0/UDP 203.0.113.1:5060;branch={ids.branch()};rport",
        from_=parse_name_addr("<sip:0212345678@gw.example.com>").with_tag(ids.tag()),
        to=parse_name_addr("<sip:1001@pbx.example.com>"),
        call_id=ids.call_id(),
        cseq=1,
        contact="<sip:gw@203.0.113.1:5060>",
        body=b"v=0\r\n",
    )
    parsed = parse_message(invite.encode())
    assert isinstance(parsed, Request)
    assert parsed.from_tag is not None and parsed.to_tag is None
    assert parsed.body == b"v=0\r\n"


def test_uri_equivalence_follows_rfc3261_19_1_4() -> None:
    same = [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
         "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ]
    different = [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ]
    for a, b in same:
        assert URI.parse(a).matches(URI.parse(b)), (a, b)
    for a, b in different:
        assert not URI.parse(a).matches(URI.parse(b)), (a, b)


def test_address_of_record_drops_parameters_and_unescapes_the_user() -> None:
    assert URI.parse("sip:%31001@PBX.example.com:5070;transport=tcp").aor() == (
        "sip:1001@pbx.example.com:5070"
    )
