"""Control API routes of call statistics and call-record export (DESIGN.md §9), and the search
parameters they share with `GET /v1/cdrs`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from handlers import departments as dept_db
from handlers.api.context import CTX
from handlers.api.framework import File, Route, RouteTable, arg, principal, respond
from handlers.api.models import Params, PhoneText, Uuid
from handlers.api.scopes import Scope
from handlers.calls import extensions as ext_db
from handlers.calls import search
from handlers.calls.cdr import CallClass, Direction
from handlers.errors import DomainError
from handlers.exports import CSV, XLSX, Cell, stream
from handlers.messages import history
from handlers.messages.history_routes import TimeOrDay

TAG = "statistics"
XLSX_MAX_ROWS = 1_048_575  # a worksheet's rows, less the header

_DIMS = "|".join(d.value for d in search.Dimension)
GroupBy = Annotated[str, StringConstraints(pattern=rf"^({_DIMS})(,({_DIMS}))?$")]
Weekdays = Annotated[str, StringConstraints(pattern=r"^[1-7](,[1-7]){0,6}$")]
Hour = Annotated[int, Field(ge=0, le=23)]
ExtensionNumber = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,4}$")]


class CallSearchQuery(Params):
    """The detail search of the portals (seed 003): every filter is optional."""

    since: TimeOrDay | None = Field(None, description="RFC 3339 time or date (YYYY-MM-DD, "
                                                      "from the start of that Korean day)")
    until: TimeOrDay | None = Field(None, description="RFC 3339 time or date (to the end of "
                                                      "that Korean day)")
    weekday: Weekdays | None = Field(None, description="Korean weekdays, ISO numbers "
                                                       "(1 = Monday ... 7 = Sunday), e.g. 1,2,3")
    hour_from: Hour | None = Field(None, description="first Korean hour of the day (0-23)")
    hour_to: Hour | None = Field(None, description="last Korean hour of the day, inclusive; "
                                                   "before hour_from: the range wraps midnight")
    department_id: Uuid | None = Field(None, description="calls of the department's "
                                                         "extensions at the time")
    agent: ExtensionNumber | None = Field(None, description="the agent: the extension that "
                                                            "answered or called out")
    number: PhoneText | None = Field(None, description="caller or callee number")
    customer: PhoneText | None = Field(None, description="the other party of an external "
                                                         "call")
    call_class: CallClass | None = Field(None, alias="class")
    direction: Direction | None = None
    internal: bool = Field(True, description="false excludes internal (extension to "
                                             "extension) calls")


class CallStatsQuery(CallSearchQuery):
    group_by: GroupBy = Field("day", description="one or two of hour | day | weekday | month "
                                                 "| agent | department | number | class, "
                                                 "comma-separated (e.g. day,class)")


class CallStatsExportQuery(CallStatsQuery):
    format: Literal["csv", "xlsx"] = "csv"


class CdrExportQuery(CallSearchQuery):
    format: Literal["csv", "xlsx"] = "csv"
    extension: ExtensionNumber | None = Field(None, description="the extension on either "
                                                                "side of the call")


class CallCounts(BaseModel):
    calls: int
    outgoing: int = Field(description="발신: outgoing, answered")
    outgoing_failed: int = Field(description="발신 연결 실패")
    incoming: int = Field(description="수신: answered")
    missed: int = Field(description="부재중")
    busy_missed: int = Field(description="통화중부재")
    ended_before_answer: int = Field(description="수신 전 종료")
    inbound_answered: int
    inbound_failed: int = Field(description="missed + busy_missed + ended_before_answer")
    outbound_answered: int
    outbound_failed: int
    answered: int
    talk_seconds: float = Field(description="total talk time")
    average_talk_seconds: float = Field(description="talk time per answered call")


class CallStatsRow(CallCounts):
    hour: int | None = Field(None, description="Korean hour of the day (group_by hour)")
    day: date | None = Field(None, description="Korean day (group_by day)")
    weekday: int | None = Field(None, description="ISO weekday, 1 = Monday (group_by "
                                                  "weekday)")
    month: str | None = Field(None, examples=["2026-11"], description="group_by month")
    agent: str | None = Field(None, description="the extension (group_by agent; null: calls "
                                                "no extension took)")
    agent_name: str | None = Field(None, description="the extension's name now")
    department_id: uuid.UUID | None = Field(None, description="group_by department; null: "
                                                              "no department")
    department_name: str | None = Field(None, description="null once deleted")
    number: str | None = Field(None, description="the tenant's number: DID of incoming calls,"
                                                 " caller ID of outgoing ones (group_by number)")
    call_class: CallClass | None = Field(None, alias="class", description="group_by class")


class CallStats(BaseModel):
    group_by: list[search.Dimension]
    time_zone: Literal["Asia/Seoul"]
    since: datetime
    until: datetime
    items: list[CallStatsRow]
    totals: CallCounts


def _text(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def call_filter(request: web.Request, q: CallSearchQuery, *, period: bool,
                extension: str | None = None) -> search.CallFilter:
    """The validated filter; `period`: since/until default to the last 30 days, at most a
    year (statistics and exports), else they are open."""
    who = principal(request)
    since: datetime | None
    until: datetime | None
    if period:
        p = history.parse_period(_text(q.since), _text(q.until), datetime.now(UTC))
        since, until = p.since, p.until
    else:
        since = history.parse_time(_text(q.since) or "", "since", end_of_day=False) \
            if q.since is not None else None
        until = history.parse_time(_text(q.until) or "", "until", end_of_day=True) \
            if q.until is not None else None
    return search.CallFilter(
        who.tenant_id, since, until,
        weekdays=tuple(sorted({int(d) for d in q.weekday.split(",")})) if q.weekday else (),
        hour_from=q.hour_from, hour_to=q.hour_to, department_id=q.department_id,
        agent=q.agent, extension=extension,
        number=ext_db.check_number(q.number, "number"),
        customer=ext_db.check_number(q.customer, "customer"),
        call_class=q.call_class.value if q.call_class else None,
        direction=q.direction.value if q.direction else None, include_internal=q.internal)


def _group_by(raw: str) -> list[search.Dimension]:
    return list(dict.fromkeys(search.Dimension(d) for d in raw.split(",")))


def _counts(c: search.Counts) -> dict[str, object]:
    return {"calls": c.calls, **c.classes, "inbound_answered": c.inbound_answered,
            "inbound_failed": c.inbound_failed, "outbound_answered": c.outbound_answered,
            "outbound_failed": c.outbound_failed, "answered": c.answered,
            "talk_seconds": round(c.talk_seconds, 3),
            "average_talk_seconds": c.average_talk_seconds}


async def _stats(request: web.Request, q: CallStatsQuery
                 ) -> tuple[search.CallFilter, list[search.Dimension], list[CallStatsRow],
                            search.Counts]:
    who = principal(request)
    f = call_filter(request, q, period=True)
    dims = _group_by(q.group_by)
    async with request.app[CTX].pool.acquire() as conn:
        rows = await search.call_stats(conn, f, dims)
        depts = await dept_db.names(conn, who.tenant_id) if search.Dimension.DEPARTMENT in dims \
            else {}
        agents = {r["extension"]: r["name"] for r in await conn.fetch(
            "SELECT extension, name FROM extensions WHERE tenant_id = $1", who.tenant_id)} \
            if search.Dimension.AGENT in dims else {}
    items = []
    for r in rows:
        values: dict[str, object] = _counts(r.counts)
        for d, v in zip(dims, r.key, strict=True):
            values["class" if d is search.Dimension.CLASS else
                   "department_id" if d is search.Dimension.DEPARTMENT else d.value] = v
            if d is search.Dimension.AGENT:
                values["agent_name"] = agents.get(v) if isinstance(v, str) else None
            if d is search.Dimension.DEPARTMENT:
                values["department_name"] = depts.get(v) if isinstance(v, uuid.UUID) else None
        items.append(CallStatsRow.model_validate(values))
    return f, dims, items, search.totals(rows)


async def call_stats(request: web.Request) -> web.Response:
    f, dims, items, total = await _stats(request, arg(request, CallStatsQuery))
    assert f.since is not None and f.until is not None
    return respond(CallStats(group_by=dims, time_zone="Asia/Seoul", since=f.since,
                             until=f.until, items=items,
                             totals=CallCounts.model_validate(_counts(total))))


_KEY_COLUMNS = {"hour": ("hour",), "day": ("day",), "weekday": ("weekday",),
                "month": ("month",), "agent": ("agent", "agent_name"),
                "department": ("department_id", "department_name"), "number": ("number",),
                "class": ("class",)}


async def export_call_stats(request: web.Request) -> web.StreamResponse:
    q = arg(request, CallStatsExportQuery)
    f, dims, items, _ = await _stats(request, q)
    keys = [c for d in dims for c in _KEY_COLUMNS[d.value]]
    metrics = list(CallCounts.model_fields)
    assert f.since is not None

    async def rows() -> AsyncIterator[Sequence[Cell]]:
        for item in items:
            data = item.model_dump(by_alias=True)
            yield [_cell(data[k]) for k in keys] + [_cell(data[m]) for m in metrics]

    name = f"call-stats-{'-'.join(d.value for d in dims)}-{f.since.astimezone(search.KST):%Y%m%d}"
    return await stream(request, q.format, name, "statistics", keys + metrics, rows())


def _cell(v: object) -> Cell:
    if v is None or isinstance(v, int | float | str):
        return v
    return str(v)


async def export_cdrs(request: web.Request) -> web.StreamResponse:
    q = arg(request, CdrExportQuery)
    f = call_filter(request, q, period=True, extension=q.extension)
    assert f.since is not None
    pool = request.app[CTX].pool
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                         readonly=True):
        if q.format == "xlsx":
            n = await search.count(conn, f)
            if n > XLSX_MAX_ROWS:
                raise DomainError("export_too_large", f"{n} records; a worksheet holds at most "
                                  f"{XLSX_MAX_ROWS}: choose a shorter period or CSV",
                                  field="since")
        name = f"calls-{f.since.astimezone(search.KST):%Y%m%d}"
        return await stream(request, q.format, name, "calls", search.EXPORT_COLUMNS,
                            search.export_rows(conn, f))


# -- declarations ------------------------------------------------------------------------------

_PERIOD_CODES = ("invalid_time", "invalid_period", "period_too_long", "invalid_number")


def add_routes(t: RouteTable) -> None:
    """Declare the call statistics and record export routes."""
    t.add(Route("GET", "/v1/stats/calls", call_stats,
                "Call counts and talk time grouped by Korean hour, day, weekday or month, "
                "agent, department, number or class (one or two at once)", TAG,
                query=CallStatsQuery, responses={200: CallStats}, errors=_PERIOD_CODES,
                scope=Scope.READ,
                description="Every hour, day, weekday and month of the period the filters "
                            "admit, and every class, is answered, with zeros when no call "
                            "fell in it. The agent of a call is its extension until agents "
                            "exist."))
    t.add(Route("GET", "/v1/stats/calls/export", export_call_stats,
                "Download a call statistics answer", TAG, query=CallStatsExportQuery,
                responses={200: File((CSV, XLSX), "CSV (UTF-8 with BOM) or XLSX: the "
                                                  "grouping columns, then the counts")},
                errors=_PERIOD_CODES, scope=Scope.READ, budget="exports"))
    t.add(Route("GET", "/v1/cdrs/export", export_cdrs,
                "Download call records, oldest first (streamed)", "calls",
                query=CdrExportQuery,
                responses={200: File((CSV, XLSX), "CSV (UTF-8 with BOM) or XLSX, times in "
                                                  "Korean time")},
                errors=(*_PERIOD_CODES, "export_too_large"), scope=Scope.READ,
                budget="exports"))
