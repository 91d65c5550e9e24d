"""Sender-number registry and opt-out list through the control API, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import zipfile
from typing import Any

import aiohttp
import openpyxl
import pytest
import xlwt

from handlers.registry.index import IndexFollower, NumberIndex
from tests.conftest import Api, Tenant


def make_xls(rows: list[list[Any]]) -> bytes:
    book = xlwt.Workbook(encoding="utf-8")
    sheet = book.add_sheet("Sheet1")
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            sheet.write(r, c, value)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def make_xlsx(rows: list[list[Any]]) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    for row in rows:
        ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def make_csv(rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode("cp949")  # as Korean Excel saves it


MAKERS = {"xls": make_xls, "xlsx": make_xlsx, "csv": make_csv}


async def upload(t: Tenant, path: str, data: bytes, **query: str) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="numbers.bin")  # the name must not matter
    return await t.call("POST", path, data=form, params=query)


async def registered(t: Tenant) -> list[str]:
    body = await (await t.call("GET", "/v1/sender-numbers", params={"sort": "number",
                                                                    "order": "asc"})).json()
    return [i["number"] for i in body["items"]]


@pytest.mark.parametrize("raw", ["010-1234-5678", "01012345678", "+82 10 1234 5678",
                                 " 010 1234 5678 ", "010.1234.5678"])
async def test_seed_input_forms_register_one_canonical_number(api: Api, raw: str) -> None:
    t = await api.new_tenant()
    resp = await t.call("POST", "/v1/sender-numbers", json={"number": raw})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["number"] == "01012345678"
    again = await t.call("POST", "/v1/sender-numbers", json={"number": "01012345678"})
    assert again.status == 409
    assert (await again.json(content_type=None))["code"] == "already_registered"


@pytest.mark.parametrize(("raw", "code"), [("05012345678", None), ("112", None),
                                           ("1588123", None), ("hello", None)])
async def test_numbers_breaking_the_rules_are_refused_with_a_reason(api: Api, raw: str,
                                                                    code: None) -> None:
    t = await api.new_tenant()
    resp = await t.call("POST", "/v1/sender-numbers", json={"number": raw})
    body = await resp.json(content_type=None)
    assert resp.status == 422 and body["field"] == "number"
    assert body["code"] and body["code"] != "internal_error"
    assert await registered(t) == []


async def test_quota_is_reported_and_enforced(api: Api) -> None:
    t = await api.new_tenant()
    await api.context.pool.execute("UPDATE tenants SET sender_quota = 2 WHERE id = $1", t.id)
    for n in ("0212345678", "0311234567"):
        assert (await t.call("POST", "/v1/sender-numbers", json={"number": n})).status == 201
    resp = await t.call("POST", "/v1/sender-numbers", json={"number": "01012345678"})
    body = await resp.json(content_type=None)
    assert (resp.status, body["code"], body["used"], body["limit"]) == (422, "quota_exceeded", 2, 2)
    assert await (await t.call("GET", "/v1/sender-numbers/quota")).json() == {"used": 2, "limit": 2}


async def test_concurrent_registrations_never_exceed_the_quota(api: Api) -> None:
    t = await api.new_tenant()
    await api.context.pool.execute("UPDATE tenants SET sender_quota = 5 WHERE id = $1", t.id)
    numbers = [f"0101234{i:04d}" for i in range(40)]
    resps = await asyncio.gather(*(t.call("POST", "/v1/sender-numbers", json={"number": n})
                                   for n in numbers))
    statuses = sorted(r.status for r in resps)
    assert statuses.count(201) == 5 and statuses.count(422) == 35
    assert len(await registered(t)) == 5


async def test_list_searches_sorts_and_pages(api: Api) -> None:
    t = await api.new_tenant()
    await api.context.pool.execute("UPDATE tenants SET sender_quota = 100 WHERE id = $1", t.id)
    nums = [f"0105555{i:04d}" for i in range(7)] + ["0212345678"]
    for n in nums:
        await t.call("POST", "/v1/sender-numbers", json={"number": n})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", "sort": "registered_at", "order": "desc"}
        if cursor:
            params["cursor"] = cursor
        page = await (await t.call("GET", "/v1/sender-numbers", params=params)).json()
        seen += [i["number"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(nums))
    found = await (await t.call("GET", "/v1/sender-numbers", params={"q": "5555-000"})).json()
    assert sorted(i["number"] for i in found["items"]) == [f"0105555000{i}" for i in range(7)]
    bad = await t.call("GET", "/v1/sender-numbers", params={"cursor": "garbage!"})
    assert bad.status == 400 and (await bad.json(content_type=None))["field"] == "cursor"


async def test_select_and_delete_and_delete_one(api: Api) -> None:
    t = await api.new_tenant()
    for n in ("0212345678", "0311234567", "01012345678"):
        await t.call("POST", "/v1/sender-numbers", json={"number": n})
    resp = await t.call("POST", "/v1/sender-numbers/delete",
                        json={"numbers": ["02-1234-5678", "031-123-4567", "01099999999"]})
    assert await resp.json() == {"deleted": 2}
    assert (await t.call("DELETE", "/v1/sender-numbers/010-1234-5678")).status == 204
    assert (await t.call("DELETE", "/v1/sender-numbers/01012345678")).status == 404
    assert await registered(t) == []
    trail = await api.context.pool.fetch(
        "SELECT action, subject FROM audit_log WHERE tenant_id = $1 ORDER BY id", t.id)
    assert [r["action"] for r in trail].count("sender_number.delete") == 3


@pytest.mark.parametrize("fmt", ["xls", "xlsx", "csv"])
async def test_bulk_dry_run_then_commit_and_skip_invalid(api: Api, fmt: str) -> None:
    t = await api.new_tenant()
    await api.context.pool.execute("UPDATE tenants SET sender_quota = 4 WHERE id = $1", t.id)
    await t.call("POST", "/v1/sender-numbers", json={"number": "0311234567"})
    rows = [["발신번호"], ["010-1111-2222"], ["0212345678"], ["05012345678"], ["01011112222"],
            ["031-123-4567"], ["0221234567"], ["0222345678"]]
    data = MAKERS[fmt](rows)

    dry = await (await upload(t, "/v1/sender-numbers/imports", data)).json()
    statuses = [(r["row"], r["status"]) for r in dry["rows"]]
    assert statuses == [(2, "ok"), (3, "ok"), (4, "invalid"), (5, "duplicate_in_file"),
                        (6, "already_registered"), (7, "ok"), (8, "over_quota")]
    assert dry["rows"][2]["reason"] and dry["registered"] == 0
    assert await registered(t) == ["0311234567"]

    resp = await upload(t, "/v1/sender-numbers/imports", data, dry_run="false")
    body = await resp.json(content_type=None)
    assert resp.status == 422 and body["code"] == "import_has_errors" and len(body["rows"]) == 7
    assert await registered(t) == ["0311234567"]  # all or nothing

    done = await (await upload(t, "/v1/sender-numbers/imports", data, dry_run="false",
                               skip_invalid="true")).json()
    assert done["registered"] == 3
    assert await registered(t) == ["01011112222", "0212345678", "0221234567", "0311234567"]


async def test_a_clean_file_commits_everything(api: Api) -> None:
    t = await api.new_tenant()
    # The seed's case: numbers typed into Excel as numbers lose their leading zero.
    data = make_xls([["0212345678"], ["01011112222"], [1032940189], [212345679]])
    body = await (await upload(t, "/v1/sender-numbers/imports", data, dry_run="false")).json()
    assert body["registered"] == 4 and {r["status"] for r in body["rows"]} == {"ok"}
    assert "01032940189" in await registered(t) and "0212345679" in await registered(t)


async def test_oversized_zip_bomb_and_wrong_type_uploads_register_nothing(api: Api) -> None:
    t = await api.new_tenant()
    big = b"0101234567\n" * (api.context.config.api.max_upload_bytes // 11 + 10)
    resp = await upload(t, "/v1/sender-numbers/imports", big, dry_run="false")
    assert resp.status == 413

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr("xl/worksheets/sheet1.xml", b"0" * 200_000_000)  # ~200 KB compressed
    started = time.monotonic()
    resp = await upload(t, "/v1/sender-numbers/imports", bomb.getvalue(), dry_run="false")
    assert resp.status == 413
    assert time.monotonic() - started < 5  # refused from the zip directory, never inflated

    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    resp = await upload(t, "/v1/sender-numbers/imports", png, dry_run="false")
    # The request (multipart) is fine; the file in it is not a spreadsheet.
    assert resp.status == 422
    assert (await resp.json(content_type=None))["field"] == "file"
    assert await registered(t) == []


async def test_export_csv_and_xlsx_list_the_numbers(api: Api) -> None:
    t = await api.new_tenant()
    await t.call("POST", "/v1/sender-numbers", json={"number": "0212345678"})
    text = await (await t.call("GET", "/v1/sender-numbers/export",
                               params={"format": "csv"})).text()
    assert text.lstrip("\ufeff").splitlines()[1].startswith("0212345678,")
    raw = await (await t.call("GET", "/v1/sender-numbers/export",
                              params={"format": "xlsx"})).read()
    ws = openpyxl.load_workbook(io.BytesIO(raw)).active
    assert ws is not None and ws["A2"].value == "0212345678"


async def test_every_registry_route_is_scoped_to_the_tenant(api: Api) -> None:
    a = await api.new_tenant(sp_id="a-sp")
    b = await api.new_tenant(sp_id="b-sp")
    await a.call("POST", "/v1/sender-numbers", json={"number": "0212345678"})
    await a.call("POST", "/v1/opt-outs", json={"number": "01099998888"})
    assert await registered(b) == []
    assert (await b.call("DELETE", "/v1/sender-numbers/0212345678")).status == 404
    assert await (await b.call("POST", "/v1/sender-numbers/delete",
                               json={"numbers": ["0212345678"]})).json() == {"deleted": 0}
    assert (await b.call("DELETE", "/v1/opt-outs/01099998888")).status == 404
    assert (await (await b.call("GET", "/v1/opt-outs")).json())["items"] == []
    assert (await (await b.call("GET", "/v1/sender-numbers/quota")).json())["used"] == 0
    check = await (await b.call("GET", "/v1/sender-numbers/check",
                                params={"number": "0212345678"})).json()
    assert check["allowed"] is False
    export = await (await b.call("GET", "/v1/sender-numbers/export")).text()
    assert "0212345678" not in export
    sp = await (await b.call("GET", "/v1/sp-ids")).json()
    assert [i["sp_id"] for i in sp["items"]] == ["b-sp"]
    assert await registered(a) == ["0212345678"]


async def test_a_second_instance_sees_changes_within_a_second(api: Api, db_dsn: str) -> None:
    other = NumberIndex()
    follower = IndexFollower(db_dsn, other)
    await follower.start()
    try:
        t = await api.new_tenant()
        for action in ("register", "delete"):
            if action == "register":
                await t.call("POST", "/v1/sender-numbers", json={"number": "0212345678"})
            else:
                await t.call("DELETE", "/v1/sender-numbers/0212345678")
            want = action == "register"
            deadline = time.monotonic() + 1.0
            while other.may_send(t.id, "0212345678") != want:
                assert time.monotonic() < deadline, f"{action} not seen within 1 s"
                await asyncio.sleep(0.01)
        # A large import arrives as a reload request, not a list of numbers.
        await api.context.pool.execute("UPDATE tenants SET sender_quota = 1000 WHERE id = $1",
                                       t.id)
        data = make_csv([[f"0101234{i:04d}"] for i in range(300)])
        await upload(t, "/v1/sender-numbers/imports", data, dry_run="false")
        deadline = time.monotonic() + 1.0
        while len(other.senders.get(t.id, ())) != 300:
            assert time.monotonic() < deadline, "import not seen within 1 s"
            await asyncio.sleep(0.01)
    finally:
        await follower.stop()


async def test_follower_reloads_everything_after_losing_its_connection(
        api: Api, db_dsn: str) -> None:
    other = NumberIndex()
    follower = IndexFollower(db_dsn, other, max_backoff=0.2)
    await follower.start()
    try:
        t = await api.new_tenant()
        await api.context.pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()")
        # Registered while the follower is disconnected: the notification is lost for it.
        await t.call("POST", "/v1/sender-numbers", json={"number": "0212345678"})
        deadline = time.monotonic() + 5
        while not other.may_send(t.id, "0212345678"):
            assert time.monotonic() < deadline, "no reload after reconnect"
            await asyncio.sleep(0.02)
    finally:
        await follower.stop()


async def test_opt_out_scope_all_blocks_everything_ad_only_advertising(api: Api) -> None:
    t = await api.new_tenant()
    idx = api.context.index
    resp = await t.call("POST", "/v1/opt-outs", json={"number": "010-9999-8888"})
    assert resp.status == 201
    assert (await t.call("POST", "/v1/opt-outs", json={"number": "01099998888"})).status == 200
    assert idx.is_opted_out(t.id, "01099998888", advertising=False)
    assert idx.is_opted_out(t.id, "01099998888", advertising=True)
    resp = await t.call("PUT", "/v1/opt-outs/settings", json={"scope": "ad"})
    assert await resp.json() == {"scope": "ad"}
    assert not idx.is_opted_out(t.id, "01099998888", advertising=False)
    assert idx.is_opted_out(t.id, "01099998888", advertising=True)
    check = await (await t.call("GET", "/v1/opt-outs/check",
                                params={"number": "010-9999-8888", "ad": "true"})).json()
    assert check["blocked"] is True
    bad = await t.call("PUT", "/v1/opt-outs/settings", json={"scope": "some"})
    assert (await bad.json(content_type=None))["field"] == "scope"
    assert (await t.call("DELETE", "/v1/opt-outs/010-9999-8888")).status == 204
    assert not idx.is_opted_out(t.id, "01099998888", advertising=True)


async def test_opt_out_bulk_import_and_mo_hook(api: Api) -> None:
    from handlers.registry import optouts

    t = await api.new_tenant()
    data = make_xlsx([["번호"], ["010-1111-2222"], ["nope"], ["01033334444"]])
    dry = await (await upload(t, "/v1/opt-outs/imports", data)).json()
    assert [r["status"] for r in dry["rows"]] == ["ok", "invalid", "ok"]
    done = await (await upload(t, "/v1/opt-outs/imports", data, dry_run="false",
                               skip_invalid="true")).json()
    assert done["added"] == 2
    async with api.context.pool.acquire() as conn:
        assert await optouts.add_from_mo(conn, t.id, "01055556666") is True
        assert await optouts.add_from_mo(conn, t.id, "01055556666") is False
    listed = await (await t.call("GET", "/v1/opt-outs", params={"sort": "number",
                                                                "order": "asc"})).json()
    assert [(i["number"], i["source"]) for i in listed["items"]] == [
        ("01011112222", "import"), ("01033334444", "import"), ("01055556666", "mo_080")]
