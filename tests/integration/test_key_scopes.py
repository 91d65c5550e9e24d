"""Key scopes: read < send < manage < admin, checked on every route from its declaration."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from daemon.cli import main
from handlers import tenants
from handlers.api.framework import Route, RouteTable
from handlers.api.keys import WhoAmI
from handlers.api.scopes import Scope
from tests.conftest import Api, Tenant

SENDER = "0212345678"


async def key_of(api: Api, t: Tenant, scope: Scope) -> dict[str, str]:
    async with api.context.pool.acquire() as conn:
        secret, _key = await tenants.create_key(conn, t.id, sp_id=None, label=f"{scope} key",
                                                actor="test", scope=scope)
    return {"Authorization": f"Bearer {secret}"}


async def _send(api: Api, headers: dict[str, str]) -> Any:
    return await api.client.post("/v1/messages", headers=headers, json={
        "from": SENDER, "to": ["01011112222"], "text": "안녕하세요"})


async def test_a_read_key_can_list_messages_but_not_send(api: Api) -> None:
    t = await api.new_tenant()
    assert (await t.call("POST", "/v1/sender-numbers", json={"number": SENDER})).status == 201
    read = await key_of(api, t, Scope.READ)
    refused = await _send(api, read)
    body = await refused.json(content_type=None)
    assert refused.status == 403
    assert refused.content_type == "application/problem+json"
    assert (body["code"], body["required_scope"]) == ("missing_scope", "send")
    assert "'send'" in body["detail"]
    listed = await api.client.get("/v1/messages", headers=read)
    assert listed.status == 200 and (await listed.json())["items"] == []
    sent = await _send(api, await key_of(api, t, Scope.SEND))
    assert sent.status == 202


async def test_a_send_key_cannot_manage_numbers_nor_rotate_webhook_secrets(api: Api) -> None:
    t = await api.new_tenant()
    hook = await (await t.call("POST", "/v1/webhooks",
                               json={"url": "https://93.184.215.14/h"})).json()
    send = await key_of(api, t, Scope.SEND)
    for method, path in (("POST", f"/v1/webhooks/{hook['id']}/rotate-secret"),
                         ("DELETE", f"/v1/sender-numbers/{SENDER}")):
        resp = await api.client.request(method, path, headers=send)
        assert resp.status == 403 and (await resp.json())["required_scope"] == "manage"
    manage = await key_of(api, t, Scope.MANAGE)
    keys = await api.client.get("/v1/api-keys", headers=manage)
    assert keys.status == 403 and (await keys.json())["required_scope"] == "admin"


async def test_an_admin_key_creates_scoped_keys_through_the_api(api: Api) -> None:
    t = await api.new_tenant()  # made before scopes existed in spirit: full rights (admin)
    resp = await t.call("POST", "/v1/api-keys", json={"scope": "read", "label": "dashboard"})
    assert resp.status == 201
    made = await resp.json()
    assert (made["scope"], made["label"]) == ("read", "dashboard")
    assert made["key"].startswith("tgk_")
    dashboard = {"Authorization": f"Bearer {made['key']}"}
    assert (await api.client.get("/v1/tenant", headers=dashboard)).status == 200
    again = await api.client.post("/v1/api-keys", headers=dashboard, json={"scope": "admin"})
    assert again.status == 403
    listed = await (await t.call("GET", "/v1/api-keys")).json()
    assert {k["scope"] for k in listed["items"]} == {"admin", "read"}
    assert "key" not in listed["items"][0]


async def test_keys_made_before_scopes_keep_full_rights(api: Api) -> None:
    t = await api.new_tenant()
    async with api.context.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO api_keys (tenant_id, prefix, key_hash) VALUES ($1, 'tgk_old', $2)",
            t.id, tenants.hash_key("tgk_an-old-key"))
        scope = await conn.fetchval("SELECT scope FROM api_keys WHERE prefix = 'tgk_old'")
    assert scope == "admin"
    old = {"Authorization": "Bearer tgk_an-old-key"}
    assert (await api.client.get("/v1/api-keys", headers=old)).status == 200


async def test_cli_creates_a_key_with_a_scope(
        api: Api, db_dsn: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    t = await api.new_tenant()
    monkeypatch.setenv("TELGATE_DATABASE__DSN", f'"{db_dsn}"')
    status = await asyncio.to_thread(main, ["admin", "key", "create", "--tenant", str(t.id),
                                            "--scope", "read", "--json"])
    assert status == 0
    made = json.loads(capsys.readouterr().out)
    assert made["scope"] == "read"
    resp = await api.client.delete(f"/v1/api-keys/{t.key_id}",
                                   headers={"Authorization": f"Bearer {made['key']}"})
    assert resp.status == 403


def test_a_route_without_a_declared_scope_cannot_be_mounted() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    table = RouteTable()
    table.add(Route("GET", "/v1/unscoped", handler, "no scope", "test",
                    responses={200: WhoAmI}))
    with pytest.raises(ValueError, match="without a declared scope"):
        table.mount(web.Application())
    public = RouteTable()
    public.add(Route("GET", "/open", handler, "public", "test", auth=False,
                     responses={200: WhoAmI}))
    public.mount(web.Application())  # routes without a key need no scope


def test_every_published_operation_states_its_scope(api: Api) -> None:
    for r in api.context.routes.routes:
        assert not r.auth or r.scope is not None, f"{r.method} {r.path}"


def test_only_routes_declared_without_auth_are_public_also_when_added_late() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    table = RouteTable()
    table.add(Route("GET", "/open", handler, "public", "test", auth=False,
                    responses={200: WhoAmI}))
    table.add(Route("POST", "/open", handler, "keyed", "test", scope=Scope.SEND,
                    responses={200: WhoAmI}))
    assert table.is_public("GET", "/open") and table.is_public("HEAD", "/open")
    assert not table.is_public("POST", "/open")
    table.add(Route("GET", "/later", handler, "public", "test", auth=False,
                    responses={200: WhoAmI}))
    assert table.is_public("GET", "/later")  # the answer is not kept from before the add
    assert not table.is_public("GET", "/never")
