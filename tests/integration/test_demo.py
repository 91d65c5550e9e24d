"""`make run` as a new user meets it: ports overridable, a clash is one line, the banner shows
the real ports, and the demo key survives a restart."""

from __future__ import annotations

import os
import re
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


def _free_ports() -> dict[str, int]:
    """A free port for every port the demo listens on, by its option."""
    return {"--api-port": free_port(), "--sip-port": free_udp_tcp_port(),
            "--smsc-port": free_port(), "--mmsc-port": free_port(),
            "--mm7-report-port": free_port()}


def _args(ports: dict[str, int]) -> list[str]:
    return [arg for flag, port in ports.items() for arg in (flag, str(port))]


def test_demo_uses_the_given_ports_and_keeps_its_key(state_dir: Path) -> None:
    given = _free_ports()
    ports = _args(given)
    first = _demo(state_dir, *ports)
    try:
        banner = _banner(first)
    finally:
        _stop(first)
    shown = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", banner)}
    assert shown == set(given.values())  # the defaults (8080, 5060, 2775, ...) nowhere
    second = _demo(state_dir, *ports)
    try:
        again = _banner(second)
    finally:
        _stop(second)
    assert _key(again) == _key(banner)  # no new key per `make run`


@pytest.mark.parametrize(("flag", "what", "knob"), [
    ("--smsc-port", "SMSC simulator", "SMSC_PORT"),
    ("--mmsc-port", "MMSC simulator", "MMSC_PORT"),
    ("--mm7-report-port", "MM7 delivery-report listener", "MM7_REPORT_PORT"),
])
def test_a_port_in_use_is_one_line_naming_it_and_the_fix(state_dir: Path, flag: str, what: str,
                                                        knob: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _demo(state_dir, *_args({**_free_ports(), flag: port}))
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"port {port} ({what})" in lines[0]
    assert f"{knob}=" in lines[0] and f"{flag} " in lines[0]
