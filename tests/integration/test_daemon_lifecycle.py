"""The daemon as an operator runs it: a real process, its embedded PostgreSQL, systemd notify,
admin commands beside it, and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _telgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _postgres_pids(data_dir: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"postgres -D {data_dir}"], capture_output=True,
                         text=True, check=False)
    return [int(p) for p in out.stdout.split()]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="telgate-life-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


def test_admin_works_without_daemon_then_daemon_serves_and_drains(state_dir: Path) -> None:
    port = _free_port()
    notify_path = state_dir / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(30)
    env = {**os.environ, "TELGATE_STATE_DIR": str(state_dir), "TELGATE_API__PORT": str(port),
           "TELGATE_SIP__PORT": "0",
           "TELGATE_LOG__FORMAT": "json", "TELGATE_LIFECYCLE__DRAIN_SECONDS": "5"}
    env.pop("TELGATE_TEST_DSN", None)

    # Admin commands start (and stop) the embedded cluster themselves when no daemon runs.
    made = _telgate("admin", "tenant", "create", "acme", "--json", env=env)
    assert made.returncode == 0, made.stderr
    tenant = json.loads(made.stdout)
    assert _postgres_pids(state_dir / "postgres" / "data") == []

    daemon = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run"],
        env={**env, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        states = []
        while "READY=1" not in states:
            states.append(notify.recv(256).decode())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            assert resp.status == 200
        # Beside the running daemon, admin commands use its server (the tenant is there).
        key = _telgate("admin", "key", "create", "--tenant", "acme", "--json", env=env)
        assert key.returncode == 0, key.stderr
        secret = json.loads(key.stdout)["key"]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/tenant",
                                     headers={"Authorization": f"Bearer {secret}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())["tenant_id"] == tenant["id"]
        assert "WATCHDOG=1" in {notify.recv(256).decode() for _ in range(3)}

        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        status = daemon.wait(timeout=15)
        took = time.monotonic() - started
    finally:
        if daemon.poll() is None:
            daemon.kill()
        notify.close()
    assert status == 0, daemon.stderr.read() if daemon.stderr else ""
    assert took < 5 + 1
    assert _postgres_pids(state_dir / "postgres" / "data") == []
    log_lines = [json.loads(x) for x in (daemon.stderr.read() if daemon.stderr else "").splitlines()
                 if x.startswith("{")]
    events = [x["event"] for x in log_lines]
    assert "shutdown_requested" in events and events[-1] == "stopped"
    # The key never reached the log.
    assert secret not in json.dumps(log_lines)


def test_kill_9_of_the_daemon_leaves_no_postgres_and_restart_works(state_dir: Path) -> None:
    port = _free_port()
    env = {**os.environ, "TELGATE_STATE_DIR": str(state_dir), "TELGATE_API__PORT": str(port),
           "TELGATE_SIP__PORT": "0",
           "TELGATE_LOG__FORMAT": "json"}
    env.pop("TELGATE_TEST_DSN", None)
    data = state_dir / "postgres" / "data"
    for round_ in range(2):
        daemon = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"round {round_}: daemon never became ready"
            time.sleep(0.1)
        daemon.kill()
        daemon.wait()
        deadline = time.monotonic() + 20
        while _postgres_pids(data) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _postgres_pids(data) == [], f"round {round_}: postgres outlived kill -9"


def test_check_config_prints_every_problem_with_its_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[api]\nport = "x"\nhots = "h"\n')
    out = _telgate("check-config", str(bad), env=dict(os.environ))
    assert out.returncode == 1
    assert "api.port: expected an integer" in out.stderr
    assert "api.hots: unknown key" in out.stderr
    assert "2 problem(s) found" in out.stderr
