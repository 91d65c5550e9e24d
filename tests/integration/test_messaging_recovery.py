"""kill -9 during a 20,000-recipient send: after a restart every recipient reaches a final state,
none is lost, and the only duplicates are the submits reported in doubt."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from sim.smsc import SmscConfig, SmscSimulator
from tests.integration.daemon_proc import (
    FINAL,
    free_port,
    request,
    sender_tenant,
    smpp_daemon_config,
    start_daemon,
)

pytestmark = pytest.mark.slow


async def test_kill_9_mid_send_loses_nothing_and_counts_duplicates(
        db_dsn: str, state_root: Path, tmp_path: Path) -> None:
    key = await sender_tenant(db_dsn, "recovery")

    async with SmscSimulator(SmscConfig(port=0, accounts={"tg": "pw"}, latency_ms=2,
                                        receipt_delay_ms=50, record_submits=True)) as smsc:
        port = free_port()
        cfg = tmp_path / "telgate.toml"
        smpp_daemon_config(cfg, db_dsn, smsc.port)
        env = {**os.environ, "TELGATE_CONFIG": str(cfg), "TELGATE_API__PORT": str(port),
               "TELGATE_SIP__PORT": "0",
               "TELGATE_STATE_DIR": str(tmp_path / "state"), "TELGATE_LOG__FORMAT": "json"}
        log = tmp_path / "daemon.log"
        daemon = await asyncio.to_thread(start_daemon, env, port, log)
        numbers = [f"0103{i:07d}" for i in range(20_000)]
        ids = []
        for chunk in (numbers[:10_000], numbers[10_000:]):
            status, _, answer = await asyncio.to_thread(request, port, "POST", "/v1/messages", key, {
                "from": "0212345678", "to": chunk, "text": "복구 시험"})
            assert status == 202, answer
            ids.append(answer["id"])  # type: ignore[index]
        # Let it get well into the send, then pull the plug.
        deadline = time.monotonic() + 60
        while smsc.stats["accepted"] < 4000:
            assert time.monotonic() < deadline, "dispatch did not start"
            await asyncio.sleep(0.02)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        at_kill = smsc.stats["accepted"]

        daemon = await asyncio.to_thread(start_daemon, env, port, log)
        try:
            pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
            deadline = time.monotonic() + 120
            while True:
                states = dict(await pool.fetch(
                    "SELECT state, count(*) FROM recipients GROUP BY state"))
                if sum(states.values()) == 20_000 and set(states) <= set(FINAL):
                    break
                assert time.monotonic() < deadline, f"not all final: {states}"
                await asyncio.sleep(0.2)
            in_doubt = {r["number"] for r in await pool.fetch(
                "SELECT number FROM recipients WHERE in_doubt")}
            await pool.close()
        finally:
            daemon.send_signal(signal.SIGTERM)
            await asyncio.to_thread(daemon.wait, 30)

    assert states == {"delivered": 20_000}
    sent = Counter(s.destination_addr for s in smsc.submits)
    assert set(sent) == set(numbers)  # nobody lost
    duplicated = {n for n, c in sent.items() if c > 1}
    assert duplicated <= in_doubt  # the only duplicates are the ones reported in doubt
    assert at_kill < 20_000  # the kill really happened mid-send
    print(json.dumps({"accepted_at_kill": at_kill, "in_doubt": len(in_doubt),
                      "duplicated": len(duplicated)}))
