"""Tenant settings a portal sets itself (GET/PATCH /v1/tenant/settings, `telgate admin tenant
set`), and SP IDs with display names."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from tests.conftest import Api, Tenant


async def _patch(t: Tenant, body: dict[str, Any]) -> tuple[int, Any]:
    resp = await t.call("PATCH", "/v1/tenant/settings", json=body)
    return resp.status, await resp.json(content_type=None)


async def test_a_fresh_tenant_shows_the_defaults(api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("GET", "/v1/tenant/settings")
    assert await resp.json() == {
        "sms_max_bytes": 90, "optout_number": None, "ad_optout_line": None,
        "timezone": "Asia/Seoul", "business_hours": None, "did_business_hours": {},
        "callback_on": [], "recording_policy": "none",
        "default_rid": None, "mms_lms_fallback": False, "max_call_seconds": None,
        "api_requests_per_second": 2000.0,
        "key_requests_per_second": 2000.0, "recipients_per_second": 100_000.0,
        "daily_recipients": 5_000_000, "imports_per_minute": 60.0, "exports_per_minute": 60.0}


async def test_patch_changes_only_the_named_settings_and_is_audited(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    status, body = await _patch(t, {"optout_number": "080-123-4567"})
    assert status == 200
    # The ad line follows the number unless it is given.
    assert (body["optout_number"], body["ad_optout_line"]) == ("0801234567",
                                                               "무료거부 080-123-4567")
    status, body = await _patch(t, {"sms_max_bytes": 80, "recording_policy": "exclude_internal",
                                    "business_hours": {"days": ["mon", "fri"],
                                                       "opens": "09:00", "closes": "18:00"}})
    assert status == 200
    assert body["optout_number"] == "0801234567" and body["sms_max_bytes"] == 80
    assert body["business_hours"] == {"days": ["mon", "fri"], "opens": "09:00",
                                      "closes": "18:00", "hours_by_day": {}, "holidays": [],
                                      "closures": []}
    again = await (await t.call("GET", "/v1/tenant/settings")).json()
    assert again == body
    status, body = await _patch(t, {"business_hours": None})
    assert status == 200 and body["business_hours"] is None
    audited = await pool.fetch("SELECT details FROM audit_log WHERE tenant_id = $1 AND "
                               "action = 'tenant.settings' ORDER BY id", t.id)
    assert [sorted(r["details"]["changed"]) for r in audited] == [
        ["optout_number"], ["business_hours", "recording_policy", "sms_max_bytes"],
        ["business_hours"]]


_HOURS = {"days": ["mon", "tue", "wed", "thu", "fri"], "opens": "09:00", "closes": "18:00"}


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"sms_max_bytes": 85}, "invalid_field", "sms_max_bytes"),
    ({"sms_max_bytes": "80"}, "invalid_field", "sms_max_bytes"),
    ({"sms_max_bytes": None}, "invalid_setting", "sms_max_bytes"),
    ({"optout_number": "070-1234-5678"}, "invalid_field", "optout_number"),
    ({"ad_optout_line": "무료거부 080-999-9999"}, "invalid_setting", "ad_optout_line"),
    ({"timezone": "Mars/Olympus"}, "invalid_field", "timezone"),
    ({"recording_policy": "some"}, "invalid_field", "recording_policy"),
    ({"business_hours": {"days": ["mon"], "opens": "18:00", "closes": "09:00"}},
     "invalid_setting", "business_hours.closes"),
    ({"business_hours": {"days": ["mon"], "opens": "09:00", "closes": "24:01"}},
     "invalid_field", "business_hours.closes"),
    ({"business_hours": {"days": ["mon"], "opens": "24:00", "closes": "24:00"}},
     "invalid_field", "business_hours.opens"),
    ({"business_hours": {**_HOURS, "hours_by_day": {"sat": {"opens": "09:00",
                                                             "closes": "13:00"}}}},
     "invalid_setting", "business_hours.hours_by_day.sat"),
    ({"business_hours": {**_HOURS, "hours_by_day": {"mon": {"opens": "13:00",
                                                             "closes": "09:00"}}}},
     "invalid_setting", "business_hours.hours_by_day.mon.closes"),
    ({"business_hours": {**_HOURS, "hours_by_day": {"holiday": _HOURS}}},
     "invalid_field", "business_hours.hours_by_day.holiday"),
    ({"business_hours": {**_HOURS, "holidays": ["2026-02-30"]}},
     "invalid_field", "business_hours.holidays[0]"),
    ({"business_hours": {**_HOURS, "holidays": ["2026-01-01"] * 401}},
     "invalid_field", "business_hours.holidays"),
    ({"business_hours": {**_HOURS, "closures": [
        {"starts": "2026-05-01T00:00:00+09:00", "ends": "2026-05-02T00:00:00+09:00"},
        {"starts": "2026-05-05T09:00:00+09:00", "ends": "2026-05-05T00:00:00Z"}]}},
     "invalid_setting", "business_hours.closures[1].ends"),
    ({"business_hours": {**_HOURS, "closures": [{"starts": "2026-05-01T00:00:00",
                                                  "ends": "2026-05-02T00:00:00Z"}]}},
     "invalid_field", "business_hours.closures[0].starts"),
    ({"did_business_hours": {"02-1234-5678": {**_HOURS, "closes": "08:00"}}},
     "invalid_setting", "did_business_hours.0212345678.closes"),
    ({"did_business_hours": {"0212345678": _HOURS, "02-1234-5678": _HOURS}},
     "invalid_setting", "did_business_hours.02-1234-5678"),
    ({"did_business_hours": {f"02{n:08d}": _HOURS for n in range(101)}},
     "invalid_field", "did_business_hours"),
    ({"callback_on": ["closed", "busy"]}, "invalid_field", "callback_on[1]"),
    ({"default_rid": "02-1234-5678"}, "sender_not_registered", "default_rid"),
    ({"colour": "blue"}, "invalid_field", "colour"),
])
async def test_invalid_settings_answer_422_naming_the_field(
        api: Api, body: dict[str, Any], code: str, field: str) -> None:
    t = await api.new_tenant()
    status, problem = await _patch(t, body)
    assert (status, problem["code"], problem["field"]) == (422, code, field)
    unchanged = await (await t.call("GET", "/v1/tenant/settings")).json()
    assert unchanged["sms_max_bytes"] == 90 and unchanged["optout_number"] is None


async def test_business_hours_with_days_of_their_own_holidays_closures_and_did_hours(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    hours = {"days": ["mon", "tue", "wed", "thu", "fri", "sat"], "opens": "09:00",
             "closes": "18:00", "hours_by_day": {"sat": {"opens": "09:00", "closes": "13:00"}},
             "holidays": ["2026-12-25", "2026-01-01", "2026-12-25"],
             "closures": [{"starts": "2026-05-01T13:00:00+09:00",
                           "ends": "2026-05-01T09:00:00Z", "reason": "창립기념일"}]}
    status, body = await _patch(t, {
        "business_hours": hours, "callback_on": ["no_agent", "closed"],
        "did_business_hours": {"1588-1234": {"days": ["mon"], "opens": "00:00",
                                             "closes": "24:00"}}})
    assert status == 200, body
    assert body["business_hours"] == {**hours, "holidays": ["2026-01-01", "2026-12-25"],
                                      "closures": [{"starts": "2026-05-01T13:00:00+09:00",
                                                    "ends": "2026-05-01T09:00:00Z",
                                                    "reason": "창립기념일"}]}
    assert body["did_business_hours"] == {"15881234": {
        "days": ["mon"], "opens": "00:00", "closes": "24:00", "hours_by_day": {},
        "holidays": [], "closures": []}}
    assert body["callback_on"] == ["closed", "no_agent"]
    assert await (await t.call("GET", "/v1/tenant/settings")).json() == body
    # null puts the map and the list back to empty; the hours stay.
    status, body = await _patch(t, {"did_business_hours": None, "callback_on": None})
    assert (status, body["did_business_hours"], body["callback_on"]) == (200, {}, [])
    assert body["business_hours"]["hours_by_day"] == hours["hours_by_day"]
    # Hours stored before the new fields existed still read (no holidays, no closures).
    await pool.execute("UPDATE tenants SET settings = jsonb_set(settings, '{business_hours}', "
                       "'{\"days\": [\"mon\"], \"opens\": \"09:00\", \"closes\": "
                       "\"18:00\"}') WHERE id = $1", t.id)
    shown = (await (await t.call("GET", "/v1/tenant/settings")).json())["business_hours"]
    assert shown == {"days": ["mon"], "opens": "09:00", "closes": "18:00",
                     "hours_by_day": {}, "holidays": [], "closures": []}


async def test_default_rid_must_be_a_registered_sender_number(api: Api) -> None:
    t = await api.new_tenant()
    assert (await t.call("POST", "/v1/sender-numbers", json={"number": "1588-1234"})).status \
        == 201
    status, body = await _patch(t, {"default_rid": "1588-1234"})
    assert (status, body["default_rid"]) == (200, "15881234")


async def test_another_tenants_080_number_is_409(api: Api) -> None:
    a, b = await api.new_tenant(), await api.new_tenant()
    assert (await _patch(a, {"optout_number": "0801112222"}))[0] == 200
    status, problem = await _patch(b, {"optout_number": "080-111-2222"})
    assert (status, problem["code"], problem["field"]) == (409, "optout_number_taken",
                                                           "optout_number")


async def test_sms_max_bytes_80_sends_an_85_byte_text_as_lms(api: Api) -> None:
    t = await api.new_tenant()
    assert (await t.call("POST", "/v1/sender-numbers", json={"number": "0212345678"})).status \
        == 201
    text = "a" * 85

    async def kind() -> str:
        resp = await t.call("POST", "/v1/messages",
                            json={"from": "0212345678", "to": ["01011112222"], "text": text})
        assert resp.status == 202
        return str((await resp.json())["type"])

    assert await kind() == "sms"
    assert (await _patch(t, {"sms_max_bytes": 80}))[0] == 200
    assert await kind() == "lms"


async def test_admin_tenant_set_takes_the_same_names(api: Api, db_dsn: str) -> None:
    t = await api.new_tenant()
    env = {**os.environ, "TELGATE_DATABASE__DSN": f'"{db_dsn}"'}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", "admin", "tenant", "set", "--tenant",
             str(t.id), *args, "--json"], env=env, capture_output=True, text=True,
            timeout=120, check=False)

    done = await asyncio.to_thread(run, "sms_max_bytes=80", "optout_number=080-123-4567",
                                   "timezone=Asia/Seoul")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["settings"]
    assert (shown["sms_max_bytes"], shown["ad_optout_line"]) == (80, "무료거부 080-123-4567")
    over_api = await (await t.call("GET", "/v1/tenant/settings")).json()
    assert over_api == shown
    refused = await asyncio.to_thread(run, "sms_max_bytes=85")
    assert refused.returncode == 1 and "invalid_setting (sms_max_bytes)" in refused.stderr


async def test_sp_ids_have_display_names_and_paginate(api: Api) -> None:
    t = await api.new_tenant()
    for sp, name in (("sp-b", "나비상사"), ("sp-a", "가나물산"), ("sp-c", "")):
        resp = await t.call("POST", "/v1/sp-ids", json={"sp_id": sp, "name": name})
        assert resp.status == 201
    resp = await t.call("POST", "/v1/sp-ids", json={"sp_id": "sp-a"})
    assert (resp.status, (await resp.json())["code"]) == (409, "sp_id_exists")
    other = await api.new_tenant()
    resp = await other.call("POST", "/v1/sp-ids", json={"sp_id": "sp-a"})
    assert (resp.status, (await resp.json())["code"]) == (409, "sp_id_taken")
    resp = await t.call("PATCH", "/v1/sp-ids/sp-c", json={"name": "다라전자"})
    assert (resp.status, (await resp.json())["name"]) == (200, "다라전자")
    resp = await other.call("PATCH", "/v1/sp-ids/sp-c", json={"name": "x"})
    assert resp.status == 404
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await t.call("GET", "/v1/sp-ids", params=params)).json()
        seen += [(i["sp_id"], i["name"]) for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [("sp-a", "가나물산"), ("sp-b", "나비상사"), ("sp-c", "다라전자")]
