"""HTTP conformance of the control API: methods, media types, lists, and a document that lists
what each operation answers."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from handlers.errors import CODES
from tests.conftest import Api, Tenant


async def _json(resp: Any) -> Any:
    return await resp.json(content_type=None)


async def test_a_wrong_method_is_405_with_the_allow_of_that_path(api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("PUT", "/v1/templates")
    assert resp.status == 405 and (await _json(resp))["code"] == "method_not_allowed"
    assert resp.headers["Allow"] == "GET, HEAD, POST"
    # `check` is no {number}: DELETE there is not offered, though DELETE …/{number} exists.
    resp = await t.call("DELETE", "/v1/sender-numbers/check")
    assert (resp.status, resp.headers["Allow"]) == (405, "GET, HEAD")
    resp = await api.client.request("PATCH", "/healthz")
    assert (resp.status, resp.headers["Allow"]) == (405, "GET, HEAD")


async def test_head_answers_where_get_does_without_a_body(api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("HEAD", "/v1/tenant")
    assert resp.status == 200 and await resp.read() == b""
    assert (await api.client.head("/healthz")).status == 200
    assert (await api.client.head("/v1/tenant")).status == 401


async def test_a_body_in_another_media_type_is_415(api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("POST", "/v1/templates", data=b"name=x",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (resp.status, (await _json(resp))["code"]) == (415, "unsupported_media_type")
    resp = await t.call("POST", "/v1/sender-numbers/imports", json={"file": "x"})
    assert (resp.status, (await _json(resp))["code"]) == (415, "unsupported_media_type")


async def test_query_parameters_outside_their_schema_are_400_naming_them(api: Api) -> None:
    t = await api.new_tenant()
    for path, params, field in (
            ("/v1/templates", {"limit": "0"}, "limit"),
            ("/v1/webhooks", {"limit": "1001"}, "limit"),
            ("/v1/messages", {"cursor": "garbage"}, "cursor"),
            ("/v1/cdrs", {"until": ""}, "until"),
            ("/v1/messages", {"status": "lost"}, "status")):
        resp = await t.call("GET", path, params=params)
        problem = await _json(resp)
        assert (resp.status, problem["code"], problem["field"]) == (
            400, "invalid_parameter", field), (path, params)


async def _walk(t: Tenant, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        resp = await t.call("GET", path, params=params)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        assert len(page["items"]) <= 2
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_every_list_paginates_with_limit_and_cursor(api: Api) -> None:
    t = await api.new_tenant()
    for i in range(5):
        assert (await t.call("POST", "/v1/templates",
                             json={"name": f"t{i}", "text": "안녕 {고객명}"})).status == 201
        assert (await t.call("POST", "/v1/webhooks",
                             json={"url": f"https://h{i}.example/"})).status == 201
    async with api.context.pool.acquire() as conn:
        from handlers import tenants

        for _ in range(4):
            await tenants.create_key(conn, t.id, sp_id=None, label="", actor="test")
    templates = await _walk(t, "/v1/templates")
    assert sorted(x["name"] for x in templates) == [f"t{i}" for i in range(5)]
    webhooks = await _walk(t, "/v1/webhooks")
    assert len({x["id"] for x in webhooks}) == 5
    keys = await _walk(t, "/v1/api-keys")
    assert len({x["id"] for x in keys}) == 5


async def _sender(api: Api) -> Tenant:
    t = await api.new_tenant()
    assert (await t.call("POST", "/v1/sender-numbers", json={"number": "0212345678"})).status \
        == 201
    return t


async def _send(t: Tenant, **body: Any) -> dict[str, Any]:
    resp = await t.call("POST", "/v1/messages",
                        json={"from": "0212345678", "to": ["01011112222"], "text": "hi", **body})
    assert resp.status == 202, await resp.text()
    return dict(await resp.json())


async def test_status_scheduled_lists_the_waiting_sends(api: Api) -> None:
    t = await _sender(api)
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    waiting = await _send(t, send_at=later)
    await _send(t)
    canceled = await _send(t, send_at=later)
    assert (await t.call("POST", f"/v1/messages/{canceled['id']}/cancel")).status == 200
    page = await (await t.call("GET", "/v1/messages", params={"status": "scheduled"})).json()
    assert [m["id"] for m in page["items"]] == [waiting["id"]]
    page = await (await t.call("GET", "/v1/messages", params={"status": "canceled"})).json()
    assert [m["id"] for m in page["items"]] == [canceled["id"]]


async def test_claimed_recipients_show_as_queued(api: Api, pool: asyncpg.Pool) -> None:
    t = await _sender(api)
    sent = await _send(t)
    await pool.execute("UPDATE recipients SET state = 'claimed' WHERE message_id = $1::uuid",
                       sent["id"])
    message = await (await t.call("GET", f"/v1/messages/{sent['id']}")).json()
    assert "claimed" not in message["counts"] and message["counts"]["queued"] == 1
    page = await (await t.call("GET", f"/v1/messages/{sent['id']}/recipients",
                               params={"state": "queued"})).json()
    assert [r["state"] for r in page["items"]] == ["queued"]


async def test_test_sends_are_marked_and_left_out_of_statistics(api: Api) -> None:
    t = await _sender(api)
    await _send(t)
    probe = await _send(t, test=True)
    message = await (await t.call("GET", f"/v1/messages/{probe['id']}")).json()
    assert message["test"] is True
    stats = await (await t.call("GET", "/v1/stats/messages")).json()
    assert stats["totals"]["messages"] == 1
    export = await t.call("GET", "/v1/messages/export")
    rows = list(csv.DictReader(io.StringIO((await export.read()).decode("utf-8-sig"))))
    assert sorted(r["test"] for r in rows) == ["", "true"]


async def test_message_canceled_is_an_event_one_can_subscribe_to(api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("POST", "/v1/webhooks", json={"url": "https://h.example/",
                                                      "events": ["message.canceled"]})
    assert resp.status == 201 and (await resp.json())["events"] == ["message.canceled"]


async def test_a_short_text_with_a_subject_is_told_to_send_as_lms(api: Api) -> None:
    t = await _sender(api)
    resp = await t.call("POST", "/v1/messages", json={
        "from": "0212345678", "to": ["01011112222"], "text": "hi", "subject": "제목",
        "type": "sms"})
    problem = await resp.json()
    assert (resp.status, problem["code"]) == (422, "subject_not_allowed")
    assert '"type": "lms"' in problem["detail"]


async def test_reimporting_registered_numbers_is_idempotent_row_by_row(api: Api) -> None:
    t = await api.new_tenant()
    csv = "번호\n02-1234-5678\n1588-1234\n".encode()

    async def commit() -> Any:
        from aiohttp import FormData

        form = FormData()
        form.add_field("file", io.BytesIO(csv), filename="numbers.csv", content_type="text/csv")
        resp = await t.call("POST", "/v1/sender-numbers/imports", params={"dry_run": "false"},
                            data=form)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    first = await commit()
    assert (first["registered"], [r["status"] for r in first["rows"]]) == (2, ["ok", "ok"])
    again = await commit()
    assert again["registered"] == 0
    assert [r["status"] for r in again["rows"]] == ["already_registered"] * 2


async def test_the_document_lists_codes_and_media_types_per_operation(api: Api) -> None:
    doc = await (await api.client.get("/v1/openapi.json")).json()
    send = doc["paths"]["/v1/messages"]["post"]
    listed = {c for r in send["responses"].values() for c in r.get("x-error-codes", [])}
    assert {"sender_not_registered", "ad_optout_missing", "invalid_field",
            "unauthenticated"} <= listed
    assert all(CODES[c].status == int(s) for s, r in send["responses"].items()
               for c in r.get("x-error-codes", []))
    assert "application/problem+json" in send["responses"]["422"]["content"]
    export = doc["paths"]["/v1/sender-numbers/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"text/csv", "application/vnd.openxmlformats-officedocument."
                                       "spreadsheetml.sheet"}
    limit = next(p for p in doc["paths"]["/v1/templates"]["get"]["parameters"]
                 if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)
    settings = doc["components"]["schemas"]["SettingsPatch"]["properties"]
    assert {"enum": [80, 90], "type": "integer"} in settings["sms_max_bytes"]["anyOf"]


async def test_nul_characters_and_broken_multipart_are_refused_not_crashed(api: Api) -> None:
    t = await api.new_tenant()
    resp = await t.call("POST", "/v1/templates", json={"name": "a\u0000b", "text": "x"})
    assert (resp.status, (await _json(resp))["code"]) == (422, "forbidden_character")
    resp = await t.call("POST", "/v1/templates", json={"name": "a\\u0000b", "text": "x"})
    assert resp.status == 201  # the six characters \u0000, not a NUL
    resp = await t.call("POST", "/v1/sender-numbers/imports", data=b"--x\r\n",
                        headers={"Content-Type": "multipart/form-data"})
    assert (resp.status, (await _json(resp))["code"]) == (400, "malformed_multipart")


async def test_an_upload_with_an_unknown_form_field_is_refused_naming_it(api: Api) -> None:
    from aiohttp import FormData

    t = await api.new_tenant()
    form = FormData()
    form.add_field("file", b"01012345678\n", filename="n.csv", content_type="text/csv")
    form.add_field("colour", "blue")
    resp = await t.call("POST", "/v1/opt-outs/imports", data=form)
    problem = await _json(resp)
    assert (resp.status, problem["code"], problem["field"]) == (422, "invalid_field", "colour")
