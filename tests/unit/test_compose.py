"""Message composition: Korean byte limits, types, subjects, templates, ad rules, JPEGs."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.messages.compose import (
    KST,
    AdNightTime,
    AdOptoutMismatch,
    AdOptoutMissing,
    AdOptoutNotLast,
    ComposedMessage,
    ComposeError,
    ComposePolicy,
    ComposeRequest,
    EmptyText,
    ImageNotAllowed,
    ImageNotJpeg,
    ImageRequired,
    ImageTooLarge,
    MessageType,
    MissingVariable,
    NoRecipients,
    Recipient,
    SubjectNotAllowed,
    SubjectTooLong,
    TooLong,
    TooLongForSms,
    TooManyImages,
    UnencodableCharacter,
    UnknownVariable,
    compose,
    count_bytes,
    inspect_jpeg,
    is_ad_night_time,
)
from handlers.messages.templates import parse_template

NOON = datetime(2024, 5, 2, 12, 0, tzinfo=KST)
POLICY = ComposePolicy()
OPTOUT = "무료거부 080-123-4567"
AD_POLICY = ComposePolicy(optout_line=OPTOUT)


def send(
    text: str, policy: ComposePolicy = POLICY, now: datetime = NOON, **request: Any
) -> ComposedMessage:
    return compose(ComposeRequest(text=text, **request), policy, now=now)


def jpeg(width: int = 64, height: int = 48, *, progressive: bool = False) -> bytes:
    image_module = pytest.importorskip("PIL.Image")
    out = io.BytesIO()
    image_module.new("RGB", (width, height), (200, 30, 30)).save(
        out, "JPEG", quality=80, progressive=progressive
    )
    return out.getvalue()


# A minimal 16x16 greyscale baseline JPEG (SOI, DQT, SOF0, DHT x2, SOS, one scan, EOI) that
# Pillow decodes; the tests that need no other image use it without Pillow.
GOOD_JPEG = bytes.fromhex(
    "ffd8ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f141d1a1f1e1d1a1c1c2024"
    "2e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b080010001001011100ff"
    "c4001f0000010501010101010100000000000000000102030405060708090a0bffc400b5100002010303"
    "020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1"
    "f02433627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a"
    "636465666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aa"
    "b2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5"
    "f6f7f8f9faffda0008010100003f00d2cf20ffd9"
)


def padded_jpeg(total: int) -> bytes:
    """A valid JPEG grown to exactly `total` bytes with comment (COM) segments."""
    base = jpeg()
    need = total - len(base)
    segments = b""
    while need > 0:
        body = min(need - 4, 65533) if need > 4 else 0
        if need - (body + 4) in (1, 2, 3):  # never leave a gap too small for a segment
            body -= 4
        segments += b"\xff\xfe" + (body + 2).to_bytes(2, "big") + b"x" * body
        need -= body + 4
    data = base[:2] + segments + base[2:]
    assert len(data) == total
    return data


# --------------------------------------------------------------------------- bytes


def test_ascii_counts_one_byte_and_hangul_two() -> None:
    assert count_bytes("abc 123") == 7
    assert count_bytes("안녕하세요") == 10
    assert count_bytes("가a") == 3


def test_emoji_is_refused_with_its_position() -> None:
    with pytest.raises(UnencodableCharacter) as info:
        count_bytes("안녕 😀 하세요")
    assert (info.value.code, info.value.char, info.value.position) == (
        "unencodable_character", "😀", 3,
    )
    assert info.value.field == "text"


def test_hangul_outside_ks_x_1001_is_refused_by_default() -> None:
    # 똠 is CP949-only; Python's euc_kr codec would silently turn it into 8 bytes.
    with pytest.raises(UnencodableCharacter) as info:
        count_bytes("똠방각하")
    assert (info.value.char, info.value.position) == ("똠", 0)


def test_hangul_outside_ks_x_1001_counts_two_bytes_when_the_tenant_allows_cp949() -> None:
    assert count_bytes("똠방각하", allow_cp949_extensions=True) == 8
    message = send("똠방각하", ComposePolicy(allow_cp949_extensions=True))
    assert message.max_bytes == 8


def test_ks_x_1001_symbols_and_hanja_are_accepted() -> None:
    assert count_bytes("※☎★【】韓國") == 14


def test_unencodable_position_is_in_the_text_as_typed() -> None:
    with pytest.raises(UnencodableCharacter) as info:
        send("줄1\r\n줄2 🙂")
    assert info.value.position == 7


# --------------------------------------------------------------------------- type choice


def test_90_bytes_is_still_an_sms() -> None:
    message = send("a" * 90)
    assert (message.type, message.max_bytes) == (MessageType.SMS, 90)


def test_91_bytes_switches_to_lms() -> None:
    assert send("a" * 91).type is MessageType.LMS


def test_45_korean_characters_fill_an_sms_exactly() -> None:
    assert send("가" * 45).type is MessageType.SMS
    assert send("가" * 45 + ".").type is MessageType.LMS


def test_a_tenant_limited_to_80_bytes_switches_at_81() -> None:
    policy = ComposePolicy(sms_max_bytes=80)
    assert send("a" * 80, policy).type is MessageType.SMS
    assert send("가" * 40, policy).type is MessageType.SMS
    assert send("a" * 81, policy).type is MessageType.LMS


def test_explicit_sms_over_the_limit_is_refused() -> None:
    assert send("a" * 90, type=MessageType.SMS).type is MessageType.SMS
    with pytest.raises(TooLongForSms) as info:
        send("a" * 91, type=MessageType.SMS)
    assert (info.value.code, info.value.field) == ("too_long_for_sms", "text")


def test_lms_carries_2000_bytes_and_not_2001() -> None:
    assert send("가" * 1000).type is MessageType.LMS
    with pytest.raises(TooLong) as info:
        send("가" * 1000 + "a")
    assert info.value.code == "too_long"


def test_explicit_lms_may_carry_a_short_text() -> None:
    assert send("안녕", type=MessageType.LMS).type is MessageType.LMS


def test_windows_line_breaks_count_as_one_byte() -> None:
    message = send("a\r\nb\rc")
    assert message.texts == ("a\nb\nc",)
    assert message.max_bytes == 5


@pytest.mark.parametrize("text", ["", "  \n "])
def test_a_message_without_text_is_refused(text: str) -> None:
    with pytest.raises(EmptyText):
        send(text)


def test_a_message_without_recipients_is_refused() -> None:
    with pytest.raises(NoRecipients) as info:
        send("안녕", recipients=())
    assert info.value.field == "to"


# --------------------------------------------------------------------------- subject


def test_lms_subject_of_40_bytes_is_accepted() -> None:
    message = send("a" * 100, subject="가" * 20)
    assert message.subject == "가" * 20


def test_subject_of_41_bytes_is_refused() -> None:
    with pytest.raises(SubjectTooLong) as info:
        send("a" * 100, subject="가" * 20 + "a")
    assert (info.value.code, info.value.field) == ("subject_too_long", "subject")


def test_a_subject_on_an_sms_is_refused_rather_than_dropped() -> None:
    with pytest.raises(SubjectNotAllowed) as info:
        send("짧은 문자", subject="제목")
    assert info.value.field == "subject"


def test_an_empty_subject_is_no_subject() -> None:
    assert send("짧은 문자", subject="").subject is None


def test_an_unencodable_subject_is_reported_on_the_subject() -> None:
    with pytest.raises(UnencodableCharacter) as info:
        send("a" * 100, subject="공지🔔")
    assert (info.value.field, info.value.position) == ("subject", 2)


# --------------------------------------------------------------------------- templates


def test_customer_name_comes_from_each_recipient() -> None:
    message = send(
        "{고객명}님 안녕하세요",
        recipients=[Recipient(name="홍길동"), Recipient(vars={"고객명": "은누리"})],
    )
    assert message.texts == ("홍길동님 안녕하세요", "은누리님 안녕하세요")


def test_todays_date_is_the_korean_date_of_the_send() -> None:
    # 15:30 UTC on 1 May is 00:30 on 2 May in Seoul; the portals show dates as 2019-11-04.
    now = datetime(2024, 5, 1, 15, 30, tzinfo=UTC)
    assert send("{오늘날짜} 기준", now=now).texts == ("2024-05-02 기준",)


def test_recipient_variables_fill_the_template() -> None:
    message = send(
        "{고객명}님 {금액}원 입금",
        recipients=[Recipient("홍길동", {"금액": "10,000"}), Recipient("은누리", {"금액": "5"})],
    )
    assert message.texts == ("홍길동님 10,000원 입금", "은누리님 5원 입금")
    assert message.template == "{고객명}님 {금액}원 입금"


def test_a_variable_nobody_supplies_is_unknown() -> None:
    with pytest.raises(UnknownVariable) as info:
        send("{고객명}님 {포인트}점", recipients=[Recipient("홍길동")])
    assert (info.value.code, info.value.name, info.value.field) == (
        "unknown_variable", "포인트", "text",
    )


def test_a_variable_one_recipient_lacks_is_missing_for_that_recipient() -> None:
    with pytest.raises(MissingVariable) as info:
        send(
            "{금액}원",
            recipients=[Recipient(vars={"금액": "1"}), Recipient(), Recipient(vars={"금액": "3"})],
        )
    assert (info.value.code, info.value.name, info.value.field) == (
        "missing_variable", "금액", "to[1].vars.금액",
    )


def test_customer_name_missing_is_reported_on_the_recipient_name() -> None:
    with pytest.raises(MissingVariable) as info:
        send("{고객명}님", recipients=[Recipient("홍길동"), Recipient()])
    assert info.value.field == "to[1].name"


def test_doubled_braces_are_literal_braces() -> None:
    message = send("{{고객명}} 은 {고객명}님, 값은 {{x}}", recipients=[Recipient("홍길동")])
    assert message.texts == ("{고객명} 은 홍길동님, 값은 {x}",)


def test_lone_braces_are_kept_as_typed() -> None:
    assert send("웃음 :-} 그리고 {열림").texts == ("웃음 :-} 그리고 {열림",)
    assert send("{ 공백 }").texts == ("{ 공백 }",)


def test_parsed_template_lists_its_variables_once() -> None:
    template = parse_template("{고객명} {금액} {고객명} {{무시}}")
    assert template.variables == ("고객명", "금액")
    assert template.literal == "   {무시}"


def test_an_unencodable_value_is_reported_on_the_recipient_variable() -> None:
    with pytest.raises(UnencodableCharacter) as info:
        send("{메모}", recipients=[Recipient(vars={"메모": "ok"}), Recipient(vars={"메모": "a😀"})])
    assert (info.value.field, info.value.position) == ("to[1].vars.메모", 1)


def test_the_longest_rendering_decides_the_type_for_everyone() -> None:
    message = send(
        "{고객명}" + "a" * 80,
        recipients=[Recipient("김"), Recipient("가나다라마바")],  # 82 and 92 bytes
    )
    assert (message.type, message.max_bytes) == (MessageType.LMS, 92)


def test_explicit_sms_refuses_when_one_rendering_is_too_long() -> None:
    with pytest.raises(TooLongForSms):
        send("{고객명}" + "a" * 80, recipients=[Recipient("김"), Recipient("가나다라마바")],
             type=MessageType.SMS)


# --------------------------------------------------------------------------- advertising


def test_an_ad_gets_its_marker_and_opt_out_line() -> None:
    message = send("봄맞이 할인 안내", AD_POLICY, ad=True)
    assert message.texts == ("(광고)봄맞이 할인 안내\n무료거부 080-123-4567",)


def test_an_ad_already_marked_is_not_marked_twice() -> None:
    text = "(광고) 텔게이트\n봄맞이 할인\n무료거부 0801234567"
    assert send(text, AD_POLICY, ad=True).texts == (text,)


def test_an_ad_naming_another_opt_out_number_is_refused() -> None:
    with pytest.raises(AdOptoutMismatch) as info:
        send("(광고) 할인\n무료수신거부 080-999-8888", AD_POLICY, ad=True)
    assert (info.value.code, info.value.field) == ("ad_optout_mismatch", "text")


def test_a_customer_service_080_number_is_not_taken_for_an_opt_out() -> None:
    message = send("할인 문의 080-258-0303", AD_POLICY, ad=True)
    assert message.texts[0].endswith("\n" + OPTOUT)


def test_an_opt_out_line_in_the_middle_of_an_ad_is_refused() -> None:
    with pytest.raises(AdOptoutNotLast):
        send("무료거부 080-123-4567\n할인 안내", AD_POLICY, ad=True)


def test_an_ad_from_a_tenant_without_opt_out_line_is_refused() -> None:
    with pytest.raises(AdOptoutMissing) as info:
        send("할인", POLICY, ad=True)
    assert info.value.field == "ad"


def test_ad_marks_count_toward_the_sms_limit() -> None:
    # 62 bytes of text + "(광고)" (6) + "\n" (1) + "무료거부 080-123-4567" (21) = 90 bytes.
    message = send("a" * 62, AD_POLICY, ad=True)
    assert (message.type, message.max_bytes) == (MessageType.SMS, 90)
    message = send("a" * 63, AD_POLICY, ad=True)
    assert (message.type, message.max_bytes) == (MessageType.LMS, 91)
    assert send("a" * 63, POLICY).type is MessageType.SMS


@pytest.mark.parametrize(
    ("hour", "minute", "second", "night"),
    [
        (20, 59, 59, False),
        (21, 0, 0, True),
        (23, 59, 59, True),
        (0, 0, 0, True),
        (7, 59, 59, True),
        (8, 0, 0, False),
    ],
)
def test_ad_night_window_edges_in_korean_time(
    hour: int, minute: int, second: int, night: bool
) -> None:
    now = datetime(2024, 5, 2, hour, minute, second, tzinfo=KST)
    assert is_ad_night_time(now) is night
    assert is_ad_night_time(now.astimezone(UTC)) is night
    if night:
        with pytest.raises(AdNightTime) as info:
            send("할인", AD_POLICY, now=now, ad=True)
        assert info.value.code == "ad_night_time"
    else:
        send("할인", AD_POLICY, now=now, ad=True)


def test_night_ads_pass_with_night_time_consent() -> None:
    night = datetime(2024, 5, 2, 22, 0, tzinfo=KST)
    assert send("할인", AD_POLICY, now=night, ad=True, night_consent=True).type is MessageType.SMS


def test_non_ad_messages_may_go_at_night() -> None:
    night = datetime(2024, 5, 2, 23, 0, tzinfo=KST)
    assert send("배송 안내", now=night).type is MessageType.SMS


def test_a_naive_clock_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        send("안녕", now=datetime(2024, 5, 2, 12, 0))


def test_the_night_rule_uses_utc_input_correctly() -> None:
    # 12:30 UTC is 21:30 in Seoul.
    with pytest.raises(AdNightTime):
        send("할인", AD_POLICY, now=datetime(2024, 5, 2, 12, 30, tzinfo=UTC), ad=True)
    send("할인", AD_POLICY, now=datetime(2024, 5, 2, 11, 59, tzinfo=UTC), ad=True)
    assert timedelta(hours=9) == KST.utcoffset(NOON.replace(tzinfo=None))


# --------------------------------------------------------------------------- images


def test_a_jpeg_makes_an_mms_and_reports_its_size() -> None:
    image = jpeg(320, 240)
    message = send("사진", images=[image])
    assert message.type is MessageType.MMS
    assert (message.images[0].width, message.images[0].height) == (320, 240)
    assert message.images[0].size == len(image)


def test_an_mms_may_have_no_text() -> None:
    assert send("", images=[jpeg()]).type is MessageType.MMS


def test_progressive_jpegs_are_recognised() -> None:
    assert inspect_jpeg(jpeg(progressive=True)).progressive
    assert not inspect_jpeg(jpeg()).progressive


def test_mms_text_is_limited_like_lms() -> None:
    with pytest.raises(TooLong):
        send("가" * 1001, images=[jpeg()])


def test_three_images_are_accepted_and_four_refused() -> None:
    assert len(send("사진", images=[jpeg()] * 3).images) == 3
    with pytest.raises(TooManyImages) as info:
        send("사진", images=[jpeg()] * 4)
    assert (info.value.code, info.value.field) == ("too_many_images", "images")


def test_an_image_of_300_kb_is_accepted_and_one_byte_more_refused() -> None:
    assert send("사진", images=[padded_jpeg(300 * 1024)]).images[0].size == 300 * 1024
    with pytest.raises(ImageTooLarge) as info:
        send("사진", images=[jpeg(), padded_jpeg(300 * 1024 + 1)])
    assert (info.value.code, info.value.field) == ("image_too_large", "images[1]")


def test_images_up_to_1500_by_1440_pixels_are_accepted() -> None:
    assert send("사진", images=[jpeg(1500, 1440)]).images[0].width == 1500
    for width, height in ((1501, 100), (100, 1441)):
        with pytest.raises(ImageTooLarge) as info:
            send("사진", images=[jpeg(width, height)])
        assert "px" in info.value.detail


def _png() -> bytes:
    image_module = pytest.importorskip("PIL.Image")
    out = io.BytesIO()
    image_module.new("RGB", (8, 8)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("png", "no SOI"),
        ("truncated", "no EOI"),
        ("no_frame", "before any SOF"),
        ("garbage_after_eoi", "no EOI"),
        ("overrun", "overruns"),
    ],
)
def test_images_that_are_not_complete_jpegs_are_refused(case: str, why: str) -> None:
    good = jpeg()
    data = {
        "png": _png(),
        "truncated": good[: len(good) // 2],
        "no_frame": b"\xff\xd8\xff\xdb\x00\x04\x00\x00\xff\xda\x00\x02\x00\xff\xd9",
        "garbage_after_eoi": good + b"<?php system($_GET['c']); ?>",
        "overrun": b"\xff\xd8\xff\xe0\xff\xff\x00\xff\xd9",
    }[case]
    with pytest.raises(ImageNotJpeg) as info:
        send("사진", images=[jpeg(), data])
    assert (info.value.code, info.value.field) == ("image_not_jpeg", "images[1]")
    assert why in info.value.detail


def test_a_minimal_hand_written_jpeg_is_accepted() -> None:
    info = inspect_jpeg(GOOD_JPEG)
    assert (info.width, info.height, info.progressive) == (16, 16, False)
    assert send("사진", images=[GOOD_JPEG]).type is MessageType.MMS


def test_zero_padding_after_the_end_marker_is_tolerated() -> None:
    assert inspect_jpeg(jpeg() + b"\x00" * 16).width == 64


def test_images_with_an_explicit_sms_or_lms_type_are_refused() -> None:
    for kind in (MessageType.SMS, MessageType.LMS):
        with pytest.raises(ImageNotAllowed):
            send("사진", images=[jpeg()], type=kind)


def test_explicit_mms_needs_an_image() -> None:
    with pytest.raises(ImageRequired) as info:
        send("사진", type=MessageType.MMS)
    assert info.value.field == "images"


def test_every_refusal_is_a_compose_error_with_code_detail_and_field() -> None:
    with pytest.raises(ComposeError) as info:
        send("a" * 91, type=MessageType.SMS)
    error = info.value
    assert (error.code, error.field) == ("too_long_for_sms", "text")
    assert "91" in error.detail


def test_an_empty_ad_is_refused_rather_than_sent_as_marks_only() -> None:
    with pytest.raises(EmptyText):
        send("  ", AD_POLICY, ad=True)


def test_an_mms_ad_without_text_still_carries_the_marks() -> None:
    message = send("", AD_POLICY, ad=True, images=[jpeg()])
    assert message.texts == ("(광고)무료거부 080-123-4567",)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=64), cut=st.integers(min_value=0, max_value=2000),
       flip=st.integers(min_value=0, max_value=2000))
def test_damaged_or_random_bytes_never_crash_the_jpeg_check(
    data: bytes, cut: int, flip: int
) -> None:
    base = bytearray(GOOD_JPEG[:cut] + data + GOOD_JPEG[cut:])
    base[flip % len(base)] ^= 0xFF
    for candidate in (bytes(base), data, b"\xff\xd8" + data + b"\xff\xd9"):
        with contextlib.suppress(ImageNotJpeg):
            inspect_jpeg(candidate)


def test_a_text_opening_with_the_ad_mark_is_an_ad_even_with_ad_false() -> None:
    message = send("(광고)봄맞이 할인 안내", AD_POLICY, ad=False)
    assert message.ad
    assert message.texts == ("(광고)봄맞이 할인 안내\n무료거부 080-123-4567",)


def test_a_spaced_or_full_width_ad_mark_is_written_as_the_law_writes_it() -> None:
    assert send(" ( 광고 ) 할인", AD_POLICY).texts[0].startswith("(광고) 할인")
    assert send("（광고）할인", AD_POLICY).texts[0].startswith("(광고)할인")


def test_a_self_declared_ad_follows_the_ad_rules() -> None:
    with pytest.raises(AdOptoutMissing):
        send("(광고) 할인", POLICY)  # no opt-out line configured: refused like any ad
    with pytest.raises(AdNightTime):
        send("(광고) 할인", AD_POLICY, now=datetime(2026, 3, 2, 13, 0, tzinfo=UTC))  # 22:00 KST


def test_a_text_merely_mentioning_ads_is_not_one() -> None:
    assert not send("광고 문의는 02-123-4567", AD_POLICY).ad
