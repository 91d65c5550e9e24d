"""MMS through the whole daemon: `telgate run --demo` (what `make run` starts) delivers a JPEG
via its MMSC simulator, and kill -9 in the middle of an MMS send loses nobody."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import IO

import asyncpg
import pytest

from daemon.db import init_connection
from handlers import tenants
from handlers.registry import senders
from sim.mmsc import MmscConfig, MmscSimulator
from tests.integration.daemon_proc import free_port, request, start_daemon
from tests.integration.test_mms import jpeg_of

pytestmark = pytest.mark.slow
FINAL = ("delivered", "failed", "expired", "rejected", "canceled")
REPO = Path(__file__).parents[2]


def _post(port: int, key: str, body: dict[str, object]) -> dict[str, object]:
    status, _headers, answer = request(port, "POST", "/v1/messages", key, body)
    assert status == 202, answer
    assert isinstance(answer, dict)
    return answer


def _get(port: int, key: str, path: str) -> dict[str, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _demo(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "--demo", "--config",
         str(REPO / "config" / "telgate.demo.toml")], env=env, stdout=subprocess.PIPE,
        stderr=open(log, "wb"))


def _key_from(stdout: IO[bytes], deadline: float) -> str:
    while time.monotonic() < deadline:
        line = stdout.readline().decode()
        if "export TELGATE_KEY=" in line:
            return line.split("=", 1)[1].strip()
        if not line:
            time.sleep(0.05)
    raise AssertionError("the demo printed no key")


async def test_the_demo_delivers_an_mms_through_its_mmsc_simulator(
        db_dsn: str, tmp_path: Path) -> None:
    api, mmsc, report, smsc = (free_port() for _ in range(4))
    demo_carrier = (f'[{{name = "sim-mms", url = "http://127.0.0.1:{mmsc}/mm7", '
                    'vasp_id = "telgate", username = "telgate", password = "demo", '
                    'charset = "ks_c_5601-1987", report_username = "mmsc", '
                    'report_password = "demo"}]')
    env = {**os.environ, "TELGATE_DATABASE__DSN": f'"{db_dsn}"',
           "TELGATE_API__PORT": str(api), "TELGATE_STATE_DIR": str(tmp_path / "state"),
           "TELGATE_MM7__CARRIERS": demo_carrier, "TELGATE_MM7__REPORT_PORT": str(report),
           "TELGATE_SMPP__CARRIERS": (f'[{{name = "sim", host = "127.0.0.1", port = {smsc}, '
                                      'system_id = "telgate", password = "demo"}]'),
           "TELGATE_SIP__ENABLED": "false", "TELGATE_LOG__FORMAT": "json"}
    proc = await asyncio.to_thread(_demo, env, tmp_path / "daemon.log")
    try:
        assert proc.stdout is not None
        key = await asyncio.to_thread(_key_from, proc.stdout, time.monotonic() + 60)
        image = jpeg_of(200_000)
        answer = await asyncio.to_thread(_post, api, key, {
            "from": "02-1234-5678", "to": ["010-1234-5678"], "text": "데모 사진입니다",
            "images": [base64.b64encode(image).decode()]})
        assert answer["type"] == "mms"
        deadline = time.monotonic() + 30
        while True:
            msg = await asyncio.to_thread(_get, api, key, f"/v1/messages/{answer['id']}")
            if msg["status"] == "done":
                break
            assert time.monotonic() < deadline, msg
            await asyncio.sleep(0.2)
        assert {k: v for k, v in msg["counts"].items() if v} == {"delivered": 1}  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)


async def test_kill_9_mid_mms_send_loses_nothing_and_counts_duplicates(
        db_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(db_dsn)
    await init_connection(conn)
    t = await tenants.create_tenant(conn, "mms-recovery", actor="test")
    key, _ = await tenants.create_key(conn, t.id, sp_id=None, label="", actor="test")
    await senders.register(conn, t.id, "0212345678", actor="test")
    await conn.close()
    report_port, port = free_port(), free_port()
    numbers = [f"0104{i:07d}" for i in range(400)]
    sim = MmscConfig(accounts={"tg": "pw"}, latency_ms=20, report_delay_ms=50,
                     report_url=f"http://127.0.0.1:{report_port}/mm7", report_username="r",
                     report_password="rpw", report_retries=30)
    async with MmscSimulator(sim) as mmsc:
        cfg = tmp_path / "telgate.toml"
        cfg.write_text(f"""
[database]
dsn = "{db_dsn}"
[messaging]
recovery_seconds = 0.5
[mm7]
report_port = {report_port}
[[mm7.carriers]]
name = "mmsc"
url = "{mmsc.url}"
vasp_id = "V"
username = "tg"
password = "pw"
connections = 8
report_username = "r"
report_password = "rpw"
""")
        env = {**os.environ, "TELGATE_CONFIG": str(cfg), "TELGATE_API__PORT": str(port),
               "TELGATE_STATE_DIR": str(tmp_path / "state"), "TELGATE_LOG__FORMAT": "json",
               "TELGATE_SIP__ENABLED": "false"}
        log = tmp_path / "daemon.log"
        daemon = await asyncio.to_thread(start_daemon, env, port, log)
        answer = await asyncio.to_thread(_post, port, key, {
            "from": "0212345678", "to": numbers, "text": "복구 시험",
            "images": [base64.b64encode(jpeg_of(30_000)).decode()]})
        deadline = time.monotonic() + 60
        while mmsc.stats["accepted"] < 80:
            assert time.monotonic() < deadline, "dispatch did not start"
            await asyncio.sleep(0.01)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        at_kill = mmsc.stats["accepted"]

        daemon = await asyncio.to_thread(start_daemon, env, port, log)
        try:
            pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
            deadline = time.monotonic() + 120
            while True:
                states = dict(await pool.fetch(
                    "SELECT state, count(*) FROM recipients GROUP BY state"))
                if sum(states.values()) == 400 and set(states) <= set(FINAL):
                    break
                assert time.monotonic() < deadline, f"not all final: {states}"
                await asyncio.sleep(0.2)
            in_doubt = {r["number"] for r in await pool.fetch(
                "SELECT number FROM recipients WHERE in_doubt")}
            await pool.close()
        finally:
            daemon.send_signal(signal.SIGTERM)
            await asyncio.to_thread(daemon.wait, 30)
    assert answer["type"] == "mms"
    assert states == {"delivered": 400}
    sent = Counter(r.request.recipients[0].value for r in mmsc.received)
    assert set(sent) == set(numbers)  # nobody lost
    duplicated = {n for n, c in sent.items() if c > 1}
    assert duplicated <= in_doubt  # the only duplicates are the ones reported in doubt
    assert at_kill < 400  # the kill really happened mid-send
    print(json.dumps({"accepted_at_kill": at_kill, "in_doubt": len(in_doubt),
                      "duplicated": len(duplicated)}))
