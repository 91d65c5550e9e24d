"""The audit trail: every change names the key (id and label) and the client address, GET
/v1/audit answers who did what for the tenant's administrators, and the daemon's database role
cannot rewrite or erase it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from handlers import tenants
from handlers.api.audit_routes import record_access
from handlers.api.context import CTX
from handlers.api.framework import Route, request_middleware
from handlers.api.keys import WhoAmI
from handlers.api.scopes import Scope
from tests.conftest import Api, make_config, serve_api


async def test_a_settings_change_and_a_key_creation_are_audited_with_who_and_where(
        api: Api) -> None:
    t = await api.new_tenant()
    assert (await t.call("PATCH", "/v1/tenant/settings", json={"sms_max_bytes": 80})).status \
        == 200
    made = await t.call("POST", "/v1/api-keys", json={"scope": "read", "label": "대시보드"})
    assert made.status == 201
    new_key = await made.json()
    rows = await api.context.pool.fetch(
        "SELECT action, actor, key_id, key_label, host(address) AS address, details "
        "FROM audit_log WHERE tenant_id = $1 AND action IN ('tenant.settings', "
        "'api_key.create') AND key_id IS NOT NULL ORDER BY id", t.id)
    assert [r["action"] for r in rows] == ["tenant.settings", "api_key.create"]
    for r in rows:
        assert (r["key_id"], r["address"]) == (t.key_id, "127.0.0.1")
    assert rows[1]["details"]["scope"] == "read" and rows[1]["details"]["id"] == new_key["id"]

    listed = await (await t.call("GET", "/v1/audit", params={"action": "api_key."})).json()
    assert [e["action"] for e in listed["items"]] == ["api_key.create"] * 2  # API, then test set-up
    mine = listed["items"][0]
    assert (mine["key_id"], mine["address"], mine["subject"]) == (
        str(t.key_id), "127.0.0.1", new_key["prefix"])


async def test_a_change_without_its_own_entry_is_still_audited(api: Api) -> None:
    t = await api.new_tenant()
    hook = await (await t.call("POST", "/v1/webhooks",
                               json={"url": "https://93.184.215.14/h"})).json()
    assert (await t.call("DELETE", f"/v1/webhooks/{hook['id']}")).status == 204
    found = await (await t.call("GET", "/v1/audit",
                                params={"action": "DELETE /v1/webhooks/{id}"})).json()
    assert [e["subject"] for e in found["items"]] == [f"/v1/webhooks/{hook['id']}"]
    assert found["items"][0]["details"] == {"status": 204}


async def test_audit_filters_by_period_and_actor_and_only_admins_read_it(api: Api) -> None:
    t, other = await api.new_tenant(), await api.new_tenant()
    await t.call("PATCH", "/v1/tenant/settings", json={"sms_max_bytes": 80})
    await other.call("PATCH", "/v1/tenant/settings", json={"sms_max_bytes": 80})
    by_key = await (await t.call("GET", "/v1/audit", params={"actor": str(t.key_id)})).json()
    assert {e["key_id"] for e in by_key["items"]} == {str(t.key_id)}  # never the other's
    future = await (await t.call("GET", "/v1/audit",
                                 params={"since": "2999-01-01T00:00:00Z"})).json()
    assert future["items"] == []
    bad = await t.call("GET", "/v1/audit", params={"since": "2026-01-02T00:00:00Z",
                                                     "until": "2026-01-01T00:00:00Z"})
    assert (bad.status, (await bad.json())["code"]) == (422, "invalid_period")
    async with api.context.pool.acquire() as conn:
        secret, _ = await tenants.create_key(conn, t.id, sp_id=None, label="", actor="test",
                                             scope=Scope.MANAGE)
    refused = await api.client.get("/v1/audit", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status == 403


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET actor = 'someone else'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
])
async def test_the_daemons_role_cannot_rewrite_or_erase_the_trail(
        api: Api, statement: str) -> None:
    t = await api.new_tenant()
    await t.call("PATCH", "/v1/tenant/settings", json={"sms_max_bytes": 80})
    before = await api.context.pool.fetch("SELECT * FROM audit_log ORDER BY id")
    async with api.context.pool.acquire() as conn:  # the pool the daemon serves with
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(statement)
    assert await api.context.pool.fetch("SELECT * FROM audit_log ORDER BY id") == before


async def test_record_access_leaves_who_listened_to_a_recording(api: Api) -> None:
    # The recordings routes arrive with the media work; this stand-in route makes the one call
    # they will make before handing out a recording.
    async def download(request: web.Request) -> web.Response:
        await record_access(request, "recording.download", "rec-1", {"bytes": 3})
        return web.Response(body=b"RIF")

    t = await api.new_tenant()
    table = api.context.routes
    table.add(Route("GET", "/v1/recordings-test", download, "stand-in", "test",
                    responses={200: WhoAmI}, scope=Scope.READ))
    app = web.Application(middlewares=[request_middleware])
    app[CTX] = api.context
    table.mount(app)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        assert (await client.get("/v1/recordings-test", headers=t.auth)).status == 200
    finally:
        await client.close()
    found = await (await t.call("GET", "/v1/audit",
                                params={"action": "recording.download"})).json()
    entry = found["items"][0]
    assert (entry["subject"], entry["key_id"], entry["address"]) == (
        "rec-1", str(t.key_id), "127.0.0.1")


async def test_behind_a_trusted_proxy_the_forwarded_client_address_is_recorded(
        pool: asyncpg.Pool, db_dsn: str, state_root: Path) -> None:
    config = make_config(state_root, db_dsn, api__trusted_proxies='["127.0.0.0/8"]')
    async with serve_api(pool, config) as api:
        t = await api.new_tenant()
        # The client claims 10.9.9.9; the proxy appends the address it saw, 203.0.113.7.
        forwarded = {"X-Forwarded-For": "10.9.9.9, 203.0.113.7"}
        await t.call("PATCH", "/v1/tenant/settings", json={"sms_max_bytes": 80},
                     headers=forwarded)
    untrusted_config = make_config(state_root, db_dsn)
    async with serve_api(pool, untrusted_config) as api:
        await api.client.patch("/v1/tenant/settings", json={"sms_max_bytes": 90},
                               headers={**t.auth, **forwarded})
    addresses = [r["a"] for r in await pool.fetch(
        "SELECT host(address) AS a FROM audit_log WHERE action = 'tenant.settings' "
        "ORDER BY id")]
    assert addresses == ["203.0.113.7", "127.0.0.1"]  # no proxy trusted: the peer itself
