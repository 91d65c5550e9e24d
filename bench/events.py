"""The event stream under load: SSE clients on GET /v1/events while events are written to the
log at a steady rate; delivery latency and the daemon's memory over the run.

    .venv/bin/python -m bench.events [--seconds 300] [--clients 50] [--rate 1000]
                                     [--producer sql|writer]

telgate runs as a process (`daemon.cli run`) on an embedded PostgreSQL in a temporary
directory, SIP and media off. The bench writes `--rate` events a second straight into the
event log (as another instance's writer would: the daemon learns of them over LISTEN/NOTIFY
and reads them from the log), each carrying its write time; `--clients` streams, spread over
`--client-procs` processes, record when each event arrives. Latency is arrival minus write
time (one machine, one clock). The daemon's RSS is sampled every `--sample-seconds`.
Prints JSON lines: one per RSS sample, then the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.messaging import child, emit, free_port, machine, wait_ready  # noqa: E402
from config import load_config  # noqa: E402
from daemon.db import migrate  # noqa: E402
from daemon.embedded_pg import EmbeddedPostgres  # noqa: E402
from handlers import tenants  # noqa: E402
from handlers.calls.events import CallEvent  # noqa: E402
from handlers.events.log import NewEvent  # noqa: E402
from handlers.events.writer import EventLogWriter  # noqa: E402

BUCKET_MS = 0.1  # latency histogram resolution
BUCKETS = 200_000  # up to 20 s


# -- clients (in their own processes) -------------------------------------------------------

async def _stream(base: str, key: str, kind: str, hist: list[int], counts: list[int],
                  stop: float) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(
            f"{base}/v1/events?types={kind}",
            headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200, resp.status
        pending = b""
        async for chunk in resp.content.iter_any():
            now = time.time()
            pending += chunk
            *frames, pending = pending.split(b"\n\n")
            for frame in frames:
                at = frame.find(b'"t":')
                if at < 0:
                    continue
                end = frame.find(b",", at)
                sent = float(frame[at + 4:end])
                ms = (now - sent) * 1000
                hist[min(BUCKETS - 1, max(0, int(ms / BUCKET_MS)))] += 1
                counts[0] += 1
            if now > stop:
                return


def _client_proc(base: str, key: str, kind: str, streams: int, stop: float, out: Any) -> None:
    hist = [0] * BUCKETS
    counts = [0]

    async def run() -> None:
        await asyncio.gather(*(_stream(base, key, kind, hist, counts, stop) for _ in range(streams)),
                             return_exceptions=True)

    asyncio.run(run())
    out.put((counts[0], {i: n for i, n in enumerate(hist) if n}))


# -- producer and sampler -------------------------------------------------------------------

async def produce(dsn: str, tenant: uuid.UUID, rate: int, seconds: float) -> int:
    """Write `rate` events a second for `seconds` (a batch every 10 ms); return how many."""
    conn = await asyncpg.connect(dsn)
    written = 0
    try:
        start = time.perf_counter()
        tick = 0
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate) - written
            if due > 0:
                now = time.time()
                await conn.execute(
                    """INSERT INTO event_log (tenant_id, type, extensions, data)
                       SELECT $1, 'call.answered', '{1001}',
                              jsonb_build_object('t', $2::float8, 'n', n, 'extension', '1001')
                       FROM generate_series($3::int, $4::int) AS n""",
                    tenant, now, written, written + due - 1)
                written += due
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * 0.01 - time.perf_counter()))
    finally:
        await conn.close()
    return written


CALLERS = 20_000  # distinct callers of the writer producer; the first half are customers


class TimedWriter(EventLogWriter):
    """The writer, timing each batch it writes."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.batches = 0
        self.seconds = 0.0

    async def _write(self, events: list[NewEvent]) -> None:
        started = time.perf_counter()
        await super()._write(events)
        self.seconds += time.perf_counter() - started
        self.batches += 1


async def seed_customers(conn: asyncpg.Connection, tenant: uuid.UUID) -> int:
    """Put the first half of the callers in the customer directory, if there is one."""
    if await conn.fetchval("SELECT to_regclass('customers')") is None:
        return 0
    await conn.execute(
        """INSERT INTO customers (tenant_id, number, name)
           SELECT $1, '010' || lpad(n::text, 8, '0'), '고객 ' || n
           FROM generate_series(0, $2 - 1) AS n""", tenant, CALLERS // 2)
    return CALLERS // 2


async def produce_calls(dsn: str, tenant: uuid.UUID, rate: int, seconds: float
                        ) -> tuple[int, dict[str, Any]]:
    """Offer `rate` call events a second (ringing, answered) to an EventLogWriter."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    writer = TimedWriter(pool)
    writer.start()
    offered = 0
    try:
        start = time.perf_counter()
        tick = 0
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate) - offered
            for _ in range(due):
                call, n = uuid.uuid5(uuid.NAMESPACE_OID, str(offered // 2)), offered // 2
                at = datetime.now(UTC)
                if offered % 2 == 0:
                    writer.offer(CallEvent("call.ringing", call, tenant, at, {
                        "t": time.time(), "direction": "incoming",
                        "caller": f"010{n % CALLERS:08d}", "callee": "0212345678",
                        "did": "0212345678", "extensions": ["1001"]}))
                else:
                    writer.offer(CallEvent("call.answered", call, tenant, at,
                                           {"extension": "1001"}))
                offered += 1
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * 0.01 - time.perf_counter()))
        await writer.stop(30)
    finally:
        await pool.close()
    return writer.written, {
        "writer_batches": writer.batches,
        "writer_ms_per_batch": round(writer.seconds * 1000 / max(1, writer.batches), 3),
        "writer_us_per_event": round(writer.seconds * 1e6 / max(1, writer.written), 1),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample_rss(pid: int, every: float, samples: list[tuple[float, float]],
                     start: float) -> None:
    while True:
        with contextlib.suppress(OSError):
            mb = rss_mb(pid)
            samples.append((round(time.monotonic() - start, 1), round(mb, 1)))
            emit({"bench": "events_rss", "t_s": samples[-1][0], "rss_mb": samples[-1][1]})
        await asyncio.sleep(every)


def percentile(hist: dict[int, int], total: int, q: float) -> float:
    want = q * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= want:
            return round((bucket + 1) * BUCKET_MS, 1)
    return float("nan")


# -- the run --------------------------------------------------------------------------------

async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    config = load_config(None, {"TELGATE_STATE_DIR": str(work / "state")})
    pg = EmbeddedPostgres(config.state_dir, config.database.embedded)
    await pg.start()
    try:
        conn = await asyncpg.connect(pg.dsn)
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads,
                                  schema="pg_catalog")
        try:
            await migrate(conn)
            t = await tenants.create_tenant(conn, "bench", actor="bench")
            key, _ = await tenants.create_key(conn, t.id, sp_id=None, label="bench",
                                              actor="bench")
            customers = await seed_customers(conn, t.id) if args.producer == "writer" else 0
        finally:
            await conn.close()
        port = free_port()
        cfg = work / "telgate.toml"
        cfg.write_text(f'[api]\nport = {port}\n[log]\nformat = "json"\nlevel = "warning"\n'
                       "[sip]\nenabled = false\n[media]\nenabled = false\n")
        env = {**os.environ, "TELGATE_STATE_DIR": str(work / "state"),
               "TELGATE_DATABASE__DSN": json.dumps(pg.dsn), "PYTHONPATH": str(ROOT)}
        base = f"http://127.0.0.1:{port}"
        async with child([sys.executable, "-m", "daemon.cli", "run", "--config", str(cfg)],
                         env=env, log=work / "daemon.log") as proc, \
                aiohttp.ClientSession() as http:
            await wait_ready(http, base, proc)
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            stop = time.time() + args.seconds + 5
            per = [args.clients // args.client_procs + (i < args.clients % args.client_procs)
                   for i in range(args.client_procs)]
            kind = "call.ringing" if args.producer == "writer" else "call.answered"
            procs = [ctx.Process(target=_client_proc, args=(base, key, kind, n, stop, out))
                     for n in per if n]
            for p in procs:
                p.start()
            await asyncio.sleep(3)  # every stream open
            samples: list[tuple[float, float]] = []
            start = time.monotonic()
            sampler = asyncio.create_task(sample_rss(proc.pid, args.sample_seconds, samples,
                                                     start))
            writer: dict[str, Any] = {}
            if args.producer == "writer":
                written, writer = await produce_calls(pg.dsn, t.id, args.rate, args.seconds)
                streamed = (written + 1) // 2  # the streams follow call.ringing only
            else:
                written = streamed = await produce(pg.dsn, t.id, args.rate, args.seconds)
            await asyncio.sleep(3)
            sampler.cancel()
            samples.append((round(time.monotonic() - start, 1), round(rss_mb(proc.pid), 1)))
            results = [await asyncio.to_thread(out.get, True, args.seconds + 60) for _ in procs]
            for p in procs:
                p.join(10)
        delivered = sum(r[0] for r in results)
        hist: dict[int, int] = {}
        for _, h in results:
            for b, n in h.items():
                hist[b] = hist.get(b, 0) + n
        warm = [mb for t_s, mb in samples if t_s >= min(30.0, args.seconds / 4)]
        return {
            "bench": "events_stream", "seconds": args.seconds, "clients": args.clients,
            "rate": args.rate, "producer": args.producer, "customers": customers,
            "events_written": written, **writer,
            "deliveries_expected": streamed * args.clients, "deliveries": delivered,
            "latency_p50_ms": percentile(hist, delivered, 0.50),
            "latency_p99_ms": percentile(hist, delivered, 0.99),
            "latency_max_ms": percentile(hist, delivered, 1.0),
            "rss_first_mb": samples[0][1] if samples else None,
            "rss_after_warmup_mb": warm[0] if warm else None,
            "rss_last_mb": samples[-1][1] if samples else None,
            "rss_max_mb": max(mb for _, mb in samples) if samples else None,
            "machine": machine(), "load_1m": os.getloadavg()[0],
        }
    finally:
        await pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rate", type=int, default=1000, help="events written per second")
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--sample-seconds", type=float, default=10.0)
    ap.add_argument("--producer", choices=("sql", "writer"), default="sql",
                    help="sql: INSERT straight into the log; writer: call events through "
                         "EventLogWriter, as the call engine sends them")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="telgate-bench-events-") as work:
        emit(asyncio.run(run(args, Path(work))))


if __name__ == "__main__":
    main()
