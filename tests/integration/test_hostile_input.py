"""Hostile requests get a 4xx, never a 5xx or a socket held open: deep JSON, NUL and lone
surrogates, bodies and heads that never finish, clients that hang up mid-body; and the data
faults portals make (a past send_at, an ad that does not say so)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from daemon.app import make_runner
from handlers.api.app import build_app
from handlers.api.context import AppContext
from handlers.api.framework import RouteTable
from handlers.metrics import Metrics
from tests.conftest import Api, make_config

SENDER = "0212345678"


async def _sender(api: Api):  # type: ignore[no-untyped-def]
    t = await api.new_tenant()
    assert (await t.call("POST", "/v1/sender-numbers", json={"number": SENDER})).status == 201
    return t


async def _post_raw(t, body: bytes) -> tuple[int, dict[str, object]]:  # type: ignore[no-untyped-def]
    resp = await t.call("POST", "/v1/messages", data=body,
                        headers={"Content-Type": "application/json"})
    return resp.status, await resp.json(content_type=None)


async def test_deep_json_under_the_size_limit_is_refused_naming_where(api: Api) -> None:
    t = await _sender(api)
    body = {"from": SENDER, "to": ["01012345678"], "text": "x", "vars": {}}
    inner: dict[str, object] = body["vars"]  # type: ignore[assignment]
    for _ in range(40):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    status, problem = await _post_raw(t, json.dumps(body).encode())
    assert status == 400 and problem["code"] == "json_too_deep"
    assert str(problem["field"]).startswith("vars.a.a")


@pytest.mark.parametrize("text", ["안녕\u0000하세요", "안녕\ud800"])
async def test_nul_and_lone_surrogates_are_refused_with_the_field(api: Api, text: str) -> None:
    t = await _sender(api)
    raw = json.dumps({"from": SENDER, "to": [{"number": "01012345678", "name": text}],
                      "text": "hi"}).encode()
    status, problem = await _post_raw(t, raw)
    assert status == 422 and problem["code"] == "forbidden_character", problem
    assert problem["field"] == "to[0].name"
    raw = json.dumps({"from": SENDER, "to": ["01012345678"], "text": text}).encode()
    status, problem = await _post_raw(t, raw)
    assert (status, problem["field"]) == (422, "text")


@pytest.fixture
async def served(pool: asyncpg.Pool, db_dsn: str, state_root: Path
                 ) -> AsyncIterator[tuple[int, AppContext]]:
    """The control API served the way the daemon serves it, with short read timeouts."""
    config = make_config(state_root, db_dsn, api__body_timeout_seconds="0.3",
                         api__header_timeout_seconds="0.3")
    ctx = AppContext(config=config, pool=pool, metrics=Metrics(), routes=RouteTable(),
                     version="test")
    runner = make_runner(build_app(ctx), config)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, ctx
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("depth", [100, 50_000, 100_000])
async def test_deeply_nested_json_is_a_400(api: Api, served: tuple[int, AppContext],
                                           depth: int) -> None:
    port, _ = served
    t = await _sender(api)
    body = b'{"from":"0212345678","to":["01012345678"],"text":"x","vars":' + b"[" * depth
    body += b"]" * depth + b"}"
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{port}/v1/messages", data=body,
            headers={**t.auth, "Content-Type": "application/json"}) as resp:
        problem = await resp.json(content_type=None)
    assert resp.status == 400, problem
    assert problem["code"] == ("json_too_deep" if depth < 1000 else "malformed_json")


async def _exchange(port: int, data: bytes, *, close: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    if close:
        writer.close()
        return b""
    try:
        async with asyncio.timeout(30):  # a generous bound: the server must answer or close
            return await reader.read()
    finally:
        writer.close()


async def test_a_body_that_never_arrives_is_a_408_and_the_socket_is_closed(
        api: Api, served: tuple[int, AppContext]) -> None:
    port, _ = served
    t = await _sender(api)
    answer = await _exchange(port, (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {t.key}\r\nContent-Length: 100000\r\n\r\n"
        '{"text":"1"').encode())
    assert answer.startswith(b"HTTP/1.1 408"), answer[:120]
    assert b'"code": "body_timeout"' in answer


async def test_a_head_that_never_finishes_is_closed(served: tuple[int, AppContext]) -> None:
    port, _ = served
    answer = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert answer == b""  # closed without an answer, within the header timeout


async def test_a_client_hanging_up_mid_body_is_not_a_server_error(
        api: Api, served: tuple[int, AppContext]) -> None:
    port, ctx = served
    t = await _sender(api)
    await _exchange(port, (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {t.key}\r\nContent-Length: 5000\r\n\r\n"
        '{"text":"1"').encode(), close=True)
    counted: dict[str, float] = {}
    for _ in range(100):
        counted = {s.labels["status"]: s.value for m in ctx.metrics.http_requests.collect()
                   for s in m.samples if s.name.endswith("_total")}
        if counted:
            break
        await asyncio.sleep(0.05)
    assert counted == {"499": 1.0}


async def test_a_send_at_in_the_past_is_refused(api: Api) -> None:
    t = await _sender(api)
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    resp = await t.call("POST", "/v1/messages", json={
        "from": SENDER, "to": ["01012345678"], "text": "늦음", "send_at": past})
    problem = await resp.json(content_type=None)
    assert (resp.status, problem["code"], problem["field"]) == (422, "send_at_in_past", "send_at")
    just_now = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    resp = await t.call("POST", "/v1/messages", json={
        "from": SENDER, "to": ["01012345678"], "text": "방금", "send_at": just_now})
    assert resp.status == 202  # within the grace: sent now


async def test_a_text_marked_as_ad_honours_ad_only_opt_outs(api: Api) -> None:
    t = await _sender(api)
    assert (await t.call("POST", "/v1/opt-outs", json={"number": "01077778888"})).status == 201
    assert (await t.call("PUT", "/v1/opt-outs/settings", json={"scope": "ad"})).status == 200
    await api.context.pool.execute(
        "UPDATE tenants SET optout_line = '무료거부 080-123-4567' WHERE id = $1", t.id)
    resp = await t.call("POST", "/v1/messages", json={
        "from": SENDER, "to": ["01077778888", "01011112222"], "text": "(광고) 봄 세일",
        "ad": False, "night_consent": True})
    body = await resp.json(content_type=None)
    assert resp.status == 202, body
    message = await (await t.call("GET", f"/v1/messages/{body['id']}")).json()
    assert message["ad"] is True
    assert message["counts"].get("rejected") == 1  # the ad-scope opt-out held


async def test_nul_in_a_query_or_path_parameter_is_a_422_naming_it(api: Api) -> None:
    t = await _sender(api)
    resp = await t.call("GET", "/v1/sender-numbers?q=02%00")
    problem = await resp.json(content_type=None)
    assert (resp.status, problem["code"], problem["field"]) == (422, "forbidden_character", "q")
    resp = await t.call("DELETE", "/v1/opt-outs/010%001234")
    problem = await resp.json(content_type=None)
    assert (resp.status, problem["code"], problem["field"]) == (422, "forbidden_character",
                                                                "number")


async def test_a_nul_in_a_form_field_is_refused_not_a_server_error(api: Api) -> None:
    t = await _sender(api)
    form = aiohttp.FormData()
    form.add_field("file", b"number\n01012345678\n", filename="a.csv", content_type="text/csv")
    form.add_field("sheet", "S\x00")
    resp = await t.call("POST", "/v1/recipient-imports", data=form)
    assert resp.status < 500, await resp.text()


async def test_a_broken_chunked_body_is_a_400_not_a_500(
        api: Api, served: tuple[int, AppContext]) -> None:
    port, _ = served
    t = await _sender(api)
    answer = await _exchange(port, (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {t.key}\r\nTransfer-Encoding: chunked\r\n\r\n"
        '5\r\n{"tex\r\nzz\r\n').encode())
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:120]
