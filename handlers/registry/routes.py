"""Control API routes of the sender-number registry and the opt-out list (DESIGN.md §9)."""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import openpyxl
from aiohttp import web

from handlers import numbers, spreadsheets
from handlers.api.context import CTX
from handlers.api.framework import (
    JsonSchema,
    Param,
    Route,
    RouteTable,
    json_response,
    principal,
    query_bool,
    query_choice,
    query_int,
    read_json,
    read_upload,
)
from handlers.errors import DomainError
from handlers.registry import optouts, senders
from handlers.registry.senders import ImportRefused, ImportRow, SortKey, column_a

UPLOAD_LIMITS = spreadsheets.Limits()


def _row_json(r: ImportRow) -> dict[str, object]:
    return {"row": r.row, "input": r.input, "number": r.number, "status": r.status.value,
            "reason": r.reason}


def _list_params(request: web.Request) -> dict[str, Any]:
    sort = SortKey(query_choice(request, "sort", ("registered_at", "number"), "registered_at"))
    order = query_choice(request, "order", ("asc", "desc"), "desc")
    return {
        "q": request.query.get("q", ""),
        "sort": sort,
        "descending": order == "desc",
        "limit": query_int(request, "limit", 50, 1, 1000),
        "cursor": request.query.get("cursor"),
    }


async def _spreadsheet_cells(request: web.Request) -> list[tuple[int, str]]:
    data, _fields = await read_upload(request)
    try:
        sheet = spreadsheets.read_rows(data, sheet=0, limits=UPLOAD_LIMITS)
    except spreadsheets.SpreadsheetError as exc:
        raise DomainError(exc.code, exc.detail, field="file", status=exc.http_status) from None
    return column_a(sheet.rows)


# -- sender numbers ----------------------------------------------------------------------------

async def register(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_json(request)
    async with request.app[CTX].pool.acquire() as conn:
        sn = await senders.register(conn, who.tenant_id, body.get("number"), actor=who.actor)
    request.app[CTX].index.senders.setdefault(who.tenant_id, set()).add(sn.number)
    return json_response({"number": sn.number, "registered_at": sn.registered_at.isoformat()},
                         201)


async def list_senders(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        rows, nxt = await senders.list_numbers(conn, who.tenant_id, **_list_params(request))
    items = [{"number": r["number"], "registered_at": r["registered_at"].isoformat()}
             for r in rows]
    return json_response({"items": items, "next_cursor": nxt})


async def delete_one(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        n = await senders.delete_numbers(conn, who.tenant_id, [request.match_info["number"]],
                                         actor=who.actor)
    if n == 0:
        raise DomainError("not_found", "that number is not registered", status=404)
    _forget(request, [request.match_info["number"]])
    return web.Response(status=204)


async def delete_many(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_json(request)
    wanted = body.get("numbers")
    if not isinstance(wanted, list) or len(wanted) > 10_000:
        raise DomainError("invalid_numbers", "numbers must be a list of at most 10000",
                          field="numbers")
    async with request.app[CTX].pool.acquire() as conn:
        n = await senders.delete_numbers(conn, who.tenant_id, wanted, actor=who.actor)
    _forget(request, [w for w in wanted if isinstance(w, str)])
    return json_response({"deleted": n})


def _forget(request: web.Request, raws: list[str]) -> None:
    """Read-your-writes on this instance; the NOTIFY does the same for every instance."""
    who = principal(request)
    mine = request.app[CTX].index.senders.get(who.tenant_id, set())
    for raw in raws:
        with contextlib.suppress(numbers.NumberError):
            mine.discard(numbers.normalise(raw))


async def get_quota(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        q = await senders.quota(conn, who.tenant_id)
    return json_response({"used": q.used, "limit": q.limit})


Importer = Callable[..., Awaitable[tuple[list[ImportRow], int]]]


async def _import(request: web.Request, importer: Importer, target: dict[uuid.UUID, set[str]],
                  count_name: str) -> web.Response:
    """A spreadsheet import: judge every row (dry run) or commit; the report either way."""
    who = principal(request)
    dry_run = query_bool(request, "dry_run", True)
    skip_invalid = query_bool(request, "skip_invalid", False)
    cells = await _spreadsheet_cells(request)
    async with request.app[CTX].pool.acquire() as conn:
        try:
            report, written = await importer(conn, who.tenant_id, cells, dry_run=dry_run,
                                             skip_invalid=skip_invalid, actor=who.actor)
        except ImportRefused as exc:
            raise DomainError(exc.code, exc.detail, field="file",
                              extra={"rows": [_row_json(r) for r in exc.report]}) from None
    if written:  # read-your-writes here; NOTIFY tells the other instances
        target.setdefault(who.tenant_id, set()).update(
            r.number for r in report if r.status is senders.RowStatus.OK and r.number)
    return json_response({"rows": [_row_json(r) for r in report], count_name: written,
                          "dry_run": dry_run})


async def import_senders(request: web.Request) -> web.Response:
    return await _import(request, senders.import_numbers, request.app[CTX].index.senders,
                         "registered")


async def export_senders(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    fmt = query_choice(request, "format", ("csv", "xlsx"), "csv")
    async with request.app[CTX].pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT number, registered_at FROM sender_numbers WHERE tenant_id = $1 "
            "ORDER BY registered_at DESC, number", who.tenant_id)
    table = [("number", "registered_at")] + [
        (r["number"], r["registered_at"].isoformat()) for r in rows]
    return export_response(table, fmt, "sender-numbers")


def export_response(table: list[tuple[str, ...]], fmt: str, name: str) -> web.Response:
    """A CSV (UTF-8 with BOM, so Excel shows Korean) or XLSX download of `table`."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerows(table)
        body = ("\ufeff" + buf.getvalue()).encode("utf-8")
        ctype = "text/csv; charset=utf-8"
    else:
        wb = openpyxl.Workbook(write_only=True)
        ws = wb.create_sheet("numbers")
        for row in table:
            ws.append(list(row))
        out = io.BytesIO()
        wb.save(out)
        body = out.getvalue()
        ctype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return web.Response(body=body, headers={
        "Content-Type": ctype,
        "Content-Disposition": f'attachment; filename="{name}.{fmt}"',
    })


async def check_sender(request: web.Request) -> web.Response:
    who = principal(request)
    raw = request.query.get("number", "")
    number = senders.canonical_sender(raw)
    allowed = request.app[CTX].index.may_send(who.tenant_id, number)
    return json_response({"number": number, "allowed": allowed,
                          "reason": None if allowed else "sender_not_registered"})


async def list_sp_ids(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT sp_id, created_at FROM sp_ids WHERE tenant_id = $1 ORDER BY sp_id",
            who.tenant_id)
    return json_response({"items": [{"sp_id": r["sp_id"], "created_at": r["created_at"].isoformat()}
                                    for r in rows], "next_cursor": None})


# -- opt-outs ----------------------------------------------------------------------------------

async def optout_add(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_json(request)
    async with request.app[CTX].pool.acquire() as conn:
        number, added = await optouts.add(conn, who.tenant_id, body.get("number"),
                                          actor=who.actor)
    request.app[CTX].index.optouts.setdefault(who.tenant_id, set()).add(number)
    return json_response({"number": number, "created": added}, 201 if added else 200)


async def optout_list(request: web.Request) -> web.Response:
    who = principal(request)
    params = _list_params(request)
    async with request.app[CTX].pool.acquire() as conn:
        rows, nxt = await senders.list_numbers(conn, who.tenant_id, table="opt_outs",
                                               time_column="created_at", **params)
    items = [{"number": r["number"], "source": r["source"],
              "created_at": r["created_at"].isoformat()} for r in rows]
    return json_response({"items": items, "next_cursor": nxt})


async def optout_remove(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        await optouts.remove(conn, who.tenant_id, request.match_info["number"], actor=who.actor)
    request.app[CTX].index.optouts.get(who.tenant_id, set()).discard(
        optouts.canonical_customer(request.match_info["number"]))
    return web.Response(status=204)


async def optout_import(request: web.Request) -> web.Response:
    return await _import(request, optouts.import_optouts, request.app[CTX].index.optouts,
                         "added")


async def optout_check(request: web.Request) -> web.Response:
    who = principal(request)
    number = optouts.canonical_customer(request.query.get("number", ""))
    ad = query_bool(request, "ad", False)
    blocked = request.app[CTX].index.is_opted_out(who.tenant_id, number, advertising=ad)
    return json_response({"number": number, "ad": ad, "blocked": blocked})


async def optout_settings_get(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        scope = await optouts.get_scope(conn, who.tenant_id)
    return json_response({"scope": scope.value})


async def optout_settings_put(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_json(request)
    async with request.app[CTX].pool.acquire() as conn:
        scope = await optouts.set_scope(conn, who.tenant_id, body.get("scope"), actor=who.actor)
    idx = request.app[CTX].index
    if scope is optouts.Scope.AD:
        idx.ad_only.add(who.tenant_id)
    else:
        idx.ad_only.discard(who.tenant_id)
    return json_response({"scope": scope.value})


# -- declarations ------------------------------------------------------------------------------

_NUMBER_BODY: JsonSchema = {"type": "object", "required": ["number"], "properties": {
    "number": {"type": "string", "examples": ["010-1234-5678", "0212345678"]}}}
_SENDER: JsonSchema = {"type": "object", "properties": {
    "number": {"type": "string"}, "registered_at": {"type": "string", "format": "date-time"}}}
_PAGE = {"type": "object", "properties": {"items": {"type": "array"},
                                          "next_cursor": {"type": ["string", "null"]}}}
_LIST_PARAMS = (
    Param("q", "query", {"type": "string"}, "digits the number contains"),
    Param("sort", "query", {"type": "string", "enum": ["registered_at", "number"]}),
    Param("order", "query", {"type": "string", "enum": ["asc", "desc"]}),
    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
    Param("cursor", "query", {"type": "string"}),
)
_IMPORT_PARAMS = (
    Param("dry_run", "query", {"type": "boolean", "default": True},
          "judge every row, register nothing"),
    Param("skip_invalid", "query", {"type": "boolean", "default": False},
          "register the ok rows and report the rest (else one bad row registers nothing)"),
)
_UPLOAD: JsonSchema = {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "string", "format": "binary",
             "description": "xls, xlsx or csv; numbers in column A of the first sheet"}}}
_REPORT: JsonSchema = {"type": "object", "properties": {
    "rows": {"type": "array", "items": {"type": "object", "properties": {
        "row": {"type": "integer"}, "input": {"type": "string"},
        "number": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": [s.value for s in senders.RowStatus]},
        "reason": {"type": ["string", "null"]}}}},
    "registered": {"type": "integer"}, "added": {"type": "integer"},
    "dry_run": {"type": "boolean"}}}
_FILE = {"type": "string", "format": "binary"}


def add_routes(t: RouteTable) -> None:
    """Declare the registry and opt-out routes."""
    tag = "sender numbers"
    t.add(Route("POST", "/v1/sender-numbers", register, "Register a sender number", tag,
                body=_NUMBER_BODY, responses={201: _SENDER}))
    t.add(Route("GET", "/v1/sender-numbers", list_senders, "List registered numbers", tag,
                params=_LIST_PARAMS, responses={200: _PAGE}))
    t.add(Route("GET", "/v1/sender-numbers/quota", get_quota, "Registered count and limit",
                tag, responses={200: {"type": "object", "properties": {
                    "used": {"type": "integer"}, "limit": {"type": "integer"}}}}))
    t.add(Route("GET", "/v1/sender-numbers/check", check_sender,
                "Whether this tenant may send from a number", tag,
                params=(Param("number", "query", {"type": "string"}, required=True),),
                responses={200: {"type": "object"}}))
    t.add(Route("GET", "/v1/sender-numbers/export", export_senders, "Download the list", tag,
                params=(Param("format", "query", {"type": "string", "enum": ["csv", "xlsx"]}),),
                responses={200: _FILE}, response_content_type="text/csv"))
    t.add(Route("POST", "/v1/sender-numbers/imports", import_senders,
                "Bulk registration from a spreadsheet", tag, params=_IMPORT_PARAMS,
                body=_UPLOAD, body_content_type="multipart/form-data",
                responses={200: _REPORT}))
    t.add(Route("POST", "/v1/sender-numbers/delete", delete_many, "Delete selected numbers",
                tag, body={"type": "object", "required": ["numbers"], "properties": {
                    "numbers": {"type": "array", "items": {"type": "string"}}}},
                responses={200: {"type": "object", "properties": {
                    "deleted": {"type": "integer"}}}}))
    t.add(Route("DELETE", "/v1/sender-numbers/{number}", delete_one, "Delete one number", tag,
                responses={204: None}))
    t.add(Route("GET", "/v1/sp-ids", list_sp_ids, "SP IDs under the tenant", tag,
                responses={200: _PAGE}))
    tag = "opt-outs"
    t.add(Route("POST", "/v1/opt-outs", optout_add, "Flag a customer as opted out", tag,
                body=_NUMBER_BODY, responses={201: {"type": "object"}, 200: {"type": "object"}}))
    t.add(Route("GET", "/v1/opt-outs", optout_list, "List opted-out customers", tag,
                params=_LIST_PARAMS, responses={200: _PAGE}))
    t.add(Route("GET", "/v1/opt-outs/check", optout_check,
                "Whether a message to a number would be withheld", tag,
                params=(Param("number", "query", {"type": "string"}, required=True),
                        Param("ad", "query", {"type": "boolean"}, "the message is advertising")),
                responses={200: {"type": "object"}}))
    t.add(Route("GET", "/v1/opt-outs/settings", optout_settings_get, "Opt-out scope", tag,
                responses={200: {"type": "object"}}))
    t.add(Route("PUT", "/v1/opt-outs/settings", optout_settings_put,
                "Set the opt-out scope (all | ad)", tag,
                body={"type": "object", "required": ["scope"], "properties": {
                    "scope": {"type": "string", "enum": ["all", "ad"]}}},
                responses={200: {"type": "object"}}))
    t.add(Route("POST", "/v1/opt-outs/imports", optout_import, "Bulk opt-out from a spreadsheet",
                tag, params=_IMPORT_PARAMS, body=_UPLOAD, body_content_type="multipart/form-data",
                responses={200: _REPORT}))
    t.add(Route("DELETE", "/v1/opt-outs/{number}", optout_remove, "Clear a customer's flag", tag,
                responses={204: None}))
