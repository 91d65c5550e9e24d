"""Message statistics and history export through the control API, against real PostgreSQL
with message and recipient rows written as the dispatcher leaves them."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import openpyxl
import pytest

from handlers import tenants
from tests.conftest import Api, Tenant


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def insert_message(pool: asyncpg.Pool, t: Tenant, *, send_at: str, states: list[str],
                         type: str = "sms", sp_id: str | None = None,
                         sender: str = "0212345678", numbers: list[str] | None = None,
                         text: str = "안녕하세요") -> uuid.UUID:
    """A message and its recipients in the given states, as the dispatcher leaves them."""
    message_id = uuid.uuid4()
    when = utc(send_at)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO messages (id, tenant_id, sp_id, sender, type, text, send_at,
                                     recipient_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            message_id, t.id, sp_id, sender, type, text, when, len(states))
        for i, state in enumerate(states):
            number = numbers[i] if numbers else f"0109000{i:04d}"
            reached = state in ("submitted", "delivered", "expired") or (
                state == "failed" and i % 2 == 0)
            await conn.execute(
                """INSERT INTO recipients (message_id, idx, tenant_id, number, state,
                                           next_attempt_at, submitted_at, done_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                message_id, i, t.id, number, state, when, when if reached else None,
                when if state in ("delivered", "failed", "expired") else None)
    return message_id


@pytest.fixture
async def history(api: Api, pool: asyncpg.Pool) -> dict[str, Any]:
    """Two tenants' messages around the Korean midnight of 2026-11-23 and in October."""
    a = await api.new_tenant()
    b = await api.new_tenant()
    async with pool.acquire() as conn:
        for sp in ("SP1", "SP2"):
            await tenants.ensure_sp_id(conn, a.id, sp, actor="test")
    ids = {
        # 23:59:59 KST on the 22nd
        "late": await insert_message(pool, a, send_at="2026-11-22T14:59:59", sp_id="SP1",
                                     states=["delivered", "delivered", "failed"]),
        # 00:00:00 KST on the 23rd
        "midnight": await insert_message(pool, a, send_at="2026-11-22T15:00:00", sp_id="SP1",
                                         states=["delivered", "expired", "rejected"],
                                         numbers=["01011112222", "01033334444", "01055556666"]),
        "lms": await insert_message(pool, a, send_at="2026-11-23T01:00:00", type="lms",
                                    sp_id="SP2", sender="15881234",
                                    states=["submitted", "queued", "canceled", "claimed"]),
        "october": await insert_message(pool, a, send_at="2026-10-05T03:00:00",
                                        states=["delivered"]),
        "other": await insert_message(pool, b, send_at="2026-11-23T02:00:00",
                                      states=["delivered"] * 5),
    }
    return {"a": a, "b": b, "ids": ids}


NOV = {"since": "2026-11-01", "until": "2026-11-30"}


async def test_daily_stats_count_states_per_korean_day_type_and_sp(
        history: dict[str, Any]) -> None:
    a: Tenant = history["a"]
    resp = await a.call("GET", "/v1/stats/messages", params={"granularity": "day", **NOV})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    items = {(i["period"], i["type"], i["sp_id"]): i for i in body["items"] if i["recipients"]}
    assert list(items) == [("2026-11-22", "sms", "SP1"), ("2026-11-23", "lms", "SP2"),
                           ("2026-11-23", "sms", "SP1")]
    late = items[("2026-11-22", "sms", "SP1")]
    assert (late["messages"], late["recipients"], late["delivered"], late["not_delivered"]) == \
        (1, 3, 2, 1)
    midnight = items[("2026-11-23", "sms", "SP1")]
    assert midnight["states"] == {"queued": 0, "submitted": 0, "delivered": 1, "failed": 0,
                                  "expired": 1, "rejected": 1, "canceled": 0}
    assert midnight["sent"] == 2 and midnight["not_delivered"] == 2
    lms = items[("2026-11-23", "lms", "SP2")]
    assert lms["states"]["queued"] == 2  # claimed counts as queued
    assert lms["pending"] == 3 and lms["states"]["canceled"] == 1 and lms["sent"] == 1
    assert body["totals"]["recipients"] == 10 and body["totals"]["messages"] == 3
    assert body["time_zone"] == "Asia/Seoul"


async def test_monthly_stats_and_filters_by_type_and_sp(history: dict[str, Any]) -> None:
    a: Tenant = history["a"]
    body = await (await a.call("GET", "/v1/stats/messages", params={
        "granularity": "month", "since": "2026-10-01", "until": "2026-11-30",
        "type": "sms"})).json()
    got = [(i["period"], i["sp_id"], i["recipients"]) for i in body["items"]]
    assert got == [("2026-10", None, 1), ("2026-10", "SP1", 0),  # zero rows: every month
                   ("2026-11", None, 0), ("2026-11", "SP1", 6)]
    body = await (await a.call("GET", "/v1/stats/messages", params={
        "granularity": "month", "sp_id": "SP2", **NOV})).json()
    assert [(i["type"], i["recipients"]) for i in body["items"]] == [("lms", 4)]
    assert [i["period"] for i in body["items"]] == ["2026-11"]


async def test_key_narrowed_to_an_sp_sees_only_that_sp(
        api: Api, history: dict[str, Any]) -> None:
    a: Tenant = history["a"]
    async with api.context.pool.acquire() as conn:
        key, record = await tenants.create_key(conn, a.id, sp_id="SP2", label="", actor="test")
    sp2 = Tenant(a.id, a.name, key, record.id, api)
    body = await (await sp2.call("GET", "/v1/stats/messages", params=NOV)).json()
    assert {i["sp_id"] for i in body["items"]} == {"SP2"}
    resp = await sp2.call("GET", "/v1/stats/messages", params={"sp_id": "SP1", **NOV})
    assert resp.status == 404


async def test_periods_longer_than_a_year_are_refused_naming_since(
        history: dict[str, Any]) -> None:
    a: Tenant = history["a"]
    too_long = {"since": "2025-11-01", "until": "2026-11-30"}
    for path in ("/v1/stats/messages", "/v1/messages/export"):
        resp = await a.call("GET", path, params=too_long)
        problem = await resp.json()
        assert resp.status == 422 and problem["code"] == "period_too_long"
        assert problem["field"] == "since"
    resp = await a.call("GET", "/v1/messages/export",
                        params={"since": "2026-11-30", "until": "2026-11-01"})
    assert resp.status == 422 and (await resp.json())["field"] == "until"
    resp = await a.call("GET", "/v1/messages/export", params={"since": "yesterday"})
    # Not a time nor a date by the published schema: a malformed parameter.
    assert resp.status == 400 and (await resp.json())["field"] == "since"
    year = await a.call("GET", "/v1/stats/messages",
                        params={"since": "2025-12-01", "until": "2026-11-30"})
    assert year.status == 200


async def test_csv_export_has_one_row_per_recipient_in_korean_time(
        history: dict[str, Any]) -> None:
    a: Tenant = history["a"]
    resp = await a.call("GET", "/v1/messages/export", params={"format": "csv", **NOV})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    raw = await resp.read()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert len(rows) == 10
    first = rows[0]
    assert first["send_at"] == "2026-11-22T23:59:59+09:00"
    assert first["message_id"] == str(history["ids"]["late"])
    assert (first["type"], first["sp_id"], first["from"], first["state"]) == \
        ("sms", "SP1", "0212345678", "delivered")
    assert first["text"] == "안녕하세요"
    assert rows[3]["send_at"] == "2026-11-23T00:00:00+09:00"
    assert {r["state"] for r in rows if r["type"] == "lms"} == {"submitted", "queued",
                                                                "canceled"}


async def test_export_filters_by_type_sender_and_recipient(history: dict[str, Any]) -> None:
    a: Tenant = history["a"]

    async def export(**params: str) -> list[dict[str, str]]:
        resp = await a.call("GET", "/v1/messages/export", params={**NOV, **params})
        assert resp.status == 200, await resp.text()
        return list(csv.DictReader(io.StringIO((await resp.read()).decode("utf-8-sig"))))

    assert {r["type"] for r in await export(type="lms")} == {"lms"}
    assert len(await export(**{"from": "1588-1234"})) == 4
    one = await export(to="010-3333-4444")
    assert [(r["to"], r["state"]) for r in one] == [("01033334444", "expired")]
    resp = await a.call("GET", "/v1/messages/export", params={"to": "010-abc", **NOV})
    assert resp.status == 400 and (await resp.json())["field"] == "to"


async def test_xlsx_export_opens_with_the_same_rows(history: dict[str, Any]) -> None:
    a: Tenant = history["a"]
    resp = await a.call("GET", "/v1/messages/export", params={"format": "xlsx", **NOV})
    assert resp.status == 200
    wb = openpyxl.load_workbook(io.BytesIO(await resp.read()), read_only=True)
    rows = list(wb["messages"].iter_rows(values_only=True))
    assert rows[0][:6] == ("send_at", "message_id", "type", "sp_id", "from", "to")
    assert len(rows) == 11


async def test_other_tenants_messages_are_neither_counted_nor_exported(
        history: dict[str, Any]) -> None:
    b: Tenant = history["b"]
    body = await (await b.call("GET", "/v1/stats/messages", params=NOV)).json()
    assert body["totals"]["recipients"] == 5
    resp = await b.call("GET", "/v1/messages/export", params=NOV)
    rows = list(csv.DictReader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    assert {r["message_id"] for r in rows} == {str(history["ids"]["other"])}
