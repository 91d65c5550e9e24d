"""What one MMS recipient's SubmitReq carries, per carrier configuration."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from config.schema import Mm7CarrierConfig
from handlers.messages.mms_dispatch import MmsClaimed, build_submit
from protocols.mm7.messages import AddressKind

NOW = datetime(2026, 12, 1, 3, 0, 0, 123456, tzinfo=UTC)


def row(**kw: Any) -> MmsClaimed:
    base: dict[str, Any] = dict(message_id=uuid.UUID(int=7), idx=3, tenant_id=uuid.UUID(int=1),
                                number="01012345678", text="안녕하세요", sender="0212345678",
                                subject="안내", ad=False, attempts=2, lms_fallback=False)
    return MmsClaimed(**{**base, **kw})


def carrier(**kw: Any) -> Mm7CarrierConfig:
    return Mm7CarrierConfig(**{"name": "c", "url": "http://m/mm7", "vasp_id": "V", **kw})


def test_images_then_text_in_the_carrier_charset_after_a_smil_part() -> None:
    m = build_submit(carrier(service_code="SVC", expiry="P2D"), row(), [b"\xff\xd8a", b"\xff\xd8b"],
                     NOW)
    assert [p.content_type for p in m.content] == ["application/smil", "image/jpeg",
                                                   "image/jpeg", "text/plain"]
    assert [p.data for p in m.content[1:3]] == [b"\xff\xd8a", b"\xff\xd8b"]
    text = m.content[3]
    assert text.charset == "ks_c_5601-1987" and text.data == "안녕하세요".encode("euc-kr")
    assert b"image1.jpg" in m.content[0].data and b"text1.txt" in m.content[0].data
    assert (m.service_code, m.expiry, m.subject, m.delivery_report) == ("SVC", "P2D", "안내", True)
    assert m.timestamp == NOW.replace(microsecond=0)
    assert m.transaction_id == f"{uuid.UUID(int=7).hex[:16]}-3-2"  # unique per attempt


def test_a_cp949_only_syllable_is_sent_as_utf8_rather_than_garbled() -> None:
    m = build_submit(carrier(smil=False), row(text="똠얌꿍"), [b"\xff\xd8"], NOW)
    (_img, text) = m.content
    assert text.charset == "utf-8" and text.text() == "똠얌꿍"


def test_ads_are_advertisement_class_and_short_codes_are_written_as_such() -> None:
    m = build_submit(carrier(sender_address="ShortCode", vas_id="VAS"), row(ad=True, sender="1588"),
                     [b"\xff\xd8"], NOW)
    assert m.message_class == "Advertisement" and (m.vasp_id, m.vas_id) == ("V", "VAS")
    assert m.sender is not None and m.sender.kind is AddressKind.SHORT_CODE
    assert build_submit(carrier(), row(), [b"\xff\xd8"], NOW).message_class is None
    assert build_submit(carrier(message_class="Informational"), row(ad=True), [], NOW
                        ).message_class == "Informational"


def test_an_image_only_mms_has_no_text_part() -> None:
    m = build_submit(carrier(smil=False), row(text=""), [b"\xff\xd8"], NOW)
    assert [p.content_type for p in m.content] == ["image/jpeg"]
