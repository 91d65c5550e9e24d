"""Korean phone numbers: normalisation, sender policy rows, recipients and masking."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers import numbers as policy
from handlers.numbers import (
    RECIPIENT_POLICY,
    SENDER_POLICY,
    NumberError,
    NumberKind,
    _is_assigned,
    check_recipient,
    check_sender,
    classify,
    mask,
    normalise,
    rule_for,
)

# --------------------------------------------------------------------------- normalise


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Seed 002 §18-3: both forms typed one per line.
        ("010-0000-0000", "01000000000"),
        ("01011111111", "01011111111"),
        # Seed 000 bulk registration rows.
        ("01032940189", "01032940189"),
        ("0162930188", "0162930188"),
        # International forms with and without plus, hyphen, trunk 0 in parentheses.
        ("+82 10 1234 5678", "01012345678"),
        ("+82-10-1234-5678", "01012345678"),
        ("+821012345678", "01012345678"),
        ("82 10 1234 5678", "01012345678"),
        ("+82 (0)2 1234 5678", "0212345678"),
        ("0082-10-1234-5678", "01012345678"),
        ("+82 1588 1234", "15881234"),
        ("+82 80 258 0303", "0802580303"),
        # Separators people paste.
        ("010 1234 5678", "01012345678"),
        ("010.1234.5678", "01012345678"),
        ("(02) 123-4567", "021234567"),
        ("  010-1234-5678\t", "01012345678"),
        ("010–1234–5678", "01012345678"),  # en dashes from a word processor
        # Full-width digits and punctuation from Korean IMEs.
        ("０１０－１２３４－５６７８", "01012345678"),
        ("＋８２ １０ １２３４ ５６７８", "01012345678"),
        # Short service numbers survive normalisation so the policy can name them.
        ("112", "112"),
        ("1588-1234", "15881234"),
    ],
)
def test_common_input_forms_normalise_to_national_digits(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("--", "empty"),
        ("010-1234-567a", "not_digits"),
        ("010-1234-5678 내선 12", "not_digits"),
        ("٠١٠١٢٣٤٥٦٧٨", "not_digits"),  # Arabic-Indic digits are digits, but not ours
        ("+", "empty"),
        ("12", "too_short"),
        ("0101234567890", "too_long"),
        ("+1 415 555 0123", "international"),
        ("+81 3 1234 5678", "international"),
        ("001-1-415-555-0123", "international"),
    ],
)
def test_unusable_input_is_refused_with_a_code(raw: str, code: str) -> None:
    with pytest.raises(NumberError) as info:
        normalise(raw)
    assert info.value.code == code
    assert info.value.detail


# --------------------------------------------------------------------------- sender policy
# One test per row of SENDER_POLICY with hand-picked numbers; the last test checks that the
# examples below really reach every row.

EXAMPLES: dict[int, list[str]] = {}


def _examples(row: int, *numbers: str) -> list[str]:
    EXAMPLES.setdefault(row, []).extend(numbers)
    return list(numbers)


def _verdict(raw: str) -> tuple[NumberKind, bool, str]:
    check = check_sender(raw)
    return check.kind, check.allowed, check.reason


@pytest.mark.parametrize("raw", _examples(0, "112", "119", "114", "1331", "1330"))
def test_special_short_numbers_are_refused_as_senders(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.SPECIAL, False, "special_number")


@pytest.mark.parametrize("raw", _examples(1, "010-1234-5678", "+82 10 9876 5432", "0101234567"))
def test_mobile_010_numbers_may_send(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.MOBILE, True, "ok")


@pytest.mark.parametrize(
    "raw", _examples(2, "011-123-4567", "016-1234-5678", "017-123-4567", "018-123-4567",
                     "019-1234-5678")
)
def test_legacy_mobile_prefixes_may_send(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.MOBILE, True, "ok")


@pytest.mark.parametrize("raw", _examples(3, "010-123-456", "010-1234-56789", "0191234"))
def test_mobile_numbers_of_the_wrong_length_are_refused(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.MOBILE, False, "bad_length")


@pytest.mark.parametrize("raw", _examples(4, "012-123-4567", "0130-123-4567", "015-123-4567"))
def test_pager_and_data_prefixes_cannot_be_called_back(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.PAGER, False, "not_callable")


@pytest.mark.parametrize("raw", _examples(5, "02-123-4567", "02-2074-8582"))
def test_seoul_landlines_with_area_code_may_send(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.FIXED_LINE, True, "ok")


@pytest.mark.parametrize(
    "raw", _examples(6, "031-123-4567", "031-1234-5678", "044-123-4567", "051-1234-5678",
                     "064-123-4567")
)
def test_regional_landlines_with_area_code_may_send(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.FIXED_LINE, True, "ok")


@pytest.mark.parametrize("raw", _examples(7, "02-123-456", "02-1234-56789", "031-12-3456"))
def test_landlines_of_the_wrong_length_are_refused(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.FIXED_LINE, False, "bad_length")


@pytest.mark.parametrize("raw", _examples(8, "070-1234-5678", "070 8765 4321"))
def test_070_internet_phones_may_send(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.VOIP, True, "ok")


@pytest.mark.parametrize("raw", _examples(9, "070-123-4567", "070-1234-567"))
def test_070_numbers_must_have_11_digits(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.VOIP, False, "bad_length")


@pytest.mark.parametrize("raw", _examples(10, "080-258-0303", "080-1234-5678"))
def test_080_toll_free_numbers_may_send_because_they_can_be_called_back(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.TOLL_FREE, True, "ok")


@pytest.mark.parametrize("raw", _examples(11, "080-123-456", "080-12-345"))
def test_080_numbers_of_the_wrong_length_are_refused(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.TOLL_FREE, False, "bad_length")


@pytest.mark.parametrize("raw", _examples(12, "0505-123-4567", "0504-1234-5678", "050-123-4567"))
def test_050_personal_numbers_are_refused(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.PERSONAL, False, "personal_number")


@pytest.mark.parametrize("raw", _examples(13, "060-123-4567", "060-1234-5678"))
def test_060_premium_numbers_are_refused(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.PREMIUM, False, "premium_rate")


@pytest.mark.parametrize(
    "raw", _examples(14, "1588-1234", "1544-0000", "1600-1234", "1644-5678", "1800-1234",
                     "1522-1234")
)
def test_15yy_16yy_18yy_representative_numbers_with_8_digits_may_send(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.UAN, True, "ok")


@pytest.mark.parametrize("raw", _examples(15, "1588-123", "1588-12345", "15881"))
def test_representative_numbers_must_have_exactly_8_digits(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.UAN, False, "bad_length")


@pytest.mark.parametrize("raw", _examples(16, "123-4567", "2074-8582", "987-6543"))
def test_landlines_without_area_code_are_refused(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.LOCAL, False, "missing_area_code")


@pytest.mark.parametrize("raw", _examples(17, "12345", "987654"))
def test_numbers_under_8_digits_are_refused(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.UNKNOWN, False, "too_short")


@pytest.mark.parametrize("raw", _examples(18, "1234-5678-9012", "0901-2345-6789"))
def test_numbers_over_11_digits_are_refused(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.UNKNOWN, False, "too_long")


@pytest.mark.parametrize("raw", _examples(19, "030-123-4567", "039-123-4567", "090-1234-5678",
                                          "212345678"))
def test_numbers_outside_korean_ranges_are_refused(raw: str) -> None:
    assert _verdict(raw) == (NumberKind.UNKNOWN, False, "invalid_number")


@pytest.mark.parametrize("raw", ["02-0123-4567", "031-012-3456"])
def test_landlines_in_unassigned_ranges_are_refused_as_invalid(raw: str) -> None:
    # The shape passes our table, but phonenumbers knows no such subscriber range.
    assert _verdict(raw) == (NumberKind.FIXED_LINE, False, "invalid_number")


def test_international_senders_are_refused_before_the_table() -> None:
    with pytest.raises(NumberError) as info:
        check_sender("+1 202 555 0100")
    assert info.value.code == "international"


def test_sender_check_returns_the_canonical_number_and_an_explanation() -> None:
    check = check_sender("+82 2-2074-8582")
    assert check.number == "0220748582"
    assert check.explanation


def test_every_sender_policy_row_has_hand_written_examples() -> None:
    reached = {
        SENDER_POLICY.index(rule_for(normalise(raw))) for numbers in EXAMPLES.values()
        for raw in numbers
    }
    assert reached == set(range(len(SENDER_POLICY)))
    for row, numbers in EXAMPLES.items():
        for raw in numbers:
            assert rule_for(normalise(raw)) is SENDER_POLICY[row], raw


def test_classify_names_the_kind_of_a_canonical_number() -> None:
    assert classify("01012345678") is NumberKind.MOBILE
    assert classify("15881234") is NumberKind.UAN
    assert classify("0802580303") is NumberKind.TOLL_FREE


# --------------------------------------------------------------------------- recipients


@pytest.mark.parametrize("raw", ["010-1234-5678", "+82 10 1234 5678", "011-123-4567",
                                 "019-1234-5678"])
def test_mobile_numbers_can_receive_messages(raw: str) -> None:
    check = check_recipient(raw)
    assert (check.allowed, check.reason, check.kind) == (True, "ok", NumberKind.MOBILE)
    assert rule_for(check.number, RECIPIENT_POLICY).allowed


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("02-123-4567", NumberKind.FIXED_LINE),
        ("031-1234-5678", NumberKind.FIXED_LINE),
        ("070-1234-5678", NumberKind.VOIP),
        ("1588-1234", NumberKind.UAN),
        ("080-258-0303", NumberKind.TOLL_FREE),
        ("0505-123-4567", NumberKind.PERSONAL),
        ("112", NumberKind.SPECIAL),
        ("010-123-456", NumberKind.MOBILE),
    ],
)
def test_non_mobile_recipients_are_refused_with_their_kind(raw: str, kind: NumberKind) -> None:
    check = check_recipient(raw)
    assert (check.allowed, check.reason, check.kind) == (False, "not_mobile", kind)


def test_mobile_numbers_in_unassigned_ranges_are_invalid_as_recipient_and_sender() -> None:
    # 010-597x is outside the ranges phonenumbers knows as assigned.
    assert check_recipient("010-5971-2345").reason == "invalid_number"
    assert check_sender("010-5971-2345").reason == "invalid_number"
    assert not check_recipient("010-5971-2345").allowed


def test_unparsable_recipients_raise_number_error() -> None:
    with pytest.raises(NumberError) as info:
        check_recipient("홍길동")
    assert info.value.code == "not_digits"


# --------------------------------------------------------------------------- masking


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("01012345678", "010****5678"),  # 11 digits: 3-4-4
        ("03112345678", "031****5678"),
        ("0212345678", "02****5678"),  # 10 digits in Seoul: 2-4-4
        ("0311234567", "031***4567"),  # 10 digits elsewhere: 3-3-4
        ("0111234567", "011***4567"),
        ("021234567", "02***4567"),  # 9 digits: 2-3-4
        ("15881234", "****1234"),  # 8 digits: last four only
        ("050412345678", "0504****5678"),  # 12 digits: 4-4-4
        ("1234567", "***4567"),
        ("112", "112"),  # service numbers are not personal
        ("010-1234-5678", "*************"),  # not canonical: nothing shown
    ],
)
def test_masking_stars_the_middle_digits(number: str, masked: str) -> None:
    assert mask(number) == masked
    assert len(mask(number)) == len(number)


# --------------------------------------------------------------------------- phonenumbers


@settings(max_examples=3000, deadline=None)
@given(
    prefix=st.sampled_from(["010", "011", "016", "019", "02", "031", "044", "064", "070",
                            "080", "060", "0505", "15", "16", "18"]),
    rest=st.text(alphabet="0123456789", min_size=5, max_size=9),
)
def test_assigned_ranges_agree_with_phonenumbers(prefix: str, rest: str) -> None:
    # The policy compiles phonenumbers' KR patterns once instead of calling the library per
    # number; the verdict must be the library's.
    number = prefix + rest
    expected = phonenumbers.is_valid_number(phonenumbers.parse(number, "KR"))
    assert _is_assigned(number) is expected


@given(raw=st.text(max_size=30))
def test_any_text_either_normalises_or_raises_number_error(raw: str) -> None:
    try:
        digits = normalise(raw)
    except NumberError as exc:
        assert exc.code in {"empty", "not_digits", "international", "too_short", "too_long"}
    else:
        assert digits.isascii() and digits.isdigit() and 3 <= len(digits) <= 12
        check_sender(digits)
        assert len(mask(digits)) == len(digits)


@pytest.mark.parametrize("table", [policy.SENDER_POLICY, policy.RECIPIENT_POLICY],
                         ids=["sender", "recipient"])
def test_no_rule_reads_past_the_digits_its_verdict_is_remembered_by(table: tuple) -> None:
    # rule_for remembers a verdict by the first PREFIX_DIGITS digits and the length: a rule
    # whose pattern read further (or looked ahead) would make that memory wrong.
    import re._parser as sre_parse  # the standard library's own width computation

    for rule in table:
        assert "(?=" not in rule.prefix and "(?!" not in rule.prefix, rule.prefix
        assert sre_parse.parse(rule.prefix).getwidth()[1] <= policy.PREFIX_DIGITS, rule.prefix


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789", min_size=1, max_size=13))
def test_remembered_verdicts_are_the_tables_own(digits: str) -> None:
    for table in (policy.SENDER_POLICY, policy.RECIPIENT_POLICY):
        assert policy.rule_for(digits, table) == policy._first_rule(digits, table)
        assert policy.rule_for(digits, table) == policy._first_rule(digits, table)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789", min_size=1, max_size=14))
def test_plain_digits_normalise_as_they_did_through_the_general_path(digits: str) -> None:
    # The digits-only shortcut skips NFKC and the separators; a separator added in front must
    # not change the verdict (it goes the general way).
    def verdict(raw: str) -> object:
        try:
            return policy.normalise(raw)
        except policy.NumberError as exc:
            return exc.code
    assert verdict(digits) == verdict(" " + digits)
