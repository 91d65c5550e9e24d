"""Helpers for the fault tests: the daemon as a real process on free ports, and the API seen
from outside (urllib, no client library between the test and the wire)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import asyncpg

FINAL = ("delivered", "failed", "expired", "rejected", "canceled")


async def sender_tenant(dsn: str, name: str, sender: str = "0212345678") -> str:
    """A tenant with an API key and `sender` registered, made straight in the database;
    returns the key."""
    from daemon.db import init_connection
    from handlers import tenants
    from handlers.registry import senders

    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        t = await tenants.create_tenant(conn, name, actor="test")
        key, _ = await tenants.create_key(conn, t.id, sp_id=None, label="", actor="test")
        await senders.register(conn, t.id, sender, actor="test")
    finally:
        await conn.close()
    return key


def smpp_daemon_config(path: Path, dsn: str, smsc_port: int, extra: str = "") -> None:
    """A daemon configuration with one SMPP carrier on the simulator (account tg/pw)."""
    path.write_text(f"""
[database]
dsn = "{dsn}"
[messaging]
recovery_seconds = 0.5
{extra}
[[smpp.carriers]]
name = "sim"
host = "127.0.0.1"
port = {smsc_port}
system_id = "tg"
password = "pw"
""")


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP right now (SIP listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def start_daemon(env: dict[str, str], port: int, log: Path,
                 timeout: float = 90) -> subprocess.Popen[bytes]:
    """`telgate run` with `env`; returns once /readyz answers 200."""
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"daemon not ready; log: {log.read_text()[-3000:]}")


def request(port: int, method: str, path: str, key: str | None = None,
            body: object | None = None, timeout: float = 30) -> tuple[int, dict[str, str], object]:
    """(status, headers, JSON body) of one API call; error statuses are answers too."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


async def wait_all_final(dsn: str, total: int, deadline_s: float = 180) -> dict[str, int]:
    """Poll until every recipient is in a final state; return the counts by state."""
    import asyncio

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                states = dict(await pool.fetch(
                    "SELECT state, count(*) FROM recipients GROUP BY state"))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                states = {}
            if sum(states.values()) == total and set(states) <= set(FINAL):
                return states
            assert time.monotonic() < deadline, f"not all final: {states}"
            await asyncio.sleep(0.2)
    finally:
        await pool.close()


async def in_doubt_numbers(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["number"] for r in await conn.fetch(
            "SELECT number FROM recipients WHERE in_doubt")}
    finally:
        await conn.close()


def duplicates(destinations: list[str]) -> set[str]:
    return {n for n, c in Counter(destinations).items() if c > 1}
