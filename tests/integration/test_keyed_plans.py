"""The dispatcher's writes find their rows by key even when their plans were made while the
tables were empty (migrations 0020-0022): a session keeps its plans, and a table that has
grown since (a fresh database under load, before autovacuum has looked) must not be read
whole for every batch of outcomes or receipts."""

from __future__ import annotations

import uuid

import asyncpg

from tests.conftest import Api
from tests.integration.test_messaging import send, sender_tenant

GROWN = 20_000  # recipients added after the plans were made
BATCH = 50


async def _seq_scans(conn: asyncpg.Connection) -> dict[str, int]:
    await conn.execute("SELECT pg_stat_force_next_flush()")  # this session's counts, now
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = await conn.fetch("SELECT relname, seq_scan FROM pg_stat_user_tables"
                            " WHERE relname IN ('recipients', 'messages')")
    return {r["relname"]: int(r["seq_scan"]) for r in rows}


STORE = "SELECT * FROM telgate_store_round($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"


def _round(mids: list[uuid.UUID], idxs: list[int], ids: list[str], finals: list[bool],
           receipts: list[str]) -> tuple[object, ...]:
    n, k = len(mids), len(receipts)
    return (mids, idxs, ["sim"] * n, ids, [None] * n, finals,
            ["DELIVRD" if f else None for f in finals], ["000" if f else None for f in finals],
            [None] * n, ["sim"] * k, receipts, ["DELIVRD"] * k, ["000"] * k, [None] * k)


async def test_outcomes_and_receipts_probe_by_key_with_plans_made_on_empty_tables(
        api: Api, db_dsn: str) -> None:
    t = await sender_tenant(api)
    conn = await asyncpg.connect(db_dsn)
    try:
        for i in range(8):  # the session plans every branch while nothing waits
            row = await conn.fetchrow(STORE, *_round([uuid.uuid4()], [1], [f"x{i}"], [True],
                                                      [f"y{i}"]))
            assert row is not None and (row["stored"], row["waiting"]) == (0, 2)
        await conn.execute("DELETE FROM dlr_inbox")
        status, body = await send(t, to=["010-0000-0000"], text="키로 찾기")
        assert status == 202
        mid = uuid.UUID(body["id"])
        await conn.execute(
            """INSERT INTO recipients (message_id, idx, tenant_id, number, state,
                                       next_attempt_at, lane, claimed_by)
               SELECT $1, i, $2, '010' || lpad(i::text, 8, '0'), 'claimed', now(), 2, 7
               FROM generate_series(1, $3::int) i""", mid, t.id, GROWN)
        before = await _seq_scans(conn)

        # A third of the receipts came with their submits' responses (folded), a third in the
        # same round but apart, a third before the responses (waiting in the inbox).
        ids = [f"m{i}" for i in range(BATCH)]
        third = BATCH // 3
        await conn.execute(
            """INSERT INTO dlr_inbox (carrier, msg_id, stat, err, done_at)
               SELECT 'sim', x, 'DELIVRD', '000', now() FROM unnest($1::text[]) x""",
            ids[2 * third:])
        row = await conn.fetchrow(STORE, *_round(
            [mid] * BATCH, list(range(1, BATCH + 1)), ids,
            [i < third for i in range(BATCH)], ids[third:2 * third]))
        assert row is not None
        assert (row["stored"], row["matched"], row["repeated"], row["waiting"]) == (
            BATCH, BATCH, 0, 0)

        assert await _seq_scans(conn) == before  # neither table read whole
        states = await conn.fetch(
            "SELECT state, count(*) AS n FROM recipients WHERE message_id = $1 GROUP BY state",
            mid)
        assert {r["state"]: r["n"] for r in states} == {
            "delivered": BATCH, "claimed": GROWN - BATCH, "queued": 1}
        assert await conn.fetchval("SELECT count(*) FROM dlr_inbox") == 0
        events = await conn.fetchval(
            "SELECT count(*) FROM event_log WHERE type = 'message.recipient.delivered'")
        assert events == BATCH
        started = await conn.fetchval(
            "SELECT dispatch_started_at IS NOT NULL FROM messages WHERE id = $1", mid)
        assert started
    finally:
        await conn.close()
