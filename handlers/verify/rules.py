"""The rules of verification codes, as pure decisions on an injected `now`.

Nothing here reads a clock or touches the database: `handlers/verify/service.py` loads the
rows, asks these functions, and stores what they decide. So every rule (expiry, single use,
lock-out, cooldown, caps) is tested on a fake clock.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from handlers.errors import DomainError


class Status(enum.Enum):
    """A verification's life: pending until approved, failed, canceled or expired."""

    PENDING = "pending"
    APPROVED = "approved"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Limits:
    """The configured limits (config section [verification])."""

    digits: int = 6
    ttl: timedelta = timedelta(minutes=5)
    max_failures: int = 5
    lock: timedelta = timedelta(minutes=10)
    resend_cooldown: timedelta = timedelta(seconds=30)
    sends_per_number: int = 5
    sends_window: timedelta = timedelta(minutes=10)
    tenant_sends_per_hour: int = 1000


@dataclass(frozen=True, slots=True)
class Verification:
    """The stored state of one verification that the rules look at."""

    id: uuid.UUID
    status: Status
    code_hash: bytes | None
    expires_at: datetime
    last_sent_at: datetime


@dataclass(frozen=True, slots=True)
class Subject:
    """Wrong codes so far for one (tenant, number), and a lock if five were reached."""

    failures: int = 0
    locked_until: datetime | None = None

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until


def new_code(digits: int) -> str:
    """A uniformly random code of `digits` decimal digits (leading zeros allowed)."""
    return f"{secrets.randbelow(10 ** digits):0{digits}d}"


def code_hash(key: bytes, verification_id: uuid.UUID, code: str) -> bytes:
    """The keyed hash stored instead of the code; bound to the verification's id."""
    return hmac.new(key, verification_id.bytes + code.encode(), hashlib.sha256).digest()


def _retry_after(until: datetime, now: datetime) -> int:
    """Whole seconds until `until`, at least 1 (the Retry-After value)."""
    return max(1, int((until - now).total_seconds() + 0.999))


def refuse_locked_subject(subject: Subject, now: datetime) -> None:
    """A subject locked by five wrong codes gets no new code and no check until it ends."""
    if subject.locked(now):
        assert subject.locked_until is not None
        raise DomainError("verification_locked",
                          "too many wrong codes for this number; try again later",
                          field="to", status=429,
                          retry_after=_retry_after(subject.locked_until, now))


def check_send_caps(number_sends: Sequence[datetime], tenant_sends_last_hour: int,
                    limits: Limits, now: datetime) -> None:
    """Refuse a send past the per-number cap (in `sends_window`) or the tenant's hourly cap.

    `number_sends` are the times codes were sent to this number within the window.
    """
    recent = sorted(t for t in number_sends if t > now - limits.sends_window)
    if len(recent) >= limits.sends_per_number:
        frees_at = recent[len(recent) - limits.sends_per_number] + limits.sends_window
        raise DomainError("verification_send_limit",
                          f"at most {limits.sends_per_number} codes per number in "
                          f"{int(limits.sends_window.total_seconds() // 60)} minutes",
                          field="to", status=429, retry_after=_retry_after(frees_at, now))
    if tenant_sends_last_hour >= limits.tenant_sends_per_hour:
        raise DomainError("verification_tenant_limit",
                          f"this account may send at most {limits.tenant_sends_per_hour} "
                          "verification codes per hour", status=429, retry_after=60)


def check_open(v: Verification, now: datetime) -> None:
    """Refuse any action on a verification that is no longer pending (or has just expired)."""
    if v.status is Status.PENDING and now >= v.expires_at:
        raise DomainError("verification_expired", "the code has expired; request a new one",
                          status=410)
    if v.status is Status.EXPIRED:
        raise DomainError("verification_expired", "the code has expired; request a new one",
                          status=410)
    if v.status is not Status.PENDING:
        raise DomainError("verification_closed",
                          f"this verification is {v.status.value}; start a new one",
                          status=409, extra={"status": v.status.value})


def check_resend(v: Verification, limits: Limits, now: datetime) -> None:
    """A resend waits out the cooldown since the last code went out."""
    check_open(v, now)
    ready_at = v.last_sent_at + limits.resend_cooldown
    if now < ready_at:
        raise DomainError("verification_resend_too_soon",
                          f"wait {int(limits.resend_cooldown.total_seconds())} s between codes",
                          status=429, retry_after=_retry_after(ready_at, now))


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a check decided: the verification's new status and the subject's new count."""

    status: Status
    subject: Subject
    attempts_left: int


def judge(v: Verification, subject: Subject, key: bytes, code: str, limits: Limits,
          now: datetime) -> CheckResult:
    """Compare `code` in constant time and decide; refusals before comparing raise."""
    refuse_locked_subject(subject, now)
    check_open(v, now)
    expected = v.code_hash or b""
    given = code_hash(key, v.id, code) if code.isdigit() and len(code) <= 10 else b""
    if v.code_hash is not None and hmac.compare_digest(expected, given):
        return CheckResult(Status.APPROVED, Subject(), limits.max_failures)
    failures = subject.failures + 1
    if failures >= limits.max_failures:
        return CheckResult(Status.FAILED, Subject(0, now + limits.lock), 0)
    return CheckResult(Status.PENDING, Subject(failures, None), limits.max_failures - failures)


def render(template: str, code: str, minutes: int) -> str:
    """The SMS text: `{code}` and `{minutes}` replaced (other braces left for compose)."""
    return template.replace("{code}", code).replace("{minutes}", str(minutes))
