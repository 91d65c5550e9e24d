"""The MM7 codec: the sample documents of TS 23.140's Annex decode to what they say, every
operation round-trips in every schema version, and malformed input answers a typed error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from protocols.mm7 import codec
from protocols.mm7.messages import (
    Address,
    AddressKind,
    CancelReq,
    CancelRsp,
    Decoded,
    DecodeError,
    DeliveryReportReq,
    DeliveryReportRsp,
    Fault,
    Message,
    Part,
    ReplaceReq,
    ReplaceRsp,
    Role,
    RSErrorRsp,
    Status,
    SubmitReq,
    SubmitRsp,
    VASPErrorRsp,
)
from protocols.mm7.smil import presentation
from protocols.mm7.status import MMStatus, StatusCode
from protocols.mm7.versions import SchemaVersion
from tests.protocols.mm7 import samples as s

XML = 'text/xml; charset="utf-8"'
WHEN = datetime(2026, 12, 1, 9, 30, 47, tzinfo=timezone(timedelta(hours=9)))


def ok(result: Decoded | DecodeError) -> Decoded:
    assert isinstance(result, Decoded), result
    return result


def refused(result: Decoded | DecodeError, status: int) -> DecodeError:
    assert isinstance(result, DecodeError), result
    assert result.status == status, result
    return result


def test_annex_submit_req_decodes_with_smil_euc_kr_text_and_jpeg() -> None:
    d = ok(codec.decode(s.SUBMIT_REQ_CTYPE, s.SUBMIT_REQ))
    m = d.message
    assert isinstance(m, SubmitReq)
    assert d.schema is SchemaVersion.REL_5_MM7_1_2 and d.mm7_version == "5.3.0"
    assert m.transaction_id == "vas00001-sub"
    assert (m.vasp_id, m.vas_id) == ("TNN", "News")
    assert m.recipients == (
        Address("01012345678", AddressKind.NUMBER, Role.TO),
        Address("editor@news.example", AddressKind.EMAIL, Role.TO),
        Address("01087654321", AddressKind.NUMBER, Role.CC),
        Address("archive@news.example", AddressKind.EMAIL, Role.BCC))
    assert m.service_code == "gold-sp33-im42" and m.linked_id == "mms00016666"
    assert m.timestamp == datetime(2002, 1, 2, 14, 30, 47, tzinfo=UTC)
    assert m.expiry == "P2D" and m.delivery_report is True and m.allow_adaptations is True
    assert [p.content_type for p in m.content] == ["application/smil", "text/plain",
                                                   "image/jpeg"]
    smil, text, jpeg = m.content
    assert smil.data == s.SMIL
    assert text.charset == "ks_c_5601-1987" and text.text() == s.TEXT_KO
    assert text.data == s.TEXT_KO.encode("euc-kr")
    assert jpeg.data == s.JPEG and jpeg.location == "saturn.jpg"
    assert jpeg.content_id == "saturn@news.tnn.com"


def test_annex_submit_req_survives_our_encoding_in_every_schema_version() -> None:
    m = ok(codec.decode(s.SUBMIT_REQ_CTYPE, s.SUBMIT_REQ)).message
    for schema in SchemaVersion:
        enc = codec.encode(m, schema)
        again = ok(codec.decode(enc.content_type, enc.body))
        assert again.message == m and again.schema is schema


@pytest.mark.parametrize(("body", "expected"), [
    (s.SUBMIT_RSP, SubmitRsp("vas00001-sub", Status(1000, "Success"), "041502073667")),
    (s.DELIVERY_REPORT_REQ, DeliveryReportReq(
        "mmsc-dr-0001", "041502073667", Address("01012345678"),
        Address("1234", AddressKind.SHORT_CODE), datetime(2002, 4, 15, 12, 16, 30, tzinfo=UTC),
        MMStatus.RETRIEVED, "240.110.75.34", "Message retrieved by the handset")),
    (s.DELIVERY_REPORT_RSP, DeliveryReportRsp("mmsc-dr-0001", Status(1000, "Success"))),
    (s.CANCEL_REQ, CancelReq("vas00002-can", "TNN", "News", "vas00001-sub")),
    (s.FAULT, Fault("vas00001-sub", "env:Client", "Client error", RSErrorRsp(
        "vas00001-sub", Status(2007, "Message format corrupt", "the Content href names no part"),
        "240.110.75.34"))),
    (s.BARE_RSERROR, RSErrorRsp("vas00001-sub", Status(6102, "SUBS is ported"))),
])
def test_annex_answers_and_reports_decode(body: bytes, expected: Message) -> None:
    d = ok(codec.decode(XML, body))
    assert d.message == expected
    assert d.schema is SchemaVersion.REL_5_MM7_1_2


def test_rel6_submit_with_content_class_drm_and_a_bare_sender_address_decodes() -> None:
    d = ok(codec.decode(XML, s.SUBMIT_REQ_REL6))
    m = d.message
    assert isinstance(m, SubmitReq) and d.schema is SchemaVersion.REL_6_MM7_1_4
    assert m.sender == Address("0212345678") and m.expiry == "P90D"
    assert m.charged_party == "Recipient" and m.content == ()


def test_annex_replace_req_carries_its_new_content() -> None:
    m = ok(codec.decode(s.REPLACE_REQ_CTYPE, s.REPLACE_REQ)).message
    assert isinstance(m, ReplaceReq)
    assert m.message_id == "041502073667" and m.vas_id is None
    assert [p.text() for p in m.content] == ["Updated story"]


def _every_message() -> list[Message]:
    text = Part("text/plain", "안녕하세요 고객님".encode("euc-kr"), "t1", "ks_c_5601-1987",
                "t1.txt")
    jpeg = Part("image/jpeg", s.JPEG, "i1", None, "i1.jpg")
    content = (presentation((jpeg, text)), jpeg, text)
    st = Status(4006, "Service unavailable", "try later")
    return [
        SubmitReq("tx-1", "VASP01", "VAS01", (Address("01012345678"),
                                             Address("01000000000", role=Role.BCC)),
                  Address("0212345678"), service_code="SVC", message_class="Informational",
                  timestamp=WHEN, expiry="P3D", delivery_report=True, read_reply=False,
                  priority="High", subject="공지 사항", distribution_indicator=False,
                  allow_adaptations=False, content=content),
        SubmitReq("tx-2", None, None, (Address("01012345678"),), content=(jpeg,)),
        SubmitRsp("tx-1", Status(1000, "Success"), "MID-1"),
        SubmitRsp("tx-1", Status(2004, "Multimedia content refused", "too big")),
        CancelReq("tx-3", "VASP01", None, "MID-1"),
        CancelRsp("tx-3", Status(1000, "Success")),
        ReplaceReq("tx-4", "VASP01", "VAS01", "MID-1", service_code="SVC", timestamp=WHEN,
                   earliest_delivery="PT1H", read_reply=True, distribution_indicator=True,
                   allow_adaptations=True, content=(text,)),
        ReplaceRsp("tx-4", Status(1000, "Success")),
        DeliveryReportReq("dr-1", "MID-1", Address("01012345678"), Address("0212345678"),
                          WHEN, MMStatus.EXPIRED, "mmsc-1", "expired after 3 days"),
        DeliveryReportRsp("dr-1", Status(1000, "Success")),
        RSErrorRsp("tx-1", st, "mmsc-1"),
        VASPErrorRsp("dr-1", Status(4004, "Validation error")),
        Fault("tx-1", "env:Server", "Server error", RSErrorRsp("tx-1", st, "mmsc-1")),
        Fault("tx-1", "env:Client", "bad", None),
    ]


@pytest.mark.parametrize("schema", list(SchemaVersion))
@pytest.mark.parametrize("message", _every_message(), ids=lambda m: type(m).__name__)
def test_every_operation_round_trips_in_every_schema_version(
        schema: SchemaVersion, message: Message) -> None:
    if isinstance(message, DeliveryReportReq) and not schema.report_has_status_text:
        message = DeliveryReportReq(**{**_fields(message), "status_text": None})
    enc = codec.encode(message, schema, None)
    d = ok(codec.decode(enc.content_type, enc.body))
    assert d.message == message
    if not (isinstance(message, Fault) and message.error is None):
        assert d.schema is schema and d.mm7_version == schema.default_mm7_version


def _fields(m: DeliveryReportReq) -> dict[str, object]:
    return {f: getattr(m, f) for f in m.__slots__}  # type: ignore[attr-defined]


def test_schema_version_decides_namespace_mm7version_and_report_date_element() -> None:
    dr = _every_message()[8]
    rel5 = codec.encode(dr, SchemaVersion.REL_5_MM7_1_0).body
    rel6 = codec.encode(dr, SchemaVersion.REL_6_MM7_1_4, "6.5.0").body
    assert b"schema/REL-5-MM7-1-0" in rel5 and b"<MM7Version>5.3.0<" in rel5
    assert b"<Date>" in rel5 and b"StatusText" not in rel5
    assert b"schema/REL-6-MM7-1-4" in rel6 and b"<MM7Version>6.5.0<" in rel6
    assert b"<TimeStamp>" in rel6 and b"<StatusText>" in rel6


def test_delivery_condition_not_met_is_refused_before_rel6() -> None:
    dr = DeliveryReportReq("d", "m", Address("010"), Address("02"), WHEN,
                           MMStatus.DELIVERY_CONDITION_NOT_MET)
    with pytest.raises(ValueError):
        codec.encode(dr, SchemaVersion.REL_5_MM7_1_3)
    assert ok(codec.decode(*_ct_body(codec.encode(dr, SchemaVersion.REL_6_MM7_1_4)))).message == dr


def _ct_body(e: codec.Encoded) -> tuple[str, bytes]:
    return e.content_type, e.body


def test_carrier_soap_headers_travel_in_the_envelope_header() -> None:
    m = _every_message()[1]
    enc = codec.encode(m, SchemaVersion.REL_5_MM7_1_2,
                       soap_headers={"ServiceCode": "SKT001", "OriginCode": "123456789"})
    soap = enc.body.split(b"<env:Body>")[0]
    assert b">SKT001</mm7:ServiceCode>" in soap and b">123456789</mm7:OriginCode>" in soap
    assert ok(codec.decode(enc.content_type, enc.body)).message == m


def test_text_can_be_sent_base64_for_carriers_that_want_7bit_bodies() -> None:
    m = _every_message()[0]
    enc = codec.encode(m, SchemaVersion.REL_5_MM7_1_2, text_cte="base64")
    assert "안녕".encode("euc-kr") not in enc.body
    assert ok(codec.decode(enc.content_type, enc.body)).message == m


def _swap(old: bytes, new: bytes, body: bytes = s.SUBMIT_RSP) -> bytes:
    assert old in body
    return body.replace(old, new, 1)


@pytest.mark.parametrize(("ctype", "body", "status", "says"), [
    (XML, b"", 2007, "XML"),
    (XML, b"<a>", 2007, "XML"),
    (XML, b"<x/>", 2007, "SOAP"),
    ("application/json", b"{}", 2007, "text/xml"),
    (XML, _swap(b"<?xml version=\"1.0\" ?>",
                b'<?xml version="1.0"?><!DOCTYPE z [<!ENTITY a "aaaa">]>'), 2007, "DOCTYPE"),
    (XML, s.envelope(f'<SubmitRsp xmlns="{s.NS12}"><MM7Version>5.3.0</MM7Version>'
                     "<Status><StatusCode>1000</StatusCode></Status></SubmitRsp>", tid=None),
     4004, "TransactionID"),
    (XML, _swap(b"<MessageID>", b"<Colour>red</Colour><MessageID>"), 4004, "Colour"),
    (XML, _swap(b"REL-5-MM7-1-2\"><MM7", b"REL-9-MM7-9-9\"><MM7"), 4002, "REL-9"),
    (XML, s.envelope('<SubmitReq xmlns="urn:other"/>'), 4003, "not an MM7 operation"),
    (XML, s.envelope(f'<FlyReq xmlns="{s.NS12}"/>'), 4003, "FlyReq"),
    (XML, _swap(b"<MM7Version>5.3.0</MM7Version>", b""), 4004, "MM7Version"),
    (XML, _swap(b"<StatusCode>1000<", b"<StatusCode>OK<"), 4004, "StatusCode"),
    (XML, _swap(b"<MMStatus>Retrieved<", b"<MMStatus>Eaten<", s.DELIVERY_REPORT_REQ),
     4004, "MMStatus"),
    (XML, _swap(b"<Date>2002-04-15T07:16:30-05:00<", b"<Date>yesterday<",
                s.DELIVERY_REPORT_REQ), 4004, "Date"),
    (XML, _swap(b"<Date>2002-04-15T07:16:30-05:00<", b"<Date>2002-04-15T07:16:30<",
                s.DELIVERY_REPORT_REQ), 4004, "time zone"),
    (XML, _swap(b"<Sender><ShortCode>1234</ShortCode>", b"<Sender>",
                s.DELIVERY_REPORT_REQ), 2002, "Sender"),
    (s.SUBMIT_REQ_CTYPE, s.SUBMIT_REQ.replace(b"cid:SaturnPics", b"cid:Jupiter"), 2007,
     "Content-ID"),
    (s.SUBMIT_REQ_CTYPE, s.SUBMIT_REQ.replace(b"charset=\"ks_c_5601-1987\"",
                                              b"charset=\"utf-8\""), 2007, "utf-8"),
    (s.SUBMIT_REQ_CTYPE, s.SUBMIT_REQ.replace(b"<Number>01012345678</Number>",
                                              b"<Number> </Number>"), 2002, "Number"),
    (s.SUBMIT_REQ_CTYPE.replace("mm7-submit-envelope", "nothing"), s.SUBMIT_REQ, 2007,
     "start part"),
    (s.SUBMIT_REQ_CTYPE, s.SUBMIT_REQ[:-300], 2007, "MIME"),
])
def test_malformed_input_answers_a_typed_error(ctype: str, body: bytes, status: int,
                                               says: str) -> None:
    err = refused(codec.decode(ctype, body), status)
    assert says in err.detail


def test_an_error_keeps_the_transaction_id_so_the_fault_can_name_it() -> None:
    err = refused(codec.decode(XML, _swap(b"<MessageID>", b"<Colour/><MessageID>")), 4004)
    assert err.transaction_id == "vas00001-sub"
    fault = codec.fault_for(err, SchemaVersion.REL_5_MM7_1_2, server=True,
                            relay_server_id="sim")
    enc = codec.encode(fault, SchemaVersion.REL_5_MM7_1_2)
    back = ok(codec.decode(enc.content_type, enc.body)).message
    assert isinstance(back, Fault) and back.faultcode == "env:Client"
    assert back.status_code == StatusCode.VALIDATION_ERROR
    assert back.transaction_id == "vas00001-sub"


def test_oversized_bodies_are_refused_before_parsing() -> None:
    refused(codec.decode(XML, s.SUBMIT_RSP, max_bytes=100), 2004)


def test_bad_base64_in_an_image_part_is_refused() -> None:
    broken = s.SUBMIT_REQ.replace(b"Content-Location: saturn.jpg\r\nContent-Transfer-Encoding:"
                                  b" base64\r\n\r\n/9j/", b"Content-Location: saturn.jpg\r\n"
                                  b"Content-Transfer-Encoding: base64\r\n\r\n/9j/*")
    assert broken != s.SUBMIT_REQ
    refused(codec.decode(s.SUBMIT_REQ_CTYPE, broken), 2007)
