"""Webhooks: CRUD through the control API, and signed at-least-once delivery to a real local
HTTP receiver, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from handlers.metrics import Metrics
from handlers.webhooks import emit, emit_many
from handlers.webhooks.delivery import DeliveryPolicy, WebhookDeliverer, sign, verify_signature
from handlers.webhooks.targets import TargetPolicy
from tests.conftest import Api, Tenant, make_config, serve_api


@pytest.fixture
async def api(pool: asyncpg.Pool, db_dsn: str, state_root: Path) -> AsyncIterator[Api]:
    """The control API with loopback allowed as a webhook target (see ALLOW_LOOPBACK)."""
    config = make_config(state_root, db_dsn, api__max_body_bytes="16384",
                         webhooks__allow_networks=ALLOW_LOOPBACK)
    async with serve_api(pool, config) as served:
        yield served

# The receivers below listen on loopback, which webhooks refuse by default (SSRF, see
# test_webhook_targets.py). This module's configuration allows 127.0.0.0/8 explicitly, as an
# operator would in `[webhooks] allow_networks` for a portal on the same host.
ALLOW_LOOPBACK = '["127.0.0.0/8"]'
LOOPBACK = TargetPolicy.of(["127.0.0.0/8"])

FAST = DeliveryPolicy(timeout_seconds=2.0, base_delay_seconds=0.05, max_delay_seconds=0.2,
                      poll_seconds=0.02, lease_margin_seconds=0.5)


@dataclass
class Receiver:
    """A portal's webhook endpoint: records every request; answers from a script."""

    url: str = ""
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give first, then 200
    hang_first: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        self.arrived.set()
        if self.hang_first and len(self.requests) == 1:
            await asyncio.sleep(30)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", rec.handle)
    server = TestServer(app)
    await server.start_server()
    rec.url = str(server.make_url("/hooks"))
    try:
        yield rec
    finally:
        await server.close()


async def create_hook(t: Tenant, url: str, events: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if events is not None:
        body["events"] = events
    resp = await t.call("POST", "/v1/webhooks", json=body)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def emit_event(pool: asyncpg.Pool, t: Tenant, event_type: str,
                     payload: dict[str, object]) -> None:
    async with pool.acquire() as conn:
        await emit(conn, t.id, event_type, payload)


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def outbox(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT * FROM webhook_outbox ORDER BY id"))


async def all_delivered(pool: asyncpg.Pool) -> bool:
    rows = await outbox(pool)
    return bool(rows) and all(r["delivered_at"] is not None for r in rows)


# -- the API -----------------------------------------------------------------------------------

async def test_secret_is_shown_on_create_and_never_listed(api: Api) -> None:
    t = await api.new_tenant()
    hook = await create_hook(t, "https://portal.example/hooks", ["message.recipient.delivered"])
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert hook["events"] == ["message.recipient.delivered"]
    listed = await (await t.call("GET", "/v1/webhooks")).json()
    assert [h["id"] for h in listed["items"]] == [hook["id"]]
    assert "secret" not in listed["items"][0]
    one = await (await t.call("GET", f"/v1/webhooks/{hook['id']}")).json()
    assert "secret" not in one and one["deliveries"]["pending"] == 0


async def test_webhook_url_and_events_are_validated_naming_the_field(api: Api) -> None:
    t = await api.new_tenant()
    for url in ("ftp://x.example/", "not a url", "https://user:pw@x.example/", ""):
        resp = await t.call("POST", "/v1/webhooks", json={"url": url})
        assert resp.status == 422
        assert (await resp.json())["field"] == "url"
    resp = await t.call("POST", "/v1/webhooks", json={
        "url": "https://x.example/", "events": ["message.accepted", "message.delivred"]})
    problem = await resp.json()
    assert resp.status == 422 and problem["code"] == "invalid_field"
    assert problem["field"] == "events[1]"


async def test_webhooks_of_another_tenant_are_not_found(api: Api) -> None:
    a = await api.new_tenant()
    b = await api.new_tenant()
    hook = await create_hook(a, "https://a.example/hooks")
    path = f"/v1/webhooks/{hook['id']}"
    assert (await b.call("GET", path)).status == 404
    assert (await b.call("PATCH", path, json={"url": "https://b.example/"})).status == 404
    assert (await b.call("POST", path + "/rotate-secret")).status == 404
    assert (await b.call("POST", path + "/test")).status == 404
    assert (await b.call("DELETE", path)).status == 404
    assert (await (await b.call("GET", "/v1/webhooks")).json())["items"] == []
    still = await (await a.call("GET", path)).json()
    assert still["url"] == "https://a.example/hooks"
    assert (await a.call("DELETE", path)).status == 204
    assert (await a.call("GET", path)).status == 404


async def test_webhook_can_be_changed_and_its_secret_rotated(api: Api) -> None:
    t = await api.new_tenant()
    hook = await create_hook(t, "https://a.example/hooks")
    path = f"/v1/webhooks/{hook['id']}"
    changed = await (await t.call("PATCH", path, json={"events": ["message.accepted"]})).json()
    assert changed["url"] == "https://a.example/hooks"
    assert changed["events"] == ["message.accepted"]
    rotated = await (await t.call("POST", path + "/rotate-secret")).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != hook["secret"]


# -- delivery ----------------------------------------------------------------------------------

async def test_delivered_event_is_signed_with_the_webhook_secret(
        api: Api, pool: asyncpg.Pool, receiver: Receiver) -> None:
    t = await api.new_tenant()
    hook = await create_hook(t, receiver.url)
    await emit_event(pool, t, "message.recipient.delivered",
                     {"message_id": "m1", "number": "01012345678", "state": "delivered",
                      "name": "홍길동"})
    deliverer = WebhookDeliverer(pool, FAST, targets=LOOPBACK)
    await deliverer.start()
    try:
        await until(lambda: all_delivered(pool))
    finally:
        await deliverer.stop()
    [(headers, body)] = receiver.requests
    event = json.loads(body)
    assert event["type"] == "message.recipient.delivered"
    assert event["data"]["name"] == "홍길동" and event["data"]["number"] == "01012345678"
    assert headers["X-Telgate-Event-Id"] == event["id"]
    assert headers["Content-Type"] == "application/json"
    ts, sig = headers["X-Telgate-Timestamp"], headers["X-Telgate-Signature"]
    assert verify_signature(hook["secret"], body, ts, sig)
    assert not verify_signature(hook["secret"], body.replace(b"m1", b"m2"), ts, sig)
    assert not verify_signature("whsec_other", body, ts, sig)
    assert not verify_signature(hook["secret"], body, ts, sig, now=int(ts) + 301)


async def test_failed_delivery_is_retried_with_the_same_event_id(
        api: Api, pool: asyncpg.Pool, receiver: Receiver) -> None:
    t = await api.new_tenant()
    await create_hook(t, receiver.url)
    receiver.statuses = [500, 503]
    await emit_event(pool, t, "message.accepted", {"message_id": "m1"})
    metrics = Metrics()
    deliverer = WebhookDeliverer(pool, FAST, metrics=metrics, targets=LOOPBACK)
    await deliverer.start()
    try:
        await until(lambda: all_delivered(pool))
    finally:
        await deliverer.stop()
    ids = [h["X-Telgate-Event-Id"] for h, _ in receiver.requests]
    assert len(ids) == 3 and len(set(ids)) == 1
    [row] = await outbox(pool)
    assert row["attempts"] == 3 and row["last_error"] is None
    sample = metrics.registry.get_sample_value
    assert sample("telgate_webhook_attempts_total", {"outcome": "retry"}) == 2
    assert sample("telgate_webhook_attempts_total", {"outcome": "delivered"}) == 1


async def test_event_is_redelivered_after_a_crash_mid_delivery(
        api: Api, pool: asyncpg.Pool, receiver: Receiver) -> None:
    t = await api.new_tenant()
    hook = await create_hook(t, receiver.url)
    receiver.hang_first = True
    await emit_event(pool, t, "message.accepted", {"message_id": "m1"})
    crashing = WebhookDeliverer(pool, DeliveryPolicy(timeout_seconds=1.0, poll_seconds=0.02,
                                                     lease_margin_seconds=0.0),
                                targets=LOOPBACK)
    await crashing.start()
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    await crashing.stop(drain_seconds=0)  # killed mid-request: its outcome is never stored
    [row] = await outbox(pool)
    assert row["delivered_at"] is None and row["attempts"] == 1

    restarted = WebhookDeliverer(pool, FAST, targets=LOOPBACK)
    await restarted.start()
    try:
        await until(lambda: all_delivered(pool))
    finally:
        await restarted.stop()
    assert len(receiver.requests) == 2
    (h1, b1), (h2, b2) = receiver.requests
    assert h1["X-Telgate-Event-Id"] == h2["X-Telgate-Event-Id"] and b1 == b2
    assert verify_signature(hook["secret"], b2, h2["X-Telgate-Timestamp"],
                            h2["X-Telgate-Signature"])


async def test_two_deliverers_share_the_outbox_without_duplicates(
        api: Api, pool: asyncpg.Pool, receiver: Receiver) -> None:
    t = await api.new_tenant()
    await create_hook(t, receiver.url)
    async with pool.acquire() as conn:
        await emit_many(conn, [(t.id, "message.accepted", {"n": i}) for i in range(300)])
    deliverers = [WebhookDeliverer(pool, DeliveryPolicy(batch=20, poll_seconds=0.02),
                                   targets=LOOPBACK)
                  for _ in range(2)]
    for d in deliverers:
        await d.start()
    try:
        await until(lambda: all_delivered(pool), timeout=15)
    finally:
        for d in deliverers:
            await d.stop()
    seen = sorted(b["data"]["n"] for b in receiver.bodies())
    assert seen == list(range(300))
    assert all(d.delivered > 0 for d in deliverers)


async def test_events_reach_only_subscribed_webhooks_of_their_own_tenant(
        api: Api, pool: asyncpg.Pool, receiver: Receiver) -> None:
    a = await api.new_tenant()
    b = await api.new_tenant()
    await create_hook(a, receiver.url + "?who=a", ["message.recipient.failed"])
    await create_hook(b, receiver.url + "?who=b")
    await emit_event(pool, a, "message.accepted", {"tenant": "a"})  # a is not subscribed
    await emit_event(pool, a, "message.recipient.failed", {"tenant": "a"})
    await emit_event(pool, b, "message.accepted", {"tenant": "b"})
    deliverer = WebhookDeliverer(pool, FAST, targets=LOOPBACK)
    await deliverer.start()
    try:
        await until(lambda: all_delivered(pool))
    finally:
        await deliverer.stop()
    got = sorted((b["type"], b["data"]["tenant"]) for b in receiver.bodies())
    assert got == [("message.accepted", "b"), ("message.recipient.failed", "a")]


async def test_test_event_endpoint_queues_a_signed_delivery(
        api: Api, pool: asyncpg.Pool, receiver: Receiver) -> None:
    t = await api.new_tenant()
    hook = await create_hook(t, receiver.url, ["message.accepted"])
    resp = await t.call("POST", f"/v1/webhooks/{hook['id']}/test")
    assert resp.status == 202
    event_id = (await resp.json())["event_id"]
    deliverer = WebhookDeliverer(pool, FAST, targets=LOOPBACK)
    await deliverer.start()
    try:
        await until(lambda: all_delivered(pool))
    finally:
        await deliverer.stop()
    [(headers, body)] = receiver.requests
    assert headers["X-Telgate-Event-Id"] == event_id
    assert json.loads(body)["type"] == "webhook.test"


async def test_event_is_abandoned_after_max_age_with_the_reason(
        api: Api, pool: asyncpg.Pool, receiver: Receiver) -> None:
    t = await api.new_tenant()
    hook = await create_hook(t, receiver.url)
    receiver.statuses = [500] * 100
    await emit_event(pool, t, "message.accepted", {"message_id": "m1"})
    policy = DeliveryPolicy(base_delay_seconds=0.05, max_delay_seconds=0.1, poll_seconds=0.02,
                            max_age_seconds=0.5)
    deliverer = WebhookDeliverer(pool, policy, targets=LOOPBACK)
    await deliverer.start()
    try:
        await until(lambda: _abandoned(pool))
    finally:
        await deliverer.stop()
    [row] = await outbox(pool)
    assert row["delivered_at"] is None and "HTTP 500" in row["last_error"]
    seen = len(receiver.requests)
    assert seen >= 2
    info = await (await t.call("GET", f"/v1/webhooks/{hook['id']}")).json()
    assert info["deliveries"]["abandoned"] == 1 and info["deliveries"]["pending"] == 0
    assert "gave up" in info["deliveries"]["last_error"]


async def _abandoned(pool: asyncpg.Pool) -> bool:
    async with pool.acquire() as conn:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM webhook_outbox WHERE next_attempt_at = 'infinity'"))


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac
    body = b'{"id":"x"}'
    expected = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("whsec_k", "1700000000", body) == "sha256=" + expected
    assert verify_signature("whsec_k", body, "1700000000", "sha256=" + expected,
                            now=1700000100)
    assert not verify_signature("whsec_k", body, "not-a-time", "sha256=" + expected)
