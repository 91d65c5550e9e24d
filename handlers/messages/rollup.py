"""The message statistics rollup (migration 0016): a daemon loop that adds *settled* messages,
those whose recipients have all reached a final state, to the per-hour and per-day rollups
and marks them rolled, in one statement per batch. Statistics read rolled messages from the
rollups and the others from the tables (`history.message_stats`), so an answer is exact
whether or not the loop has reached a message; the loop only makes answers cheaper.

Nothing here runs on the send or receipt path: a receipt that settles a message's last
recipient is picked up by the next round. A final state is final (receipts only match
`submitted` recipients), so a rolled message's counts never go stale; should one change
anyway, or the message be changed or deleted, the database takes it back out (0016).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from handlers.outage import LoopTracker, PeriodicSweep

INTERVAL_SECONDS = 60.0
BATCH = 2000
_FIRST = (UUID(int=0), datetime.min.replace(tzinfo=UTC), UUID(int=0))

# Candidates in (tenant, send_at, id) order from the unrolled index, a batch at a time; the
# settled ones among them are locked (skipping any a `change` or `cancel` holds), counted,
# marked with their counts and added to both rollups (a message without recipients is marked
# and adds nothing, as it adds nothing read live). `NOT m.stats_rolled` is checked again
# on the locked row, so two instances never add a message twice.
ROLL_BATCH = """
WITH candidates AS (
    SELECT m.tenant_id, m.send_at, m.id FROM messages m
    WHERE NOT m.stats_rolled AND NOT m.test AND (m.tenant_id, m.send_at, m.id) > ($1, $2, $3)
    ORDER BY m.tenant_id, m.send_at, m.id LIMIT $5
), settled AS (
    SELECT m.id FROM messages m
    WHERE m.id IN (SELECT id FROM candidates) AND m.send_at <= $4 AND NOT m.stats_rolled
      AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id
                      AND r.state IN ('queued', 'claimed', 'submitted'))
    FOR UPDATE OF m SKIP LOCKED
), counted AS (
    SELECT s.id, ARRAY[count(r.idx) FILTER (WHERE r.idx = 0), count(r.idx),
                       count(r.idx) FILTER (WHERE r.submitted_at IS NOT NULL),
                       count(r.idx) FILTER (WHERE r.state = 'delivered'),
                       count(r.idx) FILTER (WHERE r.state = 'failed'),
                       count(r.idx) FILTER (WHERE r.state = 'expired'),
                       count(r.idx) FILTER (WHERE r.state = 'rejected'),
                       count(r.idx) FILTER (WHERE r.state = 'canceled')]::integer[] AS counts
    FROM settled s LEFT JOIN recipients r ON r.message_id = s.id
    GROUP BY s.id
), rolled AS (
    UPDATE messages m SET stats_rolled = true, stats_counts = c.counts
    FROM counted c WHERE m.id = c.id
    RETURNING m.tenant_id, m.send_at, m.type, m.sp_id, m.department_id, m.image_count,
              m.image_bytes, m.stats_counts AS n
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
)
SELECT (SELECT count(*) FROM rolled) AS rolled, (SELECT count(*) FROM candidates) AS seen,
       last.tenant_id, last.send_at, last.id
FROM (SELECT * FROM candidates ORDER BY tenant_id DESC, send_at DESC, id DESC LIMIT 1) last
"""


async def roll_up(conn: asyncpg.Connection, now: datetime, *, batch: int = BATCH,
                  stopping: Callable[[], bool] = lambda: False) -> int:
    """Roll up every settled message sent by `now`, a batch per transaction; how many."""
    rolled = 0
    after = _FIRST
    while not stopping():
        row = await conn.fetchrow(ROLL_BATCH, *after, now, batch)
        if row is None:  # no candidates left
            break
        rolled += row["rolled"]
        if row["seen"] < batch:
            break
        after = (row["tenant_id"], row["send_at"], row["id"])
    return rolled


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StatsRollup(PeriodicSweep):
    """Every minute: roll up the messages settled since the last round."""

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
        """One round: the messages rolled up."""
        async with self.pool.acquire() as conn:
            return await roll_up(conn, self.clock(), stopping=lambda: self.stopping)
