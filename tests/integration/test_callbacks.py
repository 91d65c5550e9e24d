"""The callback list (seed 002 §15 콜백) against a real PostgreSQL: entries the IVR stores with
their `callback.created` event, the list and its filters, completing one entry or all of a
customer's, and the features the call engine reads from the tenant settings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from handlers import tenants
from handlers.api.scopes import Scope
from handlers.events.hub import EventHub
from handlers.ivr import callbacks
from handlers.ivr.features import Trigger, tenant_call_features
from tests.conftest import Api, Tenant, make_config, serve_api
from tests.integration.test_events import open_stream

DID = "0212345678"
NOW = datetime.now(UTC)


async def entry(pool: asyncpg.Pool, t: Tenant, number: str = "01012345678", *,
                caller: str | None = None, did: str = DID, trigger: str = "closed",
                ago: timedelta = timedelta(0)) -> callbacks.Callback:
    async with pool.acquire() as conn:
        return await callbacks.create(
            conn, tenant_id=t.id, call_id=uuid.uuid4(), did=did,
            caller=number if caller is None else caller, number=number, trigger=trigger,
            created_at=NOW - ago)


async def listed(t: Tenant, **params: str) -> list[dict[str, Any]]:
    resp = await t.call("GET", "/v1/callbacks", params=params)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


# -- storing -------------------------------------------------------------------------------


async def test_an_entry_is_stored_with_its_callback_created_event(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    hook = await pool.fetchval("INSERT INTO webhooks (tenant_id, url, secret) VALUES ($1, "
                               "'https://p.example/h', 'whsec_x') RETURNING id", t.id)
    call_id = uuid.uuid4()
    async with pool.acquire() as conn:
        made = await callbacks.create(conn, tenant_id=t.id, call_id=call_id, did=DID,
                                      caller="anonymous", number="01098765432",
                                      trigger=Trigger.NO_AGENT)
    assert (made.status, made.trigger, made.caller, made.completed_at) == (
        "open", Trigger.NO_AGENT, "anonymous", None)
    event = await pool.fetchrow("SELECT event_id, type, data, created_at FROM event_log "
                                "WHERE tenant_id = $1", t.id)
    assert event["type"] == "callback.created" and event["created_at"] == made.created_at
    assert event["data"] == {"callback_id": str(made.id), "call_id": str(call_id),
                             "did": DID, "caller": "anonymous", "number": "01098765432",
                             "trigger": "no_agent"}
    # The same row is the webhooks' outbox entry.
    assert await pool.fetchval("SELECT event_id FROM webhook_outbox WHERE webhook_id = $1",
                               hook) == event["event_id"]
    shown = await (await t.call("GET", f"/v1/callbacks/{made.id}")).json()
    assert shown == {"id": str(made.id), "call_id": str(call_id), "did": DID,
                     "caller": "anonymous", "number": "01098765432", "trigger": "no_agent",
                     "status": "open", "created_at": made.created_at.isoformat()
                     .replace("+00:00", "Z"), "completed_at": None, "completed_by": None}


async def test_an_entry_that_cannot_be_stored_leaves_no_event(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    async with pool.acquire() as conn:
        with pytest.raises(ValueError):
            await callbacks.create(conn, tenant_id=t.id, call_id=None, did=DID,
                                   caller="anonymous", number="", trigger="closed")
        with pytest.raises(ValueError):
            await callbacks.create(conn, tenant_id=t.id, call_id=None, did=DID,
                                   caller="anonymous", number="0101234567", trigger="busy")
        with pytest.raises(asyncpg.ForeignKeyViolationError):  # no such tenant
            await callbacks.create(conn, tenant_id=uuid.uuid4(), call_id=None, did=DID,
                                   caller="01012345678", number="01012345678",
                                   trigger="closed")
    assert await pool.fetchval("SELECT count(*) FROM event_log") == 0
    assert await pool.fetchval("SELECT count(*) FROM callbacks") == 0


@pytest.fixture
async def streamed(pool: asyncpg.Pool, db_dsn: str, state_root: Path) -> AsyncIterator[Api]:
    """The API with the event stream running."""
    config = make_config(state_root, db_dsn, events__heartbeat_seconds="0.3")
    async with serve_api(pool, config) as api:
        hub = EventHub(db_dsn, pool, config.events, metrics=api.context.metrics,
                       poll_seconds=0.2)
        await hub.start()
        api.context.events = hub
        try:
            yield api
        finally:
            await hub.stop()


async def test_callback_created_reaches_an_open_event_stream(
        streamed: Api, pool: asyncpg.Pool) -> None:
    t, other = await streamed.new_tenant(), await streamed.new_tenant()
    client = await open_stream(t, "?types=callback.created")
    theirs = await open_stream(other)
    made = await entry(pool, t, "010-1111-2222".replace("-", ""))
    frame = await client.event()
    assert frame.event == "callback.created" and frame.data is not None
    assert frame.data["data"]["callback_id"] == str(made.id)
    assert frame.data["data"]["number"] == "01011112222"
    with pytest.raises(TimeoutError):
        await theirs.event(timeout=0.5)
    client.close()
    theirs.close()


# -- the list ------------------------------------------------------------------------------


async def test_without_a_period_the_list_shows_the_open_entries_of_the_last_year(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    older = await entry(pool, t, "01000000001", ago=timedelta(days=367))
    months = await entry(pool, t, "01000000002", ago=timedelta(days=300))
    today = await entry(pool, t, "01000000003", ago=timedelta(minutes=5))
    done = await entry(pool, t, "01000000004", ago=timedelta(days=1))
    async with pool.acquire() as conn:
        await callbacks.complete(conn, t.id, done.id, by="test")
    assert [i["id"] for i in await listed(t)] == [str(today.id), str(months.id)]
    assert [i["id"] for i in await listed(t, status="done")] == [str(done.id)]
    assert [i["id"] for i in await listed(t, status="all")] == [
        str(today.id), str(done.id), str(months.id)]
    # A period of its own reaches further back, up to a year long.
    back = (NOW - timedelta(days=400)).date().isoformat()
    until = (NOW - timedelta(days=200)).date().isoformat()
    assert [i["id"] for i in await listed(t, since=back, until=until)] == [
        str(months.id), str(older.id)]
    resp = await t.call("GET", "/v1/callbacks",
                        params={"since": back, "until": NOW.date().isoformat()})
    assert (resp.status, (await resp.json())["code"]) == (422, "period_too_long")


async def test_the_list_filters_by_customer_number_did_and_time(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    first = await entry(pool, t, "01012345678", ago=timedelta(hours=3))
    other_did = await entry(pool, t, "01012345678", did="15881234", trigger="no_answer",
                            ago=timedelta(hours=2))
    someone = await entry(pool, t, "0311234567", caller="anonymous", ago=timedelta(hours=1))
    assert [i["id"] for i in await listed(t, number="010-1234-5678")] == [
        str(other_did.id), str(first.id)]
    assert [i["id"] for i in await listed(t, did="1588-1234")] == [str(other_did.id)]
    assert [i["id"] for i in await listed(t, did=DID)] == [str(someone.id), str(first.id)]
    since = (NOW - timedelta(hours=2, minutes=30)).isoformat()
    until = (NOW - timedelta(minutes=90)).isoformat()
    assert [i["id"] for i in await listed(t, since=since, until=until)] == [str(other_did.id)]
    resp = await t.call("GET", "/v1/callbacks", params={"number": "+1 212 555 0100"})
    assert (resp.status, (await resp.json())["field"]) == (422, "number")


async def test_the_list_pages_newest_first(api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    made = [await entry(pool, t, f"0101234{n:04d}", ago=timedelta(minutes=n))
            for n in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await (await t.call("GET", "/v1/callbacks", params={
            "limit": "2", **({"cursor": cursor} if cursor else {})})).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(c.id) for c in made]


# -- completing ----------------------------------------------------------------------------


async def test_completing_an_entry_takes_it_off_the_open_list_once(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    made = await entry(pool, t)
    resp = await t.call("POST", f"/v1/callbacks/{made.id}/complete")
    assert resp.status == 200
    first = await resp.json()
    assert first["status"] == "done" and first["completed_by"].startswith("key:tgk_")
    again = await (await t.call("POST", f"/v1/callbacks/{made.id}/complete")).json()
    assert again == first  # idempotent: who and when stay the first completion's
    assert await listed(t) == []
    trail = await pool.fetch("SELECT action, subject, details FROM audit_log "
                             "WHERE tenant_id = $1 AND action LIKE 'callback.%' ORDER BY id",
                             t.id)
    assert [(r["action"], r["subject"], r["details"]) for r in trail] == [
        ("callback.complete", str(made.id), {"number": "010****5678", "already_done": False}),
        ("callback.complete", str(made.id), {"number": "010****5678", "already_done": True})]


async def test_another_tenants_entry_is_not_found(api: Api, pool: asyncpg.Pool) -> None:
    t, other = await api.new_tenant(), await api.new_tenant()
    made = await entry(pool, t)
    for method, path in (("GET", f"/v1/callbacks/{made.id}"),
                         ("POST", f"/v1/callbacks/{made.id}/complete"),
                         ("GET", f"/v1/callbacks/{uuid.uuid4()}")):
        resp = await other.call(method, path)
        assert (resp.status, (await resp.json())["code"]) == (404, "callback_not_found")
    assert await listed(other, status="all") == []
    resp = await other.call("POST", "/v1/callbacks/complete", json={"number": made.number})
    assert (await resp.json()) == {"completed": 0}
    assert [i["status"] for i in await listed(t)] == ["open"]


async def test_completing_a_customer_completes_all_their_open_entries(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    old_done = await entry(pool, t, ago=timedelta(days=2))
    async with pool.acquire() as conn:
        await callbacks.complete(conn, t.id, old_done.id, by="earlier")
    for hours in (1, 2, 3):
        await entry(pool, t, ago=timedelta(hours=hours))
    kept = await entry(pool, t, "01099998888")
    resp = await t.call("POST", "/v1/callbacks/complete", json={"number": "010-1234-5678"})
    assert (resp.status, await resp.json()) == (200, {"completed": 3})
    assert [i["id"] for i in await listed(t)] == [str(kept.id)]
    assert (await (await t.call("GET", f"/v1/callbacks/{old_done.id}")).json())[
        "completed_by"] == "earlier"
    resp = await t.call("POST", "/v1/callbacks/complete", json={"number": "01012345678"})
    assert await resp.json() == {"completed": 0}
    trail = await pool.fetch("SELECT details FROM audit_log WHERE tenant_id = $1 AND "
                             "action = 'callback.complete_number' ORDER BY id", t.id)
    assert [r["details"] for r in trail] == [{"number": "010****5678", "completed": 3},
                                             {"number": "010****5678", "completed": 0}]
    resp = await t.call("POST", "/v1/callbacks/complete", json={"number": "12"})
    assert (resp.status, (await resp.json())["field"]) == (422, "number")


async def test_a_read_key_lists_and_a_send_key_completes(api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    made = await entry(pool, t)
    keys: dict[Scope, Tenant] = {}
    async with pool.acquire() as conn:
        for scope in (Scope.READ, Scope.SEND):
            key, record = await tenants.create_key(conn, t.id, sp_id=None, label="",
                                                   actor="test", scope=scope)
            keys[scope] = Tenant(t.id, t.name, key, record.id, api)
    reader, sender = keys[Scope.READ], keys[Scope.SEND]
    assert [i["id"] for i in await listed(reader)] == [str(made.id)]
    for path, body in ((f"/v1/callbacks/{made.id}/complete", None),
                       ("/v1/callbacks/complete", {"number": made.number})):
        resp = await reader.call("POST", path, json=body)
        assert (resp.status, (await resp.json())["code"]) == (403, "missing_scope")
    resp = await sender.call("POST", f"/v1/callbacks/{made.id}/complete")
    assert resp.status == 200


# -- the features the call engine reads ----------------------------------------------------


async def test_the_engine_reads_the_tenants_that_set_hours_or_triggers(
        api: Api, pool: asyncpg.Pool) -> None:
    plain, hours, did_only, triggers = [await api.new_tenant() for _ in range(4)]
    weekdays = {"days": ["mon", "tue", "wed", "thu", "fri"], "opens": "09:00",
                "closes": "18:00"}
    for t, body in ((plain, {"sms_max_bytes": 80}),
                    (hours, {"business_hours": weekdays, "timezone": "Europe/London"}),
                    (did_only, {"did_business_hours": {"1588-1234": weekdays}}),
                    (triggers, {"callback_on": ["no_answer", "closed", "closed"]})):
        resp = await t.call("PATCH", "/v1/tenant/settings", json=body)
        assert resp.status == 200, await resp.text()
    async with pool.acquire() as conn:
        found = await tenant_call_features(conn)
    assert set(found) == {hours.id, did_only.id, triggers.id}
    monday_9_london = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    assert found[hours.id].open_at(DID, monday_9_london)
    assert not found[hours.id].open_at(DID, monday_9_london - timedelta(seconds=1))
    assert not found[did_only.id].open_at("15881234", monday_9_london)  # 18:00 in Seoul
    assert found[did_only.id].open_at(DID, monday_9_london)
    assert found[triggers.id].callback_on == frozenset({"closed", "no_answer"})
    assert found[triggers.id].open_at(None, monday_9_london)
    # Clearing them takes the tenant out again.
    for t, body in ((did_only, {"did_business_hours": None}),
                    (triggers, {"callback_on": []})):
        assert (await t.call("PATCH", "/v1/tenant/settings", json=body)).status == 200
    async with pool.acquire() as conn:
        assert set(await tenant_call_features(conn)) == {hours.id}
