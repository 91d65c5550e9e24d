"""Control API routes of the sender-number registry and the opt-out list (DESIGN.md §9)."""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import openpyxl
from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from handlers import numbers, spreadsheets
from handlers.api.context import CTX
from handlers.api.framework import (
    File,
    Route,
    RouteTable,
    Upload,
    arg,
    principal,
    respond,
    uploaded_file,
)
from handlers.api.models import (
    DIGITS_PATTERN,
    Body,
    Limit,
    Page,
    Params,
    PhoneText,
    TimeDigitsCursor,
)
from handlers.api.scopes import Scope as KeyScope
from handlers.errors import DomainError
from handlers.registry import optouts, senders
from handlers.registry.senders import ImportRefused, ImportRow, SortKey, column_a

UPLOAD_LIMITS = spreadsheets.Limits()
CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Codes a number given in a request can be refused with (handlers.numbers).
NUMBER_CODES = ("empty", "not_digits", "international", "too_short", "too_long",
                "invalid_number", "bad_length", "missing_area_code", "not_callable",
                "not_mobile", "personal_number", "premium_rate", "special_number")
SPREADSHEET_CODES = ("body_too_large", "unsupported_type", "too_many_rows", "too_many_columns",
                     "bad_sheet", "corrupt_file")


class NumberBody(Body):
    number: PhoneText = Field(examples=["010-1234-5678", "0212345678"])


class NumberPath(Params):
    number: PhoneText


class NumberQuery(Params):
    number: PhoneText


class ListQuery(Params):
    q: Annotated[str, StringConstraints(pattern=DIGITS_PATTERN)] = Field(
        "", description="digits the number contains")
    sort: SortKey = SortKey.REGISTERED_AT
    order: Literal["asc", "desc"] = "desc"
    limit: Limit = 50
    cursor: TimeDigitsCursor | None = None


class ImportQuery(Params):
    dry_run: bool = Field(True, description="true (the default): judge every row, change "
                                            "nothing; false: commit")
    skip_invalid: bool = Field(False, description="commit the ok rows and report the rest "
                                                  "(else one bad row commits nothing)")


class ExportQuery(Params):
    format: Literal["csv", "xlsx"] = "csv"


class SenderOut(BaseModel):
    number: str
    registered_at: datetime


class QuotaOut(BaseModel):
    used: int
    limit: int


class SenderCheck(BaseModel):
    number: str
    allowed: bool
    reason: Literal["sender_not_registered"] | None


class ReportRow(BaseModel):
    row: int
    input: str
    number: str | None
    status: senders.RowStatus
    reason: str | None


class SenderImportReport(BaseModel):
    rows: list[ReportRow]
    registered: int = Field(description="numbers registered (0 in a dry run)")
    dry_run: bool


class OptoutImportReport(BaseModel):
    rows: list[ReportRow]
    added: int = Field(description="numbers added (0 in a dry run)")
    dry_run: bool


class DeleteMany(Body):
    numbers: list[Annotated[str, StringConstraints(max_length=40)]] = Field(max_length=10_000)


class Deleted(BaseModel):
    deleted: int


class OptoutAdded(BaseModel):
    number: str
    created: bool = Field(description="false: the number was already opted out")


class OptoutOut(BaseModel):
    number: str
    source: str
    created_at: datetime


class OptoutCheckQuery(Params):
    number: PhoneText
    ad: bool = Field(False, description="the message is advertising")


class OptoutVerdict(BaseModel):
    number: str
    ad: bool
    blocked: bool


class Scope(Body):
    scope: Literal["all", "ad"]


class ScopeOut(BaseModel):
    scope: Literal["all", "ad"]


def _row(r: ImportRow) -> ReportRow:
    return ReportRow(row=r.row, input=r.input, number=r.number, status=r.status,
                     reason=r.reason)


def _list_params(q: ListQuery) -> dict[str, Any]:
    return {"q": q.q, "sort": q.sort, "descending": q.order == "desc", "limit": q.limit,
            "cursor": q.cursor}


def _spreadsheet_cells(request: web.Request) -> list[tuple[int, str]]:
    try:
        sheet = spreadsheets.read_rows(uploaded_file(request), sheet=0, limits=UPLOAD_LIMITS)
    except spreadsheets.SpreadsheetError as exc:
        raise DomainError(exc.code, exc.detail, field="file") from None
    return column_a(sheet.rows)


# -- sender numbers ----------------------------------------------------------------------------

async def register(request: web.Request) -> web.Response:
    who = principal(request)
    number = arg(request, NumberBody).number
    async with request.app[CTX].pool.acquire() as conn:
        sn = await senders.register(conn, who.tenant_id, number, actor=who.actor)
    request.app[CTX].index.senders.setdefault(who.tenant_id, set()).add(sn.number)
    return respond(SenderOut(number=sn.number, registered_at=sn.registered_at), 201)


async def list_senders(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        rows, nxt = await senders.list_numbers(conn, who.tenant_id,
                                               **_list_params(arg(request, ListQuery)))
    items = [SenderOut(number=r["number"], registered_at=r["registered_at"]) for r in rows]
    return respond(Page[SenderOut](items=items, next_cursor=nxt))


async def delete_one(request: web.Request) -> web.Response:
    who = principal(request)
    number = arg(request, NumberPath).number
    async with request.app[CTX].pool.acquire() as conn:
        n = await senders.delete_numbers(conn, who.tenant_id, [number], actor=who.actor)
    if n == 0:
        raise DomainError("not_found", "that number is not registered")
    _forget(request, [number])
    return web.Response(status=204)


async def delete_many(request: web.Request) -> web.Response:
    who = principal(request)
    wanted = arg(request, DeleteMany).numbers
    async with request.app[CTX].pool.acquire() as conn:
        n = await senders.delete_numbers(conn, who.tenant_id, wanted, actor=who.actor)
    _forget(request, wanted)
    return respond(Deleted(deleted=n))


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
    return respond(QuotaOut(used=q.used, limit=q.limit))


Importer = Callable[..., Awaitable[tuple[list[ImportRow], int]]]


async def _import(request: web.Request, importer: Importer,
                  target: dict[uuid.UUID, set[str]]) -> tuple[list[ReportRow], int, bool]:
    """A spreadsheet import: judge every row (dry run) or commit; the report either way."""
    who = principal(request)
    q = arg(request, ImportQuery)
    dry_run, skip_invalid = q.dry_run, q.skip_invalid
    cells = _spreadsheet_cells(request)
    async with request.app[CTX].pool.acquire() as conn:
        try:
            report, written = await importer(conn, who.tenant_id, cells, dry_run=dry_run,
                                             skip_invalid=skip_invalid, actor=who.actor)
        except ImportRefused as exc:
            raise DomainError(exc.code, exc.detail, field="file",
                              extra={"rows": [_row(r).model_dump(mode="json")
                                              for r in exc.report]}) from None
    if written:  # read-your-writes here; NOTIFY tells the other instances
        target.setdefault(who.tenant_id, set()).update(
            r.number for r in report if r.status is senders.RowStatus.OK and r.number)
    return [_row(r) for r in report], written, dry_run


async def import_senders(request: web.Request) -> web.Response:
    rows, written, dry_run = await _import(request, senders.import_numbers,
                                           request.app[CTX].index.senders)
    return respond(SenderImportReport(rows=rows, registered=written, dry_run=dry_run))


async def export_senders(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    fmt = arg(request, ExportQuery).format
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
        ctype = f"{CSV}; charset=utf-8"
    else:
        wb = openpyxl.Workbook(write_only=True)
        ws = wb.create_sheet("numbers")
        for row in table:
            ws.append(list(row))
        out = io.BytesIO()
        wb.save(out)
        body = out.getvalue()
        ctype = XLSX
    return web.Response(body=body, headers={
        "Content-Type": ctype,
        "Content-Disposition": f'attachment; filename="{name}.{fmt}"',
    })


async def check_sender(request: web.Request) -> web.Response:
    who = principal(request)
    number = senders.canonical_sender(arg(request, NumberQuery).number)
    allowed = request.app[CTX].index.may_send(who.tenant_id, number)
    return respond(SenderCheck(number=number, allowed=allowed,
                               reason=None if allowed else "sender_not_registered"))


# -- opt-outs ----------------------------------------------------------------------------------

async def optout_add(request: web.Request) -> web.Response:
    who = principal(request)
    raw = arg(request, NumberBody).number
    async with request.app[CTX].pool.acquire() as conn:
        number, added = await optouts.add(conn, who.tenant_id, raw, actor=who.actor)
    request.app[CTX].index.optouts.setdefault(who.tenant_id, set()).add(number)
    return respond(OptoutAdded(number=number, created=added), 201 if added else 200)


async def optout_list(request: web.Request) -> web.Response:
    who = principal(request)
    params = _list_params(arg(request, ListQuery))
    async with request.app[CTX].pool.acquire() as conn:
        rows, nxt = await senders.list_numbers(conn, who.tenant_id, table="opt_outs",
                                               time_column="created_at", **params)
    items = [OptoutOut(number=r["number"], source=r["source"], created_at=r["created_at"])
             for r in rows]
    return respond(Page[OptoutOut](items=items, next_cursor=nxt))


async def optout_remove(request: web.Request) -> web.Response:
    who = principal(request)
    number = arg(request, NumberPath).number
    async with request.app[CTX].pool.acquire() as conn:
        await optouts.remove(conn, who.tenant_id, number, actor=who.actor)
    request.app[CTX].index.optouts.get(who.tenant_id, set()).discard(
        optouts.canonical_customer(number))
    return web.Response(status=204)


async def optout_import(request: web.Request) -> web.Response:
    rows, written, dry_run = await _import(request, optouts.import_optouts,
                                           request.app[CTX].index.optouts)
    return respond(OptoutImportReport(rows=rows, added=written, dry_run=dry_run))


async def optout_check(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, OptoutCheckQuery)
    number = optouts.canonical_customer(q.number)
    blocked = request.app[CTX].index.is_opted_out(who.tenant_id, number, advertising=q.ad)
    return respond(OptoutVerdict(number=number, ad=q.ad, blocked=blocked))


async def optout_settings_get(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        scope = await optouts.get_scope(conn, who.tenant_id)
    return respond(ScopeOut(scope=scope.value))


async def optout_settings_put(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        scope = await optouts.set_scope(conn, who.tenant_id, arg(request, Scope).scope,
                                        actor=who.actor)
    idx = request.app[CTX].index
    if scope is optouts.Scope.AD:
        idx.ad_only.add(who.tenant_id)
    else:
        idx.ad_only.discard(who.tenant_id)
    return respond(ScopeOut(scope=scope.value))


# -- declarations ------------------------------------------------------------------------------

_UPLOAD = Upload("xls, xlsx or csv; numbers in column A of the first sheet")


def add_routes(t: RouteTable) -> None:
    """Declare the registry and opt-out routes."""
    tag = "sender numbers"
    t.add(Route("POST", "/v1/sender-numbers", register, "Register a sender number", tag,
                body=NumberBody, responses={201: SenderOut},
                errors=("already_registered", "quota_exceeded", *NUMBER_CODES),
                scope=KeyScope.MANAGE))
    t.add(Route("GET", "/v1/sender-numbers", list_senders, "List registered numbers", tag,
                query=ListQuery, responses={200: Page[SenderOut]},
                scope=KeyScope.READ))
    t.add(Route("GET", "/v1/sender-numbers/quota", get_quota, "Registered count and limit",
                tag, responses={200: QuotaOut},
                scope=KeyScope.READ))
    t.add(Route("GET", "/v1/sender-numbers/check", check_sender,
                "Whether this tenant may send from a number", tag, query=NumberQuery,
                responses={200: SenderCheck}, errors=NUMBER_CODES,
                scope=KeyScope.READ))
    t.add(Route("GET", "/v1/sender-numbers/export", export_senders, "Download the list", tag,
                query=ExportQuery,
                responses={200: File((CSV, XLSX), "CSV (UTF-8 with BOM) or XLSX")},
                scope=KeyScope.READ, budget="exports"))
    t.add(Route("POST", "/v1/sender-numbers/imports", import_senders,
                "Bulk registration from a spreadsheet (a dry run unless dry_run=false)", tag,
                query=ImportQuery, body=_UPLOAD, responses={200: SenderImportReport},
                errors=("import_has_errors", *SPREADSHEET_CODES),
                description="Re-importing numbers already registered is idempotent: those "
                            "rows are reported `already_registered` and do not stop the "
                            "import.",
                scope=KeyScope.MANAGE, budget="imports"))
    t.add(Route("POST", "/v1/sender-numbers/delete", delete_many, "Delete selected numbers",
                tag, body=DeleteMany, responses={200: Deleted}, errors=NUMBER_CODES,
                scope=KeyScope.MANAGE))
    t.add(Route("DELETE", "/v1/sender-numbers/{number}", delete_one, "Delete one number", tag,
                path_params=NumberPath, responses={204: None}, errors=NUMBER_CODES,
                scope=KeyScope.MANAGE))
    tag = "opt-outs"
    t.add(Route("POST", "/v1/opt-outs", optout_add, "Flag a customer as opted out", tag,
                body=NumberBody, responses={201: OptoutAdded, 200: OptoutAdded},
                errors=NUMBER_CODES,
                scope=KeyScope.MANAGE))
    t.add(Route("GET", "/v1/opt-outs", optout_list, "List opted-out customers", tag,
                query=ListQuery, responses={200: Page[OptoutOut]},
                scope=KeyScope.READ))
    t.add(Route("GET", "/v1/opt-outs/check", optout_check,
                "Whether a message to a number would be withheld", tag,
                query=OptoutCheckQuery, responses={200: OptoutVerdict}, errors=NUMBER_CODES,
                scope=KeyScope.READ))
    t.add(Route("GET", "/v1/opt-outs/settings", optout_settings_get, "Opt-out scope", tag,
                responses={200: ScopeOut},
                scope=KeyScope.READ))
    t.add(Route("PUT", "/v1/opt-outs/settings", optout_settings_put,
                "Set the opt-out scope (all | ad)", tag, body=Scope,
                responses={200: ScopeOut},
                scope=KeyScope.MANAGE))
    t.add(Route("POST", "/v1/opt-outs/imports", optout_import,
                "Bulk opt-out from a spreadsheet (a dry run unless dry_run=false)", tag,
                query=ImportQuery, body=_UPLOAD, responses={200: OptoutImportReport},
                errors=("import_has_errors", *SPREADSHEET_CODES),
                scope=KeyScope.MANAGE, budget="imports"))
    t.add(Route("DELETE", "/v1/opt-outs/{number}", optout_remove, "Clear a customer's flag", tag,
                path_params=NumberPath, responses={204: None}, errors=NUMBER_CODES,
                scope=KeyScope.MANAGE))
