"""Statistics benchmark: a year of one tenant's data, and the portals' statistics screens timed
through the control API, each with the plan of its main query; then a year's call-record
export streamed, with the process's memory sampled while it streams.

    .venv/bin/python -m bench.stats [--calls 1000000] [--recipients 5000000] [--runs 10]
        [--no-export] [--xlsx] [--state-dir DIR] [--screens calls_year,messages]

Everything runs in an embedded PostgreSQL: a temporary one (removed at the end), or with
`--state-dir` one kept in DIR, whose generated year is reused by the next run with the same
DIR (generating takes minutes; the schema is migrated to this version's first). Data is
generated in SQL (generate_series), uniformly over 2025-12-01 .. 2026-11-30 KST:
50 extensions in 5 departments, 3 tenant numbers, every call class; messages of 10 recipients
each from 5 SP IDs in departments, the last 3 days' still awaiting receipts; then settled
messages are rolled up as the daemon's loop would (timed, `rollup_s`). The API is served in
this process (aiohttp test server); each screen is asked once to warm up, then `--runs`
times; p50/p95 are of the answer time as the client sees it. Prints one JSON line per figure,
then each screen's plan (EXPLAIN ANALYZE of its slowest query) as text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import load_config  # noqa: E402
from daemon.db import init_connection, open_database  # noqa: E402
from handlers import tenants  # noqa: E402
from handlers.api.app import build_app  # noqa: E402
from handlers.api.context import AppContext  # noqa: E402
from handlers.api.framework import RouteTable  # noqa: E402
from handlers.messages import rollup  # noqa: E402
from handlers.metrics import Metrics  # noqa: E402

START = datetime(2025, 12, 1, tzinfo=ZoneInfo("Asia/Seoul"))
YEAR = {"since": "2025-12-01", "until": "2026-11-30"}
MONTH = {"since": "2026-11-01", "until": "2026-11-30"}
DAY = {"since": "2026-11-16", "until": "2026-11-16"}
CUSTOMER = "01000004242"  # about five calls over the year
ROLLUPS = ("call_stats_monthly", "call_stats_daily", "call_stats_month_hours",
           "call_stats_daily_narrow", "call_stats_hourly", "message_stats_month_hours",
           "message_stats_daily", "message_stats_hourly")
# The year's last days still wait for receipts (two recipients of each message submitted), as
# a live system's would: those messages are read from the tables, not the rollups.
UNSETTLED_DAYS = 3
# Generating runs longer than the 60 s command timeout the daemon's pool gives its queries.
GENERATE_TIMEOUT = 3600.0


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "arch": platform.machine(),
            "python": platform.python_version()}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def generate(conn: asyncpg.Connection, tenant_id: Any, calls: int,
                   recipients: int) -> dict[str, float]:
    """The year of data; returns seconds per step."""
    took: dict[str, float] = {}
    await conn.execute("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'")
    t0 = time.perf_counter()
    depts = [await conn.fetchval(
        "INSERT INTO departments (tenant_id, name) VALUES ($1, $2) RETURNING id",
        tenant_id, f"부서{d}") for d in range(5)]
    await conn.execute(
        """INSERT INTO extensions (tenant_id, extension, name, realm, ha1_md5, ha1_sha256,
                                   department_id)
           SELECT $1, (1000 + e)::text, '상담원 ' || e, 'bench', 'x', 'x', ($2::uuid[])[1 + e % 5]
           FROM generate_series(0, 49) e""", tenant_id, depts)
    await conn.execute(
        """INSERT INTO sp_ids (tenant_id, sp_id, department_id)
           SELECT $1, 'BSP' || s, ($2::uuid[])[1 + s] FROM generate_series(0, 4) s""",
        tenant_id, depts)
    # Calls: 40% incoming answered, 10% missed, 5% busy-missed, 5% ended before answer,
    # 25% outgoing, 10% outgoing failed, 5% internal; the trigger stamps the department.
    await conn.execute(
        """INSERT INTO call_records (id, tenant_id, sip_call_id, direction, internal, class,
                   caller, callee, did, extension, peer_extension, trunk, started_at,
                   ringing_at, answered_at, ended_at, talk_seconds, final_status, hangup_by)
           SELECT gen_random_uuid(), $1, 'bench-' || i, g.dir, g.dir = 'internal', g.cls,
                  CASE g.dir WHEN 'incoming' THEN g.customer WHEN 'outgoing' THEN g.ours
                       ELSE g.peer END,
                  CASE g.dir WHEN 'incoming' THEN g.ours WHEN 'outgoing' THEN g.customer
                       ELSE g.ext END,
                  CASE WHEN g.dir = 'incoming' THEN g.ours END,
                  CASE WHEN g.cls <> 'missed' OR g.r % 2 = 0 THEN g.ext END,
                  CASE WHEN g.dir = 'internal' THEN g.peer END,
                  CASE WHEN g.dir <> 'internal' THEN 'carrier' END,
                  g.t, g.t, CASE WHEN g.cls IN ('incoming', 'outgoing')
                                 THEN g.t + interval '6 seconds' END,
                  g.t + (6 + g.talk) * interval '1 second', g.talk,
                  CASE WHEN g.cls IN ('incoming', 'outgoing') THEN 200 ELSE 480 END, 'caller'
           FROM (SELECT i, r, t, dir, cls,
                        CASE WHEN cls IN ('incoming', 'outgoing') THEN 20 + r * 3 ELSE 0 END
                            AS talk,
                        (1000 + abs(hashint4(i * 7)::bigint) % 50)::text AS ext,
                        (1000 + abs(hashint4(i * 11)::bigint) % 50)::text AS peer,
                        (ARRAY['0212345678', '15881234', '0311234567'])
                            [1 + abs(hashint4(i * 3)::bigint) % 3] AS ours,
                        '010' || lpad((abs(hashint4(i * 13)::bigint) % 200000)::text, 8, '0') AS customer
                 FROM (SELECT i, abs(hashint4(i)::bigint) % 100 AS r,
                              $2::timestamptz + (i::float8 / $3 * 365 * 86400) * interval '1 second'
                                  AS t,
                              CASE WHEN abs(hashint4(i)::bigint) % 100 < 40 THEN 'incoming'
                                   WHEN abs(hashint4(i)::bigint) % 100 < 60 THEN 'incoming'
                                   WHEN abs(hashint4(i)::bigint) % 100 < 95 THEN 'outgoing'
                                   ELSE 'internal' END AS dir,
                              CASE WHEN abs(hashint4(i)::bigint) % 100 < 40 THEN 'incoming'
                                   WHEN abs(hashint4(i)::bigint) % 100 < 50 THEN 'missed'
                                   WHEN abs(hashint4(i)::bigint) % 100 < 55 THEN 'busy_missed'
                                   WHEN abs(hashint4(i)::bigint) % 100 < 60 THEN 'ended_before_answer'
                                   WHEN abs(hashint4(i)::bigint) % 100 < 85 THEN 'outgoing'
                                   WHEN abs(hashint4(i)::bigint) % 100 < 95 THEN 'outgoing_failed'
                                   ELSE 'incoming' END AS cls
                       FROM generate_series(0, $3 - 1) i) s) g""",
        tenant_id, START, calls, timeout=GENERATE_TIMEOUT)
    took["calls_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    messages = recipients // 10
    await conn.execute(
        """INSERT INTO messages (tenant_id, sp_id, sender, type, text, send_at, recipient_count,
                                 dispatch_started_at)
           SELECT $1, 'BSP' || (i % 5), '0212345678',
                  (ARRAY['sms', 'lms', 'mms'])[1 + abs(hashint4(i)::bigint) % 3], '안내 문자',
                  $2::timestamptz + (i::float8 / $3 * 365 * 86400) * interval '1 second', 10,
                  $2::timestamptz + (i::float8 / $3 * 365 * 86400) * interval '1 second'
           FROM generate_series(0, $3 - 1) i""", tenant_id, START, messages,
        timeout=GENERATE_TIMEOUT)
    await conn.execute(
        """INSERT INTO recipients (message_id, idx, tenant_id, number, state, next_attempt_at,
                                   submitted_at, done_at)
           SELECT m.id, j, m.tenant_id,
                  '010' || lpad(((abs(hashtext(m.id::text)::bigint) + j * 7919) % 100000000)
                                ::text, 8, '0'),
                  CASE WHEN j < 2 AND m.send_at >= $2 THEN 'submitted'
                       WHEN j < 8 THEN 'delivered' WHEN j = 8 THEN 'failed' ELSE
                       (ARRAY['expired', 'rejected', 'delivered'])[1 + abs(hashint4(j)::bigint) % 3] END,
                  m.send_at, m.send_at,
                  CASE WHEN j >= 2 OR m.send_at < $2 THEN m.send_at + interval '5 seconds' END
           FROM messages m CROSS JOIN generate_series(0, 9) j WHERE m.tenant_id = $1""",
        tenant_id, START + timedelta(days=365 - UNSETTLED_DAYS), timeout=GENERATE_TIMEOUT)
    took["messages_s"] = time.perf_counter() - t0
    await conn.execute(
        """INSERT INTO mo_messages (tenant_id, carrier, source, destination, text, received_at,
                                    opt_out)
           SELECT $1, 'skt', '010' || lpad((i % 5000)::text, 8, '0'), '0801234567',
                  CASE WHEN i % 20 = 0 THEN '거부' ELSE '문의' END,
                  $2::timestamptz + (i::float8 / 20000 * 365 * 86400) * interval '1 second',
                  i % 20 = 0
           FROM generate_series(0, 19999) i""", tenant_id, START)
    t0 = time.perf_counter()
    for table in ("call_records", "messages", "recipients", "mo_messages", "extensions"):
        await conn.execute(f"VACUUM (ANALYZE) {table}", timeout=GENERATE_TIMEOUT)
    took["vacuum_analyze_s"] = time.perf_counter() - t0
    return {k: round(v, 1) for k, v in took.items()}


async def roll_up(conn: asyncpg.Connection) -> dict[str, float]:
    """What the daemon's rollup loop does over time (every settled message), at once."""
    t0 = time.perf_counter()
    n = await rollup.roll_up(conn, datetime.now(UTC))
    took = time.perf_counter() - t0
    # Every message row was rewritten once: as autovacuum would in time, tidy up (and give
    # the rollups, new after a migration, their statistics).
    for table in ("messages", *ROLLUPS):
        await conn.execute(f"VACUUM (ANALYZE) {table}", timeout=GENERATE_TIMEOUT)
    unrolled = await conn.fetchval("SELECT count(*) FROM messages WHERE NOT stats_rolled")
    pending = await conn.fetchval(
        "SELECT coalesce(sum(cardinality(stats_pending)), 0) FROM messages WHERE stats_rolled")
    return {"rolled_up": n, "rollup_s": round(took, 1), "messages_not_rolled_up": unrolled,
            "recipients_pending": pending}


SCREENS: list[tuple[str, str, dict[str, str]]] = [
    ("calls_day_by_hour", "/v1/stats/calls", {"group_by": "hour", **DAY}),
    ("calls_month_by_day", "/v1/stats/calls", {"group_by": "day", **MONTH}),
    ("calls_month_day_x_class", "/v1/stats/calls", {"group_by": "day,class", **MONTH}),
    ("calls_month_by_agent", "/v1/stats/calls", {"group_by": "agent", **MONTH}),
    ("calls_month_by_department", "/v1/stats/calls", {"group_by": "department", **MONTH}),
    ("calls_month_by_number", "/v1/stats/calls", {"group_by": "number", **MONTH}),
    ("calls_month_by_class_external", "/v1/stats/calls",
     {"group_by": "class", "internal": "false", **MONTH}),
    ("calls_last_30_days_by_day", "/v1/stats/calls", {"group_by": "day"}),
    ("calls_year_by_month", "/v1/stats/calls", {"group_by": "month", **YEAR}),
    ("calls_year_by_agent", "/v1/stats/calls", {"group_by": "agent", **YEAR}),
    ("calls_year_by_department_x_month", "/v1/stats/calls",
     {"group_by": "department,month", **YEAR}),
    ("calls_year_by_class_external", "/v1/stats/calls",
     {"group_by": "class", "internal": "false", **YEAR}),
    ("calls_year_by_day", "/v1/stats/calls", {"group_by": "day", **YEAR}),
    ("calls_year_by_weekday", "/v1/stats/calls", {"group_by": "weekday", **YEAR}),
    ("calls_year_by_hour", "/v1/stats/calls", {"group_by": "hour", **YEAR}),
    ("cdrs_latest_page", "/v1/cdrs", {}),
    ("cdrs_year_by_customer", "/v1/cdrs", {"customer": CUSTOMER, **YEAR}),
    ("cdrs_year_missed_weekday_business_hours", "/v1/cdrs",
     {"class": "missed", "weekday": "1,2,3,4,5", "hour_from": "9", "hour_to": "17", **YEAR}),
    ("messages_day_by_hour", "/v1/stats/messages", {"granularity": "hour", **DAY}),
    ("messages_month_by_day", "/v1/stats/messages", {"granularity": "day", **MONTH}),
    ("messages_month_by_department", "/v1/stats/messages",
     {"granularity": "month", "group_by": "department", **MONTH}),
    ("messages_year_by_month", "/v1/stats/messages", {"granularity": "month", **YEAR}),
    ("messages_year_by_department", "/v1/stats/messages",
     {"granularity": "month", "group_by": "department", **YEAR}),
    ("messages_year_by_hour", "/v1/stats/messages", {"granularity": "hour", **YEAR}),
    ("messages_last_30_days_by_day", "/v1/stats/messages", {"granularity": "day"}),
    ("inbound_messages_month", "/v1/inbound-messages", MONTH),
]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def run(args: argparse.Namespace) -> None:
    if args.state_dir is not None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        await run_in(args, args.state_dir)
        return
    with tempfile.TemporaryDirectory(prefix="telgate-bench-stats-") as d:
        os.chmod(d, 0o755)
        await run_in(args, Path(d))


async def run_in(args: argparse.Namespace, state_dir: Path) -> None:
    """Generate the year unless `state_dir` already holds it, then time every screen."""
    config = load_config(None, {"TELGATE_STATE_DIR": str(state_dir)})
    async with open_database(config, attach=False) as (setup_pool, dsn):
        async with setup_pool.acquire() as conn:
            tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE name = 'bench'")
            if tenant_id is None:
                t = await tenants.create_tenant(conn, "bench", actor="bench")
                took = await generate(conn, t.id, args.calls, args.recipients)
                tenant_id = t.id
            else:
                took = {"reused": True}
            took.update(await roll_up(conn))
            # A key per run: only its hash is stored, so a kept database's key is unknown.
            key, _ = await tenants.create_key(conn, tenant_id, sp_id=None, label="bench",
                                              actor="bench")
            calls = await conn.fetchval(
                "SELECT count(*) FROM call_records WHERE tenant_id = $1", tenant_id)
            recipients = await conn.fetchval(
                "SELECT count(*) FROM recipients WHERE tenant_id = $1", tenant_id)
        print(json.dumps({"bench": "stats_generate", "calls": calls,
                          "recipients": recipients, **took, "machine": machine()}),
              flush=True)
        logged: list[asyncpg.connection.LoggedQuery] = []

        async def init(conn: asyncpg.Connection) -> None:
            await init_connection(conn)
            conn.add_query_logger(logged.append)

        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4, init=init)
        assert pool is not None
        ctx = AppContext(config=config, pool=pool, metrics=Metrics(), routes=RouteTable(),
                         version="bench")
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
        await client.start_server()
        headers = {"Authorization": f"Bearer {key}"}
        plans: list[tuple[str, str]] = []
        try:
            for name, path, params in SCREENS:
                if args.screens and not any(w in name for w in args.screens.split(",")):
                    continue
                times = []
                for i in range(args.runs + 1):
                    logged.clear()
                    t0 = time.perf_counter()
                    resp = await client.get(path, params=params, headers=headers)
                    body = await resp.read()
                    elapsed = (time.perf_counter() - t0) * 1000
                    assert resp.status == 200, body[:300]
                    if i:
                        times.append(elapsed)
                main = max(logged, key=lambda q: q.elapsed)
                async with setup_pool.acquire() as conn:
                    plan = await conn.fetch(
                        "EXPLAIN (ANALYZE, BUFFERS) " + main.query, *main.args)
                plans.append((name, "\n".join(r[0] for r in plan)))
                items = json.loads(body).get("items", [])
                print(json.dumps({"bench": "stats_screen", "screen": name, "path": path,
                                  "params": params, "runs": args.runs,
                                  "p50_ms": round(pct(times, 0.5), 1),
                                  "p95_ms": round(pct(times, 0.95), 1),
                                  "max_ms": round(max(times), 1), "rows": len(items),
                                  "within_200ms_p95": pct(times, 0.95) < 200}), flush=True)
            if not args.no_export:
                for fmt in ("csv", "xlsx") if args.xlsx else ("csv",):
                    print(json.dumps(await export(client, headers, fmt)), flush=True)
        finally:
            await client.close()
            await pool.close()
        for name, plan in plans:
            print(f"\n-- plan: {name}\n{plan}", flush=True)


async def export(client: TestClient[Any, Any], headers: dict[str, str],
                 fmt: str) -> dict[str, object]:
    """A year of call records streamed to a client that discards it; RSS sampled meanwhile."""
    samples: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append(rss_mb())
            await asyncio.sleep(0.1)

    before = rss_mb()
    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    resp = await client.get("/v1/cdrs/export", params={"format": fmt, **YEAR}, headers=headers)
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
    elapsed = time.perf_counter() - t0
    done.set()
    await sampler
    assert resp.status == 200
    return {"bench": "stats_export", "what": "a year of call records", "format": fmt,
            "bytes": size, "seconds": round(elapsed, 1), "rss_before_mb": round(before, 1),
            "rss_peak_mb": round(max(samples), 1), "rss_after_mb": round(rss_mb(), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--recipients", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--xlsx", action="store_true", help="also export the year as XLSX")
    ap.add_argument("--screens", default="",
                    help="only the screens whose names contain one of these (comma-separated)")
    ap.add_argument("--state-dir", type=Path, default=None,
                    help="keep the embedded database here and reuse its year on the next run")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
