"""`make run` as a new user meets it: ports overridable, a clash is one line, the banner shows
the real ports, and the demo key survives a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_proc import free_port, free_udp_tcp_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="telgate-demo-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


def _demo(state: Path, *ports: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TELGATE_STATE_DIR": str(state), "TELGATE_LOG__FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "--demo", "--config",
         str(ROOT / "config" / "telgate.demo.toml"), *ports],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _banner(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"demo ended: {proc.stderr.read() if proc.stderr else ''}"
        lines.append(line)
        if line.startswith("====") and len(lines) > 2:
            return "".join(lines)
    raise AssertionError("no banner")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def _key(banner: str) -> str:
    return next(line.split("=", 1)[1] for line in banner.splitlines()
                if "export TELGATE_KEY=" in line)


def test_demo_uses_the_given_ports_and_keeps_its_key(state_dir: Path) -> None:
    api, sip, smsc = free_port(), free_udp_tcp_port(), free_port()
    ports = ("--api-port", str(api), "--sip-port", str(sip), "--smsc-port", str(smsc))
    first = _demo(state_dir, *ports)
    try:
        banner = _banner(first)
    finally:
        _stop(first)
    assert f"127.0.0.1:{api}" in banner
    assert f"127.0.0.1:{sip}" in banner and ":5060" not in banner
    assert f"127.0.0.1:{smsc}" in banner
    second = _demo(state_dir, *ports)
    try:
        again = _banner(second)
    finally:
        _stop(second)
    assert _key(again) == _key(banner)  # no new key per `make run`


def test_a_port_in_use_is_one_line_naming_it_and_the_fix(state_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _demo(state_dir, "--api-port", str(free_port()), "--sip-port",
                     str(free_udp_tcp_port()), "--smsc-port", str(port))
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"port {port} (SMSC simulator)" in lines[0] and "SMSC_PORT=" in lines[0]
