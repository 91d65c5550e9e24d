"""Group commit of small sends: concurrent single sends are written by shared statements, each
answered only once stored, and each tenant's daily budget still admits exactly what it would
admit one send at a time."""

from __future__ import annotations

import asyncio
from typing import Any

from handlers import tenants
from handlers.events import log as event_log
from handlers.messages.wake import DISPATCH_CHANNEL
from tests.conftest import Api, Tenant
from tests.integration.notices import listening

SENDER = "0212345678"


async def registered(api: Api) -> Tenant:
    t = await api.new_tenant()
    assert (await t.call("POST", "/v1/sender-numbers", json={"number": SENDER})).status == 201
    return t


async def single(t: Tenant, i: int) -> Any:
    return await t.call("POST", "/v1/messages",
                        json={"from": SENDER, "to": [f"0103333{i:04d}"], "text": f"hello {i}"})


async def test_concurrent_single_sends_share_statements_and_every_one_is_stored(api: Api) -> None:
    t = await registered(api)
    assert api.context.sends is not None
    before = api.context.sends.statements
    answers = await asyncio.gather(*(single(t, i) for i in range(60)))
    assert {r.status for r in answers} == {202}
    ids = {(await r.json())["id"] for r in answers}
    pool = api.context.pool
    stored = await pool.fetch(
        "SELECT m.id::text, m.text, r.number, r.state FROM messages m "
        "JOIN recipients r ON r.message_id = m.id WHERE m.tenant_id = $1", t.id)
    assert {r["id"] for r in stored} == ids
    assert sorted(r["text"] for r in stored) == sorted(f"hello {i}" for i in range(60))
    assert {r["state"] for r in stored} == {"queued"}
    events = await pool.fetchval(
        "SELECT count(*) FROM event_log WHERE tenant_id = $1 AND type = 'message.accepted'", t.id)
    audited = await pool.fetch(
        "SELECT key_id, action FROM audit_log WHERE tenant_id = $1 AND action = 'POST /v1/messages'",
        t.id)
    assert events == 60 and len(audited) == 60
    assert {a["key_id"] for a in audited} == {t.key_id}
    written = api.context.sends.statements - before
    print(f"60 concurrent sends written by {written} statements")
    assert written < 60


async def test_a_burst_past_the_daily_budget_admits_exactly_what_is_left(api: Api) -> None:
    t = await registered(api)
    async with api.context.pool.acquire() as conn:
        await tenants.update_settings(conn, t.id, tenants.OperatorSettingsPatch(daily_recipients=7),
                                      actor="cli:test")
    assert api.context.limiter is not None
    api.context.limiter.forget(t.id)
    other = await registered(api)  # another tenant in the same groups is not held back
    answers = await asyncio.gather(*(single(t, i) for i in range(20)),
                                   *(single(other, i) for i in range(20)))
    mine, theirs = answers[:20], answers[20:]
    assert sorted(r.status for r in mine) == [202] * 7 + [429] * 13
    assert {r.status for r in theirs} == {202}
    refused = next(r for r in mine if r.status == 429)
    assert (await refused.json())["budget"] == "daily_recipients"
    pool = api.context.pool
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE tenant_id = $1", t.id) == 7
    assert await pool.fetchval(
        "SELECT used FROM rate_usage WHERE tenant_id = $1 AND budget = 'daily_recipients'",
        t.id) == 7


async def test_with_a_dispatcher_in_the_daemon_a_group_wakes_it_and_notifies_nobody(
        api: Api, db_dsn: str) -> None:
    # A notifying commit holds PostgreSQL's database-wide notify lock through its flush; with
    # the dispatcher here, a group commits without one and wakes it after the commit.
    t = await registered(api)
    sends = api.context.sends
    assert sends is not None
    woken: list[int] = []
    api.context.dispatch_wake.attach(lambda: woken.append(sends.statements))
    async with listening(db_dsn, DISPATCH_CHANNEL, event_log.CHANNEL) as signalled:
        before = sends.statements
        heard = await signalled(lambda: asyncio.gather(*(single(t, i) for i in range(30))))
    assert heard == []
    written = sends.statements - before
    assert len(woken) == written >= 1  # once per statement, after it was counted as written
    assert woken == list(range(before + 1, before + written + 1))
    assert await api.context.pool.fetchval(
        "SELECT count(*) FROM recipients WHERE tenant_id = $1 AND state = 'queued'", t.id) == 30


async def test_without_a_dispatcher_in_the_daemon_every_instance_is_notified(
        api: Api, db_dsn: str) -> None:
    t = await registered(api)
    assert api.context.sends is not None
    async with listening(db_dsn, DISPATCH_CHANNEL) as signalled:
        before = api.context.sends.statements
        heard = await signalled(lambda: asyncio.gather(*(single(t, i) for i in range(30))))
    assert heard == [DISPATCH_CHANNEL] * (api.context.sends.statements - before)
    assert heard
