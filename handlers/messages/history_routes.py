"""Control API routes of message statistics and the history export (DESIGN.md §9)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import asyncpg
import openpyxl
from aiohttp import web

from handlers.api.context import CTX
from handlers.api.framework import (
    JsonSchema,
    Param,
    Route,
    RouteTable,
    json_response,
    principal,
    query_choice,
)
from handlers.errors import DomainError
from handlers.messages import history as h

# CSV streams row by row; XLSX is built whole (write-only mode), so it is kept smaller.
MAX_EXPORT_ROWS = {"csv": 1_000_000, "xlsx": 200_000}


def _filter(request: web.Request, *, numbers: bool) -> h.HistoryFilter:
    who = principal(request)
    q = request.query
    period = h.parse_period(q.get("since"), q.get("until"), datetime.now(UTC))
    kind = q.get("type") or None
    if kind is not None and kind not in h.MESSAGE_TYPES:
        raise DomainError("invalid_parameter", "type must be sms, lms or mms", field="type",
                          status=400)
    sp_id = q.get("sp_id") or None
    if who.sp_id is not None:
        # A key narrowed to one SP ID sees that SP's messages only.
        if sp_id is not None and sp_id != who.sp_id:
            raise DomainError("not_found", "no such SP ID", field="sp_id", status=404)
        sp_id = who.sp_id
    return h.HistoryFilter(
        who.tenant_id, period, kind, sp_id,
        sender=h.parse_number(q.get("from"), "from") if numbers else None,
        recipient=h.parse_number(q.get("to"), "to") if numbers else None)


def _stats_json(r: h.StatsRow) -> dict[str, object]:
    return {"period": r.period, "type": r.type, "sp_id": r.sp_id, "messages": r.messages,
            "recipients": r.recipients, "sent": r.sent, "delivered": r.delivered,
            "not_delivered": r.not_delivered, "pending": r.pending, "states": r.states}


async def message_stats(request: web.Request) -> web.Response:
    granularity = h.Granularity(query_choice(request, "granularity", ("day", "month"), "day"))
    f = _filter(request, numbers=False)
    async with request.app[CTX].pool.acquire() as conn:
        rows = await h.message_stats(conn, f, granularity)
    return json_response({
        "granularity": granularity.value, "time_zone": "Asia/Seoul",
        "since": f.period.since.isoformat(), "until": f.period.until.isoformat(),
        "items": [_stats_json(r) for r in rows], "totals": _stats_json(h.totals(rows))})


async def export_history(request: web.Request) -> web.StreamResponse:
    fmt = query_choice(request, "format", ("csv", "xlsx"), "csv")
    f = _filter(request, numbers=True)
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
        "Content-Type": "text/csv; charset=utf-8",
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
        "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "Content-Disposition": f'attachment; filename="{name}"'})


# -- declarations ------------------------------------------------------------------------------

_PERIOD_PARAMS = (
    Param("since", "query", {"type": "string"},
          "RFC 3339 time or date (YYYY-MM-DD, Korean day); default: 30 days before until"),
    Param("until", "query", {"type": "string"},
          "RFC 3339 time or date (inclusive Korean day); default: now. At most 366 days "
          "after since"),
    Param("type", "query", {"type": "string", "enum": list(h.MESSAGE_TYPES)}),
)
_COUNTS: JsonSchema = {"type": "object", "properties": {
    "period": {"type": "string", "examples": ["2026-11-23", "2026-11"]},
    "type": {"type": "string"}, "sp_id": {"type": ["string", "null"]},
    "messages": {"type": "integer"}, "recipients": {"type": "integer"},
    "sent": {"type": "integer", "description": "accepted by the carrier"},
    "delivered": {"type": "integer"},
    "not_delivered": {"type": "integer", "description": "failed + expired + rejected"},
    "pending": {"type": "integer", "description": "queued + submitted (no receipt yet)"},
    "states": {"type": "object", "additionalProperties": {"type": "integer"}}}}
_STATS: JsonSchema = {"type": "object", "properties": {
    "granularity": {"type": "string"}, "time_zone": {"type": "string"},
    "since": {"type": "string"}, "until": {"type": "string"},
    "items": {"type": "array", "items": _COUNTS}, "totals": _COUNTS}}


def add_routes(t: RouteTable) -> None:
    """Declare the statistics and export routes."""
    t.add(Route("GET", "/v1/stats/messages", message_stats,
                "Message counts per Korean day or month, type and SP ID", "statistics",
                params=(Param("granularity", "query", {"type": "string",
                                                       "enum": ["day", "month"]}),
                        *_PERIOD_PARAMS, Param("sp_id", "query", {"type": "string"})),
                responses={200: _STATS}))
    t.add(Route("GET", "/v1/messages/export", export_history,
                "Download message history, one row per recipient", "messages",
                params=(Param("format", "query", {"type": "string", "enum": ["csv", "xlsx"]}),
                        *_PERIOD_PARAMS, Param("sp_id", "query", {"type": "string"}),
                        Param("from", "query", {"type": "string"}, "sender number"),
                        Param("to", "query", {"type": "string"}, "recipient number")),
                responses={200: {"type": "string", "format": "binary"}},
                response_content_type="text/csv"))
