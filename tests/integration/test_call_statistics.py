"""Call statistics, call-record search and export against a known set of calls: every class,
several agents (extensions) and departments, internal and external, across the Korean
midnight and month ends (Asia/Seoul is UTC+9: 15:00 UTC is the next Korean day)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import openpyxl
import pytest

from handlers.calls import cdr
from tests.conftest import Api, Tenant

OURS = "0212345678"  # the DID, and the caller ID presented on outgoing calls
BRANCH = "0311234567"
PERIOD = {"since": "2026-01-31", "until": "2026-03-01"}  # Korean days, inclusive


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def store_calls(pool: asyncpg.Pool, tenant: Tenant, calls: list[dict[str, Any]]) -> None:
    """Records written the way the CDR writer writes them (COPY of cdr.COLUMNS)."""
    rows = []
    for c in calls:
        started = utc(c["at"])
        talk = float(c.get("talk", 0))
        direction = c.get("direction", "incoming")
        answered = c["class"] in ("incoming", "outgoing")
        rows.append((
            uuid.uuid4(), tenant.id, f"{uuid.uuid4().hex}@test", direction,
            direction == "internal", c["class"], c.get("caller", "01011112222"),
            c.get("callee", OURS), c.get("did", OURS if direction == "incoming" else None),
            c.get("ext"), c.get("peer"), "carrier" if direction != "internal" else None,
            started, started, started + timedelta(seconds=5) if answered else None,
            started + timedelta(seconds=5 + talk), talk, 200 if answered else 480,
            "caller", "normal", []))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("call_records", records=rows,
                                         columns=list(cdr.COLUMNS))


CALLS: list[dict[str, Any]] = [
    # Saturday 2026-01-31 23:59:30 KST: the last Korean minute of January
    {"at": "2026-01-31T14:59:30", "class": "incoming", "ext": "1001", "talk": 120},
    # Sunday 2026-02-01 00:00:00 KST: the first Korean second of February
    {"at": "2026-01-31T15:00:00", "class": "incoming", "ext": "1002", "talk": 60},
    {"at": "2026-02-01T01:00:00", "class": "missed", "ext": "1001"},
    {"at": "2026-02-01T01:30:00", "class": "busy_missed", "ext": "2001"},
    {"at": "2026-02-01T01:45:00", "class": "ended_before_answer", "ext": "2001",
     "caller": "01077778888"},
    {"at": "2026-02-01T02:00:00", "class": "outgoing", "direction": "outgoing", "ext": "2001",
     "caller": OURS, "callee": "01033334444", "talk": 30},
    # Saturday 2026-02-28 23:59:59 KST, from the branch number
    {"at": "2026-02-28T14:59:59", "class": "outgoing_failed", "direction": "outgoing",
     "ext": "3001", "caller": BRANCH, "callee": "01055556666"},
    # Sunday 2026-03-01 00:00:00 KST: an internal call, 2001 calling 1001
    {"at": "2026-02-28T15:00:00", "class": "incoming", "direction": "internal", "ext": "1001",
     "peer": "2001", "caller": "2001", "callee": "1001", "talk": 10},
    # nobody took it: no agent
    {"at": "2026-03-01T03:00:00", "class": "missed", "caller": "01099990000"},
]


@pytest.fixture
async def office(api: Api, pool: asyncpg.Pool) -> dict[str, Any]:
    """Sales (1001, 1002) and support (2001); 3001 in no department; the calls above."""
    t = await api.new_tenant()
    for ext in ("1001", "1002", "2001", "3001"):
        resp = await t.call("POST", "/v1/extensions",
                            json={"extension": ext, "password": "secret-pass-1",
                                  "name": f"상담원 {ext}"})
        assert resp.status == 201, await resp.text()
    sales = await (await t.call("POST", "/v1/departments", json={
        "name": "영업", "extensions": ["1001", "1002"]})).json()
    support = await (await t.call("POST", "/v1/departments", json={
        "name": "지원", "extensions": ["2001"]})).json()
    await store_calls(pool, t, CALLS)
    other = await api.new_tenant()
    await store_calls(pool, other, CALLS[:3])
    return {"t": t, "sales": sales["id"], "support": support["id"], "other": other}


async def stats(t: Tenant, **params: str) -> dict[str, Any]:
    resp = await t.call("GET", "/v1/stats/calls", params={**PERIOD, **params})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def by(body: dict[str, Any], *fields: str) -> dict[Any, dict[str, Any]]:
    return {tuple(i[f] for f in fields) if len(fields) > 1 else i[fields[0]]: i
            for i in body["items"]}


async def test_daily_statistics_answer_every_korean_day_with_zeros(office: dict[str, Any]) -> None:
    body = await stats(office["t"], group_by="day")
    days = by(body, "day")
    assert len(days) == 30
    assert (min(days), max(days)) == ("2026-01-31", "2026-03-01")
    assert {d: i["calls"] for d, i in days.items() if i["calls"]} == {
        "2026-01-31": 1, "2026-02-01": 5, "2026-02-28": 1, "2026-03-01": 2}
    assert days["2026-02-15"]["calls"] == 0 and days["2026-02-15"]["talk_seconds"] == 0
    assert body["totals"]["calls"] == 9 and body["time_zone"] == "Asia/Seoul"
    assert body["group_by"] == ["day"]


async def test_monthly_statistics_split_at_korean_month_ends(office: dict[str, Any]) -> None:
    months = by(await stats(office["t"], group_by="month"), "month")
    assert {m: i["calls"] for m, i in months.items()} == {"2026-01": 1, "2026-02": 6,
                                                         "2026-03": 2}


async def test_hourly_statistics_use_the_korean_hour_of_the_day(office: dict[str, Any]) -> None:
    hours = by(await stats(office["t"], group_by="hour"), "hour")
    assert list(hours) == list(range(24))
    assert {h: i["calls"] for h, i in hours.items() if i["calls"]} == {
        0: 2, 10: 3, 11: 1, 12: 1, 23: 2}


async def test_weekday_statistics_use_iso_weekdays(office: dict[str, Any]) -> None:
    days = by(await stats(office["t"], group_by="weekday"), "weekday")
    assert list(days) == [1, 2, 3, 4, 5, 6, 7]
    assert (days[6]["calls"], days[7]["calls"], days[3]["calls"]) == (2, 7, 0)


async def test_per_agent_statistics_count_answered_failed_and_talk_time(
        office: dict[str, Any]) -> None:
    agents = by(await stats(office["t"], group_by="agent"), "agent")
    assert list(agents) == ["1001", "1002", "2001", "3001", None]
    a = agents["1001"]  # an outside call and an internal one answered, one missed
    assert (a["calls"], a["inbound_answered"], a["inbound_failed"], a["talk_seconds"],
            a["average_talk_seconds"], a["agent_name"]) == (3, 2, 1, 130.0, 65.0, "상담원 1001")
    b = agents["2001"]
    assert (b["outbound_answered"], b["inbound_failed"], b["busy_missed"],
            b["ended_before_answer"], b["answered"], b["average_talk_seconds"]) == \
        (1, 2, 1, 1, 1, 30.0)
    assert (agents["3001"]["outbound_failed"], agents[None]["missed"]) == (1, 1)


async def test_department_statistics_keep_the_department_a_call_was_made_in(
        office: dict[str, Any], pool: asyncpg.Pool) -> None:
    t: Tenant = office["t"]
    # 1001 moves to support after its calls: they stay with sales; its next call is support's
    resp = await t.call("PATCH", f"/v1/departments/{office['support']}",
                        json={"extensions": ["2001", "1001"]})
    assert resp.status == 200 and (await resp.json())["extensions"] == ["1001", "2001"]
    await store_calls(pool, t, [{"at": "2026-02-10T01:00:00", "class": "incoming",
                                 "ext": "1001", "talk": 5}])
    depts = by(await stats(t, group_by="department"), "department_id")
    assert (depts[office["sales"]]["calls"], depts[office["sales"]]["department_name"]) == \
        (4, "영업")
    assert depts[office["support"]]["calls"] == 4 and depts[None]["calls"] == 2
    only = await stats(t, group_by="agent", department_id=office["sales"])
    assert {i["agent"]: i["calls"] for i in only["items"]} == {"1001": 3, "1002": 1}


async def test_per_number_statistics_use_the_tenants_own_number(office: dict[str, Any]) -> None:
    numbers = by(await stats(office["t"], group_by="number"), "number")
    assert {n: i["calls"] for n, i in numbers.items()} == {OURS: 7, BRANCH: 1, None: 1}


async def test_class_statistics_answer_every_class(office: dict[str, Any]) -> None:
    classes = by(await stats(office["t"], group_by="class"), "class")
    assert {c: i["calls"] for c, i in classes.items()} == {
        "busy_missed": 1, "ended_before_answer": 1, "incoming": 3, "missed": 2, "outgoing": 1,
        "outgoing_failed": 1}


async def test_two_groupings_fill_every_day_for_every_class(office: dict[str, Any]) -> None:
    body = await stats(office["t"], group_by="day,class")
    cells = by(body, "day", "class")
    assert len(cells) == 30 * 6 and body["group_by"] == ["day", "class"]
    assert cells[("2026-02-01", "incoming")]["calls"] == 1
    assert cells[("2026-02-01", "missed")]["calls"] == 1
    assert cells[("2026-03-01", "missed")]["calls"] == 1
    assert cells[("2026-02-02", "outgoing")]["calls"] == 0
    agent_month = by(await stats(office["t"], group_by="agent,month"), "agent", "month")
    assert agent_month[("1001", "2026-03")]["calls"] == 1
    assert agent_month[("1002", "2026-03")]["calls"] == 0


async def test_filters_narrow_the_statistics(office: dict[str, Any]) -> None:
    t: Tenant = office["t"]

    async def total(**params: str) -> int:
        return int((await stats(t, group_by="class", **params))["totals"]["calls"])

    assert await total(internal="false") == 8
    assert await total(hour_from="23", hour_to="0") == 4  # wraps past midnight
    assert await total(hour_from="10", hour_to="11") == 4
    assert await total(weekday="6") == 2
    assert await total(agent="2001") == 3
    assert await total(customer="010-1111-2222") == 4  # the default caller of incoming calls
    assert await total(number=BRANCH) == 1
    assert await total(**{"class": "missed"}) == 2
    assert await total(direction="outgoing") == 2
    hours = by(await stats(t, group_by="hour", hour_from="9", hour_to="12"), "hour")
    assert list(hours) == [9, 10, 11, 12]


async def test_statistics_refuse_periods_over_a_year_and_bad_groupings(
        office: dict[str, Any]) -> None:
    t: Tenant = office["t"]
    resp = await t.call("GET", "/v1/stats/calls",
                        params={"since": "2025-01-01", "until": "2026-03-01"})
    assert resp.status == 422 and (await resp.json())["code"] == "period_too_long"
    for bad in ("day,class,agent", "minute", "day,"):
        resp = await t.call("GET", "/v1/stats/calls", params={"group_by": bad, **PERIOD})
        assert resp.status == 400 and (await resp.json())["field"] == "group_by"


async def test_other_tenants_calls_are_not_counted(office: dict[str, Any]) -> None:
    body = await stats(office["other"], group_by="month")
    assert body["totals"]["calls"] == 3


async def test_call_records_take_the_same_filters(office: dict[str, Any]) -> None:
    t: Tenant = office["t"]

    async def cdrs(**params: str) -> list[dict[str, Any]]:
        resp = await t.call("GET", "/v1/cdrs", params=params)
        assert resp.status == 200, await resp.text()
        return list((await resp.json())["items"])

    assert len(await cdrs()) == 9
    assert len(await cdrs(since="2026-02-01", until="2026-02-01")) == 5  # one Korean day
    assert {r["extension"] for r in await cdrs(department_id=office["sales"])} == {"1001",
                                                                                 "1002"}
    assert [r["caller"] for r in await cdrs(customer="01077778888")] == ["01077778888"]
    assert len(await cdrs(hour_from="0", hour_to="0")) == 2
    assert len(await cdrs(weekday="7", internal="false")) == 6
    first = await cdrs(limit="4")
    resp = await t.call("GET", "/v1/cdrs", params={"limit": "4"})
    cursor = (await resp.json())["next_cursor"]
    rest = await cdrs(limit="10", cursor=cursor)
    assert len(first) + len(rest) == 9


async def test_call_record_exports_open_as_spreadsheets(office: dict[str, Any]) -> None:
    t: Tenant = office["t"]
    resp = await t.call("GET", "/v1/cdrs/export", params={"format": "xlsx", **PERIOD})
    assert resp.status == 200, await resp.text()
    wb = openpyxl.load_workbook(io.BytesIO(await resp.read()), read_only=True)
    rows = list(wb["calls"].iter_rows(values_only=True))
    assert rows[0][:6] == ("started_at", "id", "class", "direction", "internal", "agent")
    assert len(rows) == 10
    head = rows[0]
    first = dict(zip(head, rows[1], strict=True))
    assert (first["started_at"], first["agent"], first["agent_name"], first["department"],
            first["talk_seconds"]) == ("2026-01-31T23:59:30+09:00", "1001", "상담원 1001",
                                       "영업", 120)
    resp = await t.call("GET", "/v1/cdrs/export", params={"format": "csv", **PERIOD,
                                                          "internal": "false"})
    assert resp.headers["Content-Type"].startswith("text/csv")
    got = list(csv.DictReader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    assert len(got) == 8 and got[-1]["customer"] == "01099990000"


async def test_statistics_answers_export_as_spreadsheets(office: dict[str, Any]) -> None:
    t: Tenant = office["t"]
    resp = await t.call("GET", "/v1/stats/calls/export",
                        params={"format": "xlsx", "group_by": "agent,class", **PERIOD})
    assert resp.status == 200, await resp.text()
    wb = openpyxl.load_workbook(io.BytesIO(await resp.read()), read_only=True)
    rows = list(wb["statistics"].iter_rows(values_only=True))
    assert rows[0][:5] == ("agent", "agent_name", "class", "calls", "outgoing")
    assert len(rows) == 1 + 5 * 6
    cell = {(r[0], r[2]): r[3] for r in rows[1:]}
    assert cell[("1001", "incoming")] == 2 and cell[(None, "missed")] == 1
    resp = await t.call("GET", "/v1/stats/calls/export",
                        params={"format": "csv", "group_by": "hour", **PERIOD})
    got = list(csv.DictReader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    assert len(got) == 24 and got[23]["calls"] == "2"
