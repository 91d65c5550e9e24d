"""A statistics period cut into what rollups hold and what is read live: the whole Korean
months, days or hours inside [since, until) that a rollup table answers, coarsest first, and
the edges left over (a period from 10:30 starts with half an hour no rollup holds).

Asia/Seoul has kept UTC+9 without daylight saving since 1988, so a Korean hour is a UTC hour
and a Korean day starts at 15:00 UTC; the zone is still used, not the offset, so that the
code says what it means.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

KST = ZoneInfo("Asia/Seoul")


class Unit(enum.StrEnum):
    """A rollup's bucket: a Korean calendar month, day or hour."""

    MONTH = "month"
    DAY = "day"
    HOUR = "hour"


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open interval [start, end) of UTC instants."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Cover:
    """Where each part of a period is read: per unit, the spans of whole buckets a rollup
    answers; `live`, the spans no rollup covers. Together they are the period, no instant
    twice."""

    rolled: dict[Unit, list[Span]]
    live: list[Span]


def floor(when: datetime, unit: Unit) -> datetime:
    """The start of the Korean month, day or hour `when` is in (UTC)."""
    local = when.astimezone(KST)
    if unit is Unit.HOUR:
        local = local.replace(minute=0, second=0, microsecond=0)
    elif unit is Unit.DAY:
        local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        local = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return local.astimezone(UTC)


def ceil(when: datetime, unit: Unit) -> datetime:
    """The first Korean month, day or hour start at or after `when` (UTC)."""
    start = floor(when, unit)
    if start == when:
        return start
    local = start.astimezone(KST)
    if unit is Unit.HOUR:
        return start + timedelta(hours=1)
    if unit is Unit.DAY:
        return (local + timedelta(days=1)).replace(hour=0).astimezone(UTC)
    return (local + timedelta(days=32)).replace(day=1).astimezone(UTC)


def cover(since: datetime, until: datetime, units: tuple[Unit, ...]) -> Cover:
    """Cut [since, until) into whole buckets of `units` (coarsest first: the middle in the
    first unit, what is left at each end in the next ones) and the live remainder."""
    rolled: dict[Unit, list[Span]] = {u: [] for u in units}
    live: list[Span] = []

    def cut(a: datetime, b: datetime, rest: tuple[Unit, ...]) -> None:
        if a >= b:
            return
        if not rest:
            live.append(Span(a, b))
            return
        unit, finer = rest[0], rest[1:]
        first, last = ceil(a, unit), floor(b, unit)
        if first >= last:
            cut(a, b, finer)
            return
        cut(a, first, finer)
        rolled[unit].append(Span(first, last))
        cut(last, b, finer)

    cut(since, until, units)
    return Cover(rolled, live)
