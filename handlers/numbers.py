"""Korean phone numbers: normalisation, the sender-number policy, recipient rules and masking.

Pure functions, no I/O. Canonical form is the national digits a Korean user dials
(`01012345678`, `0212345678`, `15881234`); DESIGN.md section 6 gives the rules.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass

import phonenumbers

from protocols.values import quick_init

__all__ = [
    "RECIPIENT_POLICY",
    "SENDER_POLICY",
    "NumberError",
    "NumberKind",
    "NumberRule",
    "SenderCheck",
    "check_recipient",
    "check_sender",
    "classify",
    "mask",
    "normalise",
    "rule_for",
]


class NumberError(ValueError):
    """Input that is not a Korean phone number at all; `code` is stable for the API."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class NumberKind(enum.StrEnum):
    """What a Korean number is, as our policy tables see it."""

    MOBILE = "mobile"
    FIXED_LINE = "fixed_line"
    VOIP = "voip"
    UAN = "uan"  # 전국대표번호 15YY/16YY/18YY
    TOLL_FREE = "toll_free"
    PERSONAL = "personal"  # 050x 평생번호 (call forwarding)
    PREMIUM = "premium"
    PAGER = "pager"
    SPECIAL = "special"  # short service numbers: 112, 119, 114, 1331 ...
    LOCAL = "local"  # a landline dialled without its area code
    UNKNOWN = "unknown"


# Shortest input worth classifying is a 3-digit special number (112); the longest Korean
# national number is a 050x personal number (0504-1234-5678, 12 digits).
_MIN_DIGITS = 3
_MAX_DIGITS = 12

# Separators people type or paste from the portals and from Excel; NFKC has already folded
# full-width forms (０１０－１２３４) to ASCII before this is applied.
_SEPARATORS = re.compile(r"[\s\-.()/\u2010-\u2015\u2212]+")


def normalise(raw: str) -> str:
    """Return canonical national digits for a Korean number typed in any common form.

    Raises NumberError with code `empty`, `not_digits`, `international`, `too_short` or `too_long`.
    """
    if raw.isascii() and raw.isdigit():
        # Digits only (most of a bulk list): NFKC, the strip and the separators change nothing.
        plus, body = False, raw
    else:
        text = unicodedata.normalize("NFKC", raw).strip()
        if not text:
            raise NumberError("empty", "no number given")
        plus = text.startswith("+")
        body = _SEPARATORS.sub("", text[1:] if plus else text)
        if not body:
            raise NumberError("empty", "no digits given")
        # isdigit() accepts Arabic-Indic and other digits; only ASCII digits are phone digits.
        if not (body.isascii() and body.isdigit()):
            bad = next(ch for ch in body if not ("0" <= ch <= "9"))
            raise NumberError("not_digits", f"unexpected character {bad!r} in number")

    if plus:
        digits = _from_international(body)
    elif body.startswith("0082"):
        digits = _from_international(body[2:])
    elif body.startswith("00"):
        raise NumberError("international", "international numbers are not accepted")
    elif body.startswith("82") and len(body) >= 10:
        # No Korean national number starts with 8, so a long 82… is a country code typed
        # without its plus sign (`82 10 1234 5678`).
        digits = _from_international(body)
    else:
        digits = body

    if len(digits) < _MIN_DIGITS:
        raise NumberError("too_short", f"{len(digits)} digits is too short for a phone number")
    if len(digits) > _MAX_DIGITS:
        raise NumberError("too_long", f"{len(digits)} digits is too long for a Korean number")
    return digits


def _from_international(digits_after_plus: str) -> str:
    """Turn `82…` (country code first) into national digits, using phonenumbers to parse."""
    try:
        parsed = phonenumbers.parse("+" + digits_after_plus, None)
    except phonenumbers.NumberParseException as exc:
        raise NumberError("not_digits", f"not a phone number: {exc}") from exc
    if parsed.country_code != 82:
        raise NumberError(
            "international", f"country code +{parsed.country_code} is not Korea (+82)"
        )
    nsn = phonenumbers.national_significant_number(parsed)
    # Service numbers (15YY-YYYY, 112, 1331) are dialled without the trunk prefix 0;
    # everything else (010…, 02…, 070…) takes it back.
    if len(nsn) <= 4 or (len(nsn) == 8 and nsn[:2] in ("15", "16", "18")):
        return nsn
    return "0" + nsn


@dataclass(frozen=True, slots=True)
class NumberRule:
    """One row of a number policy table: numbers starting with `prefix` whose length is in
    `lengths` are of `kind` and are allowed or refused with `reason`.

    `prefix` is a regular expression matched at the start of the canonical digits. With
    `assigned_only`, phonenumbers must also know the number as valid (real area code, real
    mobile range), else it is refused as `invalid_number`.
    """

    prefix: str
    lengths: range
    kind: NumberKind
    allowed: bool
    reason: str
    explanation: str
    assigned_only: bool = False


_ANY = range(0, 100)

# The sender-number (발신번호) pre-registration rules, since 2015-10-16 (DESIGN.md section 6).
# The first row whose prefix and length both match decides; rows with `_ANY` length after a
# prefix's allowed rows catch that prefix's wrong lengths with a precise reason.
SENDER_POLICY: tuple[NumberRule, ...] = (
    NumberRule(r"1\d{2,3}$", range(3, 5), NumberKind.SPECIAL, False, "special_number",
               "short special numbers (112, 119, 114, 1331 …) are reserved to their owners"),
    NumberRule(r"010", range(10, 12), NumberKind.MOBILE, True, "ok",
               "mobile number", assigned_only=True),
    NumberRule(r"01[16-9]", range(10, 12), NumberKind.MOBILE, True, "ok",
               "legacy mobile number (011, 016–019)", assigned_only=True),
    NumberRule(r"01[016-9]", _ANY, NumberKind.MOBILE, False, "bad_length",
               "mobile numbers have 10 or 11 digits"),
    NumberRule(r"01[2-5]", _ANY, NumberKind.PAGER, False, "not_callable",
               "paging and data-service prefixes (012, 013, 014, 015) cannot be called back"),
    NumberRule(r"02", range(9, 11), NumberKind.FIXED_LINE, True, "ok",
               "Seoul landline with area code 02", assigned_only=True),
    NumberRule(r"0(?:3[1-3]|4[1-4]|5[1-5]|6[1-4])", range(10, 12), NumberKind.FIXED_LINE,
               True, "ok", "landline with its area code", assigned_only=True),
    NumberRule(r"0(?:2|3[1-3]|4[1-4]|5[1-5]|6[1-4])", _ANY, NumberKind.FIXED_LINE, False,
               "bad_length", "a landline with area code has 9 to 11 digits"),
    NumberRule(r"070", range(11, 12), NumberKind.VOIP, True, "ok",
               "internet telephone (VoIP) number", assigned_only=True),
    NumberRule(r"070", _ANY, NumberKind.VOIP, False, "bad_length",
               "070 numbers have 11 digits"),
    # Toll-free 080 is a subscribed, callable number (the callee pays), so it passes the
    # "must be callable back" test; a tenant still has to register it like any other number.
    NumberRule(r"080", range(10, 12), NumberKind.TOLL_FREE, True, "ok",
               "toll-free 080 number: callable back free of charge"),
    NumberRule(r"080", _ANY, NumberKind.TOLL_FREE, False, "bad_length",
               "080 numbers have 10 or 11 digits"),
    NumberRule(r"050", _ANY, NumberKind.PERSONAL, False, "personal_number",
               "050 personal numbers forward calls and hide the real line"),
    NumberRule(r"060", _ANY, NumberKind.PREMIUM, False, "premium_rate",
               "060 premium-rate numbers charge the caller who calls back"),
    NumberRule(r"1[568]\d\d", range(8, 9), NumberKind.UAN, True, "ok",
               "nationwide representative number 15YY/16YY/18YY-XXXX"),
    NumberRule(r"1[568]", _ANY, NumberKind.UAN, False, "bad_length",
               "15YY/16YY/18YY numbers have exactly 8 digits"),
    NumberRule(r"[1-9]", range(7, 9), NumberKind.LOCAL, False, "missing_area_code",
               "landline numbers must include the area code"),
    NumberRule(r"", range(0, 8), NumberKind.UNKNOWN, False, "too_short",
               "sender numbers have at least 8 digits"),
    NumberRule(r"", range(12, 100), NumberKind.UNKNOWN, False, "too_long",
               "sender numbers have at most 11 digits"),
    NumberRule(r"", _ANY, NumberKind.UNKNOWN, False, "invalid_number",
               "not a Korean number range"),
)

# Korean SMS/LMS/MMS go to mobile handsets only: landlines, 070 and service numbers cannot
# receive them. Kinds come from SENDER_POLICY (`classify`); this table only says who receives.
RECIPIENT_POLICY: tuple[NumberRule, ...] = (
    NumberRule(r"010", range(10, 12), NumberKind.MOBILE, True, "ok",
               "mobile number", assigned_only=True),
    NumberRule(r"01[16-9]", range(10, 12), NumberKind.MOBILE, True, "ok",
               "legacy mobile number (011, 016–019)", assigned_only=True),
    NumberRule(r"", _ANY, NumberKind.UNKNOWN, False, "not_mobile",
               "messages can only be sent to mobile numbers (010, 011, 016–019)"),
)

_COMPILED: dict[str, re.Pattern[str]] = {}

# No rule's prefix pattern reads more than this many digits (tests/unit/test_numbers.py checks
# every table), so a number's first PREFIX_DIGITS digits and its length decide its rule.
PREFIX_DIGITS = 4
_REMEMBERED = 4096  # (prefix digits, length) pairs kept per table; real traffic has a few dozen


@quick_init
@dataclass(frozen=True, slots=True)
class SenderCheck:
    """The verdict of a policy table on one number (canonical digits)."""

    number: str
    kind: NumberKind
    allowed: bool
    reason: str
    explanation: str


def rule_for(number: str, table: tuple[NumberRule, ...] = SENDER_POLICY) -> NumberRule:
    """The first row of `table` matching canonical digits `number` (tables end in a catch-all).

    The two tables here remember their answers by the number's first digits and length."""
    memo = _MEMOS.get(id(table))
    if memo is None:
        return _first_rule(number, table)
    key = (number[:PREFIX_DIGITS], len(number))
    rule = memo.get(key)
    if rule is None:
        rule = _first_rule(number, table)
        if len(memo) < _REMEMBERED:
            memo[key] = rule
    return rule


def _first_rule(number: str, table: tuple[NumberRule, ...]) -> NumberRule:
    for rule in table:
        pattern = _COMPILED.get(rule.prefix)
        if pattern is None:
            pattern = _COMPILED[rule.prefix] = re.compile(rule.prefix)
        if pattern.match(number) and len(number) in rule.lengths:
            return rule
    raise AssertionError("policy tables end with a catch-all row")


# By id: these two tables live as long as the module, so their ids are never reused.
_MEMOS: dict[int, dict[tuple[str, int], NumberRule]] = {
    id(SENDER_POLICY): {}, id(RECIPIENT_POLICY): {}}


def _assigned_pattern() -> re.Pattern[str]:
    # The same per-type patterns phonenumbers.is_valid_number() tries for KR, compiled once:
    # calling the library per number costs ~20 µs, a bulk list has 100,000 recipients.
    meta = phonenumbers.PhoneMetadata.metadata_for_region("KR")
    if meta is None:
        raise RuntimeError("phonenumbers has no metadata for KR")
    descs = (meta.fixed_line, meta.mobile, meta.voip, meta.toll_free, meta.premium_rate,
             meta.personal_number, meta.pager, meta.uan, meta.shared_cost, meta.voicemail)
    types = "|".join(
        f"(?:{d.national_number_pattern})" for d in descs
        if d is not None and d.national_number_pattern
    )
    if meta.general_desc is None or not meta.general_desc.national_number_pattern:
        raise RuntimeError("phonenumbers has no general KR number pattern")
    general = meta.general_desc.national_number_pattern
    return re.compile(f"(?=(?:{general})$)(?:{types})$")


_ASSIGNED = _assigned_pattern()


def _is_assigned(number: str) -> bool:
    """True if phonenumbers' KR metadata knows `number` (national digits) as a valid number."""
    return _ASSIGNED.match(number[1:] if number.startswith("0") else number) is not None


def _evaluate(number: str, table: tuple[NumberRule, ...]) -> SenderCheck:
    rule = rule_for(number, table)
    kind = rule.kind if table is SENDER_POLICY else rule_for(number, SENDER_POLICY).kind
    if rule.allowed and rule.assigned_only and not _is_assigned(number):
        return SenderCheck(number, kind, False, "invalid_number",
                           "not an assigned Korean number range")
    return SenderCheck(number, kind, rule.allowed, rule.reason, rule.explanation)


def classify(number: str) -> NumberKind:
    """Kind of canonical number `number` according to SENDER_POLICY."""
    return rule_for(number, SENDER_POLICY).kind


def check_sender(raw: str) -> SenderCheck:
    """Normalise `raw` and judge it as a sender (발신) number; raises NumberError if unparsable."""
    return _evaluate(normalise(raw), SENDER_POLICY)


def check_recipient(raw: str) -> SenderCheck:
    """Normalise `raw` and judge it as a message recipient; only mobiles are allowed."""
    return _evaluate(normalise(raw), RECIPIENT_POLICY)


def mask(number: str) -> str:
    """Star the middle of a number for logs, like the portals: `010****5678`, `02***4567`.

    Layouts: 11 digits 3-4-4, 10 digits 2-4-4 (02) or 3-3-4, 9 digits 2-3-4, 12 digits 4-4-4,
    8 digits (1588-1234) `****1234`; other lengths keep the last four digits; 4 or fewer
    digits (service numbers) are not personal and are returned unchanged. Input that is not
    canonical digits is starred entirely.
    """
    if not (number.isascii() and number.isdigit()):
        return "*" * len(number)
    n = len(number)
    if n <= 4:
        return number
    if n == 11:
        head = 3
    elif n == 10:
        head = 2 if number.startswith("02") else 3
    elif n == 9:
        head = 2
    elif n == 12:
        head = 4
    else:
        head = 0
    return number[:head] + "*" * (n - head - 4) + number[-4:]
