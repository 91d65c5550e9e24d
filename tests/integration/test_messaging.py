"""Messaging end to end: control API → PostgreSQL queue → dispatcher → SMSC simulator over TCP →
receipts back, with the behaviours portals and carriers notice."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from handlers.messages.dispatch import Dispatcher
from protocols.smpp.constants import DataCoding, Tag
from sim.smsc import MessageIdFormat, SmscConfig, SmscSimulator
from tests.conftest import Api, Tenant, make_config

SENDER = "0212345678"
KST = ZoneInfo("Asia/Seoul")


@asynccontextmanager
async def running(api: Api, db_dsn: str, state_root: Path, sim: SmscConfig,
                  receipt_timeout: float = 60.0, **carrier: Any
                  ) -> AsyncIterator[tuple[SmscSimulator, Dispatcher]]:
    """The SMSC simulator and a dispatcher bound to it, sharing the API's database."""
    async with SmscSimulator(sim) as smsc:
        fields = {"name": "sim", "host": "127.0.0.1", "port": smsc.port, "system_id": "tg",
                  "password": "pw", "window": 50, **carrier}
        inline = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in fields.items())
        config = make_config(state_root, db_dsn, smpp__carriers=f"[{{{inline}}}]",
                             messaging__receipt_timeout_seconds=str(receipt_timeout),
                             messaging__recovery_seconds="0.2",
                             messaging__retry_base_seconds="0.05")
        dispatcher = Dispatcher(config, api.context.pool, db_dsn, api.context.metrics)
        await dispatcher.start()
        try:
            yield smsc, dispatcher
        finally:
            await dispatcher.stop(2)


def sim_config(**kw: Any) -> SmscConfig:
    return SmscConfig(port=0, accounts={"tg": "pw"}, **kw)


async def sender_tenant(api: Api) -> Tenant:
    t = await api.new_tenant(sp_id=f"sp{int(time.monotonic() * 1000) % 100000}")
    resp = await t.call("POST", "/v1/sender-numbers", json={"number": SENDER})
    assert resp.status == 201
    return t


async def send(t: Tenant, **body: Any) -> tuple[int, dict[str, Any]]:
    headers = body.pop("headers", {})
    resp = await t.call("POST", "/v1/messages", json={"from": "02-1234-5678", **body},
                        headers=headers)
    return resp.status, await resp.json(content_type=None)


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def counts(t: Tenant, message_id: str) -> dict[str, int]:
    body = await (await t.call("GET", f"/v1/messages/{message_id}")).json()
    return {k: v for k, v in body["counts"].items() if v}


async def settled(t: Tenant, message_id: str, seconds: float = 15.0) -> dict[str, int]:
    final = {"delivered", "failed", "expired", "rejected", "canceled"}
    result: dict[str, int] = {}

    async def done() -> bool:
        nonlocal result
        result = await counts(t, message_id)
        return set(result) <= final

    try:
        await until(done, seconds)
    except AssertionError:
        raise AssertionError(f"not settled: {result}") from None
    return result


async def test_sms_and_lms_are_delivered_with_receipts(api: Api, db_dsn: str,
                                                       state_root: Path) -> None:
    t = await sender_tenant(api)
    async with running(api, db_dsn, state_root, sim_config()) as (smsc, _d):
        status, sms = await send(t, to=["010-1111-2222", "01033334444"], text="안녕하세요")
        assert status == 202 and sms["type"] == "sms"
        status, lms = await send(t, to=["01055556666"], text="가" * 150, subject="공지")
        assert status == 202 and lms["type"] == "lms"
        assert await settled(t, sms["id"]) == {"delivered": 2}
        assert await settled(t, lms["id"]) == {"delivered": 1}
        arrived = {s.destination_addr: s for s in smsc.submits}
        assert arrived["01011112222"].text == "안녕하세요"
        assert arrived["01011112222"].data_coding == DataCoding.KSC5601
        assert arrived["01011112222"].source_addr == SENDER
        long_one = arrived["01055556666"]  # 300 octets: carried in message_payload
        assert long_one.tlvs[Tag.MESSAGE_PAYLOAD].decode("cp949") == "가" * 150
        assert long_one.pdu.short_message == b""
    rows = await (await t.call("GET", f"/v1/messages/{sms['id']}/recipients",
                               params={"state": "delivered"})).json()
    assert {r["receipt_stat"] for r in rows["items"]} == {"DELIVRD"}


@pytest.mark.parametrize(("text", "sms_max", "expected"), [
    ("가" * 45, 90, "sms"), ("가" * 45 + "a", 90, "lms"),
    ("가" * 40, 80, "sms"), ("가" * 40 + "a", 80, "lms"),
])
async def test_korean_byte_limit_edges_decide_sms_or_lms(api: Api, text: str, sms_max: int,
                                                         expected: str) -> None:
    t = await sender_tenant(api)
    await api.context.pool.execute("UPDATE tenants SET sms_max_bytes = $2 WHERE id = $1", t.id,
                                   sms_max)
    status, body = await send(t, to=["01011112222"], text=text)
    assert (status, body["type"]) == (202, expected)
    status, body = await send(t, to=["01011112222"], text="가" * 1000 + "a", type="lms")
    assert (status, body["code"], body["field"]) == (422, "too_long", "text")
    status, body = await send(t, to=["01011112222"], text="hi ✓ there")
    assert (status, body["code"], body["position"]) == (422, "unencodable_character", 3)


async def test_unregistered_sender_is_refused_and_nothing_queued(api: Api) -> None:
    t = await sender_tenant(api)
    status, body = await send(t, to=["01011112222"], text="x", **{"from": "031-123-4567"})
    assert (status, body["code"], body["field"]) == (422, "sender_not_registered", "from")
    assert await api.context.pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_invalid_recipients_are_all_reported_by_row(api: Api) -> None:
    t = await sender_tenant(api)
    status, body = await send(t, to=["01011112222", "0212345678", "nope", "010-1111-2222"],
                              text="x")
    assert status == 422 and body["code"] == "invalid_recipients"
    assert [e["field"] for e in body["errors"]] == ["to[1]", "to[2]"]
    status, body = await send(t, to=["01011112222", "010-1111-2222"], text="x")
    assert (status, body["recipients"], body["duplicates_removed"]) == (202, 1, 1)


async def test_opted_out_recipient_is_rejected_and_never_sent(api: Api, db_dsn: str,
                                                              state_root: Path) -> None:
    t = await sender_tenant(api)
    await t.call("POST", "/v1/opt-outs", json={"number": "01033334444"})
    async with running(api, db_dsn, state_root, sim_config()) as (smsc, _d):
        status, body = await send(t, to=["01011112222", "01033334444"], text="hi")
        assert (status, body["rejected"]) == (202, 1)
        assert await settled(t, body["id"]) == {"delivered": 1, "rejected": 1}
        assert [s.destination_addr for s in smsc.submits] == ["01011112222"]
    rows = await (await t.call("GET", f"/v1/messages/{body['id']}/recipients",
                               params={"state": "rejected"})).json()
    assert rows["items"][0]["reason"] == "opted_out"


async def test_template_variables_are_filled_per_recipient(api: Api, db_dsn: str,
                                                           state_root: Path) -> None:
    t = await sender_tenant(api)
    made = await (await t.call("POST", "/v1/templates", json={
        "name": "welcome", "text": "{고객명}님, 쿠폰 {금액}원이 도착했습니다 ({오늘날짜})"})).json()
    async with running(api, db_dsn, state_root, sim_config()) as (smsc, _d):
        status, body = await send(t, template_id=made["id"], to=[
            {"number": "01011112222", "name": "김철수", "vars": {"금액": "5000"}},
            {"number": "01033334444", "name": "이영희", "vars": {"금액": 3000}}])
        assert status == 202
        await settled(t, body["id"])
        texts = {s.destination_addr: s.text for s in smsc.submits}
    today = datetime.now(KST).date().isoformat()
    assert texts["01011112222"] == f"김철수님, 쿠폰 5000원이 도착했습니다 ({today})"
    assert texts["01033334444"] == f"이영희님, 쿠폰 3000원이 도착했습니다 ({today})"
    status, body = await send(t, template_id=made["id"], to=[
        {"number": "01011112222", "name": "김철수"}])
    assert (status, body["code"]) == (422, "unknown_variable")
    assert await api.context.pool.fetchval("SELECT count(*) FROM messages") == 1


async def test_ad_marks_are_added_and_night_sends_need_consent(api: Api) -> None:
    t = await sender_tenant(api)
    await api.context.pool.execute(
        "UPDATE tenants SET optout_line = '무료거부 080-123-4567' WHERE id = $1", t.id)
    day = (datetime.now(KST) + timedelta(days=1)).replace(hour=12, minute=0, second=0)
    night = day.replace(hour=22)
    status, body = await send(t, to=["01011112222"], text="봄맞이 세일", ad=True,
                              send_at=day.isoformat())
    assert status == 202
    stored = await api.context.pool.fetchval("SELECT text FROM messages WHERE id = $1::uuid",
                                             body["id"])
    assert stored.startswith("(광고)") and stored.endswith("무료거부 080-123-4567")
    status, body = await send(t, to=["01011112222"], text="봄맞이 세일", ad=True,
                              send_at=night.isoformat())
    assert (status, body["code"], body["field"]) == (422, "ad_night_time", "send_at")
    status, body = await send(t, to=["01011112222"], text="봄맞이 세일", ad=True,
                              send_at=night.isoformat(), night_consent=True)
    assert status == 202
    status, body = await send(t, to=["01011112222"], text="세일 무료거부 080-999-9999", ad=True,
                              send_at=day.isoformat())
    assert (status, body["code"]) == (422, "ad_optout_mismatch")


async def test_idempotent_retry_answers_the_same_and_queues_once(api: Api) -> None:
    t = await sender_tenant(api)
    key = {"Idempotency-Key": "order-42"}
    results = await asyncio.gather(*(send(t, to=["01011112222"], text="once", headers=key)
                                     for _ in range(5)))
    assert {r[0] for r in results} == {202}
    assert len({r[1]["id"] for r in results}) == 1
    assert await api.context.pool.fetchval("SELECT count(*) FROM messages") == 1
    status, body = await send(t, to=["01011112222"], text="another body", headers=key)
    assert (status, body["code"]) == (409, "idempotency_conflict")


async def test_scheduled_message_can_be_changed_or_cancelled_until_dispatch(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    status, body = await send(t, to=["01011112222"], text="old", send_at=later)
    assert (status, body["status"]) == (202, "scheduled")
    mid = body["id"]
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    resp = await t.call("PATCH", f"/v1/messages/{mid}",
                        json={"text": "새 내용", "to": ["01033334444"], "send_at": soon})
    changed = await resp.json()
    assert resp.status == 200 and changed["id"] == mid and changed["text"] == "새 내용"
    status, other = await send(t, to=["01055556666"], text="to cancel", send_at=later)
    resp = await t.call("POST", f"/v1/messages/{other['id']}/cancel")
    assert (await resp.json())["status"] == "canceled"
    async with running(api, db_dsn, state_root, sim_config()) as (smsc, _d):
        assert await settled(t, mid) == {"delivered": 1}
        assert [(s.destination_addr, s.text) for s in smsc.submits] == [("01033334444", "새 내용")]
    resp = await t.call("PATCH", f"/v1/messages/{mid}", json={"text": "too late"})
    assert (resp.status, (await resp.json(content_type=None))["code"]) == (409, "dispatch_started")
    resp = await t.call("POST", f"/v1/messages/{mid}/cancel")
    assert resp.status == 409
    assert await counts(t, other["id"]) == {"canceled": 1}


async def test_throttling_and_window_full_back_off_until_all_delivered(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    to = [f"0101000{i:04d}" for i in range(60)]
    async with running(api, db_dsn, state_root, sim_config(tps=100, tps_burst=10)) as (smsc, _d):
        _s, body = await send(t, to=to, text="throttled")
        assert await settled(t, body["id"], 20) == {"delivered": 60}
        assert smsc.stats["throttled"] > 0
    async with running(api, db_dsn, state_root, sim_config(window=3, latency_ms=20)) as (smsc, _d):
        _s, body = await send(t, to=to, text="window")
        assert await settled(t, body["id"], 20) == {"delivered": 60}
        assert smsc.stats["queue_full"] > 0


async def test_a_crash_handling_one_recipient_loses_neither_it_nor_the_rest_of_its_claim(
        api: Api, db_dsn: str, state_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The rows of a claim are submitted from one task: a failure in one row's handling must
    # cost that row a retry (flagged in doubt, as nothing tells what reached the SMSC) and
    # nothing else.
    from handlers.messages import dispatch

    t = await sender_tenant(api)
    to = [f"0102500{i:04d}" for i in range(40)]
    crashed: list[str] = []
    real = dispatch.build_submits

    def crash_once(carrier: Any, *, destination: str, **kw: Any) -> Any:
        if destination == to[17] and not crashed:
            crashed.append(destination)
            raise RuntimeError("injected")
        return real(carrier, destination=destination, **kw)

    monkeypatch.setattr(dispatch, "build_submits", crash_once)
    async with running(api, db_dsn, state_root, sim_config()) as (smsc, _d):
        _s, body = await send(t, to=to, text="one crash")
        assert await settled(t, body["id"], 20) == {"delivered": 40}
    assert crashed == [to[17]]
    assert sorted(s.destination_addr for s in smsc.submits) == sorted(to)  # each sent once
    assert (await (await t.call("GET", f"/v1/messages/{body['id']}")).json())["in_doubt"] == 1


async def test_smsc_disconnect_mid_window_loses_nothing(api: Api, db_dsn: str,
                                                        state_root: Path) -> None:
    t = await sender_tenant(api)
    to = [f"0102000{i:04d}" for i in range(300)]
    async with running(api, db_dsn, state_root,
                       sim_config(latency_ms=5, disconnect_after_submits=120)) as (smsc, _d):
        _s, body = await send(t, to=to, text="reconnect")
        final = await settled(t, body["id"], 30)
    assert final == {"delivered": 300}
    delivered_numbers = {s.destination_addr for s in smsc.submits}
    assert delivered_numbers == set(to)  # duplicates possible only for in-doubt submits
    doubt = (await (await t.call("GET", f"/v1/messages/{body['id']}")).json())["in_doubt"]
    assert len(smsc.submits) - 300 <= doubt


async def test_receipt_id_in_the_other_base_still_matches(api: Api, db_dsn: str,
                                                          state_root: Path) -> None:
    t = await sender_tenant(api)
    for fmt in (MessageIdFormat.HEX, MessageIdFormat.DECIMAL):
        cfg = sim_config(message_id_format=fmt, receipt_id_other_format=True)
        async with running(api, db_dsn, state_root, cfg) as (_smsc, _d):
            _s, body = await send(t, to=["01011112222", "01033334444"], text=fmt.name)
            assert await settled(t, body["id"]) == {"delivered": 2}


async def test_a_hex_id_made_only_of_digits_matches_its_decimal_receipt(
        api: Api, db_dsn: str, state_root: Path) -> None:
    # 0x12345678 and 0x12345679 read like decimal numbers; their receipts say 305419896 and
    # 305419897. One hex id in 44 or so has no letter, so a carrier meets this every day.
    t = await sender_tenant(api)
    cfg = sim_config(message_id_format=MessageIdFormat.HEX, receipt_id_other_format=True,
                     first_message_id=0x12345677)
    async with running(api, db_dsn, state_root, cfg) as (smsc, _d):
        _s, body = await send(t, to=["01011112222", "01033334444"], text="digits")
        assert await settled(t, body["id"]) == {"delivered": 2}
        assert sorted(s.message_id for s in smsc.submits) == ["12345678", "12345679"]


async def test_failed_receipts_and_permanent_errors_keep_their_codes(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    async with running(api, db_dsn, state_root, sim_config(outcomes={"UNDELIV": 1.0})) as _r:
        _s, body = await send(t, to=["01011112222"], text="x")
        assert await settled(t, body["id"]) == {"failed": 1}
    rows = await (await t.call("GET", f"/v1/messages/{body['id']}/recipients")).json()
    assert (rows["items"][0]["receipt_stat"], rows["items"][0]["reason"]) == ("UNDELIV", "undeliv")
    async with running(api, db_dsn, state_root, sim_config(error_rate=1.0, error_status=0x0B)):
        _s, body = await send(t, to=["01011112222"], text="x")
        assert await settled(t, body["id"]) == {"failed": 1}
    rows = await (await t.call("GET", f"/v1/messages/{body['id']}/recipients")).json()
    assert rows["items"][0]["smpp_status"] == 0x0B


async def test_recipient_without_receipt_expires(api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    async with running(api, db_dsn, state_root, sim_config(outcomes={"NONE": 1.0}),
                       receipt_timeout=1.0):
        _s, body = await send(t, to=["01011112222"], text="no receipt")
        assert await settled(t, body["id"], 10) == {"expired": 1}
    rows = await (await t.call("GET", f"/v1/messages/{body['id']}/recipients")).json()
    assert rows["items"][0]["reason"] == "no_receipt"


async def test_mo_to_the_080_number_opts_the_sender_out(api: Api, db_dsn: str,
                                                        state_root: Path) -> None:
    t = await sender_tenant(api)
    await api.context.pool.execute(
        "UPDATE tenants SET optout_number = '0801234567' WHERE id = $1", t.id)
    async with running(api, db_dsn, state_root, sim_config()) as (smsc, _d):
        await until(lambda: _bound(smsc))
        await smsc.send_mo("01077778888", "0801234567", "수신거부")
        await smsc.send_mo("01077779999", "0801234567", "hello")

        async def listed() -> bool:
            body = await (await t.call("GET", "/v1/opt-outs")).json()
            return [i["number"] for i in body["items"]] == ["01077778888"]

        await until(listed)
    assert await api.context.pool.fetchval("SELECT count(*) FROM mo_messages") == 2


async def _bound(smsc: SmscSimulator) -> bool:
    return bool(smsc.bound_system_ids)


async def test_routes_fail_over_to_the_next_carrier_when_one_is_down(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await sender_tenant(api)
    # The preferred carrier for 010 points at a port we hold bound but not listening: every
    # connection attempt is refused for as long as the test runs.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    dead_port = holder.getsockname()[1]
    async with SmscSimulator(sim_config()) as backup:
        carriers = (
            f'[{{name = "primary", host = "127.0.0.1", port = {dead_port}, system_id = "tg", '
            f'password = "pw", prefixes = ["010"], priority = 0}}, '
            f'{{name = "backup", host = "127.0.0.1", port = {backup.port}, system_id = "tg", '
            f'password = "pw", prefixes = [""], priority = 5}}]')
        config = make_config(state_root, db_dsn, smpp__carriers=carriers)
        dispatcher = Dispatcher(config, api.context.pool, db_dsn, api.context.metrics)
        await dispatcher.start()
        try:
            _s, body = await send(t, to=["01011112222", "01033334444"], text="failover")
            assert await settled(t, body["id"]) == {"delivered": 2}
            ok, detail = await dispatcher.readiness()
            assert not ok and "primary" in detail  # /readyz names the carrier that is down
        finally:
            await dispatcher.stop(2)
            holder.close()
    rows = await (await t.call("GET", f"/v1/messages/{body['id']}/recipients")).json()
    assert {r["carrier"] for r in rows["items"]} == {"backup"}


async def test_history_filters_by_recipient_and_type(api: Api) -> None:
    t = await sender_tenant(api)
    _s, a = await send(t, to=["01011112222"], text="short")
    _s, b = await send(t, to=["01033334444"], text="가" * 60)
    page = await (await t.call("GET", "/v1/messages", params={"to": "010-3333-4444"})).json()
    assert [m["id"] for m in page["items"]] == [b["id"]]
    page = await (await t.call("GET", "/v1/messages", params={"type": "sms"})).json()
    assert [m["id"] for m in page["items"]] == [a["id"]]
    other = await api.new_tenant()
    assert (await (await other.call("GET", "/v1/messages")).json())["items"] == []
    assert (await other.call("GET", f"/v1/messages/{a['id']}")).status == 404
    assert (await other.call("POST", f"/v1/messages/{a['id']}/cancel")).status == 404


async def test_carrier_and_bind_tps_limits_pace_submits(api: Api, db_dsn: str,
                                                        state_root: Path) -> None:
    t = await sender_tenant(api)
    to = [f"0104000{i:04d}" for i in range(40)]
    async with running(api, db_dsn, state_root, sim_config(), binds=2, bind_tps=10.0) as _r:
        started = time.monotonic()
        _s, body = await send(t, to=to, text="paced")
        await settled(t, body["id"])
        paced = time.monotonic() - started
    # 2 binds x 10/s with a burst of 1 each: 40 submits need well over a second.
    assert paced > 1.2


async def test_a_key_narrowed_to_an_sp_sees_only_that_sps_messages(api: Api) -> None:
    from handlers import tenants

    shop1 = await sender_tenant(api)  # a key narrowed to one SP ID
    async with api.context.pool.acquire() as conn:
        key2, rec2 = await tenants.create_key(conn, shop1.id, sp_id="shop-2", label="",
                                              actor="test")
        key_all, rec_all = await tenants.create_key(conn, shop1.id, sp_id=None, label="",
                                                    actor="test")
    shop2 = Tenant(shop1.id, shop1.name, key2, rec2.id, api)
    portal = Tenant(shop1.id, shop1.name, key_all, rec_all.id, api)
    _s, by2 = await send(shop2, to=["01011112222"], text="from shop 2")
    _s, by1 = await send(shop1, to=["01033334444"], text="from shop 1")
    listed = await (await shop2.call("GET", "/v1/messages")).json()
    assert [m["id"] for m in listed["items"]] == [by2["id"]]
    assert (await shop2.call("GET", f"/v1/messages/{by1['id']}")).status == 404
    assert (await shop1.call("POST", f"/v1/messages/{by2['id']}/cancel")).status == 404
    everything = await (await portal.call("GET", "/v1/messages")).json()
    assert {m["id"] for m in everything["items"]} == {by1["id"], by2["id"]}
