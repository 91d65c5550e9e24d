"""RFC 4475 torture messages, reproduced from the RFC's descriptions (section 3.1)."""

from __future__ import annotations

import pytest

from protocols.sip.errors import MalformedMessage
from protocols.sip.message import Request, Response, make_response, parse_message
from tests.protocols.sip.messages import crlf

SDP = """v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.3
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
"""

WSINV = crlf(
    """INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length: AUTO
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

"""
    + SDP
)


def test_wsinv_short_tortuous_invite_parses() -> None:
    msg = parse_message(WSINV)
    assert isinstance(msg, Request)
    assert msg.to_tag == "1918181833n"
    assert msg.from_tag == "98asjd8"
    assert msg.from_.display_name == 'J Rosenberg \\"'
    assert (msg.cseq.seq, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    (contact,) = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.param("newparam") == "newvalue" and contact.param("q") == "0.33"
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("Subject") == ""
    assert msg.body.startswith(b"v=0")


def test_intmeth_unusual_method_and_uri_characters_parse() -> None:
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    user = "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    password = "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    raw = crlf(
        f"""{method} sip:{user}:{password}@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:{user}@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="ђѢѣ";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/"][?}}{{
CSeq: 139122385 {method}
Max-Forwards: 255
extensionHeader-!.%*+_`'~:﻿大停電
Content-Length: 0

"""
    )
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    assert msg.method == method
    assert (msg.uri.user, msg.uri.password, msg.uri.host) == (user, password, "example.com")
    assert msg.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_tag == "_token~1'+`*%!-."
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_escaped_uris_keep_their_escapes() -> None:
    raw = crlf(
        """INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: AUTO

"""
        + SDP
    )
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    assert msg.uri.user == "sips%3Auser%40example.com"
    assert msg.contacts[0].uri.param("n%61me") == "v%61lue%25%34%31"


def test_escnull_and_esc02_escaped_methods_and_nulls_parse() -> None:
    raw = crlf(
        """RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=dfadgrehh
Max-Forwards: 70
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;rport;branch=z9hG4bK209384
CSeq: 29344 RE%47IST%45R
Contact: <sip:null-%00-null@example.com>
Contact: <sip:%22%3Cinvalid%3E%22@example.com>
Contact: "%Z%45" <sip:resource@example.com>
Content-Length: 0

"""
    )
    msg = parse_message(raw)
    assert isinstance(msg, Request) and msg.method == "RE%47IST%45R"
    assert len(msg.contacts) == 3


def test_lwsdisp_display_name_without_space_before_uri() -> None:
    raw = crlf(
        """OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

"""
    )
    msg = parse_message(raw)
    assert msg.from_.display_name == "caller"


def test_semiuri_semicolon_in_user_part() -> None:
    raw = crlf(
        """OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

"""
    )
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    assert (msg.uri.user, msg.uri.host) == ("user;par=u%40example.net", "example.com")
    assert len(msg.headers.get_all("Accept")) == 6


def test_transports_unknown_transport_names_parse() -> None:
    raw = crlf(
        """OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

"""
    )
    assert [v.transport for v in parse_message(raw).vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_dblreq_second_request_after_content_length_is_ignored() -> None:
    raw = crlf(
        """REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0

INVITE sip:joe@example.com SIP/2.0
"""
    )
    msg = parse_message(raw)
    assert isinstance(msg, Request) and msg.method == "REGISTER" and msg.body == b""


def test_unreason_and_noreason_responses_parse() -> None:
    tail = """Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 0

"""
    unusual = parse_message(crlf("SIP/2.0 200 = 2**3 * 5**2 но сто девяносто девять\n" + tail))
    assert isinstance(unusual, Response)
    assert unusual.reason == "= 2**3 * 5**2 но сто девяносто девять"
    bare = parse_message(crlf("SIP/2.0 100 \n" + tail))
    assert isinstance(bare, Response) and bare.status == 100 and bare.reason == "Trying"


def test_unknown_uri_schemes_parse_so_the_tu_can_answer_416() -> None:
    raw = crlf(
        """OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0

"""
    )
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    assert msg.uri.scheme == "nobodyknowsthisscheme" and not msg.uri.is_sip


BASE = """To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: torture.0ha0isndaksdjasdf3234nas
CSeq: 8 {method}
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw
"""


def _invalid(start: str, *, method: str = "INVITE", extra: str = "", base: str = BASE) -> bytes:
    return crlf(start + "\n" + base.format(method=method) + extra + "Content-Length: 0\n\n")


ANSWERABLE_400 = {
    "badinv01 empty Via params": _invalid(
        "INVITE sip:user@example.com SIP/2.0",
        base=BASE.replace("branch=z9hG4bKkdjuw", "branch=z9hG4bKkdjuw;;,;,,"),
    ),
    "clerr Content-Length past the body": crlf(
        "INVITE sip:user@example.com SIP/2.0\n" + BASE.format(method="INVITE")
    ).replace(b"\r\n\r\n", b"\r\nContent-Length: 9999\r\n\r\nv=0\r\n"),
    "ncl negative Content-Length": crlf(
        "INVITE sip:user@example.com SIP/2.0\n" + BASE.format(method="INVITE")
    ).replace(b"\r\n\r\n", b"\r\nContent-Length: -999\r\n\r\n"),
    "scalar02 CSeq beyond 2**31": _invalid(
        "REGISTER sip:example.com SIP/2.0",
        base=BASE.replace("CSeq: 8 {method}", "CSeq: 36893488147419103232 REGISTER"),
    ),
    "quotbal unbalanced quote in To": _invalid(
        "INVITE sip:user@example.com SIP/2.0",
        base=BASE.replace("To: sip:j.user@example.com", 'To: "Mr. J. User <sip:j.user@example.com>'),
    ),
    "ltgtruri Request-URI in angle brackets": _invalid("INVITE <sip:user@example.com> SIP/2.0"),
    "lwsruri whitespace inside Request-URI": _invalid("INVITE sip:user@example.com; lr SIP/2.0"),
    "lwsstart extra spaces in request line": _invalid("INVITE  sip:user@example.com  SIP/2.0"),
    "trws trailing whitespace on request line": _invalid(
        "OPTIONS sip:remote-target@example.com SIP/2.0  ", method="OPTIONS"
    ),
    "badaspec whitespace inside <>": _invalid(
        "OPTIONS sip:user@example.org SIP/2.0",
        method="OPTIONS",
        base=BASE.replace(
            "To: sip:j.user@example.com", 'To: "Watson, Thomas" < sip:t.watson@example.org >'
        ),
    ),
    "baddn unquoted display name with comma": _invalid(
        "OPTIONS sip:t.watson@example.org SIP/2.0",
        method="OPTIONS",
        base=BASE.replace(
            "From: sip:caller@example.net;tag=134161461246",
            "From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
        ),
    ),
    "mismatch01 CSeq method differs": _invalid(
        "OPTIONS sip:user@example.com SIP/2.0", method="INVITE"
    ),
    "mismatch02 unknown method with INVITE CSeq": _invalid(
        "NEWMETHOD sip:user@example.com SIP/2.0", method="INVITE"
    ),
    "multi01 repeated singleton headers": _invalid(
        "INVITE sip:user@example.com SIP/2.0", extra="Call-ID: other.call\nTo: sip:x@example.com\n"
    ),
    "mcl01 conflicting Content-Length": crlf(
        "OPTIONS sip:user@example.com SIP/2.0\n" + BASE.format(method="OPTIONS")
    ).replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\nl: 3\r\n\r\nabc"),
}


@pytest.mark.parametrize("raw", ANSWERABLE_400.values(), ids=ANSWERABLE_400.keys())
def test_invalid_torture_requests_are_answered_with_400(raw: bytes) -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_message(raw)
    error = info.value
    assert error.answerable and error.status == 400
    assert error.request is not None
    response = make_response(error.request, error.status, error.reason, to_tag="x")
    wire = response.encode()
    assert wire.startswith(b"SIP/2.0 400 ")
    assert b"Call-ID: " in wire and b"Via: SIP/2.0/UDP 192.0.2.15" in wire


def test_badvers_unknown_sip_version_is_answered_with_505() -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_message(_invalid("OPTIONS sip:t.watson@example.org SIP/7.0", method="OPTIONS"))
    assert info.value.answerable and info.value.status == 505


def test_bigcode_response_with_huge_status_is_dropped() -> None:
    raw = crlf(
        "SIP/2.0 4294967301 better not break the receiver\n"
        + BASE.format(method="INVITE")
        + "Content-Length: 0\n\n"
    )
    with pytest.raises(MalformedMessage) as info:
        parse_message(raw)
    assert not info.value.answerable


def test_insuf_request_missing_call_id_and_from_is_dropped() -> None:
    raw = crlf(
        """INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Length: 0

"""
    )
    with pytest.raises(MalformedMessage) as info:
        parse_message(raw)
    assert not info.value.answerable


def test_longreq_long_values_and_many_vias_parse() -> None:
    long = "a" * 2000
    to_uri = (
        f"<sip:user@example.com:6000;unknownparam={long};longparam{long}=shortvalue;"
        f"very{long}longparam{long}>"
    )
    vias = "".join(
        f"Via: SIP/2.0/TCP sip{i}.example.com;branch=z9hG4bK{i}{long[:100]}\n" for i in range(30)
    )
    raw = crlf(
        f"""INVITE sip:user@example.com SIP/2.0
To: "I have a user name of {long} proportion" {to_uri}
From: sip:{long}@example.net;tag={long}
Call-ID: longreq.one{long}
CSeq: 3882340 INVITE
Unknown-{long}-Header: unknown-{long}-value; unknown-{long}-parameter=value{long}
{vias}Max-Forwards: 70
Contact: <sip:amazinglylongcallername{long}@host5.example.net>
Content-Length: 0

"""
    )
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    assert len(msg.vias) == 30
    assert msg.from_tag == "a" * 2000
    assert msg.to.uri.port == 6000


def test_cparam_contact_params_and_inv2543_request_without_branch_parse() -> None:
    raw = crlf(
        """REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP saturn.example.com:5060
Max-Forwards: 70
From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe
To: sip:watson@example.com
Call-ID: cparam01.70710@saturn.example.com
CSeq: 2 REGISTER
Contact: sip:+19725552222@gw1.example.net;unknownparam
l: 0

"""
    )
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    assert msg.top_via.branch is None
    (contact,) = msg.contacts
    assert contact.param("unknownparam") == "" and contact.uri.params == ()


def test_zero_max_forwards_and_escaped_request_uri_headers_parse() -> None:
    raw = _invalid("OPTIONS sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0",
                   method="OPTIONS", extra="")
    msg = parse_message(raw.replace(b"Max-Forwards: 7", b"Max-Forwards: 0"))
    assert isinstance(msg, Request)
    assert msg.uri.headers == (("Route", "%3Csip:example.com%3E"),)
    assert msg.headers.get("Max-Forwards") == "0"
