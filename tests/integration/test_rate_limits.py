"""Rate limits: per key and per tenant request buckets, send budgets, 429 with Retry-After and
the IETF RateLimit fields; limits are operator settings. The limiter's clock is frozen, so the
counts below do not depend on how fast this machine serves the burst."""

from __future__ import annotations

import asyncio
from typing import Any

from handlers import tenants
from handlers.api.ratelimit import RateLimiter
from tests.conftest import Api, Tenant

SENDER = "0212345678"


def frozen(api: Api) -> RateLimiter:
    limiter = api.context.limiter
    assert limiter is not None
    limiter.clock = lambda: 1000.0
    return limiter


async def limit(api: Api, t: Tenant, **values: Any) -> None:
    async with api.context.pool.acquire() as conn:
        await tenants.update_settings(conn, t.id, tenants.OperatorSettingsPatch(**values),
                                      actor="cli:test")
    # As if the settings cache (SETTINGS_SECONDS) had expired, the frozen clock aside.
    assert api.context.limiter is not None
    api.context.limiter.forget(t.id)


async def burst(t: Tenant, n: int) -> list[Any]:
    return list(await asyncio.gather(*(t.call("GET", "/v1/tenant") for _ in range(n))))


async def test_a_tenant_over_its_rate_gets_429_while_another_is_unaffected(api: Api) -> None:
    limiter = frozen(api)
    slow, other = await api.new_tenant(), await api.new_tenant()
    await limit(api, slow, api_requests_per_second=5)
    slow_answers, other_answers = await asyncio.gather(burst(slow, 50), burst(other, 50))
    assert sorted(r.status for r in slow_answers) == [200] * 5 + [429] * 45
    assert {r.status for r in other_answers} == {200}
    refused = next(r for r in slow_answers if r.status == 429)
    body = await refused.json(content_type=None)
    assert refused.content_type == "application/problem+json"
    assert (body["code"], body["budget"]) == ("rate_limited", "requests")
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["RateLimit-Policy"] == '"requests";q=5;w=1'
    assert refused.headers["RateLimit"] == '"requests";r=0;t=1'
    counted = api.context.metrics.registry.get_sample_value(
        "telgate_api_rate_limited_total", {"tenant": str(slow.id), "budget": "requests"})
    assert counted == 45
    limiter.clock = lambda: 1001.0  # a second later: five more
    assert sorted(r.status for r in await burst(slow, 6)) == [200] * 5 + [429]


async def test_each_key_has_its_own_bucket_within_the_tenants(api: Api) -> None:
    frozen(api)
    t = await api.new_tenant()
    await limit(api, t, key_requests_per_second=3)
    async with api.context.pool.acquire() as conn:
        second, _ = await tenants.create_key(conn, t.id, sp_id=None, label="", actor="test")
    first = [r.status for r in await burst(t, 4)]
    other = [(await api.client.get("/v1/tenant", headers={"Authorization": f"Bearer {second}"})
              ).status for _ in range(3)]
    assert sorted(first) == [200, 200, 200, 429] and other == [200, 200, 200]


async def _send(t: Tenant, n: int) -> Any:
    to = [f"0101111{i:04d}" for i in range(n)]
    return await t.call("POST", "/v1/messages", json={"from": SENDER, "to": to, "text": "x"})


async def test_the_daily_recipient_budget_refuses_the_send_that_would_pass_it(api: Api) -> None:
    frozen(api)
    t = await api.new_tenant()
    assert (await t.call("POST", "/v1/sender-numbers", json={"number": SENDER})).status == 201
    await limit(api, t, daily_recipients=5)
    assert (await _send(t, 3)).status == 202
    refused = await _send(t, 3)
    body = await refused.json()
    assert (refused.status, body["budget"]) == (429, "daily_recipients")
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    assert await api.context.pool.fetchval("SELECT count(*) FROM messages") == 1
    assert (await _send(t, 2)).status == 202  # what is left of the day still goes


async def test_recipients_per_second_are_a_budget_of_their_own(api: Api) -> None:
    frozen(api)
    t = await api.new_tenant()
    assert (await t.call("POST", "/v1/sender-numbers", json={"number": SENDER})).status == 201
    await limit(api, t, recipients_per_second=10)
    assert (await _send(t, 10)).status == 202
    refused = await _send(t, 1)
    assert (refused.status, (await refused.json())["budget"]) == (429, "recipients")
    assert (await t.call("GET", "/v1/messages")).status == 200  # requests still pass


async def test_exports_have_a_budget_per_minute(api: Api) -> None:
    frozen(api)
    t = await api.new_tenant()
    await limit(api, t, exports_per_minute=2)
    statuses = [(await t.call("GET", "/v1/sender-numbers/export")).status for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_a_tenant_cannot_raise_its_own_limits(api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("PATCH", "/v1/tenant/settings",
                        json={"api_requests_per_second": 1_000_000})
    assert (resp.status, (await resp.json())["code"]) == (422, "invalid_field")
    shown = await (await t.call("GET", "/v1/tenant/settings")).json()
    assert shown["api_requests_per_second"] == 2000.0


async def test_limits_are_shared_between_live_instances(api: Api) -> None:
    limiter = frozen(api)
    limiter.instances = 2  # two daemons on one database: each admits half
    t = await api.new_tenant()
    await limit(api, t, api_requests_per_second=10)
    assert sorted(r.status for r in await burst(t, 8)) == [200] * 5 + [429] * 3
