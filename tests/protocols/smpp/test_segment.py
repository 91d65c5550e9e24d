"""Long Korean text split for carriers that want SAR, UDH or message_payload."""

from __future__ import annotations

import pytest

from protocols.smpp.constants import DataCoding, EsmClass, Tag
from protocols.smpp.segment import LongMessageMethod, segments, split_encoded

KOREAN = "가나다라마바사아자차카타파하" * 10  # 140 syllables: 280 octets in KS C 5601 or UCS-2


def test_text_that_fits_is_one_plain_segment() -> None:
    (only,) = segments("안녕하세요", DataCoding.KSC5601, LongMessageMethod.UDH, ref_num=1)
    assert (only.short_message, only.esm_class, only.tlvs) == ("안녕하세요".encode("cp949"), 0, ())


def test_message_payload_carries_the_whole_text_in_one_submit() -> None:
    (only,) = segments(KOREAN, DataCoding.UCS2, LongMessageMethod.MESSAGE_PAYLOAD, ref_num=1)
    assert only.short_message == b""
    assert only.tlvs[0].tag == Tag.MESSAGE_PAYLOAD
    assert only.tlvs[0].value.decode("utf-16-be") == KOREAN


def test_sar_segments_number_themselves_and_rejoin_to_the_text() -> None:
    parts = segments(KOREAN, DataCoding.KSC5601, LongMessageMethod.SAR, ref_num=0x1234)
    assert [p.tlvs[2].value[0] for p in parts] == list(range(1, len(parts) + 1))
    assert all(p.tlvs[0].value == b"\x12\x34" and p.tlvs[1].value[0] == len(parts) for p in parts)
    assert all(len(p.short_message) <= 140 for p in parts)
    assert b"".join(p.short_message for p in parts).decode("cp949") == KOREAN


def test_udh_segments_set_udhi_and_carry_the_concatenation_header() -> None:
    parts = segments(KOREAN, DataCoding.UCS2, LongMessageMethod.UDH, ref_num=0x1FF)
    assert len(parts) == 3  # 134 octets of UCS-2 per part hold 67 syllables
    for i, part in enumerate(parts, 1):
        assert part.esm_class == EsmClass.UDHI
        assert part.short_message[:6] == bytes((5, 0, 3, 0xFF, 3, i))
    assert b"".join(p.short_message[6:] for p in parts).decode("utf-16-be") == KOREAN


def test_two_octet_characters_are_never_cut_in_half() -> None:
    chunks = split_encoded("a" + "한" * 10, DataCoding.KSC5601, max_octets=4)
    assert [c.decode("cp949") for c in chunks] == ["a한", "한한", "한한", "한한", "한한", "한"]


def test_characters_outside_the_coding_are_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        segments("emoji 😀", DataCoding.KSC5601, LongMessageMethod.SAR, ref_num=1)
