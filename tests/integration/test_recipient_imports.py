"""Recipient import from Excel (seed 002 §18-4) through the control API: sheet, name column,
phone column and first row chosen by the user; per-row problems reported."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import openpyxl
import pytest
import xlwt
from aiohttp.test_utils import TestClient, TestServer

from handlers.api.app import build_app
from handlers.api.context import AppContext
from handlers.api.framework import RouteTable
from handlers.metrics import Metrics
from tests.conftest import Api, Tenant, make_config

Sheets = dict[str, list[list[Any]]]


@pytest.fixture
async def api(pool: asyncpg.Pool, db_dsn: str, state_root: Path) -> AsyncIterator[Api]:
    """The control API with a 200 kB upload limit."""
    config = make_config(state_root, db_dsn, api__max_upload_bytes="200000")
    ctx = AppContext(config=config, pool=pool, metrics=Metrics(), routes=RouteTable(),
                     version="test")
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    try:
        yield Api(client, ctx)
    finally:
        await client.close()


def make_xlsx(sheets: Sheets) -> bytes:
    wb = openpyxl.Workbook()
    first = wb.active
    assert first is not None
    wb.remove(first)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r, row in enumerate(rows, start=1):
            for c, value in enumerate(row, start=1):
                if value is not None:
                    ws.cell(r, c, value)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def make_xls(sheets: Sheets) -> bytes:
    book = xlwt.Workbook(encoding="utf-8")
    for name, rows in sheets.items():
        ws = book.add_sheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value is not None:
                    ws.write(r, c, value)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def make_csv(sheets: Sheets) -> bytes:
    [rows] = sheets.values()
    buf = io.StringIO()
    csv.writer(buf).writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue().encode("cp949")  # as Korean Excel saves it


CUSTOMERS: list[list[Any]] = [
    ["고객 목록", None, None],
    ["번호", "고객명", "휴대폰"],
    [1, "김민수", "010-1234-5678"],
    [2, "이영희", "01023456789"],
    [3, "박철수", 1034567890],          # typed as a number: Excel dropped the 0
    [4, "최지우", "02-123-4567"],       # a landline cannot receive SMS
    [5, "정하늘", "010-1234-5678"],     # same number as row 3
    [6, "한가람", "전화없음"],
    [7, "오세훈", None],
    [None, None, None],
    [8, "윤서연", "+82 10-4567-8901"],
]


async def upload(t: Tenant, data: bytes, **fields: str) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="customers.bin")  # the name must not matter
    for k, v in fields.items():
        form.add_field(k, v)
    return await t.call("POST", "/v1/recipient-imports", data=form)


@pytest.mark.parametrize("fmt", ["xlsx", "xls", "csv"])
async def test_import_maps_name_and_phone_columns_from_the_first_row(api: Api, fmt: str) -> None:
    t = await api.new_tenant()
    maker = {"xlsx": make_xlsx, "xls": make_xls, "csv": make_csv}[fmt]
    resp = await upload(t, maker({"고객": CUSTOMERS}), name_column="B", phone_column="C",
                        first_row="3")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["recipients"] == [
        {"row": 3, "name": "김민수", "number": "01012345678"},
        {"row": 4, "name": "이영희", "number": "01023456789"},
        {"row": 5, "name": "박철수", "number": "01034567890"},
        {"row": 11, "name": "윤서연", "number": "01045678901"},
    ]
    problems = {p["row"]: p for p in body["problems"]}
    assert sorted(problems) == [6, 7, 8, 9]
    assert problems[6]["code"] == "not_mobile" and problems[6]["input"] == "02-123-4567"
    assert problems[7]["code"] == "duplicate" and problems[7]["duplicate_of"] == 3
    assert problems[7]["name"] == "정하늘"
    assert problems[8]["code"] == "not_digits"
    assert problems[9]["code"] == "missing_number"
    assert body["counts"] == {"recipients": 4, "invalid": 3, "duplicates": 1, "blank_rows": 1}


async def test_import_reads_the_chosen_sheet_and_lists_all_sheets(api: Api) -> None:
    t = await api.new_tenant()
    data = make_xlsx({"안내": [["이 시트는 설명입니다"]],
                      "VIP": [["이름", "전화"], ["김VIP", "010-9999-0000"]]})
    body = await (await upload(t, data, sheet="VIP", name_column="1", phone_column="2",
                               first_row="2")).json()
    assert body["sheet"] == "VIP" and body["sheets"] == ["안내", "VIP"]
    assert body["recipients"] == [{"row": 2, "name": "김VIP", "number": "01099990000"}]
    by_position = await (await upload(t, data, sheet="2", name_column="A", phone_column="B",
                                      first_row="2")).json()
    assert by_position["sheet"] == "VIP"


async def test_import_without_name_column_defaults_to_phone_in_column_a(api: Api) -> None:
    t = await api.new_tenant()
    data = make_xls({"Sheet1": [["010-1111-2222"], [1022223333]]})
    body = await (await upload(t, data)).json()
    assert body["recipients"] == [{"row": 1, "name": None, "number": "01011112222"},
                                  {"row": 2, "name": None, "number": "01022223333"}]


async def test_unknown_sheet_is_refused_naming_the_sheets(api: Api) -> None:
    t = await api.new_tenant()
    resp = await upload(t, make_xlsx({"고객": CUSTOMERS}), sheet="없는시트")
    problem = await resp.json()
    assert resp.status == 422 and problem["code"] == "bad_sheet"
    assert problem["field"] == "sheet" and "고객" in problem["detail"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"phone_column": "C3"}, "phone_column"),
    ({"phone_column": "0"}, "phone_column"),
    ({"name_column": "B", "phone_column": "b"}, "name_column"),
    ({"first_row": "0"}, "first_row"),
    ({"first_row": "two"}, "first_row"),
])
async def test_bad_mapping_is_refused_naming_the_field(
        api: Api, fields: dict[str, str], field: str) -> None:
    t = await api.new_tenant()
    resp = await upload(t, make_csv({"s": [["01012345678"]]}), **fields)
    assert resp.status == 422
    assert (await resp.json())["field"] == field


async def test_oversized_or_foreign_uploads_are_refused(api: Api) -> None:
    t = await api.new_tenant()
    resp = await upload(t, b"x" * 300_000)
    assert resp.status == 413 and (await resp.json())["code"] == "body_too_large"
    resp = await upload(t, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert resp.status == 422 and (await resp.json())["code"] == "unsupported_type"
    anonymous = await api.client.post("/v1/recipient-imports", data=b"")
    assert anonymous.status == 401
