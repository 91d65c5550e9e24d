"""The customer directory (/v1/customers): names stored per number and tenant, replaced,
listed page by page with prefix filters, deleted; numbers checked like every number; names
never logged."""

from __future__ import annotations

from structlog.testing import capture_logs

from daemon.logs import scrub_processor
from handlers.api.scopes import Scope
from tests.conftest import Api
from tests.integration.test_key_scopes import key_of


async def test_a_customer_is_named_by_number_typed_with_hyphens_and_replaced_by_a_second_put(
        api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("PUT", "/v1/customers/010-1234-5678", json={"name": " 홍길동 "})
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert (made["number"], made["name"]) == ("01012345678", "홍길동")
    resp = await t.call("PUT", "/v1/customers/01012345678", json={"name": "홍길순"})
    assert resp.status == 200
    shown = await (await t.call("GET", "/v1/customers/010-1234-5678")).json()
    assert (shown["number"], shown["name"]) == ("01012345678", "홍길순")
    assert shown["updated_at"] >= made["updated_at"]
    assert (await t.call("DELETE", "/v1/customers/010-1234-5678")).status == 204
    assert (await t.call("GET", "/v1/customers/01012345678")).status == 404
    assert (await t.call("DELETE", "/v1/customers/01012345678")).status == 404


async def test_bad_numbers_and_names_are_refused_naming_the_field(api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("PUT", "/v1/customers/010-12", json={"name": "홍길동"})
    problem = await resp.json()
    assert (resp.status, problem["code"], problem["field"]) == (422, "too_short", "number")
    resp = await t.call("PUT", "/v1/customers/+1-202-555-0100", json={"name": "홍길동"})
    problem = await resp.json()
    assert (resp.status, problem["code"], problem["field"]) == (422, "international", "number")
    # Not phone-like at all: the path names no customer, like any path outside its pattern.
    resp = await t.call("PUT", "/v1/customers/abc", json={"name": "홍길동"})
    assert (resp.status, (await resp.json())["code"]) == (404, "not_found")
    for name, code in (("   ", "invalid_name"), ("가" * 101, "invalid_field"),
                       ("", "invalid_field")):
        resp = await t.call("PUT", "/v1/customers/01012345678", json={"name": name})
        problem = await resp.json()
        assert (resp.status, problem["code"], problem["field"]) == (422, code, "name")
    resp = await t.call("PUT", "/v1/customers/01012345678", json={"name": "가" * 100})
    assert resp.status == 201


async def test_customers_are_listed_by_number_page_by_page_with_prefix_filters(
        api: Api) -> None:
    t = await api.new_tenant()
    people = {"01011110001": "김민수", "01011110002": "김민지", "01022220003": "이영희",
              "0212345678": "박상사"}
    for number, name in people.items():
        assert (await t.call("PUT", f"/v1/customers/{number}", json={"name": name})).status == 201
    page = await (await t.call("GET", "/v1/customers", params={"limit": "3"})).json()
    rest = await (await t.call("GET", "/v1/customers",
                               params={"limit": "3", "cursor": page["next_cursor"]})).json()
    assert [c["number"] for c in page["items"] + rest["items"]] == sorted(people)
    assert rest["next_cursor"] is None
    kims = await (await t.call("GET", "/v1/customers", params={"name": "김민"})).json()
    assert [c["name"] for c in kims["items"]] == ["김민수", "김민지"]
    by_number = await (await t.call("GET", "/v1/customers", params={"number": "010-1111"})).json()
    assert [c["number"] for c in by_number["items"]] == ["01011110001", "01011110002"]
    both = await (await t.call("GET", "/v1/customers",
                               params={"name": "김", "number": "0102"})).json()
    assert both["items"] == []


async def test_another_tenants_customer_is_not_found(api: Api) -> None:
    t = await api.new_tenant()
    other = await api.new_tenant()
    await t.call("PUT", "/v1/customers/01012345678", json={"name": "홍길동"})
    assert (await other.call("GET", "/v1/customers/01012345678")).status == 404
    assert (await other.call("DELETE", "/v1/customers/01012345678")).status == 404
    listed = await (await other.call("GET", "/v1/customers")).json()
    assert listed["items"] == []
    resp = await other.call("PUT", "/v1/customers/01012345678", json={"name": "임꺽정"})
    assert resp.status == 201  # its own entry for the same number
    mine = await (await t.call("GET", "/v1/customers/01012345678")).json()
    assert mine["name"] == "홍길동"


async def test_a_read_key_can_look_customers_up_but_not_change_them(api: Api) -> None:
    t = await api.new_tenant()
    await t.call("PUT", "/v1/customers/01012345678", json={"name": "홍길동"})
    read = await key_of(api, t, Scope.READ)
    got = await api.client.get("/v1/customers/01012345678", headers=read)
    assert got.status == 200
    assert (await api.client.get("/v1/customers", headers=read)).status == 200
    for method in ("PUT", "DELETE"):
        resp = await api.client.request(method, "/v1/customers/01012345678", headers=read,
                                        json={"name": "임꺽정"})
        assert resp.status == 403 and (await resp.json())["code"] == "missing_scope"


async def test_logs_mask_the_number_and_never_carry_the_name(api: Api) -> None:
    t = await api.new_tenant()
    with capture_logs() as logs:
        await t.call("PUT", "/v1/customers/01012345678", json={"name": "홍길동"})
        await t.call("DELETE", "/v1/customers/01012345678")
    mine = [e for e in logs if e["event"] in ("customer_saved", "customer_deleted")]
    assert [e["number"] for e in mine] == ["010****5678", "010****5678"]
    assert not any("홍길동" in str(e) for e in logs)
    # The access log's path is masked on the way out, like every number in every field.
    assert not any("01012345678" in str(scrub_processor(None, "info", dict(e))) for e in logs)
