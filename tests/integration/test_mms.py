"""MMS end to end: control API → PostgreSQL queue → MM7 dispatcher → MMSC simulator over HTTP →
delivery reports pushed back to the report listener, with faults that must lose nothing."""

from __future__ import annotations

import base64
import csv
import io
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from handlers.api.app import build_app
from handlers.api.context import AppContext
from handlers.api.framework import RouteTable
from handlers.messages.dispatch import Dispatcher
from handlers.messages.mms_dispatch import MmsDispatcher
from handlers.messages.mms_reports import ReportListener
from handlers.metrics import Metrics
from protocols.mm7 import codec
from protocols.mm7.client import basic_auth
from protocols.mm7.messages import Address, Decoded, Fault, SubmitReq, VASPErrorRsp
from protocols.mm7.versions import SchemaVersion
from sim.mmsc import MmscConfig, MmscSimulator
from sim.smsc import SmscConfig, SmscSimulator
from tests.conftest import Api, Tenant, make_config
from tests.integration.test_messaging import send, sender_tenant, settled, until
from tests.unit.test_compose import GOOD_JPEG

KST = ZoneInfo("Asia/Seoul")
TEXT = "사진을 보내 드립니다. 확인 부탁드립니다"


@pytest.fixture
async def api(pool: asyncpg.Pool, db_dsn: str, state_root: Path) -> AsyncIterator[Api]:
    """The control API with the default body limit: three 300 KB JPEGs fit in base64."""
    config = make_config(state_root, db_dsn)
    ctx = AppContext(config=config, pool=pool, metrics=Metrics(), routes=RouteTable(),
                     version="test")
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    try:
        yield Api(client, ctx)
    finally:
        await client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jpeg_of(size: int) -> bytes:
    """A valid JPEG grown to `size` bytes with comment segments."""
    need, segments = size - len(GOOD_JPEG), b""
    while need > 0:
        body = min(need - 4, 65533)
        if need - (body + 4) in (1, 2, 3):
            body -= 4
        segments += b"\xff\xfe" + (body + 2).to_bytes(2, "big") + b"k" * body
        need -= body + 4
    data = GOOD_JPEG[:2] + segments + GOOD_JPEG[2:]
    assert len(data) == size
    return data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _inline(fields: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{" + ", ".join(f'{k} = "{x}"' for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(str(x) for x in v) + "]"
        return f'"{v}"' if isinstance(v, str) else str(v)
    return "{" + ", ".join(f"{k} = {value(v)}" for k, v in fields.items()) + "}"


@asynccontextmanager
async def mms_running(api: Api, db_dsn: str, state_root: Path, *, smsc: SmscSimulator | None = None,
                      carrier: dict[str, Any] | None = None,
                      before: list[dict[str, Any]] | None = None,
                      messaging: dict[str, str] | None = None, **sim: Any
                      ) -> AsyncIterator[tuple[MmscSimulator, MmsDispatcher, ReportListener]]:
    """The MMSC simulator, the report listener and an MM7 dispatcher on the API's database."""
    report_port = free_port()
    sim_cfg = MmscConfig(accounts={"tg": "pw"}, report_url=f"http://127.0.0.1:{report_port}/mm7",
                         report_username="mmsc", report_password="rpw", **sim)
    async with MmscSimulator(sim_cfg) as mmsc:
        fields = {"name": "mmsc", "url": mmsc.url, "vasp_id": "VASP1", "vas_id": "VAS1",
                  "username": "tg", "password": "pw", "service_code": "SVC01",
                  "soap_headers": {"OriginCode": "111222333"}, "report_username": "mmsc",
                  "report_password": "rpw", **(carrier or {})}
        tables = [_inline(c) for c in [*(before or []), fields]]
        env = {"mm7__carriers": f"[{', '.join(tables)}]", "mm7__report_port": str(report_port),
               "messaging__recovery_seconds": "0.2", "messaging__retry_base_seconds": "0.05",
               "messaging__retry_max_seconds": "0.2",
               **{f"messaging__{k}": v for k, v in (messaging or {}).items()}}
        if smsc is not None:
            env["smpp__carriers"] = (f'[{{name = "sms", host = "127.0.0.1", port = {smsc.port},'
                                     ' system_id = "tg", password = "pw"}]')
        config = make_config(state_root, db_dsn, **env)
        dispatcher = MmsDispatcher(config, api.context.pool, db_dsn, api.context.metrics)
        listener = ReportListener(config.mm7, api.context.pool, dispatcher.metrics.reports)
        await listener.start()
        await dispatcher.start()
        sms: Dispatcher | None = None
        if smsc is not None:
            sms = Dispatcher(config, api.context.pool, db_dsn, api.context.metrics)
            await sms.start()
        try:
            yield mmsc, dispatcher, listener
        finally:
            if sms is not None:
                await sms.stop(2)
            await dispatcher.stop(2)
            await listener.stop()


async def recipients(t: Tenant, message_id: str) -> list[dict[str, Any]]:
    body = await (await t.call("GET", f"/v1/messages/{message_id}/recipients")).json()
    return list(body["items"])


async def test_mms_with_jpegs_is_delivered_and_the_mmsc_has_them_byte_for_byte(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    big, small = jpeg_of(300 * 1024 - 100), jpeg_of(5_000)
    async with mms_running(api, db_dsn, state_root, report_delay_ms=0) as (mmsc, _d, _l):
        status, answer = await send(t, to=["010-1234-5678"], text=TEXT, subject="사진 안내",
                                    images=[b64(big), b64(small)])
        assert status == 202, answer
        assert answer["type"] == "mms"
        assert await settled(t, answer["id"]) == {"delivered": 1}
    (got,) = mmsc.received
    m = got.request
    assert [p.content_type for p in m.content] == ["application/smil", "image/jpeg",
                                                   "image/jpeg", "text/plain"]
    assert [p.data for p in m.content[1:3]] == [big, small]
    text = m.content[3]
    assert text.charset == "ks_c_5601-1987" and text.data.decode("euc-kr") == TEXT
    assert [a.value for a in m.recipients] == ["01012345678"]
    assert m.sender is not None and m.sender.value == "0212345678"
    assert (m.vasp_id, m.vas_id, m.service_code, m.subject) == ("VASP1", "VAS1", "SVC01",
                                                                "사진 안내")
    assert m.delivery_report is True
    (row,) = await recipients(t, answer["id"])
    assert row["receipt_stat"] == "Retrieved" and row["carrier"] == "mmsc"
    shown = await (await t.call("GET", f"/v1/messages/{answer['id']}")).json()
    assert (shown["images"], shown["image_bytes"]) == (2, len(big) + len(small))
    stats = await (await t.call("GET", "/v1/stats/messages")).json()
    assert (stats["totals"]["images"], stats["totals"]["image_bytes"]) == (2, len(big) + len(small))
    today = datetime.now(KST).date()
    resp = await t.call("GET", "/v1/messages/export", params={
        "format": "csv", "since": str(today - timedelta(days=1)),
        "until": str(today + timedelta(days=1))})
    assert resp.status == 200, await resp.text()
    (exported,) = csv.DictReader(io.StringIO((await resp.read()).decode("utf-8-sig")))
    assert (exported["type"], exported["images"], exported["image_bytes"]) == (
        "mms", "2", str(len(big) + len(small)))


async def test_mms_is_refused_with_no_route_when_no_mm7_carrier_runs(api: Api) -> None:
    t = await sender_tenant(api)
    status, answer = await send(t, to=["01012345678"], text="x", images=[b64(GOOD_JPEG)])
    assert status == 422 and answer["code"] == "no_route"


async def test_report_outcomes_set_final_states_and_fire_webhooks(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    async with api.context.pool.acquire() as conn:
        await conn.execute("INSERT INTO webhooks (tenant_id, url, secret) VALUES ($1, $2, 's')",
                           t.id, "https://hooks.example/x")
    numbers = [f"0105555{i:04d}" for i in range(30)]
    async with mms_running(api, db_dsn, state_root, seed=7, report_delay_ms=20,
                           outcomes={"Retrieved": 1, "Expired": 1, "Rejected": 1}) as _r:
        status, answer = await send(t, to=numbers, text="안내", images=[b64(GOOD_JPEG)])
        assert status == 202
        final = await settled(t, answer["id"])
    assert set(final) == {"delivered", "expired", "failed"} and sum(final.values()) == 30
    rows = await recipients(t, answer["id"])
    assert {r["state"]: r["receipt_stat"] for r in rows} == {
        "delivered": "Retrieved", "expired": "Expired", "failed": "Rejected"}
    hooks = Counter(r["event_type"] for r in await api.context.pool.fetch(
        "SELECT event_type FROM webhook_outbox WHERE tenant_id = $1", t.id))
    assert hooks["message.recipient.delivered"] == final["delivered"]
    assert hooks["message.recipient.failed"] == final["failed"]
    reports = {s.labels["status"]: s.value for m in api.context.metrics.registry.collect()
               if m.name == "telgate_mm7_reports" for s in m.samples
               if s.name.endswith("_total")}
    assert reports == {"Retrieved": final["delivered"], "Expired": final["expired"],
                       "Rejected": final["failed"]}


async def test_timeouts_5xx_soap_faults_throttling_and_cuts_lose_nothing(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    numbers = [f"0107777{i:04d}" for i in range(12)]
    async with mms_running(api, db_dsn, state_root, timeout_ms=3000,
                           carrier={"timeout_seconds": 0.5, "connections": 1}) as (mmsc, _d, _l):
        mmsc.inject("timeout", "http500", "soap_fault", "throttle", "disconnect", "http500")
        status, answer = await send(t, to=numbers, text="장애 시험", images=[b64(GOOD_JPEG)])
        assert status == 202
        assert await settled(t, answer["id"], 30) == {"delivered": 12}
    sent = Counter(r.request.recipients[0].value for r in mmsc.received)
    assert set(sent) == set(numbers)  # nobody lost
    in_doubt = {r["number"] for r in await api.context.pool.fetch(
        "SELECT number FROM recipients WHERE message_id = $1::uuid AND in_doubt", answer["id"])}
    duplicated = {n for n, c in sent.items() if c > 1}
    assert duplicated <= in_doubt and len(in_doubt) >= 2  # the timeout and the cut
    assert mmsc.stats["faults"] == 6


async def test_a_refused_image_fails_with_the_mmsc_status_code(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    async with mms_running(api, db_dsn, state_root, max_image_bytes=1000) as _r:
        status, answer = await send(t, to=["01012345678"], text="큰 사진",
                                    images=[b64(jpeg_of(20_000))])
        assert status == 202
        assert await settled(t, answer["id"]) == {"failed": 1}
    (row,) = await recipients(t, answer["id"])
    assert row["reason"] == "mm7_2004"
    assert await api.context.pool.fetchval(
        "SELECT mm7_status FROM recipients WHERE message_id = $1::uuid", answer["id"]) == 2004


async def test_a_tenant_asking_for_lms_fallback_gets_the_text_as_lms_when_the_image_is_refused(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    resp = await t.call("PATCH", "/v1/tenant/settings", json={"mms_lms_fallback": True})
    assert resp.status == 200 and (await resp.json())["mms_lms_fallback"] is True
    async with SmscSimulator(SmscConfig(port=0, accounts={"tg": "pw"})) as smsc, \
            mms_running(api, db_dsn, state_root, smsc=smsc, max_image_bytes=1000) as _r:
        status, answer = await send(t, to=["01012345678"], text="사진이 안 되면 글자로",
                                    images=[b64(jpeg_of(20_000))])
        assert status == 202
        assert await settled(t, answer["id"]) == {"delivered": 1}
        (submit,) = smsc.submits
        assert submit.text == "사진이 안 되면 글자로"
    (row,) = await recipients(t, answer["id"])
    assert row["carrier"] == "sms"


async def test_the_report_listener_wants_the_carriers_credentials_and_valid_mm7(
        api: Api, db_dsn: str, state_root: Path) -> None:
    async with mms_running(api, db_dsn, state_root) as (_m, _d, listener), \
            aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{listener.port}/mm7"
        async with http.post(url, data=b"<x/>") as resp:
            assert resp.status == 401
        async with http.post(url, data=b"<x/>",
                             headers={"Authorization": basic_auth("mmsc", "wrong")}) as resp:
            assert resp.status == 401
        async with http.post(url, data=b"<not-xml", headers={"Content-Type": "text/xml",
                                                        "Authorization": basic_auth("mmsc", "rpw")}
                             ) as resp:
            assert resp.status == 500
            answer = codec.decode(resp.headers["Content-Type"], await resp.read())
        wrong_op = codec.encode(SubmitReq("tx", "V", None, (Address("010"),)),
                                SchemaVersion.REL_5_MM7_1_2)
        async with http.post(url, data=wrong_op.body,
                             headers={**wrong_op.headers,
                                      "Authorization": basic_auth("mmsc", "rpw")}) as resp:
            assert resp.status == 500
            refused = codec.decode(resp.headers["Content-Type"], await resp.read())
    assert isinstance(answer, Decoded) and isinstance(answer.message, Fault)
    assert isinstance(answer.message.error, VASPErrorRsp)
    assert answer.message.status_code == 2007
    assert isinstance(refused, Decoded) and isinstance(refused.message, Fault)
    assert refused.message.status_code == 4003 and refused.message.transaction_id == "tx"


async def test_a_report_arriving_while_the_database_is_away_is_sent_again_and_kept(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    async with mms_running(api, db_dsn, state_root) as (mmsc, _d, _l):
        # The inbox is away from the start: every report push answers 500 and is retried.
        await api.context.pool.execute("ALTER TABLE mm7_report_inbox RENAME TO inbox_away")
        status, answer = await send(t, to=["01012345678"], text="재전송", images=[b64(GOOD_JPEG)])
        assert status == 202

        async def retried() -> bool:
            return mmsc.stats["report_retries"] > 0
        await until(retried)
        assert mmsc.stats["reports_sent"] == 0
        await api.context.pool.execute("ALTER TABLE inbox_away RENAME TO mm7_report_inbox")
        assert await settled(t, answer["id"], 20) == {"delivered": 1}
    assert mmsc.stats["reports_sent"] == 1


async def test_an_unreachable_mmsc_fails_over_to_the_next_carrier_without_losing_an_attempt(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    with socket.socket() as held:  # bound, never listening: connections are refused
        held.bind(("127.0.0.1", 0))
        dead = {"name": "dead", "url": f"http://127.0.0.1:{held.getsockname()[1]}/mm7",
                "vasp_id": "V", "priority": 0}
        async with mms_running(api, db_dsn, state_root, carrier={"priority": 1},
                               before=[dead]) as (mmsc, d, _l):
            assert (await d.readiness())[0]
            status, answer = await send(t, to=["01012345678", "01012345679"], text="우회",
                                        images=[b64(GOOD_JPEG)])
            assert status == 202
            assert await settled(t, answer["id"]) == {"delivered": 2}
            assert d.carriers[0].name == "dead" and d.carriers[0].down_until > 0
            assert (await d.readiness())[0]  # one MMSC answers
            for c in d.carriers:
                c.down_until = float("inf")
            assert await d.readiness() == (False, "no MMSC reachable: dead, mmsc")
    rows = await api.context.pool.fetch(
        "SELECT carrier, attempts, in_doubt FROM recipients WHERE message_id = $1::uuid",
        answer["id"])
    assert {(r["carrier"], r["attempts"], r["in_doubt"]) for r in rows} == {("mmsc", 1, False)}
    assert len(mmsc.received) == 2


async def test_a_last_attempt_left_unanswered_fails_and_stays_flagged_in_doubt(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    async with mms_running(api, db_dsn, state_root, timeout_ms=2000,
                           carrier={"timeout_seconds": 0.3},
                           messaging={"max_attempts": "1"}) as (mmsc, _d, _l):
        mmsc.inject("timeout")
        status, answer = await send(t, to=["01012345678"], text="마지막", images=[b64(GOOD_JPEG)])
        assert status == 202
        assert await settled(t, answer["id"]) == {"failed": 1}
    (row,) = await recipients(t, answer["id"])
    assert row["reason"] == "no_answer" and row["in_doubt"] is True
    assert len(mmsc.received) == 1  # the MMSC did take it: the flag tells the portal so
