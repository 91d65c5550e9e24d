"""Webhook targets (SSRF): a tenant cannot make telgate call loopback, private, link-local or
metadata addresses, neither when saving a webhook nor at delivery (the name is resolved again
and the connection goes to the checked address), and redirects are never followed."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from handlers.webhooks import emit
from handlers.webhooks.delivery import DeliveryPolicy, WebhookDeliverer
from handlers.webhooks.targets import ForbiddenTarget, PinnedResolver, TargetPolicy
from tests.conftest import Api, make_config, serve_api

FAST = DeliveryPolicy(timeout_seconds=2.0, base_delay_seconds=0.05, max_delay_seconds=0.2,
                      poll_seconds=0.02, lease_margin_seconds=0.5)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/x",
    "http://[::1]:8080/hooks",
    "http://10.1.2.3/hooks",
    "http://192.168.0.10/hooks",
    "http://172.16.5.4/hooks",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0:8080/",
    "http://[::ffff:127.0.0.1]/hooks",
    "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
    "http://[fe80::1]/hooks",
    "http://[fd00::1]/hooks",
    "http://224.0.0.1/hooks",
    "http://100.64.0.1/hooks",
    "http://localhost:8080/hooks",  # a host name that resolves to loopback
])
async def test_webhook_urls_to_internal_addresses_are_refused(api: Api, url: str) -> None:
    t = await api.new_tenant()
    resp = await t.call("POST", "/v1/webhooks", json={"url": url})
    body = await resp.json(content_type=None)
    assert (resp.status, body["code"], body["field"]) == (422, "forbidden_target", "url")
    assert await api.context.pool.fetchval("SELECT count(*) FROM webhooks") == 0


async def test_changing_a_webhook_to_an_internal_address_is_refused(api: Api) -> None:
    t = await api.new_tenant()
    made = await t.call("POST", "/v1/webhooks", json={"url": "https://93.184.215.14/hooks"})
    assert made.status == 201
    hook = await made.json()
    resp = await t.call("PATCH", f"/v1/webhooks/{hook['id']}",
                        json={"url": "http://169.254.169.254/"})
    assert (resp.status, (await resp.json())["code"]) == (422, "forbidden_target")
    kept = await (await t.call("GET", f"/v1/webhooks/{hook['id']}")).json()
    assert kept["url"] == "https://93.184.215.14/hooks"


async def test_an_allowed_range_admits_that_range_only(
        pool: asyncpg.Pool, db_dsn: str, state_root: Path) -> None:
    config = make_config(state_root, db_dsn, webhooks__allow_networks='["127.0.0.0/8"]')
    async with serve_api(pool, config) as api:
        t = await api.new_tenant()
        ok = await t.call("POST", "/v1/webhooks", json={"url": "http://127.0.0.1:9/x"})
        assert ok.status == 201
        mapped = await t.call("POST", "/v1/webhooks", json={"url": "http://[::ffff:127.0.0.2]/"})
        assert mapped.status == 201
        for other in ("http://10.0.0.1/", "http://[::1]/", "http://169.254.169.254/"):
            resp = await t.call("POST", "/v1/webhooks", json={"url": other})
            assert (resp.status, (await resp.json())["code"]) == (422, "forbidden_target")


@pytest.fixture
async def loopback_receiver() -> AsyncIterator[tuple[str, list[str]]]:
    """A receiver on loopback: where an SSRF would land. Records every path it is asked."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.path == "/redirect":
            target = str(request.url.with_path("/internal"))
            return web.Response(status=302, headers={"Location": target})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"127.0.0.1:{server.port}", seen
    finally:
        await server.close()


async def _hook_row(pool: asyncpg.Pool, api: Api, url: str) -> Any:
    """A webhook stored as if its name had resolved to a public address when it was saved."""
    t = await api.new_tenant()
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO webhooks (tenant_id, url, secret, events) "
                           "VALUES ($1, $2, 'whsec_x', '{}')", t.id, url)
        await emit(conn, t.id, "webhook.test", {"n": 1})
    return t


async def _last_error(pool: asyncpg.Pool) -> str:
    deadline = time.monotonic() + 10
    while True:
        error = await pool.fetchval("SELECT last_error FROM webhook_outbox LIMIT 1")
        if error:
            return str(error)
        assert time.monotonic() < deadline, "no delivery attempt recorded"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_delivery_checks_the_address_again_and_never_connects_to_loopback(
        api: Api, pool: asyncpg.Pool, loopback_receiver: tuple[str, list[str]],
        host: str) -> None:
    address, seen = loopback_receiver
    port = address.rsplit(":", 1)[1]
    await _hook_row(pool, api, f"http://{host}:{port}/hooks")
    deliverer = WebhookDeliverer(pool, FAST)  # the default policy: public addresses only
    await deliverer.start()
    try:
        error = await _last_error(pool)
    finally:
        await deliverer.stop()
    assert error.startswith("ForbiddenTarget"), error
    assert "loopback" in error
    assert seen == []


async def test_a_redirect_to_loopback_is_not_followed(
        api: Api, pool: asyncpg.Pool, loopback_receiver: tuple[str, list[str]]) -> None:
    address, seen = loopback_receiver
    await _hook_row(pool, api, f"http://{address}/redirect")
    # The first hop must be reachable for the redirect to be seen at all: this test allows
    # loopback explicitly, as an operator would in [webhooks] allow_networks.
    deliverer = WebhookDeliverer(pool, FAST, targets=TargetPolicy.of(["127.0.0.0/8"]))
    await deliverer.start()
    try:
        error = await _last_error(pool)
    finally:
        await deliverer.stop()
    assert error == "HTTP 302 (redirects are not followed)"
    assert "/internal" not in seen and seen[0] == "/redirect"


class Rebinding(AbstractResolver):
    """A hostile DNS server: a public address first, loopback afterwards (DNS rebinding)."""

    def __init__(self) -> None:
        self.answers = ["93.184.215.14", "127.0.0.1"]

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        ip = self.answers.pop(0)
        return [ResolveResult(hostname=host, host=ip, port=port, family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None


async def test_each_resolution_is_checked_so_rebinding_to_loopback_is_refused() -> None:
    resolver = PinnedResolver(TargetPolicy(), Rebinding())
    first = await resolver.resolve("portal.example", 443)
    assert [r["host"] for r in first] == ["93.184.215.14"]
    with pytest.raises(ForbiddenTarget, match="loopback"):
        await resolver.resolve("portal.example", 443)
