"""The message statistics rollup (migration 0016): a daemon loop that adds message recipients
in a final state to the per-hour, per-day and hour-of-the-day-per-month rollups and marks
their message, a batch of
messages per statement. Statistics read the rollups plus, from the tables, whatever is not
rolled up (`history.message_stats`), so an answer is exact whether or not the loop has reached
a message; the loop only makes answers cheaper.

A message is rolled up once every recipient is final, or once its dispatch is over and it was
sent an hour ago: then the recipients still waiting for a receipt (which can take days) are
listed in `stats_pending`, read live, and folded in by a later round once final. Nothing here
runs on the send or receipt path. A final state is final (receipts only match `submitted`
recipients), so what is rolled up never goes stale; should a final recipient change anyway, or
the message be changed or deleted, the database takes it back out (0016).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from handlers.outage import LoopTracker, PeriodicSweep

INTERVAL_SECONDS = 60.0
BATCH = 500
# Between batches the loop steps aside: a minute of single sends at 500 a second is 30,000
# messages to roll, and back to back their statements took a core from the sends' own
# statements for a second or two (p99 of the sends over such a minute: see docs/performance.md).
PAUSE_SECONDS = 0.05
# Sent this long ago with nothing left to send: rolled up, receipts still due or not.
PARTIAL_AFTER = timedelta(hours=1)
_FIRST = (UUID(int=0), datetime.min.replace(tzinfo=UTC), UUID(int=0))

_FINAL = "r.state IN ('delivered', 'failed', 'expired', 'rejected', 'canceled')"
# What a message adds: over its recipients `r` that are final, in stats_counts' order.
_COUNTS = f"""ARRAY[count(r.idx) FILTER (WHERE {_FINAL} AND r.idx = 0),
                    count(r.idx) FILTER (WHERE {_FINAL}),
                    count(r.idx) FILTER (WHERE {_FINAL} AND r.submitted_at IS NOT NULL),
                    count(r.idx) FILTER (WHERE r.state = 'delivered'),
                    count(r.idx) FILTER (WHERE r.state = 'failed'),
                    count(r.idx) FILTER (WHERE r.state = 'expired'),
                    count(r.idx) FILTER (WHERE r.state = 'rejected'),
                    count(r.idx) FILTER (WHERE r.state = 'canceled')]::integer[]"""
_PENDING = f"array_agg(r.idx ORDER BY r.idx) FILTER (WHERE NOT {_FINAL})"

# Both passes end alike: lock the counted messages whose row is still the version counted
# (a change since, or another instance's round, shows as a new version: that message waits
# for the next round; one locked by a `change` or `cancel` is skipped), mark them, and add
# what they counted to the three rollups, keys in order (concurrent rounds lock buckets in the same
# order). A message without recipients is marked and adds nothing, as it adds nothing live.
_MARK_AND_ADD = """
locked AS (
    SELECT c.* FROM messages m JOIN counted c ON c.id = m.id
    WHERE m.xmin::text = c.version
    FOR UPDATE OF m SKIP LOCKED
), rolled AS (
    UPDATE messages m SET stats_rolled = true, stats_counts = COUNTS,
                          stats_pending = c.pending
    FROM locked c WHERE m.id = c.id
    RETURNING m.tenant_id, m.send_at, m.type, m.sp_id, m.department_id, m.image_count,
              m.image_bytes, c.counts AS n
), hourly AS (
    INSERT INTO message_stats_hourly AS s (
        tenant_id, hour, type, sp_id, department_id, messages, recipients, sent, delivered,
        failed, expired, rejected, canceled, images, image_bytes)
    SELECT tenant_id, date_trunc('hour', send_at), type, sp_id, department_id, sum(n[1]),
           sum(n[2]), sum(n[3]), sum(n[4]), sum(n[5]), sum(n[6]), sum(n[7]), sum(n[8]),
           sum(n[1] * image_count), sum(n[1]::bigint * image_bytes)
    FROM rolled WHERE n[2] > 0 GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, hour, type, sp_id, department_id) DO UPDATE SET
        messages = s.messages + excluded.messages, recipients = s.recipients + excluded.recipients,
        sent = s.sent + excluded.sent, delivered = s.delivered + excluded.delivered,
        failed = s.failed + excluded.failed, expired = s.expired + excluded.expired,
        rejected = s.rejected + excluded.rejected, canceled = s.canceled + excluded.canceled,
        images = s.images + excluded.images, image_bytes = s.image_bytes + excluded.image_bytes
), daily AS (
    INSERT INTO message_stats_daily AS s (
        tenant_id, day, type, sp_id, department_id, messages, recipients, sent, delivered,
        failed, expired, rejected, canceled, images, image_bytes)
    SELECT tenant_id, (send_at AT TIME ZONE 'Asia/Seoul')::date, type, sp_id, department_id,
           sum(n[1]), sum(n[2]), sum(n[3]), sum(n[4]), sum(n[5]), sum(n[6]), sum(n[7]),
           sum(n[8]), sum(n[1] * image_count), sum(n[1]::bigint * image_bytes)
    FROM rolled WHERE n[2] > 0 GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, day, type, sp_id, department_id) DO UPDATE SET
        messages = s.messages + excluded.messages, recipients = s.recipients + excluded.recipients,
        sent = s.sent + excluded.sent, delivered = s.delivered + excluded.delivered,
        failed = s.failed + excluded.failed, expired = s.expired + excluded.expired,
        rejected = s.rejected + excluded.rejected, canceled = s.canceled + excluded.canceled,
        images = s.images + excluded.images, image_bytes = s.image_bytes + excluded.image_bytes
), month_hours AS (
    INSERT INTO message_stats_month_hours AS s (
        tenant_id, month, hour, type, sp_id, department_id, messages, recipients, sent,
        delivered, failed, expired, rejected, canceled, images, image_bytes)
    SELECT tenant_id, date_trunc('month', send_at AT TIME ZONE 'Asia/Seoul')::date,
           extract(hour FROM send_at AT TIME ZONE 'Asia/Seoul'), type, sp_id, department_id,
           sum(n[1]), sum(n[2]), sum(n[3]), sum(n[4]), sum(n[5]), sum(n[6]), sum(n[7]),
           sum(n[8]), sum(n[1] * image_count), sum(n[1]::bigint * image_bytes)
    FROM rolled WHERE n[2] > 0 GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (tenant_id, month, hour, type, sp_id, department_id) DO UPDATE SET
        messages = s.messages + excluded.messages, recipients = s.recipients + excluded.recipients,
        sent = s.sent + excluded.sent, delivered = s.delivered + excluded.delivered,
        failed = s.failed + excluded.failed, expired = s.expired + excluded.expired,
        rejected = s.rejected + excluded.rejected, canceled = s.canceled + excluded.canceled,
        images = s.images + excluded.images, image_bytes = s.image_bytes + excluded.image_bytes
)
SELECT (SELECT count(*) FROM rolled) AS rolled, (SELECT count(*) FROM candidates) AS seen,
       last.tenant_id, last.send_at, last.id
FROM (SELECT * FROM candidates ORDER BY tenant_id DESC, send_at DESC, id DESC LIMIT 1) last
"""

# Messages not rolled up, in (tenant, send_at, id) order from their index after $1-$3: those
# sent by $4 that are settled, or have nothing left to send and were sent by $5.
ROLL_BATCH = f"""
WITH candidates AS (
    SELECT m.tenant_id, m.send_at, m.id, m.xmin::text AS version FROM messages m
    WHERE NOT m.stats_rolled AND NOT m.test AND (m.tenant_id, m.send_at, m.id) > ($1, $2, $3)
    ORDER BY m.tenant_id, m.send_at, m.id LIMIT $6
), counted AS (
    SELECT c.id, c.version, {_COUNTS} AS counts, {_PENDING} AS pending
    FROM candidates c LEFT JOIN recipients r ON r.message_id = c.id
    WHERE c.send_at <= $4
    GROUP BY c.id, c.version, c.send_at
    HAVING count(r.idx) FILTER (WHERE NOT {_FINAL}) = 0
        OR (count(r.idx) FILTER (WHERE r.state IN ('queued', 'claimed')) = 0
            AND c.send_at <= $5)
), {_MARK_AND_ADD.replace("COUNTS", "c.counts")}"""

# Rolled messages with pending recipients, in the same order: those now final are folded in.
FOLD_BATCH = f"""
WITH candidates AS (
    SELECT m.tenant_id, m.send_at, m.id, m.xmin::text AS version, m.stats_pending FROM messages m
    WHERE m.stats_pending IS NOT NULL AND (m.tenant_id, m.send_at, m.id) > ($1, $2, $3)
    ORDER BY m.tenant_id, m.send_at, m.id LIMIT $4
), counted AS (
    SELECT c.id, c.version, {_COUNTS} AS counts, {_PENDING} AS pending
    FROM candidates c JOIN recipients r ON r.message_id = c.id AND r.idx = ANY(c.stats_pending)
    GROUP BY c.id, c.version
    HAVING count(r.idx) FILTER (WHERE {_FINAL}) > 0
), {_MARK_AND_ADD.replace("COUNTS", '''ARRAY(
        SELECT a + b FROM unnest(m.stats_counts, c.counts) WITH ORDINALITY AS u(a, b, i)
        ORDER BY i)''')}"""


async def roll_up(conn: asyncpg.Connection, now: datetime, *, batch: int = BATCH,
                  stopping: Callable[[], bool] = lambda: False, pause: float = 0.0) -> int:
    """Roll up what is final of the messages sent by `now`, then fold in pending recipients
    that became final, a batch of messages per transaction; how many messages changed."""
    changed = 0
    for query, extra in ((ROLL_BATCH, (now, now - PARTIAL_AFTER)), (FOLD_BATCH, ())):
        after = _FIRST
        while not stopping():
            row = await conn.fetchrow(query, *after, *extra, batch)
            if row is None:  # no candidates left
                break
            changed += row["rolled"]
            if row["seen"] < batch:
                break
            after = (row["tenant_id"], row["send_at"], row["id"])
            if pause:
                await asyncio.sleep(pause)
    return changed


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StatsRollup(PeriodicSweep):
    """Every minute: roll up what became final since the last round."""

    task_name = "message-stats-rollup"
    done_event = "message_stats_rolled_up"
    failed_event = "message_stats_rollup_failed"

    def __init__(self, pool: asyncpg.Pool, tracker: LoopTracker, *,
                 every: float = INTERVAL_SECONDS,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        super().__init__(tracker, every)
        self.pool = pool
        self.clock = clock

    async def sweep_once(self) -> int:
        """One round: the messages rolled up or folded."""
        async with self.pool.acquire() as conn:
            return await roll_up(conn, self.clock(), stopping=lambda: self.stopping,
                                 pause=PAUSE_SECONDS)
