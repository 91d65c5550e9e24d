"""Message statistics by Korean hour, weekday and department, with empty periods as zero rows,
and the list of received (MO) messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from handlers import tenants
from tests.conftest import Api, Tenant
from tests.integration.test_message_history import insert_message

NOV = {"since": "2026-11-01", "until": "2026-11-30"}


async def stats(t: Tenant, **params: str) -> dict[str, Any]:
    resp = await t.call("GET", "/v1/stats/messages", params={**NOV, **params})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_days_without_messages_answer_zero_rows(api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    await insert_message(pool, t, send_at="2026-11-22T15:00:00", states=["delivered"])
    days = [(i["period"], i["recipients"]) for i in (await stats(t))["items"]]
    assert len(days) == 30 and days[0] == ("2026-11-01", 0) and ("2026-11-23", 1) in days
    empty = await api.new_tenant()
    body = await stats(empty, granularity="month")
    assert [(i["period"], i["type"], i["recipients"]) for i in body["items"]] == \
        [("2026-11", "all", 0)]


async def test_hourly_and_weekday_statistics_use_korean_time(api: Api,
                                                             pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    # 23:59:59 KST Sunday the 22nd, 00:00 KST Monday the 23rd, 10:00 KST Monday
    for at in ("2026-11-22T14:59:59", "2026-11-22T15:00:00", "2026-11-23T01:00:00"):
        await insert_message(pool, t, send_at=at, states=["delivered", "failed"])
    hours = {i["period"]: i["recipients"] for i in (await stats(t, granularity="hour"))["items"]}
    assert list(hours) == [f"{h:02d}" for h in range(24)]
    assert {h: n for h, n in hours.items() if n} == {"00": 2, "10": 2, "23": 2}
    days = {i["period"]: i["recipients"] for i in (await stats(t, granularity="weekday"))["items"]}
    assert days == {"1": 4, "2": 0, "3": 0, "4": 0, "5": 0, "6": 0, "7": 2}


async def test_department_statistics_follow_the_sp_id_at_sending(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    async with pool.acquire() as conn:
        for sp in ("SP1", "SP2"):
            await tenants.ensure_sp_id(conn, t.id, sp, actor="test")
    ads = await (await t.call("POST", "/v1/departments",
                              json={"name": "마케팅", "sp_ids": ["SP1"]})).json()
    await insert_message(pool, t, send_at="2026-11-02T01:00:00", sp_id="SP1",
                         states=["delivered"] * 3)
    await insert_message(pool, t, send_at="2026-11-02T02:00:00", sp_id="SP2",
                         states=["delivered"])
    # SP1 leaves the department: what it sent before stays counted for it
    await t.call("PATCH", f"/v1/departments/{ads['id']}", json={"sp_ids": ["SP2"]})
    await insert_message(pool, t, send_at="2026-11-03T01:00:00", sp_id="SP1",
                         states=["delivered"])
    body = await stats(t, granularity="month", group_by="department")
    got = {(i["sp_id"], i["department_name"]): i["recipients"] for i in body["items"]}
    assert got == {("SP1", "마케팅"): 3, ("SP1", None): 1, ("SP2", None): 1}
    resp = await t.call("GET", "/v1/stats/messages/export",
                        params={**NOV, "granularity": "month", "group_by": "department",
                                "format": "xlsx"})
    assert resp.status == 200, await resp.text()


async def test_received_messages_are_listed_newest_first_with_opt_outs_marked(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    other = await api.new_tenant()
    async with pool.acquire() as conn:
        for tenant, source, text, opt_out, minute in (
                (t, "01011112222", "문의드립니다", False, 1),
                (t, "01033334444", "거부", True, 2),
                (t, "01011112222", "감사합니다", False, 3),
                (other, "01011112222", "다른 회사", False, 4)):
            await conn.execute(
                "INSERT INTO mo_messages (tenant_id, carrier, source, destination, text, "
                "received_at, opt_out) VALUES ($1, 'skt', $2, '0801234567', $3, $4, $5)",
                tenant.id, source, text, datetime(2026, 11, 2, 1, minute, tzinfo=UTC), opt_out)
    resp = await t.call("GET", "/v1/inbound-messages", params={"limit": "2"})
    assert resp.status == 200, await resp.text()
    page = await resp.json()
    assert [(m["text"], m["opt_out"]) for m in page["items"]] == [("감사합니다", False),
                                                                  ("거부", True)]
    rest = await (await t.call("GET", "/v1/inbound-messages",
                               params={"cursor": page["next_cursor"]})).json()
    assert [m["text"] for m in rest["items"]] == ["문의드립니다"] and rest["next_cursor"] is None
    mine = await (await t.call("GET", "/v1/inbound-messages",
                               params={"number": "010-1111-2222", **NOV})).json()
    assert [m["text"] for m in mine["items"]] == ["감사합니다", "문의드립니다"]
    opted = await (await t.call("GET", "/v1/inbound-messages",
                                params={"opt_out": "true"})).json()
    assert [m["source"] for m in opted["items"]] == ["01033334444"]
    none = await (await t.call("GET", "/v1/inbound-messages",
                               params={"since": "2026-11-03"})).json()
    assert none["items"] == []
