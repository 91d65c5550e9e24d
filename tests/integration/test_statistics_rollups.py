"""Statistics read from the rollups (migration 0016) answer exactly what the records answer:
across Korean hour, day and month ends, with ragged periods, after late receipts, deletions
and changes, and for one tenant only. Each case compares the answer with the reference
answer read from the tables alone (`rollups=False`)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from handlers.calls import search
from handlers.calls.search import CallFilter, Dimension
from handlers.messages import history, rollup
from handlers.messages.history import Granularity, HistoryFilter, Period
from handlers.outage import LoopTracker
from handlers.stats_periods import KST
from tests.conftest import Api, Tenant
from tests.integration.test_call_statistics import store_calls
from tests.integration.test_message_history import insert_message

NOW = datetime(2026, 12, 10, tzinfo=UTC)  # the rollup job's clock: after every send below


def kst(*args: int) -> datetime:
    return datetime(*args, tzinfo=KST).astimezone(UTC)  # type: ignore[misc]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(tzinfo=None).isoformat()


# -- calls ---------------------------------------------------------------------------------------

CALL_ROLLUPS = ("call_stats_monthly", "call_stats_daily", "call_stats_month_hours",
                "call_stats_daily_narrow", "call_stats_hourly")
EXTENSIONS = ("1001", "1002", "2001", "3001")
CLASSES = ("incoming", "missed", "busy_missed", "ended_before_answer", "outgoing",
           "outgoing_failed")
# the Korean month ends and midnights the calls crowd around
EDGES = [kst(2026, 2, 1), kst(2026, 3, 1), kst(2026, 2, 14), kst(2026, 2, 15, 9)]


def some_calls(seed: int, n: int) -> list[dict[str, Any]]:
    """Calls of every class, agent and kind, half of them within a minute of a Korean
    midnight or month end, the rest over 2026-01-20 .. 2026-03-10."""
    rnd = random.Random(seed)
    calls = []
    for i in range(n):
        if i % 2:
            at = rnd.choice(EDGES) + timedelta(seconds=rnd.choice((-60, -1, 0, 1, 59)))
        else:
            at = kst(2026, 1, 20) + timedelta(seconds=rnd.randrange(49 * 86400))
        cls = rnd.choice(CLASSES)
        kind = rnd.random()
        call: dict[str, Any] = {"at": iso(at), "class": cls,
                                "talk": round(rnd.random() * 300, 3)
                                if cls in ("incoming", "outgoing") else 0}
        if cls in ("outgoing", "outgoing_failed"):
            call.update(direction="outgoing", caller=rnd.choice(("0212345678", "0311234567")),
                        callee=f"0109999{i % 7:04d}", ext=rnd.choice(EXTENSIONS))
        elif kind < 0.15 and cls == "incoming":
            call.update(direction="internal", ext=rnd.choice(EXTENSIONS), peer="1001",
                        caller="1001", callee="2001")
        else:
            call.update(did=rnd.choice(("0212345678", "15881234")),
                        ext=rnd.choice((*EXTENSIONS, None)), caller=f"0108888{i % 5:04d}")
        calls.append(call)
    return calls


@pytest.fixture
async def office(api: Api, pool: asyncpg.Pool) -> dict[str, Any]:
    """Two departments, a tenant with 400 calls and another with 100 in the same buckets."""
    t = await api.new_tenant()
    for ext in EXTENSIONS:
        resp = await t.call("POST", "/v1/extensions",
                            json={"extension": ext, "password": "secret-pass-1"})
        assert resp.status == 201, await resp.text()
    sales = await (await t.call("POST", "/v1/departments", json={
        "name": "영업", "extensions": ["1001", "1002"]})).json()
    await t.call("POST", "/v1/departments", json={"name": "지원", "extensions": ["2001"]})
    # written in batches, as the CDR writer writes them
    calls = some_calls(1, 400)
    for i in range(0, len(calls), 50):
        await store_calls(pool, t, calls[i:i + 50])
    other = await api.new_tenant()
    await store_calls(pool, other, some_calls(2, 100))
    return {"t": t, "other": other, "sales": uuid.UUID(sales["id"])}


CALL_PERIODS = [
    (kst(2026, 2, 1), kst(2026, 3, 1)),  # one whole Korean month
    (kst(2026, 1, 30, 10, 30), kst(2026, 3, 2, 8, 15)),  # ragged at both ends
    (kst(2026, 1, 1), kst(2026, 4, 1)),  # whole months around it all
    (kst(2026, 2, 14, 23, 59, 59), kst(2026, 2, 15, 0, 0, 1)),  # two seconds
]
GROUPINGS = [(d,) for d in Dimension] + [
    (Dimension.DAY, Dimension.CLASS), (Dimension.DEPARTMENT, Dimension.MONTH),
    (Dimension.AGENT, Dimension.CLASS), (Dimension.WEEKDAY, Dimension.NUMBER),
    (Dimension.HOUR, Dimension.DEPARTMENT), (Dimension.MONTH, Dimension.HOUR),
    (Dimension.DAY, Dimension.HOUR)]


def call_filters(tenant_id: uuid.UUID, sales: uuid.UUID) -> list[CallFilter]:
    f = CallFilter(tenant_id)
    return [f, dataclasses.replace(f, weekdays=(1, 2, 3)),
            dataclasses.replace(f, department_id=sales), dataclasses.replace(f, agent="2001"),
            dataclasses.replace(f, call_class="missed"),
            dataclasses.replace(f, direction="outgoing"),
            dataclasses.replace(f, include_internal=False),
            dataclasses.replace(f, hour_from=22, hour_to=3),
            dataclasses.replace(f, hour_from=9, hour_to=17, department_id=sales,
                                include_internal=False),
            dataclasses.replace(f, number="0212345678")]


async def assert_calls_as_recorded(conn: asyncpg.Connection, filters: list[CallFilter],
                                   periods: list[tuple[datetime, datetime]]) -> int:
    """Every grouping of every filter and period, rollups and records alike; how many
    answers had calls."""
    counted = 0
    for f, (since, until), dims in itertools.product(filters, periods, GROUPINGS):
        f = dataclasses.replace(f, since=since, until=until)
        got = await search.call_stats(conn, f, dims)
        want = await search.call_stats(conn, f, dims, rollups=False)
        assert got == want, (f, dims)
        counted += search.totals(got).calls > 0
    return counted


async def test_call_rollups_answer_what_the_records_answer(office: dict[str, Any],
                                                           pool: asyncpg.Pool) -> None:
    t: Tenant = office["t"]
    async with pool.acquire() as conn:
        assert search.rollups_for(CallFilter(t.id), (Dimension.AGENT,)) == (search.MONTHLY,
                                                                            search.DAILY)
        assert search.rollups_for(CallFilter(t.id, hour_from=9, hour_to=18),
                                  (Dimension.DEPARTMENT,)) == (search.MONTH_HOURS, search.HOURLY)
        assert search.rollups_for(CallFilter(t.id), (Dimension.WEEKDAY, Dimension.CLASS)) == (
            search.DAILY_NARROW, search.HOURLY)
        counted = await assert_calls_as_recorded(
            conn, call_filters(t.id, office["sales"]), CALL_PERIODS)
        assert counted > 200
        # the rollups hold every record, and nothing of the other tenant
        for table in CALL_ROLLUPS:
            assert await conn.fetchval(
                f"SELECT sum(calls) FROM {table} WHERE tenant_id = $1", t.id) == 400


async def test_deleted_call_records_leave_the_rollups(office: dict[str, Any],
                                                      pool: asyncpg.Pool) -> None:
    t: Tenant = office["t"]
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM call_records WHERE tenant_id = $1 AND (class = 'missed' "
            "OR started_at BETWEEN $2 AND $3)", t.id, kst(2026, 2, 14), kst(2026, 2, 16))
        await assert_calls_as_recorded(conn, [CallFilter(t.id)], CALL_PERIODS[:2])
        left = await conn.fetchval("SELECT count(*) FROM call_records WHERE tenant_id = $1",
                                   t.id)
        for table in CALL_ROLLUPS:
            rolled, empty = await conn.fetchrow(
                f"SELECT sum(calls), count(*) FILTER (WHERE calls <= 0) FROM {table} "
                "WHERE tenant_id = $1", t.id)
            assert (rolled, empty) == (left, 0)
        assert not await conn.fetchval(
            "SELECT count(*) FROM call_stats_daily WHERE tenant_id = $1 AND class = 'missed'",
            t.id)


async def test_each_tenant_counts_only_its_calls_and_takes_its_rollups_along(
        office: dict[str, Any], pool: asyncpg.Pool) -> None:
    t: Tenant = office["t"]
    other: Tenant = office["other"]
    async with pool.acquire() as conn:
        await assert_calls_as_recorded(conn, [CallFilter(other.id)], CALL_PERIODS[:1])
        month = CallFilter(other.id, kst(2026, 1, 1), kst(2026, 4, 1))
        assert search.totals(await search.call_stats(conn, month, (Dimension.MONTH,))).calls \
            == 100
        await conn.execute("DELETE FROM tenants WHERE id = $1", other.id)
        for table in CALL_ROLLUPS:
            assert await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE tenant_id = $1", other.id) == 0
            assert await conn.fetchval(
                f"SELECT sum(calls) FROM {table} WHERE tenant_id = $1", t.id) == 400


# -- messages ------------------------------------------------------------------------------------

MESSAGE_ROLLUPS = ("message_stats_hourly", "message_stats_daily", "message_stats_month_hours")
# (send_at UTC, type, SP ID, recipient states): around 23:59:59/00:00 KST on the 22nd/23rd,
# an hour's end, and the Korean month end (15:00 UTC on 30 November is 1 December in Korea)
MESSAGES: list[tuple[str, str, str | None, list[str]]] = [
    ("2026-11-22T14:59:59", "sms", "SP1", ["delivered", "delivered", "failed"]),
    ("2026-11-22T15:00:00", "sms", "SP1", ["delivered", "expired", "rejected"]),
    ("2026-11-23T01:59:59", "lms", "SP2", ["delivered", "canceled"]),
    ("2026-11-23T02:00:00", "lms", "SP2", ["submitted", "delivered"]),  # awaits a receipt
    ("2026-11-23T02:30:00", "mms", None, ["queued", "claimed", "failed"]),  # still sending
    ("2026-11-30T14:59:59", "sms", "SP2", ["delivered"] * 4),
    ("2026-11-30T15:00:00", "sms", "SP1", ["failed", "rejected"]),
    ("2026-11-05T03:00:00", "sms", None, ["rejected", "rejected"]),  # all opted out
    ("2026-10-31T14:59:59", "mms", "SP1", ["delivered"]),
]
MESSAGE_PERIODS = [
    Period(kst(2026, 11, 1), kst(2026, 12, 1)),
    Period(kst(2026, 11, 22, 10, 30), kst(2026, 12, 1, 5, 20)),
    Period(kst(2026, 10, 15), kst(2026, 12, 15)),
    Period(kst(2026, 11, 23, 10, 59, 59), kst(2026, 11, 23, 11, 0, 1)),
]


@pytest.fixture
async def sent(api: Api, pool: asyncpg.Pool) -> dict[str, Any]:
    """SP1 in 마케팅; the messages above for one tenant, the first five for another; a test
    send among them."""
    t = await api.new_tenant()
    other = await api.new_tenant()
    async with pool.acquire() as conn:
        for sp in ("SP1", "SP2"):
            await conn.execute("INSERT INTO sp_ids (tenant_id, sp_id) VALUES ($1, $2)",
                               t.id, sp)
    resp = await t.call("POST", "/v1/departments", json={"name": "마케팅", "sp_ids": ["SP1"]})
    assert resp.status == 201, await resp.text()
    ids = [await insert_message(pool, t, send_at=at, type=type_, sp_id=sp, states=states)
           for at, type_, sp, states in MESSAGES]
    for at, type_, sp, states in MESSAGES[:5]:
        await insert_message(pool, other, send_at=at, type=type_, sp_id=sp, states=states)
    test_send = await insert_message(pool, t, send_at="2026-11-23T03:00:00",
                                     states=["delivered"])
    async with pool.acquire() as conn:
        await conn.execute("UPDATE messages SET test = true WHERE id = $1", test_send)
        await conn.execute(
            "UPDATE messages SET image_count = 1, image_bytes = 123456 WHERE type = 'mms'")
    return {"t": t, "other": other, "ids": ids}


def message_filters(tenant_id: uuid.UUID) -> list[HistoryFilter]:
    return [HistoryFilter(tenant_id, MESSAGE_PERIODS[0]),
            HistoryFilter(tenant_id, MESSAGE_PERIODS[0], type="sms"),
            HistoryFilter(tenant_id, MESSAGE_PERIODS[0], sp_id="SP1")]


async def assert_messages_as_stored(conn: asyncpg.Connection,
                                    filters: list[HistoryFilter]) -> int:
    """Every granularity, with and without departments, every period; how many recipients
    the widest answer counted."""
    widest = 0
    for f, period, granularity, by_department in itertools.product(
            filters, MESSAGE_PERIODS, Granularity, (False, True)):
        f = dataclasses.replace(f, period=period)
        got = await history.message_stats(conn, f, granularity, by_department=by_department)
        want = await history.message_stats(conn, f, granularity, by_department=by_department,
                                           rollups=False)
        assert got == want, (f, granularity, by_department)
        widest = max(widest, history.totals(got).recipients)
    return widest


async def rolled(conn: asyncpg.Connection, message_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT stats_rolled FROM messages WHERE id = $1",
                                    message_id))


async def pending(conn: asyncpg.Connection, message_id: uuid.UUID) -> list[int] | None:
    """The recipients of a rolled message left to read live."""
    found: list[int] | None = await conn.fetchval(
        "SELECT stats_pending FROM messages WHERE id = $1 AND stats_rolled", message_id)
    return found


async def test_message_rollups_answer_what_the_messages_answer(
        sent: dict[str, Any], pool: asyncpg.Pool) -> None:
    t: Tenant = sent["t"]
    async with pool.acquire() as conn:
        before = await assert_messages_as_stored(conn, message_filters(t.id))
        # not the one still sending, nor the test send; the other tenant's too
        assert await rollup.roll_up(conn, NOW, batch=3) == 8 + 4
        assert not await rolled(conn, sent["ids"][4])
        assert await pending(conn, sent["ids"][3]) == [0]  # its receipt is still due
        assert await assert_messages_as_stored(conn, message_filters(t.id)) == before == 22
        assert await rollup.roll_up(conn, NOW) == 0  # nothing twice


async def test_messages_sent_later_than_the_rollup_clock_wait(sent: dict[str, Any],
                                                              pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await rollup.roll_up(conn, datetime(2026, 11, 23, tzinfo=UTC)) == 4 + 2
        await assert_messages_as_stored(conn, message_filters(sent["t"].id))


async def test_a_late_receipt_is_counted_once_the_message_settles(
        sent: dict[str, Any], pool: asyncpg.Pool) -> None:
    t: Tenant = sent["t"]
    waiting = sent["ids"][3]
    f = HistoryFilter(t.id, MESSAGE_PERIODS[0], type="lms")
    async with pool.acquire() as conn:
        # ten minutes after sending, its receipt not in yet: left to be read live
        assert await rollup.roll_up(conn, utc("2026-11-23T02:10:00")) == 5 + 3
        assert not await rolled(conn, waiting)
        await assert_messages_as_stored(conn, message_filters(t.id))
        # its hour long over: rolled up but for the recipient whose receipt is due
        await rollup.roll_up(conn, NOW)
        assert await pending(conn, waiting) == [0]
        assert history.totals(await history.message_stats(conn, f, Granularity.MONTH)).pending \
            == 1
        # the receipt, days later, as the dispatcher matches it (submitted recipients only)
        await conn.execute(
            "UPDATE recipients SET state = 'delivered', done_at = now(), dlr_stat = 'DELIVRD' "
            "WHERE message_id = $1 AND state = 'submitted'", waiting)
        await assert_messages_as_stored(conn, message_filters(t.id))
        total = history.totals(await history.message_stats(conn, f, Granularity.MONTH))
        assert (total.delivered, total.pending) == (3, 0)
        assert await rollup.roll_up(conn, NOW) == 1 and await pending(conn, waiting) is None
        assert await rolled(conn, waiting)
        assert history.totals(await history.message_stats(conn, f, Granularity.MONTH)) == total
        await assert_messages_as_stored(conn, message_filters(t.id))


async def test_a_recipient_leaving_a_final_state_unrolls_its_message(
        sent: dict[str, Any], pool: asyncpg.Pool) -> None:
    message_id = sent["ids"][0]
    async with pool.acquire() as conn:
        await rollup.roll_up(conn, NOW)
        await conn.execute(
            "UPDATE recipients SET state = 'failed' WHERE message_id = $1 AND idx = 0",
            message_id)
        assert not await rolled(conn, message_id)
        await assert_messages_as_stored(conn, message_filters(sent["t"].id))
        assert await rollup.roll_up(conn, NOW) == 1
        await assert_messages_as_stored(conn, message_filters(sent["t"].id))


async def test_changed_and_deleted_messages_leave_the_rollups(sent: dict[str, Any],
                                                              pool: asyncpg.Pool) -> None:
    t: Tenant = sent["t"]
    ids = sent["ids"]
    async with pool.acquire() as conn:
        await rollup.roll_up(conn, NOW)
        # moved to another SP ID, another hour and another type: counted where it is now
        await conn.execute("UPDATE messages SET sp_id = 'SP2', department_id = NULL, "
                           "send_at = send_at + interval '1 hour', type = 'lms' WHERE id = $1",
                           ids[0])
        assert not await rolled(conn, ids[0])
        await assert_messages_as_stored(conn, message_filters(t.id))
        await conn.execute("DELETE FROM messages WHERE id = ANY($1::uuid[])",
                           [ids[1], ids[5], ids[6]])
        await assert_messages_as_stored(conn, message_filters(t.id))
        await rollup.roll_up(conn, NOW)
        await assert_messages_as_stored(conn, message_filters(t.id))
        # the rollups hold exactly the rolled recipients, and no empty bucket
        expected = await conn.fetchval(
            "SELECT count(*) FROM recipients r JOIN messages m ON m.id = r.message_id "
            "WHERE m.tenant_id = $1 AND m.stats_rolled "
            "AND r.idx <> ALL(coalesce(m.stats_pending, '{}'))", t.id)
        for table in MESSAGE_ROLLUPS:
            held, empty = await conn.fetchrow(
                f"SELECT sum(recipients), count(*) FILTER (WHERE recipients <= 0) FROM {table} "
                "WHERE tenant_id = $1", t.id)
            assert (held, empty) == (expected, 0)


async def test_each_tenant_counts_only_its_messages_and_takes_its_rollups_along(
        sent: dict[str, Any], pool: asyncpg.Pool, api: Api) -> None:
    t: Tenant = sent["t"]
    other: Tenant = sent["other"]
    params = {"since": "2026-11-01", "until": "2026-11-30", "granularity": "day",
              "group_by": "department"}
    answers = []
    async with pool.acquire() as conn:
        for _ in range(2):  # the same answers before and after the rollup
            for tenant in (t, other):
                resp = await tenant.call("GET", "/v1/stats/messages", params=params)
                assert resp.status == 200, await resp.text()
                answers.append(await resp.json())
            await rollup.roll_up(conn, NOW)
        assert answers[:2] == answers[2:]
        assert answers[1]["totals"]["recipients"] == 13
        await assert_messages_as_stored(conn, message_filters(other.id))
        await conn.execute("DELETE FROM tenants WHERE id = $1", other.id)
        for table in MESSAGE_ROLLUPS:
            assert await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE tenant_id = $1", other.id) == 0
        await assert_messages_as_stored(conn, message_filters(t.id))


async def test_two_rollup_rounds_at_once_count_each_message_once(
        sent: dict[str, Any], pool: asyncpg.Pool) -> None:
    async def one_round() -> int:
        async with pool.acquire() as conn:
            return await rollup.roll_up(conn, NOW, batch=2)

    assert sum(await asyncio.gather(one_round(), one_round(), one_round())) == 12
    async with pool.acquire() as conn:
        await assert_messages_as_stored(conn, message_filters(sent["t"].id))


async def test_the_daemon_loop_rolls_up_at_once_then_every_interval(
        sent: dict[str, Any], pool: asyncpg.Pool) -> None:
    done = asyncio.Event()

    class Tracker(LoopTracker):
        def ok(self) -> None:
            super().ok()
            done.set()

    loop = rollup.StatsRollup(pool, Tracker("message-stats-rollup"), every=3600,
                              clock=lambda: NOW)
    loop.start()
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await loop.stop()
    async with pool.acquire() as conn:
        assert await rolled(conn, sent["ids"][0])
        assert await rollup.roll_up(conn, NOW) == 0
