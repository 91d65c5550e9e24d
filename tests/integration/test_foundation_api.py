"""The control API skeleton as a portal back end meets it: keys, tenant scoping, errors, limits."""

from __future__ import annotations

import re

import asyncpg
from openapi_spec_validator import validate

from handlers import tenants
from tests.conftest import Api


async def test_v1_route_without_key_answers_401_problem_json(api: Api) -> None:
    resp = await api.client.get("/v1/tenant")
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    body = await resp.json(content_type=None)
    assert body["code"] == "unauthenticated" and body["status"] == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_unknown_or_revoked_key_is_refused(api: Api) -> None:
    a = await api.new_tenant()
    resp = await api.client.get("/v1/tenant", headers={"Authorization": "Bearer tgk_nope"})
    assert (await resp.json(content_type=None))["code"] == "invalid_key"
    other = await api.new_tenant()
    assert (await other.call("GET", "/v1/tenant")).status == 200
    resp = await a.call("DELETE", f"/v1/api-keys/{a.key_id}")
    assert resp.status == 204
    assert (await a.call("GET", "/v1/tenant")).status == 401


async def test_key_acts_as_its_tenant(api: Api) -> None:
    a = await api.new_tenant("acme")
    body = await (await a.call("GET", "/v1/tenant")).json()
    assert body["tenant_name"] == "acme" and body["tenant_id"] == str(a.id)


async def test_another_tenants_resource_answers_404_never_403(api: Api) -> None:
    a = await api.new_tenant()
    b = await api.new_tenant()
    resp = await a.call("GET", f"/v1/api-keys/{b.key_id}")
    assert resp.status == 404
    assert (await resp.json(content_type=None))["code"] == "not_found"
    resp = await a.call("DELETE", f"/v1/api-keys/{b.key_id}")
    assert resp.status == 404
    # B's key still works: A could neither see nor revoke it.
    assert (await b.call("GET", "/v1/tenant")).status == 200
    listed = await (await a.call("GET", "/v1/api-keys")).json()
    assert [k["id"] for k in listed["items"]] == [str(a.key_id)]


async def test_keys_are_stored_hashed_never_in_clear(api: Api, pool: asyncpg.Pool) -> None:
    a = await api.new_tenant()
    rows = await pool.fetch("SELECT prefix, key_hash FROM api_keys")
    dumped = repr([dict(r) for r in rows]) + repr(
        await pool.fetch("SELECT * FROM audit_log"))
    assert a.key not in dumped
    assert a.key[len(tenants.KEY_PREFIX):] not in dumped
    assert [bytes(r["key_hash"]) for r in rows] == [tenants.hash_key(a.key)]
    assert rows[0]["prefix"] == a.key[:12]


async def test_request_body_over_the_limit_answers_413_problem(api: Api) -> None:
    a = await api.new_tenant()
    path = f"/v1/api-keys/{a.key_id}"
    json_ct = {"Content-Type": "application/json"}
    # The test app's JSON limit is 16384 bytes: a declared length over it is refused unread,
    # a chunked body is cut off once it passes the limit; just under it is served.
    ok = b'{"label": "' + b"x" * 190 + b'"}' + b" " * 16000
    resp = await a.call("PATCH", path, data=ok, headers=json_ct)
    assert resp.status == 200
    resp = await a.call("PATCH", path, data=b'{"label": "x"}' + b" " * 17000, headers=json_ct)
    assert resp.status == 413
    body = await resp.json(content_type=None)
    assert body["code"] == "body_too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b" " * 1000

    resp = await a.call("PATCH", path, data=chunks(), headers=json_ct)
    assert resp.status == 413
    listed = await (await a.call("GET", path)).json()
    assert listed["label"] == "x" * 190  # nothing half-applied by the refused requests


async def test_malformed_json_is_400_naming_the_problem(api: Api) -> None:
    a = await api.new_tenant()
    resp = await a.call("PATCH", f"/v1/api-keys/{a.key_id}", data=b"{nope",
                        headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json(content_type=None))["code"] == "malformed_json"
    resp = await a.call("PATCH", f"/v1/api-keys/{a.key_id}", json={"label": 5})
    body = await resp.json(content_type=None)
    assert (resp.status, body["code"], body["field"]) == (422, "invalid_field", "label")


async def test_request_id_is_echoed_or_generated(api: Api) -> None:
    resp = await api.client.get("/healthz", headers={"X-Request-Id": "portal-42"})
    assert resp.headers["X-Request-Id"] == "portal-42"
    resp = await api.client.get("/healthz", headers={"X-Request-Id": "bad id\twith junk"})
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])


async def test_unknown_route_is_problem_json_404(api: Api) -> None:
    a = await api.new_tenant()
    resp = await a.call("GET", "/v1/no-such-thing")
    assert resp.status == 404 and resp.content_type == "application/problem+json"


async def test_readyz_reports_database_and_metrics_are_exposed(api: Api) -> None:
    api.context.readiness["database"] = _db_ok(api)
    resp = await api.client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"]["database"]["ok"] is True
    await api.client.get("/healthz")
    text = await (await api.client.get("/metrics")).text()
    assert 'telgate_http_requests_total{method="GET",route="/healthz",status="200"}' in text


async def test_readyz_is_503_when_a_check_fails(api: Api) -> None:
    async def down() -> tuple[bool, str]:
        return False, "bind skt-1 down"

    api.context.readiness["smpp"] = down
    resp = await api.client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["smpp"] == {"ok": False, "detail": "bind skt-1 down"}


async def test_openapi_is_valid_and_describes_every_mounted_route(api: Api) -> None:
    doc = await (await api.client.get("/v1/openapi.json")).json()
    validate(doc)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    mounted = {
        (r.method, r.resource.canonical)
        for r in api.client.server.app.router.routes()  # type: ignore[union-attr]
        if r.method != "HEAD" and r.resource is not None
    }
    assert mounted - documented == set()


def _db_ok(api: Api):  # type: ignore[no-untyped-def]
    async def check() -> tuple[bool, str]:
        await api.context.pool.fetchval("SELECT 1")
        return True, "reachable"

    return check
