"""The SMPP dispatcher in its own process: its binds and metrics are seen through the daemon,
a dispatcher that dies alone is replaced and sending goes on, and a kill -9 of the daemon
takes the dispatcher with it (no orphan keeps the binds or submits behind a restart)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from pathlib import Path

from sim.smsc import SmscConfig, SmscSimulator
from tests.integration.daemon_proc import (
    free_port,
    request,
    sender_tenant,
    smpp_daemon_config,
    start_daemon,
)


def dispatch_children(daemon_pid: int) -> list[int]:
    """The daemon's child processes started by multiprocessing (the dispatcher)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == daemon_pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def ready(port: int) -> tuple[int, object]:
    status, _, body = request(port, "GET", "/readyz")
    return status, body


async def until(what: str, check: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds  # a safety net: the test waits for the event
    while not await asyncio.to_thread(check):  # type: ignore[operator]
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        await asyncio.sleep(0.1)


async def test_a_dispatcher_that_dies_alone_is_replaced_and_dies_with_the_daemon(
        db_dsn: str, tmp_path: Path) -> None:
    key = await sender_tenant(db_dsn, "process")
    async with SmscSimulator(SmscConfig(port=0, accounts={"tg": "pw"})) as smsc:
        port = free_port()
        cfg = tmp_path / "telgate.toml"
        # No idle claims within the test: each send is claimed because the daemon woke its
        # dispatcher child through the pipe (no NOTIFY is sent for it), the replacement too.
        smpp_daemon_config(cfg, db_dsn, smsc.port, extra="claim_poll_seconds = 60")
        env = {**os.environ, "TELGATE_CONFIG": str(cfg), "TELGATE_API__PORT": str(port),
               "TELGATE_SIP__ENABLED": "false", "TELGATE_STATE_DIR": str(tmp_path / "state"),
               "TELGATE_LOG__FORMAT": "json"}
        daemon = await asyncio.to_thread(start_daemon, env, port, tmp_path / "daemon.log")
        try:
            [first] = dispatch_children(daemon.pid)
            await until("the child's bind in the daemon's metrics", lambda: (
                'telgate_smpp_binds_up{carrier="sim"} 1.0' in metrics(port)))

            async def send_and_deliver(number: str) -> None:
                status, _, answer = await asyncio.to_thread(
                    request, port, "POST", "/v1/messages", key,
                    {"from": "0212345678", "to": [number], "text": "hello"})
                assert status == 202, answer
                path = f"/v1/messages/{answer['id']}"  # type: ignore[index]
                await until(f"{number} delivered", lambda: request(port, "GET", path, key)[2][
                    "counts"]["delivered"] == 1, 20)  # type: ignore[index]

            await send_and_deliver("01011112222")

            os.kill(first, signal.SIGKILL)
            await until("readiness to notice", lambda: ready(port)[0] == 503)
            await until("a new dispatcher", lambda: ready(port)[0] == 200)
            [second] = dispatch_children(daemon.pid)
            assert second != first
            await send_and_deliver("01033334444")
        finally:
            daemon.send_signal(signal.SIGKILL)
            await asyncio.to_thread(daemon.wait, 30)
        await until("the dispatcher to die with the daemon",
                    lambda: not Path(f"/proc/{second}").exists(), 10)
