"""The verification rules on a fake clock: expiry, single use, lock-out, cooldown and caps."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from handlers.errors import DomainError
from handlers.verify import rules
from handlers.verify.rules import Limits, Status, Subject, Verification

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
KEY = b"k" * 32
LIMITS = Limits()


def pending(code: str = "123456", sent: datetime = T0) -> Verification:
    vid = uuid.UUID(int=7)
    return Verification(vid, Status.PENDING, rules.code_hash(KEY, vid, code),
                        sent + LIMITS.ttl, sent)


def refusal(call: object, *args: object) -> DomainError:
    with pytest.raises(DomainError) as info:
        call(*args)  # type: ignore[operator]
    return info.value


def test_codes_have_the_configured_digits_and_vary() -> None:
    codes = {rules.new_code(6) for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(codes) > 190
    assert all(len(rules.new_code(d)) == d for d in (4, 8, 10))


def test_the_hash_is_keyed_and_bound_to_the_verification() -> None:
    a, b = uuid.UUID(int=1), uuid.UUID(int=2)
    assert rules.code_hash(KEY, a, "123456") != rules.code_hash(KEY, b, "123456")
    assert rules.code_hash(KEY, a, "123456") != rules.code_hash(b"x" * 32, a, "123456")
    assert b"123456" not in rules.code_hash(KEY, a, "123456")


def test_right_code_approves_and_clears_the_failure_count() -> None:
    result = rules.judge(pending(), Subject(failures=3), KEY, "123456", LIMITS, T0)
    assert result.status is Status.APPROVED and result.subject == Subject()


def test_wrong_codes_count_down_then_lock_for_ten_minutes() -> None:
    subject = Subject()
    for left in (4, 3, 2, 1):
        result = rules.judge(pending(), subject, KEY, "000000", LIMITS, T0)
        assert result.status is Status.PENDING and result.attempts_left == left
        subject = result.subject
    result = rules.judge(pending(), subject, KEY, "000000", LIMITS, T0)
    assert result.status is Status.FAILED
    assert result.subject.locked_until == T0 + timedelta(minutes=10)
    # While locked even the right code is refused, with Retry-After.
    err = refusal(rules.judge, pending(), result.subject, KEY, "123456", LIMITS,
                  T0 + timedelta(minutes=9))
    assert err.code == "verification_locked" and err.status == 429 and err.retry_after == 60
    # Ten minutes later the number may be verified again.
    fresh = pending(sent=T0 + timedelta(minutes=10))
    ok = rules.judge(fresh, result.subject, KEY, "123456", LIMITS, T0 + timedelta(minutes=10))
    assert ok.status is Status.APPROVED


def test_a_code_expires_after_five_minutes() -> None:
    v = pending()
    assert rules.judge(v, Subject(), KEY, "123456", LIMITS,
                       T0 + timedelta(minutes=4, seconds=59)).status is Status.APPROVED
    err = refusal(rules.judge, v, Subject(), KEY, "123456", LIMITS, T0 + timedelta(minutes=5))
    assert err.code == "verification_expired" and err.status == 410


def test_a_closed_verification_cannot_be_checked_again() -> None:
    v = pending()
    for status in (Status.APPROVED, Status.CANCELED, Status.FAILED):
        closed = Verification(v.id, status, None, v.expires_at, v.last_sent_at)
        err = refusal(rules.judge, closed, Subject(), KEY, "123456", LIMITS, T0)
        assert err.code == "verification_closed" and err.status == 409


def test_malformed_codes_are_simply_wrong() -> None:
    for code in ("", "12345a", "1" * 11, "１２３４５６"):
        assert rules.judge(pending(), Subject(), KEY, code, LIMITS, T0).status is Status.PENDING


def test_resend_waits_out_the_cooldown() -> None:
    err = refusal(rules.check_resend, pending(), LIMITS, T0 + timedelta(seconds=10))
    assert err.code == "verification_resend_too_soon" and err.retry_after == 20
    rules.check_resend(pending(), LIMITS, T0 + timedelta(seconds=30))


def test_five_codes_per_number_in_ten_minutes() -> None:
    sends = [T0 + timedelta(minutes=m) for m in (0, 1, 2, 3, 4)]
    err = refusal(rules.check_send_caps, sends, 5, LIMITS, T0 + timedelta(minutes=5))
    assert err.code == "verification_send_limit" and err.status == 429
    assert err.retry_after == 300  # the first send leaves the window at minute 10
    rules.check_send_caps(sends, 5, LIMITS, T0 + timedelta(minutes=10, seconds=1))


def test_the_tenant_hourly_cap() -> None:
    err = refusal(rules.check_send_caps, [], LIMITS.tenant_sends_per_hour, LIMITS, T0)
    assert err.code == "verification_tenant_limit" and err.retry_after is not None


def test_render_fills_code_and_minutes() -> None:
    assert rules.render("[인증] {code} ({minutes}분)", "012345", 5) == "[인증] 012345 (5분)"
