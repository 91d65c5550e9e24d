"""Call-record search and statistics: the filters of the portals' detail search, counts grouped
by Korean hour, day, weekday, month, agent, department, number or class, and the rows of the
record export. Searches are plain SQL over `call_records`; statistics read the whole Korean
months, days or hours of their period from the rollups (kept by the database as records are
written, migration 0016) and the rest from the records. Every time is bucketed in Asia/Seoul.

A call belongs to the moment it started. Its agent is its extension (who answered, or who
called out: an agent is an extension); its department is the one that extension had when the call
ended (stamped by the database, migration 0012). Its number is the tenant's own number: the
DID dialled for incoming calls, the presented caller ID for outgoing ones (none for internal
calls); its customer is the other party of an external call.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from handlers.calls import cdr
from handlers.calls.cdr import CallClass, CallRecord
from handlers.stats_periods import Span, Unit, cover

KST = ZoneInfo("Asia/Seoul")
_LOCAL = "(c.started_at AT TIME ZONE 'Asia/Seoul')"
_HOUR = f"extract(hour FROM {_LOCAL})::int"
_WEEKDAY = f"extract(isodow FROM {_LOCAL})::int"
OUR_NUMBER = "CASE c.direction WHEN 'incoming' THEN c.did WHEN 'outgoing' THEN c.caller END"
CUSTOMER = "CASE c.direction WHEN 'incoming' THEN c.caller WHEN 'outgoing' THEN c.callee END"
CLASSES: tuple[str, ...] = tuple(c.value for c in CallClass)
INBOUND_FAILED = (CallClass.MISSED, CallClass.BUSY_MISSED, CallClass.ENDED_BEFORE_ANSWER)


class Dimension(enum.StrEnum):
    """What statistics are grouped by."""

    HOUR = "hour"  # hour of the Korean day, 0-23
    DAY = "day"  # Korean calendar day
    WEEKDAY = "weekday"  # ISO weekday, 1 = Monday ... 7 = Sunday
    MONTH = "month"  # Korean calendar month
    AGENT = "agent"  # the extension, for now
    DEPARTMENT = "department"
    NUMBER = "number"  # the tenant's own number
    CLASS = "class"


TIME_DIMENSIONS = frozenset({Dimension.HOUR, Dimension.DAY, Dimension.WEEKDAY, Dimension.MONTH})
_KEY_SQL = {
    Dimension.HOUR: _HOUR,
    Dimension.DAY: f"{_LOCAL}::date",
    Dimension.WEEKDAY: _WEEKDAY,
    Dimension.MONTH: f"date_trunc('month', {_LOCAL})::date",
    Dimension.AGENT: "c.extension",
    Dimension.DEPARTMENT: "c.department_id",
    Dimension.NUMBER: OUR_NUMBER,
    Dimension.CLASS: "c.class",
}

Key = int | date | str | uuid.UUID | None


@dataclass(frozen=True, slots=True)
class CallFilter:
    """What a search or a statistics query selects, within one tenant (None: no filter)."""

    tenant_id: uuid.UUID
    since: datetime | None = None
    until: datetime | None = None
    weekdays: tuple[int, ...] = ()
    hour_from: int | None = None  # Korean hours, inclusive; from > to wraps past midnight
    hour_to: int | None = None
    department_id: uuid.UUID | None = None
    agent: str | None = None  # the call's extension
    extension: str | None = None  # the call's extension or, for internal calls, the other one
    number: str | None = None  # caller or callee
    customer: str | None = None
    call_class: str | None = None
    direction: str | None = None
    include_internal: bool = True

    def hours(self) -> list[int]:
        """The Korean hours of the day the filter admits."""
        lo = 0 if self.hour_from is None else self.hour_from
        hi = 23 if self.hour_to is None else self.hour_to
        return [h for h in range(24) if (lo <= h <= hi if lo <= hi else h >= lo or h <= hi)]


def where(f: CallFilter, args: list[Any] | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause over `c` (call_records) and its arguments (appended to `args`, which
    an enclosing query may have begun); only the filters given."""
    args = [] if args is None else args
    args.append(f.tenant_id)
    clauses = [f"c.tenant_id = ${len(args)}"]

    def add(sql: str, value: object) -> None:
        args.append(value)
        clauses.append(sql.replace("$?", f"${len(args)}"))

    if f.since is not None:
        add("c.started_at >= $?", f.since)
    if f.until is not None:
        add("c.started_at < $?", f.until)
    if f.weekdays:
        add(f"{_WEEKDAY} = ANY($?::int[])", list(f.weekdays))
    if len(f.hours()) < 24:
        add(f"{_HOUR} = ANY($?::int[])", f.hours())
    if f.department_id is not None:
        add("c.department_id = $?", f.department_id)
    if f.agent is not None:
        add("c.extension = $?", f.agent)
    if f.extension is not None:
        add("(c.extension = $? OR c.peer_extension = $?)", f.extension)
    if f.number is not None:
        add("(c.caller = $? OR c.callee = $?)", f.number)
    if f.customer is not None:  # spelled out so that the caller and callee indexes serve it
        add("((c.direction = 'incoming' AND c.caller = $?) "
            "OR (c.direction = 'outgoing' AND c.callee = $?))", f.customer)
    if f.call_class is not None:
        add("c.class = $?", f.call_class)
    if f.direction is not None:
        add("c.direction = $?", f.direction)
    if not f.include_internal:
        clauses.append("NOT c.internal")
    return " AND ".join(clauses), args


# -- the record list and export -----------------------------------------------------------------

async def list_page(conn: asyncpg.Connection, f: CallFilter, *,
                    after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[CallRecord]:
    """Records newest first, keyset-paginated after (started_at, id)."""
    await cdr.settle(conn)
    sql, args = where(f)
    if after is not None:
        args += [after[0], after[1]]
        sql += f" AND (c.started_at, c.id) < (${len(args) - 1}, ${len(args)}::uuid)"
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {', '.join('c.' + col for col in cdr.COLUMNS)} FROM call_records c "
        f"WHERE {sql} ORDER BY c.started_at DESC, c.id DESC LIMIT ${len(args)}", *args)
    return [cdr.from_row(r) for r in rows]


EXPORT_COLUMNS: tuple[str, ...] = (
    "started_at", "id", "class", "direction", "internal", "agent", "agent_name",
    "peer_extension", "department_id", "department", "number", "customer", "caller", "callee",
    "did", "trunk", "ringing_at", "answered_at", "ended_at", "talk_seconds", "final_status",
    "transfers", "hangup_by", "end_reason")


async def count(conn: asyncpg.Connection, f: CallFilter) -> int:
    """How many records a search selects."""
    sql, args = where(f)
    return int(await conn.fetchval(f"SELECT count(*) FROM call_records c WHERE {sql}", *args))


async def export_rows(conn: asyncpg.Connection, f: CallFilter,
                      prefetch: int = 2000) -> AsyncIterator[tuple[Any, ...]]:
    """The records in start order with names, in Korean time (call inside a transaction)."""
    await cdr.settle(conn)
    sql, args = where(f)
    query = f"""
        SELECT c.started_at, c.id, c.class, c.direction, c.internal, c.extension, e.name,
               c.peer_extension, c.department_id, d.name AS department, {OUR_NUMBER} AS number,
               {CUSTOMER} AS customer, c.caller, c.callee, c.did, c.trunk, c.ringing_at,
               c.answered_at, c.ended_at, c.talk_seconds, c.final_status, c.transfers,
               c.hangup_by, c.end_reason
        FROM call_records c
        LEFT JOIN extensions e ON e.tenant_id = c.tenant_id AND e.extension = c.extension
        LEFT JOIN departments d ON d.id = c.department_id
        WHERE {sql}
        ORDER BY c.started_at, c.id"""
    async for r in conn.cursor(query, *args, prefetch=prefetch):
        yield (_kst(r["started_at"]), str(r["id"]), r["class"], r["direction"],
               "true" if r["internal"] else "", r["extension"], r["name"], r["peer_extension"],
               str(r["department_id"]) if r["department_id"] else None, r["department"],
               r["number"], r["customer"], r["caller"], r["callee"], r["did"], r["trunk"],
               _kst(r["ringing_at"]), _kst(r["answered_at"]), _kst(r["ended_at"]),
               r["talk_seconds"], r["final_status"], ">".join(r["transfers"]) or None,
               r["hangup_by"], r["end_reason"])


def _kst(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(KST).isoformat(timespec="seconds")


# -- statistics ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Counts:
    """What one group of calls adds up to."""

    classes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    talk_seconds: float = 0.0

    @property
    def calls(self) -> int:
        return sum(self.classes.values())

    @property
    def inbound_answered(self) -> int:
        return self.classes[CallClass.INCOMING]

    @property
    def inbound_failed(self) -> int:
        return sum(self.classes[c] for c in INBOUND_FAILED)

    @property
    def outbound_answered(self) -> int:
        return self.classes[CallClass.OUTGOING]

    @property
    def outbound_failed(self) -> int:
        return self.classes[CallClass.OUTGOING_FAILED]

    @property
    def answered(self) -> int:
        return self.inbound_answered + self.outbound_answered

    @property
    def average_talk_seconds(self) -> float:
        """Talk time per answered call."""
        return round(self.talk_seconds / self.answered, 3) if self.answered else 0.0

    def plus(self, other: Counts) -> Counts:
        return Counts({c: self.classes[c] + other.classes[c] for c in CLASSES},
                      self.talk_seconds + other.talk_seconds)


@dataclass(frozen=True, slots=True)
class StatsRow:
    """One group: its key, one value per dimension grouped by, and its counts."""

    key: tuple[Key, ...]
    counts: Counts


@dataclass(frozen=True, slots=True)
class Rollup:
    """A call rollup table (migration 0016): its bucket column(s), and per dimension the SQL
    of a bucket's key (over `s`) when it holds that dimension."""

    table: str
    unit: Unit
    keys: dict[Dimension, str]

    def holds(self, dims: set[Dimension]) -> bool:
        return dims <= set(self.keys)


_LOCAL_HOUR = "(s.hour AT TIME ZONE 'Asia/Seoul')"
_PARTY = {Dimension.AGENT: "s.extension", Dimension.DEPARTMENT: "s.department_id",
          Dimension.NUMBER: "s.number", Dimension.CLASS: "s.class"}
# Whole months and days with every dimension but the hour ...
MONTHLY = Rollup("call_stats_monthly", Unit.MONTH, {Dimension.MONTH: "s.month", **_PARTY})
DAILY = Rollup("call_stats_daily", Unit.DAY, {
    Dimension.DAY: "s.day", Dimension.WEEKDAY: "extract(isodow FROM s.day)::int",
    Dimension.MONTH: "date_trunc('month', s.day)::date", **_PARTY})
# ... and hours of the day per month, days and hours with the department and class only.
_NARROW = {Dimension.DEPARTMENT: "s.department_id", Dimension.CLASS: "s.class"}
MONTH_HOURS = Rollup("call_stats_month_hours", Unit.MONTH, {
    Dimension.HOUR: "s.hour::int", Dimension.MONTH: "s.month", **_NARROW})
DAILY_NARROW = Rollup("call_stats_daily_narrow", Unit.DAY, {
    Dimension.DAY: "s.day", Dimension.WEEKDAY: "extract(isodow FROM s.day)::int",
    Dimension.MONTH: "date_trunc('month', s.day)::date", **_NARROW})
HOURLY = Rollup("call_stats_hourly", Unit.HOUR, {
    Dimension.HOUR: f"extract(hour FROM {_LOCAL_HOUR})::int",
    Dimension.DAY: f"{_LOCAL_HOUR}::date",
    Dimension.WEEKDAY: f"extract(isodow FROM {_LOCAL_HOUR})::int",
    Dimension.MONTH: f"date_trunc('month', {_LOCAL_HOUR})::date", **_NARROW})


def rollups_for(f: CallFilter, group_by: Sequence[Dimension]) -> tuple[Rollup, ...]:
    """The rollups that answer a statistics query, coarsest first (the rest of the period is
    read from the records): of the narrow ones if they hold every dimension it groups or
    filters by (they are the smaller), else of the wide ones; none when it filters by a
    party's number (not rolled up)."""
    if f.number is not None or f.customer is not None or f.extension is not None:
        return ()
    needs = set(group_by)
    for needed, dim in ((f.weekdays, Dimension.WEEKDAY), (len(f.hours()) < 24, Dimension.HOUR),
                        (f.department_id, Dimension.DEPARTMENT), (f.agent, Dimension.AGENT),
                        (f.call_class, Dimension.CLASS)):
        if needed:
            needs.add(dim)
    # direction and internal are kept by every rollup
    for family in ((MONTH_HOURS, DAILY_NARROW, HOURLY), (MONTHLY, DAILY)):
        usable = tuple(r for r in family if r.holds(needs))
        if usable:
            return usable
    return ()


def _rollup_where(f: CallFilter, rollup: Rollup, span: Span, args: list[Any]) -> str:
    """The WHERE clause over `s` (a rollup) for the whole buckets of `span`."""
    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    lo: date
    hi: date
    if rollup.unit is Unit.HOUR:
        lo, hi, column = span.start, span.end, "hour"
    else:
        lo, hi = span.start.astimezone(KST).date(), span.end.astimezone(KST).date()
        column = "day" if rollup.unit is Unit.DAY else "month"
    clauses = [f"s.tenant_id = {arg(f.tenant_id)}", f"s.{column} >= {arg(lo)}",
               f"s.{column} < {arg(hi)}"]
    if f.weekdays:
        clauses.append(f"{rollup.keys[Dimension.WEEKDAY]} = ANY({arg(list(f.weekdays))}::int[])")
    if len(f.hours()) < 24:
        clauses.append(f"{rollup.keys[Dimension.HOUR]} = ANY({arg(f.hours())}::int[])")
    if f.department_id is not None:
        clauses.append(f"s.department_id = {arg(f.department_id)}")
    if f.agent is not None:
        clauses.append(f"s.extension = {arg(f.agent)}")
    if f.call_class is not None:
        clauses.append(f"s.class = {arg(f.call_class)}")
    if f.direction is not None:
        clauses.append(f"s.direction = {arg(f.direction)}")
    if not f.include_internal:
        clauses.append("NOT s.internal")
    return " AND ".join(clauses)


async def call_stats(conn: asyncpg.Connection, f: CallFilter, group_by: Sequence[Dimension],
                     *, rollups: bool = True) -> list[StatsRow]:
    """Counts per group, in key order; the time buckets of the period with no calls (and the
    classes no call had) as zero rows. `f` must have a period (since and until).

    The whole Korean months, days or hours of the period come from the rollups that hold
    every dimension asked (`rollups_for`), the ragged ends and whatever no rollup holds from
    the records, in one statement (one snapshot); `rollups=False` reads everything from the
    records (the reference answer)."""
    assert f.since is not None and f.until is not None
    await cdr.settle(conn)
    chosen = {r.unit: r for r in rollups_for(f, group_by)} if rollups else {}
    parts = cover(f.since, f.until, tuple(chosen))
    args: list[Any] = []
    branches = []
    groups = ", ".join(str(i + 1) for i in range(len(group_by) + 1))  # the keys and the class
    for unit, spans in parts.rolled.items():
        rollup = chosen[unit]
        keys = ", ".join(f"{rollup.keys[d]} AS k{i}" for i, d in enumerate(group_by))
        for span in spans:
            # each branch adds its own up: few rows to the last sum
            branches.append(f"SELECT {keys}, s.class, sum(s.calls) AS calls, "
                            f"sum(s.talk_seconds) AS talk_seconds FROM {rollup.table} s "
                            f"WHERE {_rollup_where(f, rollup, span, args)} GROUP BY {groups}")
    keys = ", ".join(f"{_KEY_SQL[d]} AS k{i}" for i, d in enumerate(group_by))
    for span in parts.live:
        sql, args = where(dataclasses.replace(f, since=span.start, until=span.end), args)
        branches.append(f"SELECT {keys}, c.class, count(*) AS calls, "
                        f"sum(c.talk_seconds::numeric) AS talk_seconds "
                        f"FROM call_records c WHERE {sql} GROUP BY {groups}")
    ks = ", ".join(f"k{i}" for i in range(len(group_by)))
    per_class = ", ".join(f"coalesce(sum(calls) FILTER (WHERE class = '{c}'), 0)::bigint AS {c}"
                          for c in CLASSES)
    rows = await conn.fetch(
        f"""SELECT {ks}, {per_class}, coalesce(sum(talk_seconds), 0) AS talk_seconds
            FROM ({" UNION ALL ".join(branches)}) calls
            GROUP BY {ks}""",
        *args)  # only our own constants are spliced in
    found = {tuple(_key(d, r[f"k{i}"]) for i, d in enumerate(group_by)):
             Counts({c: r[c] for c in CLASSES}, float(r["talk_seconds"])) for r in rows}
    domains = [_domain(d, f, {k[i] for k in found}) for i, d in enumerate(group_by)]
    for key in itertools.product(*domains):
        found.setdefault(key, Counts())
    return [StatsRow(k, found[k]) for k in sorted(found, key=_order)]


def totals(rows: Sequence[StatsRow]) -> Counts:
    """Every group added up."""
    out = Counts()
    for r in rows:
        out = out.plus(r.counts)
    return out


def _key(d: Dimension, value: Any) -> Key:
    if d is Dimension.MONTH and value is not None:
        return f"{value:%Y-%m}"
    return value  # type: ignore[no-any-return]


def _order(key: tuple[Key, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((v is None, v if isinstance(v, str) else f"{v:>40}" if isinstance(v, int)
                  else str(v)) for v in key)


def _domain(d: Dimension, f: CallFilter, seen: set[Key]) -> set[Key]:
    """The values a dimension takes in a full answer: every time bucket the filters admit,
    every class, else only the values seen."""
    assert f.since is not None and f.until is not None
    first = f.since.astimezone(KST).date()
    last = (f.until - timedelta(microseconds=1)).astimezone(KST).date()
    weekdays = set(f.weekdays) or set(range(1, 8))
    if d is Dimension.HOUR:
        return set(f.hours())
    if d is Dimension.WEEKDAY:
        return set(weekdays)
    if d is Dimension.DAY:
        n = (last - first).days + 1
        return {first + timedelta(days=i) for i in range(n)
                if (first + timedelta(days=i)).isoweekday() in weekdays}
    if d is Dimension.MONTH:
        months: set[Key] = set()
        day = first.replace(day=1)
        while day <= last:
            months.add(f"{day:%Y-%m}")
            day = (day + timedelta(days=32)).replace(day=1)
        return months
    if d is Dimension.CLASS:
        return {f.call_class} if f.call_class else set[Key](CLASSES)
    return seen

