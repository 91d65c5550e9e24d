"""Receipts as carriers really send them: again after a reconnect, with done dates to the
minute; and SMSC cuts every few seconds during a send lose nobody."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg

from sim.smsc import SmscSimulator
from tests.conftest import Api
from tests.integration.test_messaging import running, send, sender_tenant, settled, sim_config


async def _inbox(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM dlr_inbox"))


async def _acks(smsc: SmscSimulator, at_least: int) -> None:
    for _ in range(200):
        if smsc.stats["deliver_sm_resp"] >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {smsc.stats['deliver_sm_resp']} receipts acknowledged")


async def test_a_receipt_sent_again_is_dropped_as_a_duplicate_at_once(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    numbers = [f"0107000{i:04d}" for i in range(20)]
    async with running(api, db_dsn, state_root, sim_config(record_submits=True,
                                                           receipt_delay_ms=10)) as (smsc, d):
        status, body = await send(t, to=numbers, text="중복 수신 확인")
        assert status == 202
        assert await settled(t, body["id"]) == {"delivered": 20}
        await _acks(smsc, 20)
        smsc.redeliver_receipts(list(smsc.submits))
        await _acks(smsc, 40)  # acknowledged only once stored
        await asyncio.sleep(0.1)  # the writer's next round matches what it stored
        repeats = d.metrics.receipt_repeats._value.get()
    assert await _inbox(api.context.pool) == 0
    assert repeats == 20
    assert await counts_by_state(api.context.pool) == {"delivered": 20}


async def counts_by_state(pool: asyncpg.Pool) -> dict[str, int]:
    return dict(await pool.fetch("SELECT state, count(*) FROM recipients GROUP BY state"))


async def test_done_at_never_precedes_submitted_at_and_the_carrier_date_is_kept(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    async with running(api, db_dsn, state_root, sim_config(receipt_delay_ms=10)):
        _status, body = await send(t, to=[f"0107100{i:04d}" for i in range(30)], text="시각")
        assert await settled(t, body["id"]) == {"delivered": 30}
    rows = await api.context.pool.fetch(
        "SELECT submitted_at, done_at, carrier_done_at FROM recipients")
    assert all(r["done_at"] >= r["submitted_at"] for r in rows)
    # The receipt's done date is the carrier's, to the minute (seconds dropped).
    assert all(r["carrier_done_at"] is not None and r["carrier_done_at"].second == 0
               for r in rows)


async def test_smsc_cut_every_600_submits_loses_nobody(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    numbers = [f"0107{i:07d}" for i in range(5_000)]
    sim = sim_config(record_submits=True, receipt_delay_ms=20, latency_ms=1)
    # Receipts must not expire meanwhile: the machine may be slow, the guarantee is not.
    async with running(api, db_dsn, state_root, sim, receipt_timeout=3600) as (smsc, _d):
        ids = []
        for start in range(0, len(numbers), 1000):
            status, body = await send(t, to=numbers[start:start + 1000], text="절단 시험")
            assert status == 202, body
            ids.append(body["id"])
        pool = api.context.pool
        # A cut at every 600 accepted submits (not on a timer: the same cuts on any machine),
        # while submits, responses and receipts are in flight.
        for threshold in range(600, 5000, 600):
            for _ in range(12_000):
                if smsc.stats["accepted"] >= threshold:
                    break
                await asyncio.sleep(0.005)
            smsc.disconnect_all()
        for _ in range(1200):
            states = await counts_by_state(pool)
            if set(states) <= {"delivered", "failed", "expired"} and sum(states.values()) == 5000:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        in_doubt = {r["number"] for r in await pool.fetch(
            "SELECT number FROM recipients WHERE in_doubt")}
    sent = Counter(s.destination_addr for s in smsc.submits)
    duplicated = {n for n, c in sent.items() if c > 1}
    assert states == {"delivered": 5000}
    assert set(sent) == set(numbers)
    assert duplicated <= in_doubt
    assert smsc.stats["receipts_requeued"] or smsc.stats["accepted"] > 5000  # cuts bit
    # Redelivered receipts did not pile up: what is left is one receipt per duplicated copy,
    # whose carrier id we never learned (its submit_sm_resp was lost in a cut).
    left = await pool.fetch(
        """SELECT d.msg_id FROM dlr_inbox d WHERE NOT EXISTS (
               SELECT 1 FROM recipients r WHERE r.carrier_msg_id = d.msg_id)""")
    assert len(left) == await _inbox(pool)
    assert len(left) <= sum(c - 1 for c in sent.values())
