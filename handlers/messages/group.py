"""Group commit of small sends: concurrent single sends written by one statement.

A small send alone costs a statement of its own (`accept.store_at_once`). Under load the
statements, not the work in them, become the cost: each is a round trip and a commit. Here the
sends that arrive while a statement is in flight wait for the next one and are written together:
their messages, recipients, `message.accepted` events, audit entries and the charge against
each tenant's daily recipient budget; the dispatcher is woken once the statement has committed
(handlers/messages/wake). Every request is answered only after the commit of the statement
that wrote it, so no 202 is given for a send that is not stored, and a failed statement fails
every request in it (nothing half-written).

The daily budget is charged per tenant and day for the whole group; a tenant whose group would
pass it gets nothing written, and its sends are written again one by one, so each is refused
or accepted exactly as it would be alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from handlers.api.ratelimit import RateLimiter, korean_day
from handlers.audit import PendingEntry
from handlers.messages.accept import (
    SMALL_SEND,
    Prepared,
    accepted_event,
    accepted_json,
    recipient_rows,
)
from handlers.messages.wake import DispatchWake
from handlers.tenants import Principal

MAX_GROUP = 256  # sends per statement
# Statements in flight at once. One: the sends that arrive while it runs make the next group.
# With two, sends 1 ms apart went out one a statement each, every one a commit of its own (at
# 1,000 sends/s: PostgreSQL 493-510 µs a send with two, 417-425 with one).
WRITERS = 1
# Under heavy load a statement also waits this long for more sends before it is written. At
# 1,000 sends/s without it a statement carried 1.5 sends on average and cost PostgreSQL 262 µs
# (pg_stat_statements); waiting 1 ms took PostgreSQL 405 → 290 µs and the daemon 740 → 630 µs
# a send. At 500 sends/s it saved nothing and doubled the median answer (2 → 4.5 ms), hence
# only from LINGER_FROM_RATE on.
LINGER_SECONDS = 0.001
LINGER_FROM_RATE = 800.0  # sends a second, as `ArrivalRate` measures them
RATE_WINDOW_SECONDS = 0.1


class ArrivalRate:
    """Sends a second over the last complete window of `RATE_WINDOW_SECONDS` (0 after a
    window with none, or before the first); `now` is the caller's clock."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window
        self.rate = 0.0
        self._start: float | None = None
        self._count = 0

    def add(self, now: float) -> None:
        if self._start is None:
            self._start = now
        elapsed = now - self._start
        if elapsed >= self.window:
            # An idle stretch longer than a window leaves a low rate, as it should.
            self.rate = self._count / elapsed
            self._start, self._count = now, 0
        self._count += 1


@dataclass(slots=True)
class GroupedSend:
    """One accepted request waiting for its statement."""

    who: Principal
    prepared: Prepared
    message_id: uuid.UUID
    day: datetime  # the Korean day its recipients are charged to
    daily_limit: int | None  # None: no daily budget is charged
    audit: PendingEntry | None
    done: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop()
                                       .create_future())
    alone: bool = False  # written in a statement of its own (its tenant's group was refused)


class SendGroup:
    """Writes small sends in groups; `write` returns once the send is committed."""

    def __init__(self, pool: asyncpg.Pool, *, max_group: int = MAX_GROUP,
                 writers: int = WRITERS, wake: DispatchWake | None = None,
                 linger: float = LINGER_SECONDS, linger_from_rate: float = LINGER_FROM_RATE
                 ) -> None:
        self.pool = pool
        self.wake = wake if wake is not None else DispatchWake()
        self.max_group = max_group
        self.linger = linger
        self.linger_from_rate = linger_from_rate
        self.arrivals = ArrivalRate()
        self._pending: list[GroupedSend] = []
        self._alone: list[GroupedSend] = []
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(writers)
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self.statements = 0  # written so far (tests and the benchmark read it)

    async def write(self, send: GroupedSend) -> bool:
        """Queue `send` and wait for its commit: True when written, False when the tenant's
        daily budget refused it. Database errors of its statement are raised."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="send-group")
        self._pending.append(send)
        self.arrivals.add(asyncio.get_running_loop().time())
        self._wake.set()
        return await asyncio.shield(send.done)

    async def stop(self) -> None:
        """Finish the statements in flight (requests wait on them), then stop."""
        if self._writes:
            await asyncio.wait(set(self._writes))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending or self._alone:
                await self._slots.acquire()
                if (self.arrivals.rate >= self.linger_from_rate
                        and len(self._pending) < self.max_group and not self._alone):
                    await asyncio.sleep(self.linger)
                # Taken only now: whatever arrived while the writers were busy goes together.
                group = self._take()
                task = asyncio.create_task(self._write(group))
                self._writes.add(task)
                task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        self._slots.release()

    def _take(self) -> list[GroupedSend]:
        if self._alone:
            return [self._alone.pop(0)]
        group, self._pending = self._pending[:self.max_group], self._pending[self.max_group:]
        return group

    async def _write(self, group: list[GroupedSend]) -> None:
        try:
            async with self.pool.acquire() as conn:
                written = await write_group(conn, group, notify=self.wake.channel)
            self.statements += 1
            if written:
                self.wake.committed()
        except BaseException as exc:
            for send in group:
                if not send.done.done():
                    send.done.set_exception(exc if isinstance(exc, Exception)
                                            else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
            return
        refused: dict[uuid.UUID, list[GroupedSend]] = {}
        for send in group:
            if send.message_id in written:
                send.done.set_result(True)
            else:
                refused.setdefault(send.who.tenant_id, []).append(send)
        for sends in refused.values():
            if len(sends) == 1 and (sends[0].alone or len(group) == 1):
                sends[0].done.set_result(False)
                continue
            # Together they would pass the budget; one by one some may still fit.
            for send in sends:
                send.alone = True
                self._alone.append(send)
            self._wake.set()


def groupable(p: Prepared) -> bool:
    """Small sends without images: those `accept.store_at_once` would write alone."""
    return len(p.recipients) <= SMALL_SEND and not p.images


async def accept_grouped(group: SendGroup, who: Principal, p: Prepared, now: datetime, *,
                         limiter: RateLimiter | None,
                         audit: PendingEntry | None) -> dict[str, object]:
    """Charge, write (with the next group) and answer a prepared small send; raises
    `RateLimited` when a budget refuses it."""
    limits = None if limiter is None else await limiter.take_recipients(who, len(p.recipients))
    message_id = uuid.uuid4()
    send = GroupedSend(who, p, message_id, korean_day(now),
                       None if limits is None else limits.daily_recipients, audit)
    if not await group.write(send):
        assert limiter is not None and limits is not None
        raise limiter.daily_refusal(who, len(p.recipients), limits, now)
    return accepted_json(message_id, p, now)


async def write_group(conn: asyncpg.Connection, group: list[GroupedSend], *,
                      notify: str | None) -> set[uuid.UUID]:
    """One statement for the whole group; returns the ids of the messages written. It
    notifies the dispatchers on `notify` unless that is None (`wake.DispatchWake`)."""
    m: dict[str, list[Any]] = {k: [] for k in (
        "id", "tenant", "sp", "sender", "type", "subject", "text", "ad", "test", "template",
        "send_at", "count", "event", "day", "limit")}
    r: dict[str, list[Any]] = {k: [] for k in (
        "message", "idx", "number", "name", "text", "state", "reason")}
    a: dict[str, list[Any]] = {k: [] for k in (
        "message", "actor", "action", "subject", "details", "key", "label", "address")}
    for s in group:
        p = s.prepared
        text, rows = recipient_rows(p)
        for col, value in zip(m, (
                s.message_id, s.who.tenant_id, s.who.sp_id, p.sender, p.composed.type.value,
                p.composed.subject, text, p.ad, p.test, p.template_id, p.send_at,
                len(p.recipients), json.dumps(accepted_event(s.message_id, p)), s.day,
                s.daily_limit), strict=True):
            m[col].append(value)
        for idx, number, name, rtext, state, reason in rows:
            for col, value in zip(r, (s.message_id, idx, number, name, rtext, state, reason),
                                  strict=True):
                r[col].append(value)
        if s.audit is not None:
            e = s.audit
            for col, value in zip(a, (s.message_id, e.actor, e.action, e.subject,
                                      json.dumps(e.details), e.key_id, e.key_label, e.address),
                                  strict=True):
                a[col].append(value)
    row = await conn.fetchrow(
        """WITH s AS (
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                    $6::text[], $7::text[], $8::bool[], $9::bool[], $10::uuid[],
                                    $11::timestamptz[], $12::int[], $13::text[],
                                    $14::timestamptz[], $15::bigint[])
                   AS s(id, tenant_id, sp_id, sender, type, subject, text, ad, test,
                        template_id, send_at, n, event, day, lim)
           ), want AS (
               SELECT tenant_id, day, sum(n)::bigint AS n, min(lim) AS lim
               FROM s WHERE lim IS NOT NULL GROUP BY tenant_id, day
           ), charged AS (
               INSERT INTO rate_usage AS u (tenant_id, budget, window_start, used)
               SELECT tenant_id, 'daily_recipients', day, n FROM want WHERE n <= lim
               ON CONFLICT (tenant_id, budget, window_start)
               DO UPDATE SET used = u.used + excluded.used
               WHERE u.used + excluded.used <= (
                   SELECT w.lim FROM want w
                   WHERE w.tenant_id = u.tenant_id AND w.day = u.window_start)
               RETURNING tenant_id, window_start
           ), ok AS (
               SELECT s.* FROM s
               WHERE s.lim IS NULL
                  OR (s.tenant_id, s.day) IN (SELECT tenant_id, window_start FROM charged)
           ), msg AS (
               INSERT INTO messages (id, tenant_id, sp_id, sender, type, subject, text, ad,
                                     test, template_id, send_at, recipient_count)
               SELECT id, tenant_id, sp_id, sender, type, subject, text, ad, test, template_id,
                      send_at, n
               FROM ok
           ), rcp AS (
               INSERT INTO recipients (message_id, idx, tenant_id, number, name, text, state,
                                       reason, next_attempt_at)
               SELECT u.message_id, u.idx, ok.tenant_id, u.number, u.name, u.text, u.state,
                      u.reason, ok.send_at
               FROM unnest($16::uuid[], $17::int[], $18::text[], $19::text[], $20::text[],
                           $21::text[], $22::text[])
                    AS u(message_id, idx, number, name, text, state, reason)
               JOIN ok ON ok.id = u.message_id
           ), ev AS (
               INSERT INTO event_log (tenant_id, sp_id, type, data)
               SELECT tenant_id, sp_id, 'message.accepted', event::jsonb FROM ok
           ), aud AS (
               INSERT INTO audit_log (tenant_id, actor, action, subject, details, key_id,
                                      key_label, address)
               SELECT ok.tenant_id, x.actor, x.action, x.subject, x.details::jsonb, x.key_id,
                      x.label, x.address::inet
               FROM unnest($23::uuid[], $24::text[], $25::text[], $26::text[], $27::text[],
                           $28::uuid[], $29::text[], $30::text[])
                    AS x(message_id, actor, action, subject, details, key_id, label, address)
               JOIN ok ON ok.id = x.message_id
           )
           SELECT array(SELECT id FROM ok) AS ids,
                  (SELECT pg_notify($31, '') WHERE $31::text IS NOT NULL) AS woken""",
        *m.values(), *r.values(), *a.values(), notify)
    assert row is not None
    return set(row["ids"])
