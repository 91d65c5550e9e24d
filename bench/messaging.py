"""End-to-end messaging benchmark: telgate (API accept → SMPP → receipt stored) and Kannel
(smsbox sendsms → bearerbox → SMPP → DLR delivered to a dlr-url) against the same SMSC simulator
with the same messages and delivery receipts.

    .venv/bin/python -m bench.messaging [--recipients 20000] [--per-request 1000]
        [--rates 100,250,500] [--latency-seconds 10] [--kannel-windows 10,100] [--no-kannel]
        [--daemon-tree PATH] [--keep-logs DIR]

Every piece runs as its own process on this machine: the SMSC simulator (`python -m sim.smsc`),
PostgreSQL (telgate's embedded cluster), the daemon (`python -m daemon.cli run`), and for the
comparison Kannel's bearerbox and smsbox (Debian package `kannel`). This process only sends
HTTP requests and watches for completion. Prints one JSON line per figure, with the machine.

telgate throughput: `--recipients` numbers in requests of `--per-request` (several in flight),
from the first POST until every recipient is `delivered` in PostgreSQL. Latency: single-
recipient sends at each steady rate of `--rates` for `--latency-seconds` (open loop: a slow
answer does not slow the schedule), p50/p99 of the API answer; the single sends are dispatched
too, as in production. Kannel throughput: the same numbers and text (UCS-2, as Kannel sends
Korean) through sendsms with `--kannel-per-request` recipients per request and dlr-mask 1
(delivered), from the first request until every DLR reached our dlr-url; run once per
`--kannel-windows` value (max-pending-submits; 10 is Kannel's default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import load_config  # noqa: E402
from daemon.db import migrate  # noqa: E402
from daemon.embedded_pg import EmbeddedPostgres  # noqa: E402
from handlers import tenants  # noqa: E402
from handlers.registry import senders  # noqa: E402

SENDER = "0212345678"
TEXT = "[telgate] 안녕하세요 고객님, 주문하신 상품이 발송되었습니다."
FINAL = ("delivered", "failed", "expired", "rejected", "canceled")


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
    print(json.dumps({**record, "machine": machine(), "load_1m": os.getloadavg()[0]},
                     ensure_ascii=False), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def numbers(n: int) -> list[str]:
    """`n` distinct valid mobile numbers."""
    return [f"010{2000_0000 + i:08d}" for i in range(n)]


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


async def wait_final(conn: asyncpg.Connection, expected: int, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        final, delivered = await final_count(conn)
        if final >= expected or time.monotonic() > deadline:
            return final, delivered
        await asyncio.sleep(0.05)


async def telgate_throughput(http: aiohttp.ClientSession, base: str, key: str, dsn: str,
                             to: list[str], per_request: int, in_flight: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    chunks = [to[i:i + per_request] for i in range(0, len(to), per_request)]
    sem = asyncio.Semaphore(in_flight)
    conn = await asyncpg.connect(dsn)
    try:
        before, _ = await final_count(conn)
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
    finally:
        await conn.close()
    return {"recipients": len(to), "requests": len(chunks), "per_request": per_request,
            "accepted_seconds": round(accepted, 3), "seconds": round(took, 3),
            "final": final - before, "delivered": delivered,
            "msg_per_s": round(len(to) / took)}


async def total(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM recipients"))


async def telgate_latency(http: aiohttp.ClientSession, base: str, key: str, rate: float,
                          seconds: float, offset: int = 0) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    count = int(rate * seconds)
    latencies: list[float] = []
    errors = 0

    async def one(number: str) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        async with http.post(f"{base}/v1/messages", headers=headers,
                             json={"from": SENDER, "to": [number], "text": TEXT}) as r:
            await r.read()
            if r.status != 202:
                errors += 1
        latencies.append(time.perf_counter() - t0)

    targets = [f"010{3000_0000 + offset + i:08d}" for i in range(count)]
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for i, number in enumerate(targets):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(number)))
    await asyncio.gather(*tasks)
    achieved = count / (time.perf_counter() - start)
    latencies.sort()
    return {"requests": count, "target_rate": rate, "achieved_rate": round(achieved, 1),
            "errors": errors,
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2)}


async def run_telgate(args: argparse.Namespace, work: Path, smsc_port: int) -> dict[str, Any]:
    config = load_config(None, {"TELGATE_STATE_DIR": str(work / "state")})
    pg = EmbeddedPostgres(config.state_dir, config.database.embedded)
    await pg.start()
    try:
        key = await prepare_tenant(pg.dsn)
        api_port = free_port()
        cfg = work / "telgate.toml"
        daemon_config(cfg, api_port, smsc_port, args.binds, args.window, args.daemon_log_level)
        env = {**os.environ, "TELGATE_STATE_DIR": str(work / "state"),
               "TELGATE_DATABASE__DSN": json.dumps(pg.dsn)}
        base = f"http://127.0.0.1:{api_port}"
        tree = args.daemon_tree.resolve()
        env["PYTHONPATH"] = str(tree)
        async with child([sys.executable, "-m", "daemon.cli", "run", "--config", str(cfg)],
                         env=env, log=work / "daemon.log", cwd=tree) as proc, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:
            await wait_ready(http, base, proc)
            result = await telgate_throughput(http, base, key, pg.dsn, numbers(args.recipients),
                                              args.per_request, args.in_flight)
            emit({"bench": "telgate_end_to_end", **result, "binds": args.binds,
                  "window": args.window})
            latency: list[dict[str, Any]] = []
            if args.latency_seconds > 0:
                for i, rate in enumerate(args.rates):
                    conn = await asyncpg.connect(pg.dsn)
                    try:  # start each rate with the previous one's sends finished
                        await wait_final(conn, await total(conn), 120)
                    finally:
                        await conn.close()
                    one = await telgate_latency(http, base, key, rate, args.latency_seconds,
                                                offset=i * 1_000_000)
                    emit({"bench": "telgate_single_send_latency", **one})
                    latency.append(one)
        return {"throughput": result, "latency": latency}
    finally:
        await pg.stop()


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

def kannel_config(path: Path, work: Path, smsc_port: int, window: int, ports: dict[str, int]) -> None:
    path.write_text(f"""
group = core
admin-port = {ports["admin"]}
admin-password = bench
status-password = bench
smsbox-port = {ports["smsbox"]}
log-level = 2
log-file = "{work}/bearerbox.log"
box-allow-ip = "127.0.0.1"
admin-allow-ip = "127.0.0.1"
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = sim
host = 127.0.0.1
port = {smsc_port}
transceiver-mode = true
smsc-username = kannel
smsc-password = bench
system-type = ""
max-pending-submits = {window}
msg-id-type = 0x03
log-level = 2

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {ports["smsbox"]}
sendsms-port = {ports["sendsms"]}
log-level = 2
log-file = "{work}/smsbox.log"

group = sendsms-user
username = bench
password = bench
max-messages = 10
concatenation = true

group = sms-service
keyword = default
text = "ok"
""")


class DlrCounter:
    """The dlr-url receiver: counts delivery reports by type (1 = delivered)."""

    def __init__(self) -> None:
        self.by_type: dict[str, int] = {}
        self.done = asyncio.Event()
        self.expected = 0

    async def handle(self, request: web.Request) -> web.Response:
        kind = request.query.get("type", "?")
        self.by_type[kind] = self.by_type.get(kind, 0) + 1
        if sum(self.by_type.values()) >= self.expected:
            self.done.set()
        return web.Response(text="ok")


async def run_kannel(args: argparse.Namespace, work: Path, smsc_port: int,
                     window: int) -> dict[str, Any]:
    bearerbox, smsbox = shutil.which("bearerbox") or "/usr/sbin/bearerbox", \
        shutil.which("smsbox") or "/usr/sbin/smsbox"
    ports = {"admin": free_port(), "smsbox": free_port(), "sendsms": free_port()}
    kdir = work / f"kannel-w{window}"
    kdir.mkdir()
    conf = kdir / "kannel.conf"
    kannel_config(conf, kdir, smsc_port, window, ports)
    counter = DlrCounter()
    app = web.Application()
    app.router.add_get("/dlr", counter.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    dlr_port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", dlr_port)
    await site.start()
    to = numbers(args.recipients)
    counter.expected = len(to)
    dlr_url = quote(f"http://127.0.0.1:{dlr_port}/dlr?type=%d", safe="")
    try:
        async with child([bearerbox, str(conf)], log=kdir / "bearerbox.out"), \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
            await wait_port(ports["smsbox"])
            await wait_kannel_bound(http, ports["admin"])
            async with child([smsbox, str(conf)], log=kdir / "smsbox.out"):
                await wait_port(ports["sendsms"])
                accepted, took = await kannel_send(http, args, ports, to, dlr_url, counter)
    finally:
        await runner.cleanup()
    got = sum(counter.by_type.values())
    result = {"bench": "kannel_end_to_end", "recipients": len(to), "window": window,
              "per_request": args.kannel_per_request, "accepted_seconds": round(accepted, 3),
              "seconds": round(took, 3), "dlrs": got, "delivered": counter.by_type.get("1", 0),
              "msg_per_s": round(got / took), "kannel": kannel_version(bearerbox)}
    emit(result)
    return result


async def kannel_send(http: aiohttp.ClientSession, args: argparse.Namespace,
                      ports: dict[str, int], to: list[str], dlr_url: str,
                      counter: DlrCounter) -> tuple[float, float]:
    """Send every number through sendsms; return (all accepted, all DLRs in) seconds."""
    base = f"http://127.0.0.1:{ports['sendsms']}/cgi-bin/sendsms"
    chunks = [to[i:i + args.kannel_per_request] for i in range(0, len(to), args.kannel_per_request)]
    sem = asyncio.Semaphore(args.in_flight * 4)
    text = quote(TEXT)
    started = time.perf_counter()

    async def send(chunk: list[str]) -> None:
        url = (f"{base}?username=bench&password=bench&from={SENDER}"
               f"&to={'+'.join(chunk)}&text={text}&charset=UTF-8&coding=2"
               f"&dlr-mask=1&dlr-url={dlr_url}")
        async with sem, http.get(url) as r:
            body = await r.text()
            if r.status not in (200, 202):
                raise RuntimeError(f"sendsms answered {r.status}: {body}")

    await asyncio.gather(*(send(c) for c in chunks))
    accepted = time.perf_counter() - started
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(counter.done.wait(), 600)
    return accepted, time.perf_counter() - started


async def wait_kannel_bound(http: aiohttp.ClientSession, admin_port: int,
                            timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{admin_port}/status.txt?password=bench"
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url) as r:
                if "online" in await r.text():
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError("Kannel did not bind to the simulator in time")


def kannel_version(bearerbox: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "kannel"], capture_output=True,
                             text=True, check=False).stdout
    except OSError:
        out = ""
    return out or os.path.basename(bearerbox)


# -- main --------------------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="telgate-bench-msg-") as d:
        work = Path(d)
        os.chmod(work, 0o755)
        try:
            ours, theirs = await run_all(args, work)
        finally:
            if args.keep_logs:
                shutil.copytree(work, args.keep_logs, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("state"))
    if theirs:
        best = max(theirs, key=lambda r: r["msg_per_s"])
        emit({"bench": "telgate_vs_kannel", "telgate_msg_per_s": ours["throughput"]["msg_per_s"],
              "kannel_msg_per_s": {str(r["window"]): r["msg_per_s"] for r in theirs},
              "ratio_vs_best_kannel": round(ours["throughput"]["msg_per_s"] / best["msg_per_s"],
                                            2)})


async def run_all(args: argparse.Namespace,
                  work: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    smsc_port = free_port()
    smsc = [sys.executable, "-m", "sim.smsc", "--port", str(smsc_port),
            "--account", "telgate:bench", "--account", "kannel:bench"]
    theirs: list[dict[str, Any]] = []
    async with child(smsc, log=work / "smsc.log"):
        await wait_port(smsc_port)
        ours = await run_telgate(args, work, smsc_port)
        if args.kannel:
            for window in args.kannel_windows:
                theirs.append(await run_kannel(args, work, smsc_port, window))
    return ours, theirs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--recipients", type=int, default=20_000)
    p.add_argument("--per-request", type=int, default=1000, help="recipients per POST (≤ 10000)")
    p.add_argument("--in-flight", type=int, default=4, help="bulk requests sent concurrently")
    p.add_argument("--binds", type=int, default=2)
    p.add_argument("--window", type=int, default=200, help="telgate's window per bind")
    p.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",")],
                   default=[100.0, 250.0, 500.0],
                   help="single sends per second, one latency run per value (ascending)")
    p.add_argument("--latency-seconds", type=float, default=10.0, help="0 skips the latency run")
    p.add_argument("--no-kannel", dest="kannel", action="store_false")
    p.add_argument("--kannel-windows", type=lambda s: [int(x) for x in s.split(",")],
                   default=[10, 100], help="max-pending-submits values to run Kannel with")
    p.add_argument("--kannel-per-request", type=int, default=100)
    p.add_argument("--daemon-log-level", default="warning",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--daemon-tree", type=Path, default=ROOT,
                   help="source tree the daemon runs from (default: this one)")
    p.add_argument("--keep-logs", type=Path, help="copy the processes' logs here")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
