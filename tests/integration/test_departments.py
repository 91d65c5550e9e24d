"""Departments: created, listed page by page, renamed, members moved between them, deleted;
another tenant's are not found."""

from __future__ import annotations

import asyncpg

from handlers import tenants
from tests.conftest import Api


async def test_departments_hold_extensions_and_sp_ids_one_department_each(
        api: Api, pool: asyncpg.Pool) -> None:
    t = await api.new_tenant()
    for ext in ("1001", "1002"):
        await t.call("POST", "/v1/extensions", json={"extension": ext,
                                                     "password": "secret-pass-1"})
    async with pool.acquire() as conn:
        await tenants.ensure_sp_id(conn, t.id, "SP1", actor="test")
    resp = await t.call("POST", "/v1/departments", json={
        "name": "영업", "extensions": ["1002", "1001"], "sp_ids": ["SP1"]})
    assert resp.status == 201, await resp.text()
    sales = await resp.json()
    assert (sales["extensions"], sales["sp_ids"]) == (["1001", "1002"], ["SP1"])
    support = await (await t.call("POST", "/v1/departments", json={
        "name": "지원", "extensions": ["1002"]})).json()
    shown = await (await t.call("GET", f"/v1/departments/{sales['id']}")).json()
    assert shown["extensions"] == ["1001"]  # 1002 moved to support
    renamed = await (await t.call("PATCH", f"/v1/departments/{sales['id']}",
                                  json={"name": "영업1팀"})).json()
    assert (renamed["name"], renamed["extensions"], renamed["sp_ids"]) == \
        ("영업1팀", ["1001"], ["SP1"])
    assert (await t.call("DELETE", f"/v1/departments/{support['id']}")).status == 204
    assert (await t.call("GET", f"/v1/departments/{support['id']}")).status == 404
    async with pool.acquire() as conn:
        left = await conn.fetchval("SELECT department_id FROM extensions WHERE tenant_id = $1 "
                                   "AND extension = '1002'", t.id)
    assert left is None


async def test_unknown_members_and_duplicate_names_are_refused(api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("POST", "/v1/departments", json={"name": "영업", "extensions": ["9"]})
    problem = await resp.json()
    assert (resp.status, problem["code"], problem["field"]) == (422, "unknown_member",
                                                                "extensions[0]")
    assert (await t.call("POST", "/v1/departments", json={"name": "영업"})).status == 201
    resp = await t.call("POST", "/v1/departments", json={"name": "영업"})
    assert resp.status == 409 and (await resp.json())["code"] == "department_exists"
    resp = await t.call("POST", "/v1/departments", json={"name": "지원", "sp_ids": ["NOPE"]})
    assert (await resp.json())["field"] == "sp_ids[0]"


async def test_departments_are_listed_page_by_page_and_private_to_the_tenant(api: Api) -> None:
    t = await api.new_tenant()
    other = await api.new_tenant()
    ids = [(await (await t.call("POST", "/v1/departments", json={"name": f"팀{i}"})).json())["id"]
           for i in range(3)]
    page = await (await t.call("GET", "/v1/departments", params={"limit": "2"})).json()
    rest = await (await t.call("GET", "/v1/departments",
                               params={"cursor": page["next_cursor"]})).json()
    assert [d["id"] for d in page["items"] + rest["items"]] == ids
    assert rest["next_cursor"] is None
    assert (await other.call("GET", f"/v1/departments/{ids[0]}")).status == 404
    assert (await other.call("DELETE", f"/v1/departments/{ids[0]}")).status == 404
    assert (await (await other.call("GET", "/v1/departments")).json())["items"] == []
