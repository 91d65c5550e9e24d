"""The database goes away mid-send and comes back: the daemon answers 503 with Retry-After
meanwhile, gets its database back by itself, and the send finishes with nobody lost and no
duplicate outside the submits reported in doubt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from config import load_config
from daemon.db import init_connection
from daemon.embedded_pg import EmbeddedPostgres, cluster_paths, dsn_for
from handlers import tenants
from handlers.registry import senders
from sim.smsc import SmscConfig, SmscSimulator
from tests.integration.daemon_proc import (
    duplicates,
    free_port,
    in_doubt_numbers,
    request,
    start_daemon,
    wait_all_final,
)

pytestmark = pytest.mark.slow

SENDER = "0212345678"


@pytest.fixture
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="telgate-outage-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


async def _tenant_key(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        t = await tenants.create_tenant(conn, "outage", actor="test")
        key, _ = await tenants.create_key(conn, t.id, sp_id=None, label="", actor="test")
        await senders.register(conn, t.id, SENDER, actor="test")
    finally:
        await conn.close()
    return key


def _config(tmp: Path, smsc_port: int, dsn: str | None) -> Path:
    cfg = tmp / "telgate.toml"
    db = f'[database]\ndsn = "{dsn}"\n' if dsn else ""
    cfg.write_text(f"""{db}
[messaging]
recovery_seconds = 0.5
[[smpp.carriers]]
name = "sim"
host = "127.0.0.1"
port = {smsc_port}
system_id = "tg"
password = "pw"
window = 100
""")
    return cfg


async def _send(port: int, key: str, numbers: list[str]) -> None:
    for chunk in (numbers[:10_000], numbers[10_000:]):
        status, _, body = await asyncio.to_thread(
            request, port, "POST", "/v1/messages", key,
            {"from": SENDER, "to": chunk, "text": "장애 시험"})
        assert status == 202, body


async def _until_accepted(smsc: SmscSimulator, n: int) -> None:
    deadline = time.monotonic() + 60
    while smsc.stats["accepted"] < n:
        assert time.monotonic() < deadline, "dispatch did not start"
        await asyncio.sleep(0.02)


async def _probe_outage(port: int, key: str) -> tuple[list[int], bool, int]:
    """POST/GET until the database answers again: (statuses seen, Retry-After on every 503,
    probe messages accepted)."""
    statuses: list[int] = []
    retry_after = True
    accepted = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, headers, _ = await asyncio.to_thread(
            request, port, "POST", "/v1/messages", key,
            {"from": SENDER, "to": ["01099990000"], "text": "장애 중"})
        listed, lheaders, _ = await asyncio.to_thread(request, port, "GET", "/v1/messages", key)
        statuses += [status, listed]
        for st, h in ((status, headers), (listed, lheaders)):
            if st == 503:
                retry_after = retry_after and h.get("Retry-After", "").isdigit()
        accepted += status == 202
        if status == 202 and listed == 200:
            break
        await asyncio.sleep(0.05)
    return statuses, retry_after, accepted


async def test_embedded_postmaster_kill_9_mid_send_is_survived(
        state_dir: Path, tmp_path: Path) -> None:
    numbers = [f"0104{i:07d}" for i in range(20_000)]
    async with SmscSimulator(SmscConfig(port=0, accounts={"tg": "pw"}, latency_ms=2,
                                        receipt_delay_ms=50, record_submits=True)) as smsc:
        port = free_port()
        env = {**os.environ, "TELGATE_CONFIG": str(_config(tmp_path, smsc.port, None)),
               "TELGATE_API__PORT": str(port), "TELGATE_SIP__PORT": "0",
               "TELGATE_STATE_DIR": str(state_dir / "state"),
               "TELGATE_LOG__FORMAT": "json"}
        env.pop("TELGATE_DATABASE__DSN", None)
        log = tmp_path / "daemon.log"
        daemon = await asyncio.to_thread(start_daemon, env, port, log)
        try:
            paths = cluster_paths(state_dir / "state")
            dsn = dsn_for(paths)
            key = await _tenant_key(dsn)
            await _send(port, key, numbers)
            await _until_accepted(smsc, 4000)

            postmaster = int((paths.data / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGKILL)
            killed_at = time.monotonic()
            at_kill = smsc.stats["accepted"]
            statuses, retry_after, probes = await _probe_outage(port, key)
            back_after = time.monotonic() - killed_at

            states = await wait_all_final(dsn, 20_000 + probes)
            in_doubt = await in_doubt_numbers(dsn)
            assert daemon.poll() is None, "the daemon itself must not have died"
        finally:
            daemon.send_signal(signal.SIGTERM)
            await asyncio.to_thread(daemon.wait, 30)

    assert 503 in statuses and 500 not in statuses, statuses
    assert retry_after
    assert back_after < 30
    assert states == {"delivered": 20_000 + probes}
    sent = [s.destination_addr for s in smsc.submits]
    assert set(numbers) <= set(sent)  # nobody lost
    assert duplicates(sent) <= in_doubt  # the only duplicates are the ones reported in doubt
    assert at_kill < 20_000
    assert "embedded_pg_restarted" in log.read_text()
    print(json.dumps({"accepted_at_kill": at_kill, "database_back_s": round(back_after, 2),
                      "statuses": sorted(set(statuses)), "in_doubt": len(in_doubt),
                      "duplicated": len(duplicates(sent))}))


async def test_external_database_restart_mid_send_finishes_without_daemon_restart(
        state_dir: Path, tmp_path: Path) -> None:
    config = load_config(None, {"TELGATE_STATE_DIR": str(state_dir / "external")})
    server = EmbeddedPostgres(config.state_dir, config.database.embedded, supervise=False)
    await server.start()
    numbers = [f"0105{i:07d}" for i in range(20_000)]
    try:
        async with SmscSimulator(SmscConfig(port=0, accounts={"tg": "pw"}, latency_ms=2,
                                            receipt_delay_ms=50, record_submits=True)) as smsc:
            port = free_port()
            env = {**os.environ, "TELGATE_CONFIG": str(_config(tmp_path, smsc.port, server.dsn)),
                   "TELGATE_API__PORT": str(port), "TELGATE_SIP__PORT": "0",
                   "TELGATE_STATE_DIR": str(state_dir / "state"),
                   "TELGATE_LOG__FORMAT": "json"}
            log = tmp_path / "daemon.log"
            daemon = await asyncio.to_thread(start_daemon, env, port, log)
            try:
                key = await _tenant_key(server.dsn)
                await _send(port, key, numbers)
                await _until_accepted(smsc, 4000)

                await server.stop()  # what `pg_ctl stop -m fast` does
                status, headers, body = await asyncio.to_thread(
                    request, port, "POST", "/v1/messages", key,
                    {"from": SENDER, "to": ["01099990001"], "text": "장애 중"})
                ready, _, readiness = await asyncio.to_thread(request, port, "GET", "/readyz")
                await asyncio.sleep(10)  # as the probe did: pg_ctl stop, 10 s, start
                at_restart = smsc.stats["accepted"]
                await server.start()

                states = await wait_all_final(server.dsn, 20_000)
                in_doubt = await in_doubt_numbers(server.dsn)
                assert daemon.poll() is None, "the daemon must ride the restart out"
            finally:
                daemon.send_signal(signal.SIGTERM)
                await asyncio.to_thread(daemon.wait, 30)
    finally:
        await server.stop()

    assert status == 503 and headers.get("Retry-After"), (status, body)
    assert body["code"] == "database_unavailable"  # type: ignore[index]
    assert ready == 503
    assert "unreachable" in readiness["checks"]["database"]["detail"]  # type: ignore[index]
    assert states == {"delivered": 20_000}
    sent = [s.destination_addr for s in smsc.submits]
    assert set(sent) == set(numbers)
    assert duplicates(sent) <= in_doubt
    assert at_restart < 20_000
    print(json.dumps({"accepted_at_restart": at_restart, "in_doubt": len(in_doubt),
                      "duplicated": len(duplicates(sent))}))


def _notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    return sock


def _drain_notify(sock: socket.socket) -> list[str]:
    seen: list[str] = []
    with contextlib.suppress(TimeoutError):
        while True:
            seen.append(sock.recv(256).decode())
    return seen


async def _wait_log(log: Path, event: str, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while f'"event": "{event}"' not in await asyncio.to_thread(log.read_text):
        assert time.monotonic() < deadline, f"no {event} in the log"
        await asyncio.sleep(0.1)


async def test_outage_stops_the_watchdog_and_sigterm_still_drains(
        state_dir: Path, tmp_path: Path) -> None:
    config = load_config(None, {"TELGATE_STATE_DIR": str(state_dir / "external")})
    server = EmbeddedPostgres(config.state_dir, config.database.embedded, supervise=False)
    await server.start()
    numbers = [f"0106{i:07d}" for i in range(20_000)]
    notify = _notify_socket(state_dir / "notify.sock")
    try:
        async with SmscSimulator(SmscConfig(port=0, accounts={"tg": "pw"}, latency_ms=2,
                                            receipt_delay_ms=50, record_submits=True)) as smsc:
            port = free_port()
            env = {**os.environ, "TELGATE_CONFIG": str(_config(tmp_path, smsc.port, server.dsn)),
                   "TELGATE_API__PORT": str(port), "TELGATE_SIP__PORT": "0",
                   "TELGATE_STATE_DIR": str(state_dir / "state"),
                   "TELGATE_LOG__FORMAT": "json", "TELGATE_LIFECYCLE__DRAIN_SECONDS": "5",
                   "TELGATE_LIFECYCLE__DATABASE_OUTAGE_SECONDS": "1"}
            log = tmp_path / "daemon.log"
            daemon = await asyncio.to_thread(
                start_daemon, {**env, "NOTIFY_SOCKET": str(state_dir / "notify.sock"),
                               "WATCHDOG_USEC": "200000"}, port, log)
            key = await _tenant_key(server.dsn)
            await _send(port, key, numbers)
            await _until_accepted(smsc, 4000)
            await server.stop()

            await _wait_log(log, "watchdog_withheld")
            await asyncio.to_thread(_drain_notify, notify)
            quiet = await asyncio.to_thread(_drain_notify, notify)
            assert "WATCHDOG=1" not in quiet  # systemd would now restart the unit

            daemon.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(daemon.wait, 30)
            at_stop = smsc.stats["accepted"]

            await server.start()  # as after systemd's restart: a new daemon finishes the send
            daemon = await asyncio.to_thread(start_daemon, env, port, log)
            try:
                states = await wait_all_final(server.dsn, 20_000)
                in_doubt = await in_doubt_numbers(server.dsn)
            finally:
                daemon.send_signal(signal.SIGTERM)
                await asyncio.to_thread(daemon.wait, 30)
    finally:
        notify.close()
        await server.stop()

    text = log.read_text()
    assert status == 0, text[-3000:]
    assert '"event": "dispatcher_stopped"' in text and '"event": "stopped"' in text
    assert states == {"delivered": 20_000}
    sent = [s.destination_addr for s in smsc.submits]
    assert set(sent) == set(numbers)
    assert duplicates(sent) <= in_doubt
    assert at_stop < 20_000
    print(json.dumps({"accepted_at_stop": at_stop, "in_doubt": len(in_doubt),
                      "duplicated": len(duplicates(sent))}))


def _pg_ctl(bin_dir: Path, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pg_ctl as the server's own user (it refuses to run as root)."""
    # -l: the started server must not inherit our pipes (run() would wait for it to exit).
    cmd = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(data.parent / "pg_ctl.log"),
           "-w", "-t", "60", *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "telgate", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


async def test_pg_ctl_restart_of_the_embedded_server_is_ridden_out_and_stopped_with_us(
        state_dir: Path, tmp_path: Path) -> None:
    numbers = [f"0108{i:07d}" for i in range(20_000)]
    async with SmscSimulator(SmscConfig(port=0, accounts={"tg": "pw"}, latency_ms=2,
                                        receipt_delay_ms=50, record_submits=True)) as smsc:
        port = free_port()
        env = {**os.environ, "TELGATE_CONFIG": str(_config(tmp_path, smsc.port, None)),
               "TELGATE_API__PORT": str(port), "TELGATE_SIP__PORT": "0",
               "TELGATE_STATE_DIR": str(state_dir / "state"), "TELGATE_LOG__FORMAT": "json"}
        env.pop("TELGATE_DATABASE__DSN", None)
        log = tmp_path / "daemon.log"
        daemon = await asyncio.to_thread(start_daemon, env, port, log)
        paths = cluster_paths(state_dir / "state")
        try:
            dsn = dsn_for(paths)
            key = await _tenant_key(dsn)
            await _send(port, key, numbers)
            await _until_accepted(smsc, 4000)
            postmaster = int((paths.data / "postmaster.pid").read_text().split()[0])
            binary = Path(os.readlink(f"/proc/{postmaster}/exe")).parent
            done = await asyncio.to_thread(_pg_ctl, binary, paths.data, "restart", "-m", "fast")
            assert done.returncode == 0 or "another server" in done.stderr, done.stderr
            states = await wait_all_final(dsn, 20_000)
            in_doubt = await in_doubt_numbers(dsn)
            assert daemon.poll() is None
            running = int((paths.data / "postmaster.pid").read_text().split()[0])
        finally:
            daemon.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(daemon.wait, 30)
    assert status == 0
    assert states == {"delivered": 20_000}
    sent = [s.destination_addr for s in smsc.submits]
    assert set(sent) == set(numbers)
    assert duplicates(sent) <= in_doubt
    assert running != postmaster
    assert not _running(running)  # the daemon stopped the server it adopted, or its own


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers where PID 1 does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return not stat.split(") ", 1)[1].startswith("Z")
