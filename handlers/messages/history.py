"""Message history and statistics: counts per period (Asia/Seoul calendar), type and SP ID,
and the per-recipient history rows behind the CSV/XLSX export.

A message belongs to the period of its `send_at` (the time it was, or is to be, sent),
counted in Korean calendar hours, days and months. History is plain SQL over `messages` and
`recipients`. Statistics read the recipients that the rollup job has reached (`rollup.py`)
from the rollups (per Korean day, hour, and hour of the day per month), and every other one
of the period from the tables.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from handlers import numbers
from handlers.errors import DomainError
from handlers.stats_periods import Cover, Span, Unit, cover

KST = ZoneInfo("Asia/Seoul")
MAX_PERIOD = timedelta(days=366)
STATES: tuple[str, ...] = ("queued", "submitted", "delivered", "failed", "expired", "rejected",
                           "canceled")
NOT_DELIVERED: tuple[str, ...] = ("failed", "expired", "rejected")
PENDING: tuple[str, ...] = ("queued", "submitted")
MESSAGE_TYPES: tuple[str, ...] = ("sms", "lms", "mms")


class Granularity(enum.StrEnum):
    """How finely statistics are bucketed (Korean calendar)."""

    HOUR = "hour"  # hour of the Korean day, "00"-"23"
    DAY = "day"
    WEEKDAY = "weekday"  # ISO weekday, "1" (Monday) - "7" (Sunday)
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open interval [since, until) of UTC instants."""

    since: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """What a history search or statistics query selects, within one tenant."""

    tenant_id: UUID
    period: Period
    type: str | None = None
    sp_id: str | None = None
    sender: str | None = None
    recipient: str | None = None


@dataclass(frozen=True, slots=True)
class StatsRow:
    """Counts of one (period, type, SP ID) bucket."""

    period: str  # "2026-11-23" or "2026-11"
    type: str
    sp_id: str | None
    messages: int
    recipients: int
    sent: int  # reached the carrier (submit accepted)
    states: dict[str, int]
    images: int = 0  # JPEGs attached to the bucket's messages (MMS)
    image_bytes: int = 0
    department_id: UUID | None = None  # when grouped by department (the SP ID's, at sending)

    @property
    def delivered(self) -> int:
        return self.states["delivered"]

    @property
    def not_delivered(self) -> int:
        return sum(self.states[s] for s in NOT_DELIVERED)

    @property
    def pending(self) -> int:
        return sum(self.states[s] for s in PENDING)


def parse_time(raw: str, field: str, *, end_of_day: bool) -> datetime:
    """An RFC 3339 time, or a date (`2026-11-23`) read as that Korean calendar day.

    A date as `until` means the end of that day (inclusive), as a portal's date picker means it.
    """
    text = raw.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end_of_day:
                day += timedelta(days=1)
            return datetime.combine(day, time(0), KST).astimezone(UTC)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=KST)  # a portal's local time
        return when.astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 or 9999 moved across a zone leaves the calendar
        raise DomainError("invalid_time", f"{field} must be an RFC 3339 time or a date "
                          "(YYYY-MM-DD) between the years 1 and 9999", field=field,
                          status=422) from None


def parse_period(since_raw: str | None, until_raw: str | None, now: datetime,
                 default_days: int = 30) -> Period:
    """The searched period: at most 366 days, `since` before `until` (422 naming the field)."""
    until = parse_time(until_raw, "until", end_of_day=True) if until_raw else now
    try:
        since = (parse_time(since_raw, "since", end_of_day=False) if since_raw
                 else until - timedelta(days=default_days))
    except OverflowError:  # a default period before year 1
        raise DomainError("invalid_time", "until is too early for a default period",
                          field="until", status=422) from None
    if since >= until:
        raise DomainError("invalid_period", "until must be after since", field="until")
    if until - since > MAX_PERIOD:
        raise DomainError("period_too_long", "a search covers at most one year (366 days)",
                          field="since")
    return Period(since, until)


def parse_number(raw: str | None, field: str) -> str | None:
    """A phone number filter in canonical digits (absent or empty: no filter)."""
    if raw is None or not raw.strip():
        return None
    try:
        return numbers.normalise(raw)
    except numbers.NumberError as exc:
        raise DomainError(exc.code, exc.detail, field=field) from None


def _where(f: HistoryFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (over `m` messages and `r` recipients) and its arguments."""
    args: list[Any] = [f.tenant_id, f.period.since, f.period.until]
    clauses = ["m.tenant_id = $1", "m.send_at >= $2", "m.send_at < $3"]
    for column, value in (("m.type", f.type), ("m.sp_id", f.sp_id), ("m.sender", f.sender),
                          ("r.number", f.recipient)):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    return " AND ".join(clauses), args


_PERIOD_SQL = {
    Granularity.HOUR: "to_char(m.send_at AT TIME ZONE 'Asia/Seoul', 'HH24')",
    Granularity.DAY: "to_char(m.send_at AT TIME ZONE 'Asia/Seoul', 'YYYY-MM-DD')",
    Granularity.WEEKDAY: "to_char(m.send_at AT TIME ZONE 'Asia/Seoul', 'ID')",
    Granularity.MONTH: "to_char(m.send_at AT TIME ZONE 'Asia/Seoul', 'YYYY-MM')",
}


_ROLLUP_PERIOD_SQL = {
    Unit.HOUR: {g: sql.replace("m.send_at", "s.hour") for g, sql in _PERIOD_SQL.items()},
    Unit.DAY: {Granularity.DAY: "to_char(s.day, 'YYYY-MM-DD')",
               Granularity.WEEKDAY: "to_char(s.day, 'ID')",
               Granularity.MONTH: "to_char(s.day, 'YYYY-MM')"},
    Unit.MONTH: {Granularity.HOUR: "lpad(s.hour::text, 2, '0')",
                 Granularity.MONTH: "to_char(s.month, 'YYYY-MM')"},
}
_ROLLUP_TABLE = {Unit.HOUR: ("message_stats_hourly", "hour"),
                 Unit.DAY: ("message_stats_daily", "day"),
                 Unit.MONTH: ("message_stats_month_hours", "month")}  # by hour of the day
_COUNTS = ("messages", "recipients", "sent", "queued", "submitted", "delivered", "failed",
           "expired", "rejected", "canceled", "images", "image_bytes")


def _cover(f: HistoryFilter, granularity: Granularity, rollups: bool) -> Cover:
    """Which parts of the period the rollups can answer: whole Korean days and hours, or for
    hourly statistics whole months (by hour of the day) and hours; none when the filter
    names a sender or a recipient."""
    if not rollups or f.sender is not None or f.recipient is not None:
        units: tuple[Unit, ...] = ()
    elif granularity is Granularity.HOUR:
        units = (Unit.MONTH, Unit.HOUR)
    else:
        units = (Unit.DAY, Unit.HOUR)
    return cover(f.period.since, f.period.until, units)


async def message_stats(conn: asyncpg.Connection, f: HistoryFilter, granularity: Granularity,
                        *, by_department: bool = False, rollups: bool = True
                        ) -> list[StatsRow]:
    """Counts per Korean hour, day, weekday or month, message type and SP ID (and department),
    oldest period first; every period of `f` with no messages answers zero rows.

    Test sends (`test: true`, to one's own phone) are left out; history shows them, marked.
    One statement (one snapshot) adds up the rollups' whole buckets of the period, the
    recipients there that are not rolled up (of messages not rolled up, and the pending ones
    of messages that are), and every recipient of the period's ragged ends;
    `rollups=False` reads every message from the tables (the reference answer)."""
    parts = _cover(f, granularity, rollups)
    args: list[Any] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    department = "{t}.department_id" if by_department else "NULL::uuid"
    filters = "".join(f" AND {{t}}.{column} = {arg(value)}"
                      for column, value in (("type", f.type), ("sp_id", f.sp_id))
                      if value is not None)
    tenant = arg(f.tenant_id)
    branches = []
    rolled: list[Span] = []
    for unit, spans in parts.rolled.items():
        table, column = _ROLLUP_TABLE[unit]
        for span in spans:
            rolled.append(span)
            lo, hi = (span.start, span.end) if unit is Unit.HOUR else (
                span.start.astimezone(KST).date(), span.end.astimezone(KST).date())
            branches.append(  # each branch adds its own up: few rows to the last sum
                f"""SELECT {_ROLLUP_PERIOD_SQL[unit][granularity]} AS period, s.type, s.sp_id,
                           {department.format(t="s")} AS department_id,
                           sum(s.messages) AS messages, sum(s.recipients) AS recipients,
                           sum(s.sent) AS sent, 0 AS queued, 0 AS submitted,
                           sum(s.delivered) AS delivered, sum(s.failed) AS failed,
                           sum(s.expired) AS expired, sum(s.rejected) AS rejected,
                           sum(s.canceled) AS canceled, sum(s.images) AS images,
                           sum(s.image_bytes) AS image_bytes
                    FROM {table} s
                    WHERE s.tenant_id = {tenant} AND s.{column} >= {arg(lo)}
                      AND s.{column} < {arg(hi)}{filters.format(t="s")}
                    GROUP BY 1, 2, 3, 4""")
    # (messages, their recipients to count) read from the tables
    live = [(f"m.send_at >= {arg(s.start)} AND m.send_at < {arg(s.end)}", "")
            for s in parts.live]
    if rolled:  # the rolled spans are one stretch between the ragged ends
        stretch = (f"m.send_at >= {arg(min(s.start for s in rolled))} "
                   f"AND m.send_at < {arg(max(s.end for s in rolled))}")
        live += [(f"{stretch} AND NOT m.stats_rolled", ""),
                 (f"{stretch} AND m.stats_pending IS NOT NULL",
                  " AND r.idx = ANY(m.stats_pending)")]
    state_counts = ", ".join(
        f"count(*) FILTER (WHERE r.state = '{s}') AS {s}" for s in STATES if s != "queued")
    extra = "".join(f" AND {column} = {arg(value)}"
                    for column, value in (("m.sender", f.sender), ("r.number", f.recipient))
                    if value is not None)
    for condition, recipients in live:  # apart, so that each reads its own index
        branches.append(
            f"""SELECT {_PERIOD_SQL[granularity]} AS period, m.type, m.sp_id,
                       {department.format(t="m")} AS department_id,
                       -- a message once: on its first recipient's row (no DISTINCT: no sort)
                       count(*) FILTER (WHERE r.idx = 0) AS messages, count(*) AS recipients,
                       count(*) FILTER (WHERE r.submitted_at IS NOT NULL) AS sent,
                       count(*) FILTER (WHERE r.state IN ('queued', 'claimed')) AS queued,
                       {state_counts},
                       -- each message's images once: on its first recipient's row
                       coalesce(sum(m.image_count) FILTER (WHERE r.idx = 0), 0) AS images,
                       coalesce(sum(m.image_bytes) FILTER (WHERE r.idx = 0), 0) AS image_bytes
                FROM messages m JOIN recipients r ON r.message_id = m.id{recipients}
                WHERE m.tenant_id = {tenant} AND {condition} AND NOT m.test
                      {filters.format(t="m")}{extra}
                GROUP BY 1, 2, 3, 4""")
    sums = ", ".join(f"sum({c})::bigint AS {c}" for c in _COUNTS)
    rows = await conn.fetch(
        f"""SELECT period, type, sp_id, department_id, {sums}
            FROM ({" UNION ALL ".join(branches)}) counted
            GROUP BY 1, 2, 3, 4""",  # only our own constants are spliced in
        *args)
    found = {(r["period"], r["type"], r["sp_id"], r["department_id"]): StatsRow(
        r["period"], r["type"], r["sp_id"], r["messages"], r["recipients"], r["sent"],
        {s: r[s] for s in STATES}, int(r["images"]), int(r["image_bytes"]), r["department_id"])
        for r in rows}
    groups = {k[1:] for k in found} or {(f.type or "all", f.sp_id, None)}
    zero = dict.fromkeys(STATES, 0)
    for period in periods(f.period, granularity):
        for type_, sp_id, department_id in groups:
            found.setdefault((period, type_, sp_id, department_id), StatsRow(
                period, type_, sp_id, 0, 0, 0, dict(zero), department_id=department_id))
    return [found[k] for k in sorted(found, key=lambda k: (
        k[0], k[1], k[2] is not None, k[2] or "", k[3] is not None, str(k[3] or "")))]


def periods(period: Period, granularity: Granularity) -> list[str]:
    """Every bucket label of a period, in order (Korean calendar)."""
    if granularity is Granularity.HOUR:
        return [f"{h:02d}" for h in range(24)]
    if granularity is Granularity.WEEKDAY:
        return [str(d) for d in range(1, 8)]
    first = period.since.astimezone(KST).date()
    last = (period.until - timedelta(microseconds=1)).astimezone(KST).date()
    if granularity is Granularity.DAY:
        return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    out = []
    month = first.replace(day=1)
    while month <= last:
        out.append(f"{month:%Y-%m}")
        month = (month + timedelta(days=32)).replace(day=1)
    return out


def totals(rows: Sequence[StatsRow]) -> StatsRow:
    """All buckets added up (period "total")."""
    states = {s: sum(r.states[s] for r in rows) for s in STATES}
    return StatsRow("total", "all", None, sum(r.messages for r in rows),
                    sum(r.recipients for r in rows), sum(r.sent for r in rows), states,
                    sum(r.images for r in rows), sum(r.image_bytes for r in rows))


EXPORT_COLUMNS: tuple[str, ...] = (
    "send_at", "message_id", "type", "sp_id", "from", "to", "name", "state", "reason",
    "submitted_at", "done_at", "subject", "text", "test", "images", "image_bytes")


async def count_history(conn: asyncpg.Connection, f: HistoryFilter) -> int:
    """How many recipient rows a history export would hold."""
    where, args = _where(f)
    n = await conn.fetchval(
        f"SELECT count(*) FROM messages m JOIN recipients r ON r.message_id = m.id WHERE {where}",
        *args)
    return int(n or 0)


async def history_rows(conn: asyncpg.Connection, f: HistoryFilter,
                       prefetch: int = 2000) -> AsyncIterator[tuple[str, ...]]:
    """Per-recipient history rows in send order (call inside a transaction: a cursor)."""
    where, args = _where(f)
    query = f"""SELECT m.send_at, m.id, m.type, m.sp_id, m.sender, r.number, r.name, r.state,
                       r.reason, r.submitted_at, r.done_at, m.subject,
                       CASE WHEN m.verification_id IS NULL THEN coalesce(r.text, m.text)
                            ELSE m.text END AS text, m.test, m.image_count, m.image_bytes
                FROM messages m JOIN recipients r ON r.message_id = m.id
                WHERE {where}
                ORDER BY m.send_at, m.id, r.idx"""
    async for r in conn.cursor(query, *args, prefetch=prefetch):
        state = "queued" if r["state"] == "claimed" else r["state"]
        yield (_kst(r["send_at"]), str(r["id"]), r["type"], r["sp_id"] or "", r["sender"],
               r["number"], r["name"] or "", state, r["reason"] or "",
               _kst(r["submitted_at"]), _kst(r["done_at"]), r["subject"] or "", r["text"],
               "true" if r["test"] else "", str(r["image_count"]), str(r["image_bytes"]))


def _kst(when: datetime | None) -> str:
    return "" if when is None else when.astimezone(KST).isoformat(timespec="seconds")
