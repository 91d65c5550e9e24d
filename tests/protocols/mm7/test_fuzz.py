"""Fuzzing the MM7 decoder: any bytes, any Content-Type, and mutations of valid documents
answer a value or a DecodeError, never an exception; generated messages round-trip."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.mm7 import codec
from protocols.mm7.messages import (
    Address,
    AddressKind,
    Decoded,
    DecodeError,
    DeliveryReportReq,
    Part,
    Role,
    SubmitReq,
)
from protocols.mm7.status import MMStatus
from protocols.mm7.versions import SchemaVersion
from tests.protocols.mm7 import samples as s

SEEDS = [
    (s.SUBMIT_REQ_CTYPE, s.SUBMIT_REQ), ('text/xml', s.SUBMIT_RSP),
    ('text/xml', s.DELIVERY_REPORT_REQ), ('text/xml', s.FAULT),
    ('text/xml', s.BARE_RSERROR), (s.REPLACE_REQ_CTYPE, s.REPLACE_REQ),
    ('text/xml', s.SUBMIT_REQ_REL6),
]
FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _never_raises(ctype: str, body: bytes) -> None:
    result = codec.decode(ctype, body)
    assert isinstance(result, Decoded | DecodeError)
    if isinstance(result, DecodeError):
        assert 2000 <= result.status < 5000 and result.detail


@FUZZ
@given(st.text(max_size=120), st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(ctype: str, body: bytes) -> None:
    _never_raises(ctype, body)


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_documents_never_raise(seed: tuple[str, bytes], data: st.DataObject) -> None:
    ctype, body = seed
    buf = bytearray(body)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        at = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del buf[at:at + data.draw(st.integers(1, 64))]
        elif op == "insert":
            buf[at:at] = data.draw(st.sampled_from(
                [b"<", b">", b"</x>", b"&", b"&amp;", b"\r\n--", b"<!DOCTYPE a>", b"\x00",
                 b"<MM7Version>1</MM7Version>", b"=?", b"\xff\xfe", b"]]>", b'"']))
        else:
            piece = bytes(buf[at:at + data.draw(st.integers(1, 200))])
            buf[at:at] = piece
    _never_raises(ctype, bytes(buf))


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
_token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.@", min_size=1, max_size=20)
_address = st.builds(Address, _token, st.sampled_from(list(AddressKind)),
                     st.sampled_from(list(Role)))
_part = st.builds(Part, st.sampled_from(["image/jpeg", "image/png", "application/octet-stream"]),
                  st.binary(max_size=300), _token)
_when = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1),
                     timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(SchemaVersion)), _token, st.lists(_address, min_size=1, max_size=4),
       st.none() | _text, st.none() | _when, st.lists(_part, max_size=3), st.none() | st.booleans())
def test_generated_submits_round_trip(schema: SchemaVersion, tid: str, to: list[Address],
                                      subject: str | None, when: datetime | None,
                                      parts: list[Part], dr: bool | None) -> None:
    unique = tuple(Part(p.content_type, p.data, f"{p.content_id}{i}") for i, p in enumerate(parts))
    m = SubmitReq(tid, "V", None, tuple(sorted(to, key=lambda a: list(Role).index(a.role))),
                  subject=(subject and subject.strip()) or None, timestamp=when,
                  delivery_report=dr, content=unique)
    enc = codec.encode(m, schema)
    d = codec.decode(enc.content_type, enc.body)
    assert isinstance(d, Decoded) and d.message == m


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(list(SchemaVersion)), _token, _token, _address, _address, _when,
       st.sampled_from([m for m in MMStatus if m is not MMStatus.DELIVERY_CONDITION_NOT_MET]))
def test_generated_reports_round_trip(schema: SchemaVersion, tid: str, mid: str, to: Address,
                                      sender: Address, when: datetime, status: MMStatus) -> None:
    m = DeliveryReportReq(tid, mid, Address(to.value, to.kind), Address(sender.value, sender.kind),
                          when, status)
    d = codec.decode(*(lambda e: (e.content_type, e.body))(codec.encode(m, schema)))
    assert isinstance(d, Decoded) and d.message == m
