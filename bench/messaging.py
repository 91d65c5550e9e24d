"""End-to-end messaging benchmark: telgate (API accept → SMPP → receipt stored) and Kannel
(smsbox sendsms → bearerbox → SMPP → DLR delivered to a dlr-url) against the same SMSC simulator
with the same messages and delivery receipts, each side's throughput beside its CPU time.

    .venv/bin/python -m bench.messaging [--runs 3] [--recipients 50000] [--per-request 1000]
        [--rates 100,250,500] [--latency-seconds 10] [--saturation 250,500,...,1500]
        [--kannel-windows W,..] [--kannel-per-request N,..] [--kannel-binds B,..]
        [--kannel-in-flight F,..] [--kannel-option group.key=value ...] [--kannel-log-level 4]
        [--no-telgate] [--no-kannel] [--quiet-wait 60] [--busy-limit 0.1] [--busy-retries 2]
        [--daemon-tree PATH] [--keep-logs DIR] [--warm-wal 512] [--warm-up 10000]

Every piece runs as its own process on this machine: the SMSC simulator (`python -m sim.smsc`),
PostgreSQL (telgate's embedded cluster), the daemon (`python -m daemon.cli run`), and for the
comparison Kannel's bearerbox and smsbox (Debian package `kannel`). This process sends the HTTP
requests, receives Kannel's DLRs and watches for completion. Each run starts everything afresh
(simulator, database and daemon; simulator, bearerbox and smsbox); the new database is first
given the WAL segments a running one recycles (`--warm-wal`, see `warm_wal`). Before a measured
run each side sends `--warm-up` messages the same way and waits for them to complete, as a
gateway in service has: telgate's database then has its shared memory, relation files and
plans in use, and Kannel its connections and buffers. Alternating pairs, 50,000 recipients
(2026-12-07): telgate 12,533 / 12,700 / 12,795 msg/s cold against 14,206 / 11,355 / 13,789
warmed by 10,000 (PostgreSQL 67.6-71.4 against 53.8-62.4 µs a message); Kannel 6,579 / 7,095
cold against 7,066 / 6,895 warmed (230.6-241.0 µs a message either way). Against one Kannel
configuration the two sides' runs alternate, so that the machine's drift (it swings by a
tenth within minutes) falls on both. Prints one JSON line per figure, with the machine and its
load.

telgate throughput: `--recipients` numbers in requests of `--per-request` (`--in-flight` at a
time), from the first POST until every recipient is final in PostgreSQL. Kannel throughput: the
same numbers and text (UCS-2, as Kannel sends Korean) through sendsms, from the first request
until every DLR (dlr-mask 1, delivered) reached our dlr-url. `--runs` runs a side; the summary
gives median, min and max, and `telgate_vs_kannel` divides the medians.

CPU: during each measured interval, the CPU seconds of the daemon's process tree and of the
PostgreSQL postmaster's (telgate), of bearerbox and smsbox (Kannel), and apart from both, of the
simulator and of this process, which serve both sides alike (bench/cpu.py says how). Printed as
`cpu_us_per_msg`: µs per message of each part and of the side's total.

Single sends (telgate only): open-loop single-recipient sends at each steady rate of `--rates`
for `--latency-seconds` (a slow answer does not slow the schedule), p50/p99 of the API answer;
the sends are dispatched too, as in production. Then the saturation search: each rate of
`--saturation` for `--saturation-seconds`, ascending until one is not sustained; sustained
means the achieved rate within 5% of the target, no error, and p99 under 100 ms.

The machine may be shared: before each run the bench waits (`--quiet-wait`) for three idle
seconds, and a run during which the rest of the machine used more than `--busy-limit` CPUs on
average is printed with `kept: false` and repeated (`--busy-retries`).

How Kannel (1.4.5) is run, as its experienced users would: bearerbox and smsbox with `-v 4`
(console verbosity: panics only; without it they write every PDU and message at debug level to
stdout, 166 MB for 20,000 messages, which halved their throughput) and `log-level = 4` in their
files (2, warnings, measured the same: nothing is written per message at either), receipts on
(dlr-mask 1, dlr-url, `dlr-storage = internal`, in memory), no store file, `msg-id-type = 0x03`
as the simulator writes hex ids in both places, one simulator account per bind (see
kannel_accounts). The dlr-url is served by a bare protocol in this process (DlrSink).

Kannel's best configuration on this 2-core machine (AMD EPYC, shared), found with this module
(`--no-telgate --runs 1 --recipients 20000` and comma lists), msg/s of two kept runs (*: the
rest of the machine was busy in all three attempts), 1-min load 1.3-3.8, CPU per message of
bearerbox + smsbox 220-340 µs:

    window (max-pending-submits) × binds, 100 recipients per request, 4 requests in flight:
                 1 bind          2 binds
        100      4015 3726       5612 5819
        200      5854 6031       5279* 5951
       1000      5318 5822       6298 5729
    recipients per sendsms request, window 1000, 1 bind, 4 in flight:
        10: 5743 5113   50: 5763 5495   100: 5318 5822   500: 5873 5067
    sendsms requests in flight, window 1000, 1 bind, 100 per request:
        1: 5498 5011    4: 5318 5822    16: 5143 4674
    window 1000, 1 bind, 100 per request, 4 in flight, with one more setting:
        core smsbox-max-pending = 1000 (default 100): 5999 5477
        smsbox max-pending-requests = 2048 (default 512): 5088 6158

Past window 200 with one bind (100 with two) the figures sit on a plateau within the runs'
own spread, and there the machine is the limit: Kannel's two boxes, the simulator and this
process use 1.9 of the 2 CPUs, while no Kannel thread is busy more than 35% of the time
(/proc/<pid>/task in a 50,000 run).
The leaders head to head at 50,000 messages, three interleaved runs each, the rest of the
machine idle in all (load 1.9-3.3): window 1000, 1 bind: 5910 5813 5840 (median 5840);
window 200, 1 bind: 5898 5288 5838; window 1000, 2 binds: 4677 5543 5359 (all 100 per
request, 4 in flight). The first is the default (KANNEL_DEFAULTS). Without a difference
beyond the noise: the two settings above, log-level 2 instead of 4, 1 or 4 requests in flight
(16 measured lower, with more CPU per message).
Not tried, as they cannot apply here: `throughput` (unset: no limit), `sms-outgoing-queue-
limit` (default 1 million, above a run), `http-request-retry` (no request fails),
`sendsms-chars` (the default admits digits and the space that separates recipients),
`max-messages` (one part a message), `wait-ack` and `enquire-link-interval` (no ack is late; a
run is shorter than the interval).

telgate's side is held to the same rule: its window is the one it does best with here, as an
operator sets it to what the carrier allows (the simulator allows any). Two binds, 50,000
recipients, runs interleaved (2026-12-07, `--runs 1 --no-kannel --latency-seconds 0
--saturation '' --window W`): window 100 (the product's default, a common carrier limit)
11736 12326 12350; 200: 12242 12401 13078; 400: 13367 13612 13424 13613 13528; 1000: 13742
12966 msg/s. 400 is the default here (`--window`). (Two sessions earlier, when the dispatcher
still ran a task per recipient, a bigger window cost more CPU per message and 100 measured
best.)

Timing starts once bearerbox lists the smsbox as connected (its sendsms port opens before):
before that was waited for, Kannel's start-up was inside the interval, ~0.5-1 s, and the
same points measured 10-30% lower at 20,000 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.cpu import CpuMeter, wait_quiet  # noqa: E402
from bench.http_load import LeanClient  # noqa: E402
from config import load_config  # noqa: E402
from daemon.db import migrate  # noqa: E402
from daemon.embedded_pg import EmbeddedPostgres, _postmaster_pid  # noqa: E402
from handlers import tenants  # noqa: E402
from handlers.registry import senders  # noqa: E402

SENDER = "0212345678"
TEXT = "[telgate] 안녕하세요 고객님, 주문하신 상품이 발송되었습니다."
FINAL = ("delivered", "failed", "expired", "rejected", "canceled")
SUSTAINED_P99_MS = 100.0  # the saturation point's latency bound
SUSTAINED_SHORTFALL = 0.05  # achieved rate may fall this far below the target
STALL_SECONDS = 15.0  # no progress this long ends a throughput run as incomplete
# Kannel's best configuration on this machine (see the module docstring for the sweep).
KANNEL_DEFAULTS: dict[str, list[int]] = {"windows": [1000], "per_request": [100], "binds": [1],
                                         "in_flight": [4]}


def machine() -> dict[str, object]:
    """What this ran on, so figures from different machines are not compared blindly."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform()}


def emit(record: dict[str, object]) -> None:
    # Other work on the machine skews every figure: record how busy it was.
    print(json.dumps({**record, "machine": machine(), "load_1m": round(os.getloadavg()[0], 2)},
                     ensure_ascii=False), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def numbers(n: int, first: int = 2000_0000) -> list[str]:
    """`n` distinct valid mobile numbers."""
    return [f"010{first + i:08d}" for i in range(n)]


def warm_up_numbers(args: argparse.Namespace) -> list[str]:
    """The `--warm-up` batch: numbers apart from the measured ones."""
    return numbers(args.warm_up, first=5000_0000)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max: the runs' figure and how far apart they were."""
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1)}


async def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def child(argv: Sequence[str], *, env: dict[str, str] | None = None,
                log: Path | None = None,
                cwd: Path = ROOT) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process, stopped with SIGTERM (then SIGKILL) on exit."""
    out = await asyncio.to_thread(log.open, "wb") if log else subprocess.DEVNULL
    try:
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=out,
                                                    stderr=subprocess.STDOUT, cwd=cwd)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    finally:
        if not isinstance(out, int):
            out.close()


@contextlib.asynccontextmanager
async def simulator(log: Path, accounts: Sequence[str]) -> AsyncIterator[tuple[int, int]]:
    """A fresh SMSC simulator with these accounts (password "bench"); yields (port, pid).

    Fresh per run so that no receipt held for a previous run's binds reaches the next one."""
    port = free_port()
    argv = [sys.executable, "-m", "sim.smsc", "--port", str(port)]
    for account in accounts:
        argv += ["--account", f"{account}:bench"]
    async with child(argv, log=log) as proc:
        await wait_port(port)
        yield port, proc.pid


def cpu_record(meter: CpuMeter, messages: int, side: Sequence[str]) -> dict[str, Any]:
    """The interval's CPU: seconds of every part, µs per message of the side's parts and
    their total, and apart, of the parts both sides share (simulator, this process)."""
    shared = [name for name in meter.roots if name not in side]
    return {"cpu_s": meter.used, "cpu_us_per_msg": meter.per_message(messages, side),
            "shared_cpu_us_per_msg": meter.per_message(messages, shared),
            "others_cpu_s": meter.others}


# -- telgate -----------------------------------------------------------------------------------

async def prepare_tenant(dsn: str) -> str:
    """A tenant with an API key and the registered sender; returns the key."""
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads,
                              schema="pg_catalog")
    try:
        await migrate(conn)
        t = await tenants.create_tenant(conn, "bench", actor="bench")
        key, _ = await tenants.create_key(conn, t.id, sp_id=None, label="bench", actor="bench")
        await senders.register(conn, t.id, SENDER, actor="bench")
    finally:
        await conn.close()
    return key


def daemon_config(path: Path, api_port: int, smsc_port: int, binds: int, window: int,
                  log_level: str) -> None:
    path.write_text(f"""
[api]
host = "127.0.0.1"
port = {api_port}
max_body_bytes = 4194304

[log]
format = "json"
level = "{log_level}"

[database]
pool_max = 20

[[smpp.carriers]]
name = "sim"
host = "127.0.0.1"
port = {smsc_port}
system_id = "telgate"
password = "bench"
binds = {binds}
window = {window}
""")


async def final_count(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE state = ANY($1::text[])) AS final, "
        "count(*) FILTER (WHERE state = 'delivered') AS delivered FROM recipients", list(FINAL))
    assert row is not None
    return int(row["final"]), int(row["delivered"])


# The recipients not final yet, each state through its own partial index (migrations 0003 and
# 0010), so a poll reads only the rows left: the planner may not know yet how many that is.
_PENDING = ("SELECT (SELECT count(*) FROM recipients WHERE state = 'queued')"
            " + (SELECT count(*) FROM recipients WHERE state = 'claimed')"
            " + (SELECT count(*) FROM recipients WHERE state = 'submitted')")


async def pending_count(conn: asyncpg.Connection) -> int:
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        return int(await conn.fetchval(_PENDING))


async def wait_final(conn: asyncpg.Connection, expected: int, timeout: float,
                     poll: float = 0.01) -> tuple[int, int]:
    """Poll until `expected` recipients (all accepted already) are final, or no more became
    final for STALL_SECONDS, or `timeout`; then count final and delivered ones.

    The polls are PostgreSQL work charged to telgate's CPU figure, so they are kept small: a
    poll counts only the recipients still pending, through the partial indexes of their states
    (a count over the whole table was 24 ms of PostgreSQL's time at 100,000 recipients, 6.5 µs
    a message over a run); it sleeps half the time the last rate predicts for the rest (2 s at
    most: a run twice as fast as predicted is still caught), and `poll` once the end is near,
    so the end is found within `poll` (10 ms: a fifth of a percent of a 4-s run, as Kannel's
    end is the moment its last DLR arrives)."""
    deadline = time.monotonic() + timeout
    first = last = -1
    started = moved = time.monotonic()
    while True:
        final = expected - await pending_count(conn)
        now = time.monotonic()
        if first < 0:
            first = final
        if final != last:
            last, moved = final, now
        if final >= expected or now > deadline or now - moved > STALL_SECONDS:
            return await final_count(conn)
        rate = (final - first) / (now - started) if now > started else 0.0
        ahead = (expected - final) / rate / 2 if rate > 0 else poll
        await asyncio.sleep(min(2.0, max(poll, ahead)))


async def telgate_throughput(http: aiohttp.ClientSession, base: str, key: str, dsn: str,
                             to: list[str], per_request: int, in_flight: int,
                             meter: CpuMeter | None = None) -> dict[str, Any]:
    """Send `to` in bulk requests and time it until every recipient is final; with `meter`,
    also the CPU the processes used in that interval."""
    headers = {"Authorization": f"Bearer {key}"}
    chunks = [to[i:i + per_request] for i in range(0, len(to), per_request)]
    sem = asyncio.Semaphore(in_flight)
    conn = await asyncpg.connect(dsn)
    try:
        before, delivered_before = await final_count(conn)  # (the warm-up's)
        if meter:
            meter.start()
        started = time.perf_counter()

        async def post(chunk: list[str]) -> None:
            async with sem, http.post(f"{base}/v1/messages", headers=headers,
                                      json={"from": SENDER, "to": chunk, "text": TEXT}) as r:
                if r.status != 202:
                    raise RuntimeError(f"POST /v1/messages answered {r.status}: {await r.text()}")

        await asyncio.gather(*(post(c) for c in chunks))
        accepted = time.perf_counter() - started
        final, delivered = await wait_final(conn, before + len(to), timeout=600)
        took = time.perf_counter() - started
        if meter:
            meter.stop()
    finally:
        await conn.close()
    return {"recipients": len(to), "requests": len(chunks), "per_request": per_request,
            "in_flight": in_flight, "accepted_seconds": round(accepted, 3),
            "seconds": round(took, 3), "final": final - before,
            "delivered": delivered - delivered_before,
            "complete": final - before >= len(to), "msg_per_s": round(len(to) / took)}


async def total(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM recipients"))


async def telgate_latency(http: aiohttp.ClientSession, base: str, key: str, rate: float,
                          seconds: float, offset: int = 0) -> dict[str, Any]:
    """Single-recipient sends at a steady `rate` (open loop): p50/p99 of the API's answer,
    from the moment each request was due. The requests go through `LeanClient` (persistent
    connections, prepared bytes; bench/http_load.py says why not aiohttp's client)."""
    client = LeanClient(base, {"Authorization": f"Bearer {key}"})
    count = int(rate * seconds)
    latencies: list[float] = []
    errors: dict[str, int] = {}  # by HTTP status, or the client's exception

    async def one(number: str, due: float) -> None:
        body = json.dumps({"from": SENDER, "to": [number], "text": TEXT},
                          ensure_ascii=False).encode()
        try:
            status = await client.post("/v1/messages", body)
            if status != 202:
                errors[str(status)] = errors.get(str(status), 0) + 1
        except (OSError, TimeoutError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        latencies.append(time.perf_counter() - due)

    targets = [f"010{3000_0000 + offset + i:08d}" for i in range(count)]
    tasks: list[asyncio.Task[None]] = []
    # The load generator's own cyclic GC stays off while it measures: its full passes over
    # the run's tasks took 47-63 ms, and every request due in one was sent late and counted
    # as the daemon's latency. (Reference counting frees the rest; one collection after.)
    gc.disable()
    try:
        start = time.perf_counter()
        for i, number in enumerate(targets):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(number, start + i / rate)))
        await asyncio.gather(*tasks)
        achieved = count / (time.perf_counter() - start)
    finally:
        gc.enable()
        gc.collect()
    client.close()
    latencies.sort()
    return {"requests": count, "target_rate": rate, "achieved_rate": round(achieved, 1),
            "errors": sum(errors.values()), "error_kinds": errors,
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2)}


def sustained(one: dict[str, Any]) -> bool:
    """A rate is sustained when it was kept (within 5%), without errors, with p99 < 100 ms."""
    return bool(one["achieved_rate"] >= one["target_rate"] * (1 - SUSTAINED_SHORTFALL)
                and one["errors"] == 0 and one["p99_ms"] < SUSTAINED_P99_MS)


@dataclass
class Telgate:
    """A running daemon on its own database, and what the bench needs to drive it."""

    http: aiohttp.ClientSession
    base: str
    key: str
    dsn: str
    daemon_pid: int
    postgres_pid: int


@contextlib.asynccontextmanager
async def telgate(args: argparse.Namespace, work: Path, smsc_port: int) -> AsyncIterator[Telgate]:
    """A fresh database and daemon in `work`, ready to send through the simulator."""
    config = load_config(None, {"TELGATE_STATE_DIR": str(work / "state")})
    pg = EmbeddedPostgres(config.state_dir, config.database.embedded)
    await pg.start()
    try:
        key = await prepare_tenant(pg.dsn)
        await warm_wal(pg.dsn, args.warm_wal)
        postmaster = _postmaster_pid(pg.paths.data)
        assert postmaster is not None, "postmaster.pid not written"
        api_port = free_port()
        cfg = work / "telgate.toml"
        daemon_config(cfg, api_port, smsc_port, args.binds, args.window, args.daemon_log_level)
        tree = args.daemon_tree.resolve()
        # No SIP: messaging needs none, and its fixed port (5060) would clash with any other
        # daemon on the machine (another engineer's bench or tests).
        env = {**os.environ, "TELGATE_STATE_DIR": str(work / "state"),
               "TELGATE_DATABASE__DSN": json.dumps(pg.dsn), "PYTHONPATH": str(tree),
               "TELGATE_SIP__ENABLED": "false"}
        base = f"http://127.0.0.1:{api_port}"
        async with child([sys.executable, "-m", "daemon.cli", "run", "--config", str(cfg)],
                         env=env, log=work / "daemon.log", cwd=tree) as proc, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:
            await wait_ready(http, base, proc)
            yield Telgate(http, base, key, pg.dsn, proc.pid, postmaster)
    finally:
        await pg.stop()


async def warm_wal(dsn: str, megabytes: int) -> None:
    """Give the fresh cluster the WAL segments a running one has.

    A new cluster creates each 16 MB WAL segment when it first needs it: it writes 16 MB of
    zeros and flushes them while holding the WAL write lock, so every commit waits (36-38 ms
    statements and 100-200 ms late single sends were caught at one, docs/performance.md,
    eighth round). A cluster that has been running recycles the segments its checkpoints free
    instead, up to `min_wal_size`. So before the daemon starts: `min_wal_size` raised to
    `megabytes`, that much WAL written (one small message and a segment switch at a time), and
    a checkpoint, which keeps the segments for reuse. 0: a fresh cluster as it comes."""
    if megabytes <= 0:
        return
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER SYSTEM SET min_wal_size = '{megabytes}MB'")
        await conn.execute(f"ALTER SYSTEM SET max_wal_size = '{max(2 * megabytes, 1024)}MB'")
        await conn.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.5)  # the checkpointer reads the new sizes on its next wake-up
        segment = int(await conn.fetchval("SELECT setting::bigint FROM pg_settings "
                                          "WHERE name = 'wal_segment_size'"))
        for _ in range(megabytes * 1024 * 1024 // segment):
            await conn.execute("SELECT pg_logical_emit_message(false, 'bench', 'warm')")
            await conn.execute("SELECT pg_switch_wal()")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def quiet_machine(args: argparse.Namespace) -> float:
    """Flush the disk's pending writes, then wait for idle seconds; returns the time taken.
    A run's database leaves hundreds of MB for the kernel to write back after it stops, and
    the next run's commits (each a flush to disk) would wait behind that writeback: the idle
    check alone sees only CPU."""
    started = time.monotonic()
    await asyncio.to_thread(os.sync)
    return time.monotonic() - started + await wait_quiet(args.quiet_wait)


async def telgate_run(args: argparse.Namespace, work: Path, run: int,
                      attempt: int) -> dict[str, Any]:
    """One throughput run on fresh processes."""
    work = work / f"attempt-{attempt}"
    await asyncio.to_thread(work.mkdir, parents=True)
    waited = await quiet_machine(args)
    async with simulator(work / "smsc.log", ["telgate"]) as (smsc_port, smsc_pid), \
            telgate(args, work, smsc_port) as tg:
        if args.warm_up:
            warm = await telgate_throughput(tg.http, tg.base, tg.key, tg.dsn,
                                            warm_up_numbers(args), args.per_request,
                                            args.in_flight)
            if not warm["complete"]:  # its stragglers would be counted in the measured run
                raise RuntimeError(f"telgate's warm-up: {warm['final']} of {args.warm_up} final")
            waited += await quiet_machine(args)
        meter = CpuMeter({"daemon": tg.daemon_pid, "postgres": tg.postgres_pid,
                          "smsc_sim": smsc_pid, "bench": os.getpid()})
        result = await telgate_throughput(tg.http, tg.base, tg.key, tg.dsn,
                                          numbers(args.recipients), args.per_request,
                                          args.in_flight, meter)
        result = {"bench": "telgate_end_to_end", "run": run, **result, "binds": args.binds,
                  "window": args.window, **cpu_record(meter, args.recipients,
                                                      ["daemon", "postgres"]),
                  "waited_for_quiet_s": waited}
    return result


async def telgate_single_sends(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The single-send runs on fresh processes of their own: after a bulk run the database
    holds its rows (and their dead versions), which is another measurement."""
    await asyncio.to_thread(work.mkdir, parents=True)
    async with simulator(work / "smsc.log", ["telgate"]) as (smsc_port, smsc_pid), \
            telgate(args, work, smsc_port) as tg:
        return await single_send_runs(args, tg, {"daemon": tg.daemon_pid,
                                                 "postgres": tg.postgres_pid,
                                                 "smsc_sim": smsc_pid, "bench": os.getpid()})


async def settle(dsn: str) -> None:
    """Wait for every recipient so far to be final, so a rate starts on a quiet daemon."""
    conn = await asyncpg.connect(dsn)
    try:
        await wait_final(conn, await total(conn), 120)
    finally:
        await conn.close()


async def single_send_runs(args: argparse.Namespace, tg: Telgate,
                           roots: dict[str, int]) -> dict[str, Any]:
    """The latency runs at `--rates`, then the saturation search over `--saturation`; returns
    the p99 of each rate and the saturation point for the summary."""
    offset = 0
    p99: dict[str, float] = {}
    for rate in args.rates if args.latency_seconds > 0 else []:
        one = await single_sends(args, tg, roots, rate, args.latency_seconds, offset)
        offset += 1_000_000
        emit({"bench": "telgate_single_send_latency", **one})
        p99[f"{rate:g}"] = one["p99_ms"]
    best: float | None = None
    for rate in args.saturation:
        one = await single_sends(args, tg, roots, rate, args.saturation_seconds, offset)
        offset += 1_000_000
        ok = sustained(one)
        emit({"bench": "telgate_saturation_step", **one, "sustained": ok})
        if not ok:
            break
        best = rate
    if args.saturation:
        emit({"bench": "telgate_saturation", "highest_sustained_rate": best,
              "rates_tried": args.saturation, "seconds_per_rate": args.saturation_seconds,
              "criterion": f"achieved ≥ {1 - SUSTAINED_SHORTFALL:.0%} of target, no errors, "
                           f"p99 < {SUSTAINED_P99_MS:.0f} ms"})
    return {"single_send_p99_ms": p99, "saturation_req_per_s": best}


async def single_sends(args: argparse.Namespace, tg: Telgate, roots: dict[str, int],
                       rate: float, seconds: float, offset: int) -> dict[str, Any]:
    """One steady rate on a settled daemon and an idle machine, with the CPU it took: this
    process's share tells whether the client, not the daemon, set the latency."""
    await settle(tg.dsn)
    quiet_s = await quiet_machine(args)
    meter = CpuMeter(roots)
    meter.start()
    one = await telgate_latency(tg.http, tg.base, tg.key, rate, seconds, offset)
    meter.stop()
    return {**one, **cpu_record(meter, one["requests"], ["daemon", "postgres"]),
            "waited_for_quiet_s": round(quiet_s, 2)}


async def wait_ready(http: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process,
                     timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}; see its log")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError("daemon not ready in time")


# -- Kannel ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KannelSetup:
    """One Kannel configuration the sweep tries."""

    window: int  # max-pending-submits of each smsc connection
    per_request: int  # recipients in one sendsms request (space-separated `to`)
    binds: int  # smsc groups with the same smsc-id: connections to the simulator
    in_flight: int  # sendsms requests open at once


def kannel_accounts(setup: KannelSetup) -> list[str]:
    """One simulator account per smsc connection.

    The simulator sends an account's receipts on its first receiving bind. With two binds of
    one account a receipt for a submit of the second can overtake that submit's response
    (the simulator answers and receipts at once), and Kannel then drops it ("got DLR but could
    not find message"): seen here as 44 DLRs lost in 20,000 at window 1000. An account per
    bind brings each receipt back on the connection that submitted, as Kannel needs."""
    return [f"kannel{i}" for i in range(1, setup.binds + 1)]


def kannel_config(path: Path, work: Path, smsc_port: int, setup: KannelSetup,
                  ports: dict[str, int], log_level: int,
                  options: Sequence[tuple[str, str, str]] = ()) -> None:
    """kannel.conf for one run; `options` are (group, key, value) lines added to a group."""
    def extra(group: str) -> str:
        return "".join(f"{k} = {v}\n" for g, k, v in options if g == group)

    smsc = "".join(f"""
group = smsc
smsc = smpp
smsc-id = sim
host = 127.0.0.1
port = {smsc_port}
transceiver-mode = true
smsc-username = {account}
smsc-password = bench
system-type = ""
max-pending-submits = {setup.window}
msg-id-type = 0x03
{extra("smsc")}""" for account in kannel_accounts(setup))
    path.write_text(f"""
group = core
admin-port = {ports["admin"]}
admin-password = bench
status-password = bench
smsbox-port = {ports["smsbox"]}
log-level = {log_level}
log-file = "{work}/bearerbox.log"
box-allow-ip = "127.0.0.1"
admin-allow-ip = "127.0.0.1"
dlr-storage = internal
{extra("core")}{smsc}
group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {ports["smsbox"]}
sendsms-port = {ports["sendsms"]}
log-level = {log_level}
log-file = "{work}/smsbox.log"
{extra("smsbox")}
group = sendsms-user
username = bench
password = bench
max-messages = 10
concatenation = true
{extra("sendsms-user")}
group = sms-service
keyword = default
text = "ok"
""")


class DlrCounts:
    """Delivery reports received on the dlr-url, by type (1 = delivered)."""

    def __init__(self, expected: int) -> None:
        self.by_type: dict[bytes, int] = {}
        self.got = 0
        self.expected = expected
        self.last = 0.0  # perf_counter of the latest report
        self.done = asyncio.Event()

    def add(self, kind: bytes) -> None:
        self.by_type[kind] = self.by_type.get(kind, 0) + 1
        self.got += 1
        self.last = time.perf_counter()
        if self.got >= self.expected:
            self.done.set()


class DlrSink(asyncio.Protocol):
    """Kannel's dlr-url: a bare HTTP/1.1 keep-alive server that only counts.

    Kannel's smsbox fetches the dlr-url once per message, and this process shares the 2 CPUs
    with Kannel: aiohttp's server took 55 µs of its CPU per DLR, this takes 27. It does the
    least a server can: split requests, read `type=`, answer 200 (keep-alive, as Kannel asks)."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

    def __init__(self, counts: DlrCounts) -> None:
        self.counts = counts
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        answers, close = 0, False
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            line = head[:head.find(b"\r\n")] if b"\r\n" in head else head
            at = line.find(b"type=")
            self.counts.add(line[at + 5:].split(b"&", 1)[0].split(b" ", 1)[0] if at >= 0
                            else b"?")
            answers += 1
            close = close or b"connection: close" in head.lower()
        if answers and self.transport is not None:
            self.transport.write(self.ANSWER * answers)
            if close:
                self.transport.close()


def kannel_binaries() -> tuple[str, str]:
    return (shutil.which("bearerbox") or "/usr/sbin/bearerbox",
            shutil.which("smsbox") or "/usr/sbin/smsbox")


async def kannel_run(args: argparse.Namespace, work: Path, setup: KannelSetup,
                     run: int, attempt: int) -> dict[str, Any]:
    """One Kannel run on fresh processes (simulator, bearerbox, smsbox)."""
    bearerbox, smsbox = kannel_binaries()
    work = work / f"attempt-{attempt}"
    await asyncio.to_thread(work.mkdir, parents=True)
    ports = {"admin": free_port(), "smsbox": free_port(), "sendsms": free_port()}
    conf = work / "kannel.conf"
    to = numbers(args.recipients)
    counts = DlrCounts(len(to))
    warm = DlrCounts(args.warm_up)
    sinks: list[DlrSink] = []  # every connection smsbox opened, to count into `counts` after
    # the warm-up (it keeps them alive)

    def sink_for() -> DlrSink:
        sinks.append(DlrSink(warm if warm.got < args.warm_up else counts))
        return sinks[-1]

    loop = asyncio.get_running_loop()
    sink = await loop.create_server(sink_for, "127.0.0.1", 0, backlog=1024)
    dlr_port = sink.sockets[0].getsockname()[1]
    dlr_url = quote(f"http://127.0.0.1:{dlr_port}/dlr?type=%d", safe="")
    verbosity = ["-v", str(args.kannel_log_level)]
    waited = await quiet_machine(args)
    try:
        async with simulator(work / "smsc.log", kannel_accounts(setup)) as (smsc_port, smsc_pid):
            kannel_config(conf, work, smsc_port, setup, ports, args.kannel_log_level,
                          args.kannel_option)
            async with child([bearerbox, *verbosity, str(conf)], log=work / "bearerbox.out") as bb, \
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:
                await wait_port(ports["smsbox"])
                await wait_kannel_status(http, ports["admin"], setup.binds, smsbox=False)
                async with child([smsbox, *verbosity, str(conf)], log=work / "smsbox.out") as sb:
                    await wait_port(ports["sendsms"])
                    await wait_kannel_status(http, ports["admin"], setup.binds, smsbox=True)
                    if args.warm_up:
                        await kannel_send(http, setup, ports, warm_up_numbers(args), dlr_url,
                                          warm, None)
                        if warm.got < args.warm_up:
                            raise RuntimeError(f"Kannel's warm-up: {warm.got} of "
                                               f"{args.warm_up} DLRs")
                        for one in sinks:
                            one.counts = counts
                        waited += await quiet_machine(args)
                    meter = CpuMeter({"bearerbox": bb.pid, "smsbox": sb.pid,
                                      "smsc_sim": smsc_pid, "bench": os.getpid()})
                    accepted, took = await kannel_send(http, setup, ports, to, dlr_url, counts,
                                                       meter)
    finally:
        sink.close()
    result = {"bench": "kannel_end_to_end", "run": run, "recipients": len(to), **asdict(setup),
              "accepted_seconds": round(accepted, 3), "seconds": round(took, 3),
              "dlrs": counts.got, "delivered": counts.by_type.get(b"1", 0),
              "complete": counts.got >= len(to), "msg_per_s": round(counts.got / took),
              "kannel": kannel_version(), "verbosity": args.kannel_log_level,
              "options": [f"{g}.{k}={v}" for g, k, v in args.kannel_option],
              **cpu_record(meter, len(to), ["bearerbox", "smsbox"]), "waited_for_quiet_s": waited}
    return result


async def kannel_send(http: aiohttp.ClientSession, setup: KannelSetup, ports: dict[str, int],
                      to: list[str], dlr_url: str, counts: DlrCounts,
                      meter: CpuMeter | None) -> tuple[float, float]:
    """Send every number through sendsms; return (all accepted, last DLR in) seconds."""
    base = f"http://127.0.0.1:{ports['sendsms']}/cgi-bin/sendsms"
    chunks = [to[i:i + setup.per_request] for i in range(0, len(to), setup.per_request)]
    sem = asyncio.Semaphore(setup.in_flight)
    text = quote(TEXT)

    async def send(chunk: list[str]) -> None:
        url = (f"{base}?username=bench&password=bench&from={SENDER}"
               f"&to={'+'.join(chunk)}&text={text}&charset=UTF-8&coding=2"
               f"&dlr-mask=1&dlr-url={dlr_url}")
        async with sem, http.get(url) as r:
            body = await r.text()
            if r.status not in (200, 202):
                raise RuntimeError(f"sendsms answered {r.status}: {body}")

    if meter:
        meter.start()
    started = time.perf_counter()
    await asyncio.gather(*(send(c) for c in chunks))
    accepted = time.perf_counter() - started
    while not counts.done.is_set():
        seen = counts.got
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counts.done.wait(), STALL_SECONDS)
        if counts.got == seen:
            break  # no DLR for STALL_SECONDS: the rest are lost
    if meter:
        meter.stop()
    return accepted, (counts.last or time.perf_counter()) - started


async def wait_kannel_status(http: aiohttp.ClientSession, admin_port: int, binds: int,
                             smsbox: bool, timeout: float = 30.0) -> None:
    """Until bearerbox reports every smsc connection online (and, with `smsbox`, the smsbox
    connected: its sendsms port opens before that, and a run must not time Kannel's start)."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{admin_port}/status.txt?password=bench"
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url) as r:
                text = await r.text()
                if text.count("(online") >= binds and (not smsbox or "smsbox:" in text):
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError("Kannel did not bind to the simulator (or smsbox to it) in time")


def kannel_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "kannel"], capture_output=True,
                             text=True, check=False).stdout
    except OSError:
        out = ""
    return out or "unknown"


# -- summaries and main ------------------------------------------------------------------------

async def quiet_run(args: argparse.Namespace,
                    attempt: Callable[[int], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """A run, repeated (`--busy-retries` times at most) while the rest of the machine used
    more than `--busy-limit` CPUs on average during it; every attempt is printed, `kept`
    says which one the summary takes. Waiting for quiet before a run is not enough on a
    shared machine: another user's job can start in the middle of it."""
    for a in range(1, args.busy_retries + 2):
        result = await attempt(a)
        busy = result["others_cpu_s"] / result["seconds"] > args.busy_limit
        last = a == args.busy_retries + 1
        result.update(attempt=a, busy_machine=busy)
        emit({**result, "kept": not busy or last})
        if not busy or last:
            return result
    raise AssertionError("unreachable")


def summary(bench: str, runs: Sequence[dict[str, Any]], **config: Any) -> dict[str, Any]:
    """The runs of one configuration: median, min and max of msg/s and of CPU µs/msg."""
    parts = runs[0]["cpu_us_per_msg"].keys()
    return {"bench": bench, **config, "runs": len(runs),
            "runs_on_busy_machine": sum(bool(r.get("busy_machine")) for r in runs),
            "complete": all(r["complete"] for r in runs),
            "msg_per_s": spread([r["msg_per_s"] for r in runs]),
            "cpu_us_per_msg": {p: spread([r["cpu_us_per_msg"][p] for r in runs]) for p in parts},
            "shared_cpu_us_per_msg_median": {
                p: round(statistics.median(r["shared_cpu_us_per_msg"][p] for r in runs), 1)
                for p in runs[0]["shared_cpu_us_per_msg"]}}


async def telgate_bulk(args: argparse.Namespace, work: Path, i: int) -> dict[str, Any]:
    """telgate's throughput run `i` (repeated while the machine was busy)."""
    return await quiet_run(args, functools.partial(telgate_run, args, work / f"telgate-{i}", i))


async def kannel_bulk(args: argparse.Namespace, work: Path, setup: KannelSetup,
                      i: int) -> dict[str, Any]:
    """Kannel's throughput run `i` in this configuration (repeated while the machine was busy)."""
    tag = (f"kannel-w{setup.window}-p{setup.per_request}-b{setup.binds}-f{setup.in_flight}"
           f"-{i}")
    return await quiet_run(args, functools.partial(kannel_run, args, work / tag, setup, i))


def kannel_setups(args: argparse.Namespace) -> list[KannelSetup]:
    """Every Kannel configuration of the sweep (one with the defaults)."""
    return [KannelSetup(*c) for c in itertools.product(
        args.kannel_windows, args.kannel_per_request, args.kannel_binds, args.kannel_in_flight)]


async def bulk_runs(args: argparse.Namespace, work: Path
                    ) -> tuple[list[dict[str, Any]], dict[KannelSetup, list[dict[str, Any]]]]:
    """The throughput runs of both sides. Against one Kannel configuration they alternate
    (telgate, Kannel, telgate, ...), so that a machine getting faster or slower during the
    benchmark moves both sides alike; a sweep of Kannel's configurations runs after telgate's."""
    setups = kannel_setups(args) if args.kannel else []
    ours: list[dict[str, Any]] = []
    theirs: dict[KannelSetup, list[dict[str, Any]]] = {s: [] for s in setups}
    if args.telgate and len(setups) == 1:
        for i in range(1, args.runs + 1):
            ours.append(await telgate_bulk(args, work, i))
            theirs[setups[0]].append(await kannel_bulk(args, work, setups[0], i))
        return ours, theirs
    if args.telgate:
        ours = [await telgate_bulk(args, work, i) for i in range(1, args.runs + 1)]
    for setup in setups:
        theirs[setup] = [await kannel_bulk(args, work, setup, i)
                         for i in range(1, args.runs + 1)]
    return ours, theirs


async def telgate_summary(args: argparse.Namespace, work: Path,
                          runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The single sends, then the summary of them and of the throughput runs (none with
    `--runs 0`)."""
    single: dict[str, Any] = {}
    if (args.rates and args.latency_seconds > 0) or args.saturation:
        single = await telgate_single_sends(args, work / "telgate-single")
    if not runs:
        return None
    result = summary("telgate_end_to_end_summary", runs, recipients=args.recipients,
                     per_request=args.per_request, in_flight=args.in_flight, binds=args.binds,
                     window=args.window, warm_wal_mb=args.warm_wal, warm_up=args.warm_up)
    result.update(single)
    emit(result)
    return result


def kannel_summaries(args: argparse.Namespace,
                     theirs: dict[KannelSetup, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One summary per Kannel configuration."""
    results = []
    for setup, runs in theirs.items():
        if not runs:
            continue
        result = summary("kannel_end_to_end_summary", runs, recipients=args.recipients,
                         **asdict(setup), kannel=runs[0]["kannel"],
                         verbosity=args.kannel_log_level, options=runs[0]["options"],
                         warm_up=args.warm_up)
        emit(result)
        results.append(result)
    return results


def comparison(ours: dict[str, Any], theirs: list[dict[str, Any]]) -> dict[str, Any]:
    """telgate's median against the median of Kannel's best configuration."""
    best = max(theirs, key=lambda r: r["msg_per_s"]["median"])
    config = {k: best[k] for k in ("window", "per_request", "binds", "in_flight", "kannel",
                                   "verbosity", "options", "warm_up")}
    return {"bench": "telgate_vs_kannel",
            "telgate_msg_per_s": ours["msg_per_s"], "kannel_msg_per_s": best["msg_per_s"],
            "ratio_of_medians": round(ours["msg_per_s"]["median"] / best["msg_per_s"]["median"], 2),
            "telgate_cpu_us_per_msg": ours["cpu_us_per_msg"]["total"]["median"],
            "kannel_cpu_us_per_msg": best["cpu_us_per_msg"]["total"]["median"],
            "kannel_config": config,
            "telgate_config": {k: ours[k] for k in ("window", "binds", "per_request",
                                                    "in_flight", "warm_wal_mb", "warm_up")},
            "runs": ours["runs"], "recipients": ours["recipients"],
            "runs_on_busy_machine": {"telgate": ours["runs_on_busy_machine"],
                                     "kannel": best["runs_on_busy_machine"]},
            "complete": ours["complete"] and best["complete"],
            "telgate_single_send_p99_ms": ours.get("single_send_p99_ms"),
            "telgate_saturation_req_per_s": ours.get("saturation_req_per_s")}


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="telgate-bench-msg-") as d:
        work = Path(d)
        os.chmod(work, 0o755)
        try:
            our_runs, their_runs = await bulk_runs(args, work)
            ours = await telgate_summary(args, work, our_runs) if args.telgate else None
            theirs = kannel_summaries(args, their_runs)
        finally:
            if args.keep_logs:
                shutil.copytree(work, args.keep_logs, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("state"))
    if ours and theirs:
        emit(comparison(ours, theirs))


def int_list(value: str) -> list[int]:
    return [int(x) for x in value.split(",")]


def option(value: str) -> tuple[str, str, str]:
    """`group.key=value` → (group, key, value), for a line added to kannel.conf."""
    name, _, val = value.partition("=")
    group, _, key = name.partition(".")
    if group not in ("core", "smsc", "smsbox", "sendsms-user") or not key or not val:
        raise argparse.ArgumentTypeError("expected core|smsc|smsbox|sendsms-user.key=value")
    return group, key, val


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=3, help="runs of each side (and configuration)")
    p.add_argument("--recipients", type=int, default=50_000)
    p.add_argument("--per-request", type=int, default=1000, help="recipients per POST (≤ 10000)")
    p.add_argument("--in-flight", type=int, default=4, help="bulk requests sent concurrently")
    p.add_argument("--binds", type=int, default=2)
    p.add_argument("--window", type=int, default=400,
                   help="telgate's window per bind (its best here; the product's default is 100)")
    p.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",")],
                   default=[100.0, 250.0, 500.0],
                   help="single sends per second, one latency run per value (ascending)")
    p.add_argument("--latency-seconds", type=float, default=10.0, help="0 skips the latency run")
    p.add_argument("--saturation", type=lambda v: [float(x) for x in v.split(",") if x],
                   default=[250.0, 500.0, 750.0, 1000.0, 1250.0, 1500.0],
                   help="single-send rates for the saturation search (ascending; '' skips)")
    p.add_argument("--saturation-seconds", type=float, default=10.0)
    p.add_argument("--no-telgate", dest="telgate", action="store_false")
    p.add_argument("--no-kannel", dest="kannel", action="store_false")
    p.add_argument("--kannel-windows", type=int_list, default=KANNEL_DEFAULTS["windows"],
                   help="max-pending-submits values (comma list)")
    p.add_argument("--kannel-per-request", type=int_list, default=KANNEL_DEFAULTS["per_request"],
                   help="recipients per sendsms request (comma list)")
    p.add_argument("--kannel-binds", type=int_list, default=KANNEL_DEFAULTS["binds"],
                   help="smsc connections to the simulator (comma list)")
    p.add_argument("--kannel-in-flight", type=int_list, default=KANNEL_DEFAULTS["in_flight"],
                   help="sendsms requests open at once (comma list)")
    p.add_argument("--kannel-log-level", type=int, default=4,
                   help="bearerbox/smsbox -v and log-level (0 debug … 4 panic)")
    p.add_argument("--kannel-option", type=option, action="append", default=[],
                   help="extra kannel.conf line, group.key=value (repeatable)")
    p.add_argument("--daemon-log-level", default="warning",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--daemon-tree", type=Path, default=ROOT,
                   help="source tree the daemon runs from (default: this one)")
    p.add_argument("--keep-logs", type=Path, help="copy the processes' logs here")
    p.add_argument("--warm-wal", type=int, default=512,
                   help="MB of WAL segments the database is given before the daemon starts, as "
                        "a running cluster has them (0: a fresh cluster as it comes)")
    p.add_argument("--warm-up", type=int, default=10_000,
                   help="messages each side sends and completes on its fresh processes before "
                        "a measured run, as a running gateway has served some (0: none)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="before each run, wait up to this long for the machine to be idle")
    p.add_argument("--busy-limit", type=float, default=0.1,
                   help="CPUs the rest of the machine may use on average during a kept run")
    p.add_argument("--busy-retries", type=int, default=2,
                   help="times a run is repeated when the rest of the machine was busier")
    return p.parse_args(argv)



if __name__ == "__main__":
    asyncio.run(main(parse_args()))
