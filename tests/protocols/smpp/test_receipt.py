"""Delivery receipt text, message id matching, and receipts carried by deliver_sm."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from protocols.smpp.constants import MessageState, Tag
from protocols.smpp.pdu import DeliverSm, Tlv
from protocols.smpp.receipt import (
    format_receipt,
    message_ids_match,
    parse_receipt,
    receipt_date,
    receipt_from_deliver_sm,
)
from protocols.smpp.text import decode_text, encode_text

CLASSIC = (
    "id:0123456789 sub:001 dlvrd:001 submit date:2611231200 done date:2611231201 "
    "stat:DELIVRD err:000 text:Hello id:fake stat:UNDELIV"
)


def test_classic_receipt_parses_every_field() -> None:
    r = parse_receipt(CLASSIC)
    assert r is not None
    assert (r.message_id, r.sub, r.dlvrd, r.stat, r.err) == ("0123456789", "001", "001", "DELIVRD", "000")
    assert r.submit_date == datetime(2026, 11, 23, 12, 0)
    assert r.done_date == datetime(2026, 11, 23, 12, 1)
    assert r.state is MessageState.DELIVERED


def test_text_field_keeps_everything_after_it_even_lookalike_keys() -> None:
    r = parse_receipt(CLASSIC)
    assert r is not None and r.text == "Hello id:fake stat:UNDELIV"


def test_receipt_parsing_ignores_case_and_missing_fields() -> None:
    r = parse_receipt(b"ID:abc Stat:undeliv ERR:012")
    assert r is not None
    assert (r.message_id, r.stat, r.err, r.sub, r.submit_date) == ("abc", "UNDELIV", "012", None, None)
    assert r.state is MessageState.UNDELIVERABLE


def test_dates_with_seconds_and_underscored_keys_are_understood() -> None:
    r = parse_receipt("id:1 submit_date:261123120005 done_date:bogus stat:EXPIRED")
    assert r is not None
    assert r.submit_date == datetime(2026, 11, 23, 12, 0, 5) and r.done_date is None


def test_text_without_id_and_stat_is_not_a_receipt() -> None:
    assert parse_receipt("안녕하세요 id 없음") is None
    assert parse_receipt("id:123 only") is None


def test_formatted_receipts_parse_back() -> None:
    when = datetime(2026, 1, 2, 3, 4)
    text = format_receipt("A1", "REJECTD", submit_date=when, done_date=when, err="011")
    r = parse_receipt(text)
    assert r is not None
    assert (r.message_id, r.stat, r.err, r.dlvrd, r.done_date) == ("A1", "REJECTD", "011", "000", when)


def test_receipt_dates_are_written_in_the_zone_they_are_given_in() -> None:
    # One instant, two zones: a receipt states the SMSC's local time, so the text differs.
    utc = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    kst = utc.astimezone(ZoneInfo("Asia/Seoul"))
    assert utc == kst
    texts = [format_receipt("1", "DELIVRD", submit_date=d, done_date=d) for d in (utc, kst)]
    assert "submit date:2612312359 done date:2612312359" in texts[0]
    assert "submit date:2701010859 done date:2701010859" in texts[1]


def test_a_date_formatted_once_writes_the_same_receipt() -> None:
    # The simulator formats one date for a whole batch of receipts.
    when = datetime(2026, 12, 7, 9, 5)
    stamp = receipt_date(when)
    assert stamp == "2612070905"
    assert (format_receipt("7f", "UNDELIV", submit_date=stamp, done_date=stamp, err="001")
            == format_receipt("7f", "UNDELIV", submit_date=when, done_date=when, err="001"))


def test_hex_and_decimal_forms_of_one_id_match() -> None:
    assert message_ids_match("1a2b3c4d", "439041101")
    assert message_ids_match("439041101", "1A2B3C4D")
    assert message_ids_match("ABC", "abc")
    assert not message_ids_match("1a2b3c4d", "439041102")
    assert not message_ids_match("xyz", "123")


def test_receipt_tlvs_win_over_the_text() -> None:
    pdu = DeliverSm(
        esm_class=4,
        short_message=b"id:999 stat:DELIVRD err:000",
        tlvs=(Tlv.cstr(Tag.RECEIPTED_MESSAGE_ID, "3E7"), Tlv.u8(Tag.MESSAGE_STATE, 2)),
    )
    r = receipt_from_deliver_sm(pdu)
    assert r is not None and r.message_id == "3E7" and r.stat == "DELIVRD"


def test_receipt_with_only_tlvs_is_understood() -> None:
    pdu = DeliverSm(
        esm_class=4,
        tlvs=(Tlv.cstr(Tag.RECEIPTED_MESSAGE_ID, "77"), Tlv.u8(Tag.MESSAGE_STATE, 8)),
    )
    r = receipt_from_deliver_sm(pdu)
    assert r is not None and (r.message_id, r.state) == ("77", MessageState.REJECTED)


def test_mobile_originated_deliver_sm_is_not_a_receipt() -> None:
    pdu = DeliverSm(esm_class=0, short_message=b"id:1 stat:DELIVRD")
    assert receipt_from_deliver_sm(pdu) is None


def test_korean_text_round_trips_in_ksc5601_and_ucs2() -> None:
    for coding in (0x0E, 0x08):
        assert decode_text(encode_text("(광고) 안녕하세요", coding), coding) == "(광고) 안녕하세요"


def test_exact_layout_and_reordered_layout_parse_the_same() -> None:
    exact = parse_receipt(CLASSIC)
    reordered = parse_receipt(
        "stat:DELIVRD id:0123456789 err:000 sub:001 dlvrd:001 submit date:2611231200 "
        "done date:2611231201 text:Hello id:fake stat:UNDELIV"
    )
    assert exact == reordered
