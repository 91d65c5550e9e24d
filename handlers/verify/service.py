"""Verification codes end to end: load the rows, ask `rules`, store the decision and queue the
SMS in the verification lane — one transaction per request.

The code exists in clear text only in the queued SMS (the recipient row's rendered text); the
verification keeps its keyed hash. When a verification closes (approved, failed, canceled,
superseded by a resend) the rendered texts of its messages are erased and a code not yet
handed to a carrier is withdrawn.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from config.schema import VerificationConfig
from handlers.audit import PendingEntry
from handlers.errors import DomainError
from handlers.messages.accept import LANE_VERIFICATION, PolicyCache, prepare
from handlers.messages.wake import DispatchWake
from handlers.outage import LoopTracker, PeriodicSweep
from handlers.registry.index import NumberIndex
from handlers.tenants import Principal
from handlers.verify import rules
from handlers.verify.rules import Limits, Status, Subject, Verification
from handlers.webhooks import emit

log = structlog.get_logger("telgate.verify")

MAX_PURPOSE = 40


def limits_of(config: VerificationConfig) -> Limits:
    """The rules' limits from the configuration section."""
    return Limits(
        digits=config.digits, ttl=timedelta(seconds=config.ttl_seconds),
        max_failures=config.max_failures, lock=timedelta(seconds=config.lock_seconds),
        resend_cooldown=timedelta(seconds=config.resend_cooldown_seconds),
        sends_per_number=config.sends_per_number,
        sends_window=timedelta(seconds=config.sends_window_seconds),
        tenant_sends_per_hour=config.tenant_sends_per_hour)


async def server_key(conn: asyncpg.Connection, name: str = "verification") -> bytes:
    """The database's key `name`, made on first use (every instance then reads the same)."""
    key: bytes | None = await conn.fetchval("SELECT key FROM server_keys WHERE name = $1", name)
    if key is None:
        await conn.execute(
            "INSERT INTO server_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            name, secrets.token_bytes(32))
        key = await conn.fetchval("SELECT key FROM server_keys WHERE name = $1", name)
    assert key is not None
    return bytes(key)


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A validated `POST /v1/verifications` body."""

    to: object
    sender: object
    template_id: uuid.UUID | None = None
    purpose: str = "login"


class Verifier:
    """The verification capability of one daemon; callers pass `now` (tests pass a fake one)."""

    def __init__(self, config: VerificationConfig, index: NumberIndex,
                 policies: PolicyCache | None = None, wake: DispatchWake | None = None) -> None:
        self.config = config
        self.limits = limits_of(config)
        self.index = index
        self.policies = policies  # the tenants' composition settings, cached by the API
        self.wake = wake if wake is not None else DispatchWake()  # NOTIFY without a dispatcher
        self._key: bytes | None = None

    async def _hash_key(self, conn: asyncpg.Connection) -> bytes:
        if self._key is None:
            self._key = await server_key(conn)
        return self._key

    # -- commands ---------------------------------------------------------------------------

    async def start(self, conn: asyncpg.Connection, who: Principal, req: StartRequest,
                    now: datetime, audit: PendingEntry | None = None) -> dict[str, object]:
        """Send a new code; an open verification of the same number and purpose is superseded.

        Four round trips (the tenant's settings cached): the message is composed first, then in
        one transaction one statement locks the number and reads its lock, its recent codes and
        the hash key, and one writes everything (supersede, withdraw, message, recipient,
        verification, send, `audit` entry, NOTIFY without a local dispatcher). The audit entry
        saves the API a transaction (and a WAL flush) of its own per code.
        """
        if not 1 <= len(req.purpose) <= MAX_PURPOSE:
            raise DomainError("invalid_field", f"purpose must be 1-{MAX_PURPOSE} characters",
                              field="purpose")
        vid, message_id = uuid.uuid4(), uuid.uuid4()
        code = rules.new_code(self.limits.digits)
        text = await self._template_text(conn, who, req.template_id)
        prepared = await self._prepare(conn, who, req.sender, req.to, text, code, now)
        number = prepared.recipients[0].number
        expires_at = now + self.limits.ttl
        async with conn.transaction():
            state = await conn.fetchrow(
                """WITH s AS (
                       INSERT INTO verification_subjects AS vs (tenant_id, number) VALUES ($1, $2)
                       ON CONFLICT (tenant_id, number) DO UPDATE SET failures = vs.failures
                       RETURNING failures, locked_until)
                   SELECT s.failures, s.locked_until,
                          ARRAY(SELECT sent_at FROM verification_sends
                                WHERE tenant_id = $1 AND number = $2 AND sent_at > $3) AS sends,
                          (SELECT count(*) FROM verification_sends
                           WHERE tenant_id = $1 AND sent_at > $4) AS tenant_hour,
                          (SELECT key FROM server_keys WHERE name = 'verification') AS key
                   FROM s""",
                who.tenant_id, number, now - self.limits.sends_window, now - timedelta(hours=1))
            assert state is not None
            rules.refuse_locked_subject(Subject(state["failures"], state["locked_until"]), now)
            rules.check_send_caps(list(state["sends"]), state["tenant_hour"], self.limits, now)
            key = bytes(state["key"]) if state["key"] is not None else await server_key(conn)
            composed = prepared.composed
            await conn.execute(
                """WITH sup AS (
                       UPDATE verifications SET status = 'canceled', reason = 'superseded',
                              code_hash = NULL, closed_at = $7
                       WHERE tenant_id = $1 AND number = $2 AND purpose = $3 AND status = 'pending'
                       RETURNING id
                   ), withdrawn AS (
                       UPDATE recipients r SET
                           state = CASE WHEN r.state = 'queued' THEN 'canceled' ELSE r.state END,
                           reason = CASE WHEN r.state = 'queued' THEN 'code_withdrawn'
                                         ELSE r.reason END,
                           text = CASE WHEN r.state = 'claimed' THEN r.text ELSE NULL END
                       FROM messages m
                       WHERE m.verification_id IN (SELECT id FROM sup) AND r.message_id = m.id
                         AND (r.text IS NOT NULL OR r.state = 'queued')
                   ), msg AS (
                       INSERT INTO messages (id, tenant_id, sp_id, sender, type, subject, text,
                                             send_at, recipient_count, verification_id)
                       VALUES ($5, $1, $6, $8, $9, $10, $11, $7, 1, $4)
                   ), rcp AS (
                       INSERT INTO recipients (message_id, idx, tenant_id, number, text, state,
                                               next_attempt_at, lane)
                       VALUES ($5, 0, $1, $2, $12, 'queued', $7, $13)
                   ), ver AS (
                       INSERT INTO verifications (id, tenant_id, sp_id, number, sender, purpose,
                                                  status, code_hash, expires_at, last_sent_at,
                                                  message_id, created_at)
                       VALUES ($4, $1, $6, $2, $8, $3, 'pending', $14, $15, $7, $5, $7)
                   ), snd AS (
                       INSERT INTO verification_sends (tenant_id, number, sent_at)
                       VALUES ($1, $2, $7)
                   ), aud AS (
                       INSERT INTO audit_log (tenant_id, actor, action, subject, details,
                                              key_id, key_label, address)
                       SELECT $1, $17, $18, $19, $20::jsonb, $21, $22, $23::inet
                       WHERE $18::text IS NOT NULL
                   )
                   SELECT pg_notify($16, '') WHERE $16::text IS NOT NULL""",
                who.tenant_id, number, req.purpose, vid, message_id, who.sp_id, now,
                prepared.sender, composed.type.value, composed.subject, composed.template,
                composed.texts[0], LANE_VERIFICATION, rules.code_hash(key, vid, code),
                expires_at, self.wake.channel,
                *(_audit_values(audit, vid) if audit else (None,) * 7))
        self.wake.committed()
        log.info("verification_sent", verification_id=str(vid), sends=1)
        return {"id": str(vid), "status": Status.PENDING.value, "to": number,
                "expires_at": expires_at.isoformat(), "message_id": str(message_id)}

    async def resend(self, conn: asyncpg.Connection, who: Principal, vid: uuid.UUID,
                     now: datetime) -> dict[str, object]:
        """A new code for the same verification; the previous code stops working at once."""
        key = await self._hash_key(conn)
        code = rules.new_code(self.limits.digits)
        async with conn.transaction():
            row = await self._row(conn, who, vid, for_update=True)
            v = _verification(row)
            rules.check_resend(v, self.limits, now)
            number = row["number"]
            await self._lock_subject_row(conn, who.tenant_id, number)
            rules.refuse_locked_subject(await self._subject(conn, who.tenant_id, number), now)
            await self._check_caps(conn, who.tenant_id, number, now)
            text = await self._template_text(conn, who, None)
            prepared = await self._prepare(conn, who, row["sender"], number, text, code, now)
            await self._withdraw_code(conn, vid)
            message_id = await self._queue_sms(conn, who, vid, prepared, now)
            expires_at = now + self.limits.ttl
            await conn.execute(
                """UPDATE verifications SET code_hash = $2, expires_at = $3, last_sent_at = $4,
                          sends = sends + 1, message_id = $5 WHERE id = $1""",
                vid, rules.code_hash(key, vid, code), expires_at, now, message_id)
            await self._record_send(conn, who.tenant_id, number, now)
        self.wake.committed()
        log.info("verification_sent", verification_id=str(vid), sends=row["sends"] + 1)
        return {"id": str(vid), "status": Status.PENDING.value, "to": number,
                "expires_at": expires_at.isoformat(), "message_id": str(message_id)}

    async def check(self, conn: asyncpg.Connection, who: Principal, vid: uuid.UUID, code: str,
                    now: datetime) -> dict[str, object]:
        """Approve on the right code; a wrong one counts toward the number's lock-out.

        Refusals are stored before they are raised (the transaction commits the count).
        """
        key = await self._hash_key(conn)
        refusal: DomainError | None = None
        async with conn.transaction():
            row = await self._row(conn, who, vid, for_update=True)
            number = row["number"]
            await self._lock_subject_row(conn, who.tenant_id, number)
            subject = await self._subject(conn, who.tenant_id, number)
            v = _verification(row)
            try:
                result = rules.judge(v, subject, key, code, self.limits, now)
            except DomainError as exc:
                if exc.code == "verification_expired" and v.status is Status.PENDING:
                    await self._close(conn, who, vid, Status.EXPIRED, "expired", now)
                    refusal = exc
                else:
                    raise
            else:
                await conn.execute(
                    """INSERT INTO verification_subjects (tenant_id, number, failures, locked_until)
                       VALUES ($1, $2, $3, $4)
                       ON CONFLICT (tenant_id, number)
                       DO UPDATE SET failures = $3, locked_until = $4""",
                    who.tenant_id, number, result.subject.failures, result.subject.locked_until)
                if result.status is Status.APPROVED:
                    await self._close(conn, who, vid, Status.APPROVED, None, now)
                elif result.status is Status.FAILED:
                    await self._fail_open_verifications(conn, who, number, now)
                    assert result.subject.locked_until is not None
                    refusal = DomainError(
                        "verification_locked",
                        f"{self.limits.max_failures} wrong codes: this number is locked for "
                        f"{int(self.limits.lock.total_seconds() // 60)} minutes",
                        field="code", status=429,
                        retry_after=int(self.limits.lock.total_seconds()))
                else:
                    refusal = DomainError(
                        "verification_code_mismatch", "the code is not right", field="code",
                        extra={"attempts_left": result.attempts_left})
        if refusal is not None:
            log.info("verification_check_refused", verification_id=str(vid), code=refusal.code)
            raise refusal
        log.info("verification_approved", verification_id=str(vid))
        return {"id": str(vid), "status": Status.APPROVED.value, "approved_at": now.isoformat()}

    async def cancel(self, conn: asyncpg.Connection, who: Principal, vid: uuid.UUID,
                     now: datetime) -> dict[str, object]:
        """Close an open verification; its code stops working and is withdrawn if unsent."""
        async with conn.transaction():
            row = await self._row(conn, who, vid, for_update=True)
            rules.check_open(_verification(row), now)
            await self._close(conn, who, vid, Status.CANCELED, "canceled", now)
        return {"id": str(vid), "status": Status.CANCELED.value}

    async def get(self, conn: asyncpg.Connection, who: Principal, vid: uuid.UUID,
                  now: datetime) -> dict[str, object]:
        """A verification as the API shows it (never its code or hash)."""
        row = await self._row(conn, who, vid, for_update=False)
        status = row["status"]
        if status == Status.PENDING.value and now >= row["expires_at"]:
            status = Status.EXPIRED.value
        return {"id": str(row["id"]), "to": row["number"], "from": row["sender"],
                "purpose": row["purpose"], "status": status, "reason": row["reason"],
                "sends": row["sends"], "expires_at": row["expires_at"].isoformat(),
                "created_at": row["created_at"].isoformat(),
                "closed_at": row["closed_at"].isoformat() if row["closed_at"] else None}

    async def sweep(self, conn: asyncpg.Connection, now: datetime) -> int:
        """Close verifications past their expiry and erase their codes; returns how many."""
        rows = await conn.fetch(
            """SELECT id, tenant_id FROM verifications
               WHERE status = 'pending' AND expires_at <= $1 LIMIT 1000""", now)
        for row in rows:
            async with conn.transaction():
                await conn.execute(
                    """UPDATE verifications SET status = 'expired', reason = 'expired',
                              code_hash = NULL, closed_at = $2
                       WHERE id = $1 AND status = 'pending'""", row["id"], now)
                await self._withdraw_code(conn, row["id"])
        # Codes that were on the wire when their verification closed: erased once stored.
        await conn.execute(
            """UPDATE recipients r SET text = NULL
               FROM messages m JOIN verifications v ON v.id = m.verification_id
               WHERE r.message_id = m.id AND v.status <> 'pending' AND r.text IS NOT NULL
                 AND r.state NOT IN ('queued', 'claimed')""")
        await conn.execute(
            "DELETE FROM verification_sends WHERE sent_at < $1",
            now - max(self.limits.sends_window, timedelta(hours=1)))
        return len(rows)

    # -- pieces -----------------------------------------------------------------------------

    async def _template_text(self, conn: asyncpg.Connection, who: Principal,
                             template_id: uuid.UUID | None) -> str:
        if template_id is None:
            return self.config.template
        text: str | None = await conn.fetchval(
            "SELECT text FROM templates WHERE tenant_id = $1 AND id = $2",
            who.tenant_id, template_id)
        if text is None:
            raise DomainError("template_not_found", "no such template", field="template")
        if "{code}" not in text:
            raise DomainError("template_without_code",
                              "a verification template must contain {code}", field="template")
        return text

    async def _prepare(self, conn: asyncpg.Connection, who: Principal, sender: object,
                       to: object, text: str, code: str, now: datetime) -> Any:
        minutes = max(1, int(self.limits.ttl.total_seconds() // 60))
        if not isinstance(to, str):
            raise DomainError("invalid_number", "to must be one phone number", field="to")
        body = {"from": sender, "to": [{"number": to, "vars": {"code": code,
                                                               "minutes": str(minutes)}}],
                "text": text}
        try:
            prepared = await prepare(conn, who, body, self.index, now, has_mms_route=False,
                                     policies=self.policies)
        except DomainError as exc:
            if exc.field and exc.field.startswith("to["):
                exc.field = "to"
            raise
        if prepared.rejected:
            raise DomainError("opted_out", "this number asked to receive no messages", field="to")
        return prepared

    async def _queue_sms(self, conn: asyncpg.Connection, who: Principal, vid: uuid.UUID,
                         prepared: Any, now: datetime) -> uuid.UUID:
        """The SMS in the verification lane: the message keeps the template, only the queued
        recipient row holds the rendered code."""
        message_id = uuid.uuid4()
        composed = prepared.composed
        await conn.execute(
            """INSERT INTO messages (id, tenant_id, sp_id, sender, type, subject, text, send_at,
                                     recipient_count, verification_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9)""",
            message_id, who.tenant_id, who.sp_id, prepared.sender, composed.type.value,
            composed.subject, composed.template, now, vid)
        await conn.execute(
            """INSERT INTO recipients (message_id, idx, tenant_id, number, text, state,
                                       next_attempt_at, lane)
               VALUES ($1, 0, $2, $3, $4, 'queued', $5, $6)""",
            message_id, who.tenant_id, prepared.recipients[0].number, composed.texts[0], now,
            LANE_VERIFICATION)
        if self.wake.channel is not None:
            await conn.execute("SELECT pg_notify($1, '')", self.wake.channel)
        return message_id

    async def _withdraw_code(self, conn: asyncpg.Connection, vid: uuid.UUID) -> None:
        """Erase the rendered code of every message of `vid`; cancel what is still queued."""
        await conn.execute(
            """UPDATE recipients r SET
                   state = CASE WHEN r.state = 'queued' THEN 'canceled' ELSE r.state END,
                   reason = CASE WHEN r.state = 'queued' THEN 'code_withdrawn' ELSE r.reason END,
                   text = CASE WHEN r.state = 'claimed' THEN r.text ELSE NULL END
               FROM messages m
               WHERE m.verification_id = $1 AND r.message_id = m.id
                 AND (r.text IS NOT NULL OR r.state = 'queued')""", vid)

    async def _close(self, conn: asyncpg.Connection, who: Principal, vid: uuid.UUID,
                     status: Status, reason: str | None, now: datetime) -> None:
        await conn.execute(
            """UPDATE verifications SET status = $2, reason = $3, code_hash = NULL, closed_at = $4
               WHERE id = $1""", vid, status.value, reason, now)
        await self._withdraw_code(conn, vid)
        if status is Status.APPROVED:
            await emit(conn, who.tenant_id, "verification.approved", {"verification_id": str(vid)})
        elif status in (Status.FAILED, Status.EXPIRED):
            await emit(conn, who.tenant_id, "verification.failed",
                       {"verification_id": str(vid), "reason": reason or status.value})

    async def _fail_open_verifications(self, conn: asyncpg.Connection, who: Principal,
                                       number: str, now: datetime) -> None:
        rows = await conn.fetch(
            """SELECT id FROM verifications
               WHERE tenant_id = $1 AND number = $2 AND status = 'pending'""",
            who.tenant_id, number)
        for row in rows:
            await self._close(conn, who, row["id"], Status.FAILED, "too_many_failures", now)

    async def _row(self, conn: asyncpg.Connection, who: Principal, vid: uuid.UUID, *,
                   for_update: bool) -> asyncpg.Record:
        row = await conn.fetchrow(
            "SELECT * FROM verifications WHERE id = $1 AND tenant_id = $2"
            + (" FOR UPDATE" if for_update else ""), vid, who.tenant_id)
        if row is None or (who.sp_id is not None and row["sp_id"] != who.sp_id):
            raise DomainError("not_found", "no such verification", status=404)
        return row

    async def _lock_subject_row(self, conn: asyncpg.Connection, tenant_id: uuid.UUID,
                                number: str) -> None:
        """Serialise checks and sends of one number (two concurrent wrong codes both count)."""
        await conn.execute(
            """INSERT INTO verification_subjects (tenant_id, number) VALUES ($1, $2)
               ON CONFLICT (tenant_id, number) DO NOTHING""", tenant_id, number)
        await conn.execute(
            "SELECT 1 FROM verification_subjects WHERE tenant_id = $1 AND number = $2 FOR UPDATE",
            tenant_id, number)

    async def _subject(self, conn: asyncpg.Connection, tenant_id: uuid.UUID,
                       number: str) -> Subject:
        row = await conn.fetchrow(
            """SELECT failures, locked_until FROM verification_subjects
               WHERE tenant_id = $1 AND number = $2""", tenant_id, number)
        if row is None:
            return Subject()
        return Subject(row["failures"], row["locked_until"])

    async def _check_caps(self, conn: asyncpg.Connection, tenant_id: uuid.UUID, number: str,
                          now: datetime) -> None:
        sends = await conn.fetch(
            """SELECT sent_at FROM verification_sends
               WHERE tenant_id = $1 AND number = $2 AND sent_at > $3""",
            tenant_id, number, now - self.limits.sends_window)
        tenant_hour = await conn.fetchval(
            "SELECT count(*) FROM verification_sends WHERE tenant_id = $1 AND sent_at > $2",
            tenant_id, now - timedelta(hours=1))
        rules.check_send_caps([r["sent_at"] for r in sends], tenant_hour, self.limits, now)

    async def _record_send(self, conn: asyncpg.Connection, tenant_id: uuid.UUID, number: str,
                           now: datetime) -> None:
        await conn.execute(
            "INSERT INTO verification_sends (tenant_id, number, sent_at) VALUES ($1, $2, $3)",
            tenant_id, number, now)


def _verification(row: asyncpg.Record) -> Verification:
    return Verification(row["id"], Status(row["status"]),
                        None if row["code_hash"] is None else bytes(row["code_hash"]),
                        row["expires_at"], row["last_sent_at"])


class Sweeper(PeriodicSweep):
    """Expires old verifications and erases codes that were on the wire when theirs closed,
    every `every` seconds; survives database errors with the loops' back-off."""

    task_name = "verification-sweeper"
    done_event = "verifications_expired"
    failed_event = "verification_sweep_failed"

    def __init__(self, verifier: Verifier, pool: asyncpg.Pool, tracker: LoopTracker,
                 every: float = 30.0) -> None:
        super().__init__(tracker, every)
        self.verifier = verifier
        self.pool = pool

    async def sweep_once(self) -> int:
        """One round: the verifications expired."""
        async with self.pool.acquire() as conn:
            expired: int = await self.verifier.sweep(conn, datetime.now(UTC))
        return expired


def _audit_values(e: PendingEntry, vid: uuid.UUID) -> tuple[object, ...]:
    """`e` as the start statement's audit parameters; the details name the verification."""
    return (e.actor, e.action, e.subject, {**e.details, "verification_id": str(vid)},
            e.key_id, e.key_label, e.address)
