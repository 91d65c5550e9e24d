"""Agents and presence: an agent is an extension; its presence is set through the API, logged
once per change as `presence.changed`, shown with its registration state, and handed to the
call engine's cache at once."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from handlers.api.scopes import Scope
from handlers.calls.presence import Presence, PresenceCache
from handlers.tenants import create_key
from tests.conftest import Api, Tenant
from tests.integration.test_calls import Gateway, gw

__all__ = ["gw"]

PASSWORD = "secret-pass-1"


async def _extensions(t: Tenant, *numbers: str, **extra: Any) -> None:
    for number in numbers:
        resp = await t.call("POST", "/v1/extensions",
                            json={"extension": number, "password": PASSWORD, **extra})
        assert resp.status == 201, await resp.text()


async def _set(t: Tenant, extension: str, presence: str) -> Any:
    return await t.call("PUT", f"/v1/agents/{extension}/presence", json={"presence": presence})


async def _events(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT extensions, data::text AS data FROM event_log "
            "WHERE tenant_id = $1 AND type = 'presence.changed' ORDER BY id", tenant_id)
    return [{"extensions": list(r["extensions"]), **json.loads(r["data"])} for r in rows]


async def test_an_agent_is_online_until_set_offline_or_dnd(api: Api) -> None:
    t = await api.new_tenant()
    await _extensions(t, "1001", name="상담원1")
    agent = await (await t.call("GET", "/v1/agents/1001")).json()
    assert (agent["extension"], agent["name"], agent["presence"], agent["department_id"]) == \
        ("1001", "상담원1", "online", None)
    created = datetime.fromisoformat(agent["presence_changed_at"])
    for wanted in ("dnd", "offline", "online"):
        resp = await _set(t, "1001", wanted)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["presence"] == wanted
        assert datetime.fromisoformat(body["presence_changed_at"]) > created
        assert (await (await t.call("GET", "/v1/agents/1001")).json())["presence"] == wanted


async def test_each_change_logs_one_presence_changed_event_and_a_repeat_logs_none(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    await _extensions(t, "1001", name="상담원1")
    sales = await (await t.call("POST", "/v1/departments",
                                json={"name": "영업", "extensions": ["1001"]})).json()
    assert (await _set(t, "1001", "dnd")).status == 200
    assert (await _set(t, "1001", "dnd")).status == 200  # already dnd: nothing happens
    assert (await _set(t, "1001", "offline")).status == 200
    assert await _events(pool, t.id) == [
        {"extensions": ["1001"], "extension": "1001", "name": "상담원1",
         "department_id": sales["id"], "presence": "dnd", "previous": "online"},
        {"extensions": ["1001"], "extension": "1001", "name": "상담원1",
         "department_id": sales["id"], "presence": "offline", "previous": "dnd"},
    ]
    async with pool.acquire() as conn:
        audited = await conn.fetch(
            "SELECT actor, subject, details FROM audit_log WHERE tenant_id = $1 "
            "AND action = 'agent.presence' ORDER BY id", t.id)
    assert [(a["subject"], a["details"]) for a in audited] == [
        ("1001", {"presence": "dnd", "previous": "online"}),
        ("1001", {"presence": "offline", "previous": "dnd"}),
    ]


async def test_a_presence_change_reaches_a_subscribed_webhook_from_the_same_event(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    await _extensions(t, "1001")
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO webhooks (tenant_id, url, secret, events) "
            "VALUES ($1, 'https://crm.example/hook', 'whsec', '{presence.changed}')", t.id)
    assert (await _set(t, "1001", "dnd")).status == 200
    async with pool.acquire() as conn:
        queued = await conn.fetch("SELECT o.event_id, o.event_type FROM webhook_outbox o "
                                  "JOIN event_log e USING (event_id) WHERE o.tenant_id = $1",
                                  t.id)
    assert [q["event_type"] for q in queued] == ["presence.changed"]


async def test_agents_are_listed_page_by_page_and_filtered_by_presence_and_department(
        api: Api) -> None:
    t = await api.new_tenant()
    await _extensions(t, "1001", "1002", "1003", "20")
    sales = await (await t.call("POST", "/v1/departments",
                                json={"name": "영업", "extensions": ["1001", "1002"]})).json()
    await _set(t, "1002", "dnd")
    await _set(t, "1003", "offline")
    page = await (await t.call("GET", "/v1/agents", params={"limit": "2"})).json()
    rest = await (await t.call("GET", "/v1/agents",
                               params={"cursor": page["next_cursor"]})).json()
    assert [a["extension"] for a in page["items"] + rest["items"]] == ["20", "1001", "1002",
                                                                      "1003"]
    assert rest["next_cursor"] is None

    async def listed(**params: str) -> list[str]:
        resp = await t.call("GET", "/v1/agents", params=params)
        assert resp.status == 200, await resp.text()
        return [a["extension"] for a in (await resp.json())["items"]]

    assert await listed(presence="online") == ["20", "1001"]
    assert await listed(presence="dnd") == ["1002"]
    assert await listed(department_id=sales["id"]) == ["1001", "1002"]
    assert await listed(department_id=sales["id"], presence="online") == ["1001"]
    assert await listed(department_id=str(uuid.uuid4())) == []


async def test_an_agent_shows_whether_its_phone_is_registered(gw: Gateway,
                                                              pool: asyncpg.Pool) -> None:
    await gw.start()
    await gw.phone("1001")
    await gw.extension("1002")
    await gw.extension("1003")
    async with pool.acquire() as conn:  # a binding that expired and was not swept yet
        await conn.execute(
            "INSERT INTO sip_registrations (tenant_id, extension, contact_uri, transport, host, "
            "port, call_id, cseq, expires_at) VALUES ($1, '1003', 'sip:1003@127.0.0.1:5070', "
            "'UDP', '127.0.0.1', 5070, 'gone', 1, $2)",
            gw.tenant.id, datetime.now(UTC) - timedelta(seconds=5))
    body = await (await gw.tenant.call("GET", "/v1/agents")).json()
    shown = {a["extension"]: (a["registered"], a["contacts"]) for a in body["items"]}
    assert shown == {"1001": (True, 1), "1002": (False, 0), "1003": (False, 0)}
    one = await (await gw.tenant.call("GET", "/v1/agents/1001")).json()
    assert (one["registered"], one["contacts"]) == (True, 1)
    changed = await (await _set(gw.tenant, "1001", "dnd")).json()
    assert (changed["presence"], changed["registered"]) == ("dnd", True)


async def test_another_tenants_agents_are_not_found_nor_changed(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    other = await api.new_tenant()
    await _extensions(t, "1001")
    assert (await other.call("GET", "/v1/agents/1001")).status == 404
    resp = await _set(other, "1001", "offline")
    assert (resp.status, (await resp.json())["code"]) == (404, "not_found")
    assert (await (await other.call("GET", "/v1/agents")).json())["items"] == []
    assert (await (await t.call("GET", "/v1/agents/1001")).json())["presence"] == "online"
    assert await _events(pool, other.id) == [] and await _events(pool, t.id) == []


async def test_an_unknown_agent_is_404_and_a_bad_presence_422_naming_the_field(
        api: Api) -> None:
    t = await api.new_tenant()
    await _extensions(t, "1001")
    resp = await t.call("GET", "/v1/agents/9999")
    assert (resp.status, (await resp.json())["code"]) == (404, "not_found")
    resp = await _set(t, "9999", "dnd")
    assert (resp.status, (await resp.json())["code"]) == (404, "not_found")
    for body in ({"presence": "away"}, {"presence": None}, {}, {"presence": "dnd", "x": 1}):
        resp = await t.call("PUT", "/v1/agents/1001/presence", json=body)
        problem = await resp.json()
        assert (resp.status, problem["code"]) == (422, "invalid_field"), body
        assert problem["field"] in ("presence", "x"), problem
    resp = await t.call("GET", "/v1/agents", params={"presence": "away"})
    problem = await resp.json()
    assert (resp.status, problem["code"], problem["field"]) == (400, "invalid_parameter",
                                                                "presence")


async def test_a_read_key_sees_agents_but_needs_send_to_change_presence(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    await _extensions(t, "1001")
    async with pool.acquire() as conn:
        read_key, _ = await create_key(conn, t.id, sp_id=None, label="wallboard",
                                       scope=Scope.READ, actor="test")
        send_key, _ = await create_key(conn, t.id, sp_id=None, label="crm", scope=Scope.SEND,
                                       actor="test")
    reader = Tenant(t.id, t.name, read_key, t.key_id, api)
    crm = Tenant(t.id, t.name, send_key, t.key_id, api)
    assert (await reader.call("GET", "/v1/agents")).status == 200
    resp = await _set(reader, "1001", "dnd")
    assert (resp.status, (await resp.json())["code"]) == (403, "missing_scope")
    assert (await _set(crm, "1001", "dnd")).status == 200


async def test_the_engine_cache_is_told_at_once_and_forgets_a_deleted_extension(
        api: Api) -> None:
    cache = PresenceCache()
    api.context.presence_changed.append(cache.update)
    t = await api.new_tenant()
    await _extensions(t, "1001")
    assert cache.accepts_calls(t.id, "1001")
    await _set(t, "1001", "dnd")
    assert not cache.accepts_calls(t.id, "1001")
    assert cache.presence(t.id, "1001") is Presence.DND
    assert (await t.call("DELETE", "/v1/extensions/1001")).status == 204
    assert cache.accepts_calls(t.id, "1001")
    await _extensions(t, "1001")  # made again: online, in the database and the cache
    assert (await (await t.call("GET", "/v1/agents/1001")).json())["presence"] == "online"


async def test_a_cache_refresh_reads_every_tenants_agents_who_are_not_online(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    other = await api.new_tenant()
    await _extensions(t, "1001", "1002", "1003")
    await _extensions(other, "1001")
    await _set(t, "1001", "dnd")
    await _set(t, "1002", "offline")
    await _set(other, "1001", "offline")
    cache = PresenceCache()
    cache.update(t.id, "1003", Presence.DND)  # stale: the database says online
    await cache.refresh(pool)
    assert len(cache) == 3
    assert cache.presence(t.id, "1001") is Presence.DND
    assert cache.presence(t.id, "1002") is Presence.OFFLINE
    assert cache.accepts_calls(t.id, "1003")
    assert not cache.accepts_calls(other.id, "1001")
    assert cache.accepts_calls(other.id, "1002")  # no such extension: not held back


async def test_a_change_made_while_a_refresh_reads_is_not_undone_by_it(db_dsn: str) -> None:
    # One connection, held by the test: the refresh waits for it after the change was
    # taken, then reads a database that does not show the change yet.
    small = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1)
    try:
        cache = PresenceCache()
        tenant = uuid.uuid4()
        held = await small.acquire()
        reading = asyncio.create_task(cache.refresh(small))
        await asyncio.sleep(0.05)
        cache.update(tenant, "1001", Presence.OFFLINE)
        await small.release(held)
        await reading
        assert cache.presence(tenant, "1001") is Presence.OFFLINE
        await cache.refresh(small)  # a read that starts after the change: the database's view
        assert cache.accepts_calls(tenant, "1001")
    finally:
        await small.close()
