"""Control API routes of message statistics and the history export (DESIGN.md §9)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Literal

import asyncpg
import openpyxl
from aiohttp import web
from pydantic import BaseModel, Field

from handlers import departments
from handlers.api.context import CTX
from handlers.api.framework import File, Route, RouteTable, arg, principal, respond
from handlers.api.models import DIGITS_PATTERN, Day, Params, Timestamp
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.exports import Cell, stream
from handlers.messages import history as h
from handlers.registry.routes import CSV, NUMBER_CODES, XLSX

# CSV streams row by row; XLSX is built whole (write-only mode), so it is kept smaller.
MAX_EXPORT_ROWS = {"csv": 1_000_000, "xlsx": 200_000}


# A time, or a date meaning a whole Korean day (since: its start, until: its end).
TimeOrDay = Annotated[Timestamp | Day, Field(union_mode="left_to_right")]


class PeriodQuery(Params):
    since: TimeOrDay | None = Field(None, description="RFC 3339 time or date (YYYY-MM-DD, "
                                                      "Korean day); default: 30 days before until")
    until: TimeOrDay | None = Field(None, description="RFC 3339 time or date (inclusive Korean "
                                                      "day); default: now. At most 366 days "
                                                      "after since")
    type: Literal["sms", "lms", "mms"] | None = None
    sp_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")] | None = None


class StatsQuery(PeriodQuery):
    granularity: h.Granularity = Field(
        h.Granularity.DAY, description="hour (of the Korean day, 00-23), day, weekday "
                                       "(ISO, 1 = Monday) or month")
    group_by: Literal["department"] | None = Field(
        None, description="department: also split by the department of the message's SP ID "
                          "(when it was sent)")


class ExportQuery(PeriodQuery):
    format: Literal["csv", "xlsx"] = "csv"
    sender: Annotated[str, Field(pattern=DIGITS_PATTERN)] | None = Field(
        None, alias="from", description="sender number")
    to: Annotated[str, Field(pattern=DIGITS_PATTERN)] | None = Field(
        None, description="recipient number")


class Counts(BaseModel):
    period: str = Field(examples=["2026-11-23", "2026-11", "09", "1"])
    type: str
    sp_id: str | None
    department_id: uuid.UUID | None = Field(None, description="group_by department; null: "
                                                              "no department")
    department_name: str | None = Field(None, description="null once deleted")
    messages: int
    recipients: int
    sent: int = Field(description="accepted by the carrier")
    delivered: int
    not_delivered: int = Field(description="failed + expired + rejected")
    pending: int = Field(description="queued + submitted (no receipt yet)")
    images: int = Field(description="JPEGs attached to these messages (MMS)")
    image_bytes: int = Field(description="their total size in bytes")
    states: dict[str, int]


class Stats(BaseModel):
    granularity: h.Granularity
    time_zone: Literal["Asia/Seoul"]
    since: datetime
    until: datetime
    items: list[Counts]
    totals: Counts


def _text(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def _filter(request: web.Request, q: PeriodQuery, *, sender: str | None = None,
            recipient: str | None = None) -> h.HistoryFilter:
    who = principal(request)
    period = h.parse_period(_text(q.since), _text(q.until), datetime.now(UTC))
    sp_id = q.sp_id
    if who.sp_id is not None:
        # A key narrowed to one SP ID sees that SP's messages only.
        if sp_id is not None and sp_id != who.sp_id:
            raise DomainError("not_found", "no such SP ID", field="sp_id")
        sp_id = who.sp_id
    return h.HistoryFilter(
        who.tenant_id, period, q.type, sp_id,
        sender=h.parse_number(sender, "from") if sender else None,
        recipient=h.parse_number(recipient, "to") if recipient else None)


def _counts(r: h.StatsRow, names: dict[uuid.UUID, str] | None = None) -> Counts:
    return Counts(period=r.period, type=r.type, sp_id=r.sp_id, messages=r.messages,
                  recipients=r.recipients, sent=r.sent, delivered=r.delivered,
                  not_delivered=r.not_delivered, pending=r.pending, images=r.images,
                  image_bytes=r.image_bytes, states=r.states, department_id=r.department_id,
                  department_name=(names or {}).get(r.department_id)
                  if r.department_id else None)


async def _stats(request: web.Request, q: StatsQuery) -> tuple[h.HistoryFilter, list[Counts],
                                                                 Counts]:
    f = _filter(request, q)
    by_department = q.group_by == "department"
    async with request.app[CTX].pool.acquire() as conn:
        rows = await h.message_stats(conn, f, q.granularity, by_department=by_department)
        names = await departments.names(conn, f.tenant_id) if by_department else {}
    return f, [_counts(r, names) for r in rows], _counts(h.totals(rows))


async def message_stats(request: web.Request) -> web.Response:
    q = arg(request, StatsQuery)
    f, items, total = await _stats(request, q)
    return respond(Stats(
        granularity=q.granularity, time_zone="Asia/Seoul", since=f.period.since,
        until=f.period.until, items=items, totals=total))


class StatsExportQuery(StatsQuery):
    format: Literal["csv", "xlsx"] = "csv"


_STATS_COLUMNS = ("period", "type", "sp_id", "department_id", "department_name", "messages",
                  "recipients", "sent", "delivered", "not_delivered", "pending", "images",
                  "image_bytes")


async def export_message_stats(request: web.Request) -> web.StreamResponse:
    q = arg(request, StatsExportQuery)
    f, items, _ = await _stats(request, q)

    async def rows() -> AsyncIterator[Sequence[Cell]]:
        for c in items:
            data = c.model_dump()
            yield [None if data[k] is None else data[k] if isinstance(data[k], int | str)
                   else str(data[k]) for k in _STATS_COLUMNS] + [c.states[s] for s in h.STATES]

    name = f"message-stats-{q.granularity.value}-{f.period.since.astimezone(h.KST):%Y%m%d}"
    return await stream(request, q.format, name, "statistics",
                        [*_STATS_COLUMNS, *h.STATES], rows())


async def export_history(request: web.Request) -> web.StreamResponse:
    q = arg(request, ExportQuery)
    fmt = q.format
    f = _filter(request, q, sender=q.sender, recipient=q.to)
    limit = MAX_EXPORT_ROWS[fmt]
    pool = request.app[CTX].pool
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                         readonly=True):
        n = await h.count_history(conn, f)
        if n > limit:
            raise DomainError("export_too_large", f"{n} rows; a {fmt} export holds at most "
                              f"{limit}: choose a shorter period", field="since")
        name = f"messages-{f.period.since.astimezone(h.KST):%Y%m%d}.{fmt}"
        if fmt == "xlsx":
            return await _xlsx(conn, f, name)
        return await _csv(request, conn, f, name)


async def _csv(request: web.Request, conn: asyncpg.Connection, f: h.HistoryFilter,
               name: str) -> web.StreamResponse:
    resp = web.StreamResponse(headers={
        "Content-Type": f"{CSV}; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{name}"'})
    await resp.prepare(request)
    buf = io.StringIO()
    writer = csv.writer(buf)
    buf.write("\ufeff")  # Excel reads UTF-8 (Korean) only with a BOM
    writer.writerow(h.EXPORT_COLUMNS)
    async for row in h.history_rows(conn, f):
        writer.writerow(row)
        if buf.tell() > 65536:
            await resp.write(buf.getvalue().encode())
            buf.seek(0)
            buf.truncate()
    await resp.write(buf.getvalue().encode())
    await resp.write_eof()
    return resp


async def _xlsx(conn: asyncpg.Connection, f: h.HistoryFilter, name: str) -> web.Response:
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("messages")
    ws.append(list(h.EXPORT_COLUMNS))
    async for row in h.history_rows(conn, f):
        ws.append(list(row))
    out = io.BytesIO()
    wb.save(out)
    return web.Response(body=out.getvalue(), headers={
        "Content-Type": XLSX,
        "Content-Disposition": f'attachment; filename="{name}"'})


# -- declarations ------------------------------------------------------------------------------

# not_found: an sp_id other than the one a narrowed key acts for.
_PERIOD_CODES = ("invalid_time", "invalid_period", "period_too_long", "not_found")


def add_routes(t: RouteTable) -> None:
    """Declare the statistics and export routes."""
    t.add(Route("GET", "/v1/stats/messages", message_stats,
                "Message counts per Korean hour, day, weekday or month, type and SP ID (and "
                "department); empty periods as zero rows; test sends left out",
                "statistics", query=StatsQuery, responses={200: Stats}, errors=_PERIOD_CODES,
                scope=Scope.READ))
    t.add(Route("GET", "/v1/stats/messages/export", export_message_stats,
                "Download a message statistics answer", "statistics", query=StatsExportQuery,
                responses={200: File((CSV, XLSX), "CSV (UTF-8 with BOM) or XLSX")},
                errors=_PERIOD_CODES, scope=Scope.READ, budget="exports"))
    t.add(Route("GET", "/v1/messages/export", export_history,
                "Download message history, one row per recipient", "messages",
                query=ExportQuery,
                responses={200: File((CSV, XLSX), "CSV (UTF-8 with BOM) or XLSX; column "
                                                  "`test` marks test sends")},
                errors=(*_PERIOD_CODES, "export_too_large", *NUMBER_CODES),
                scope=Scope.READ, budget="exports"))
