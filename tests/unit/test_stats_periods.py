"""Statistics periods cut into the Korean months, days and hours rollups hold, and the edges
read live."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from handlers.stats_periods import KST, Span, Unit, ceil, cover, floor


def kst(*args: int) -> datetime:
    return datetime(*args, tzinfo=KST).astimezone(UTC)  # type: ignore[misc]


def test_korean_days_and_months_start_at_15_utc() -> None:
    late = datetime(2026, 1, 31, 14, 59, 59, tzinfo=UTC)  # 23:59:59 KST on the 31st
    assert floor(late, Unit.DAY) == kst(2026, 1, 31)
    assert ceil(late, Unit.DAY) == kst(2026, 2, 1) == datetime(2026, 1, 31, 15, tzinfo=UTC)
    assert floor(late, Unit.MONTH) == kst(2026, 1, 1)
    assert ceil(late, Unit.MONTH) == kst(2026, 2, 1)
    assert ceil(kst(2026, 12, 5), Unit.MONTH) == kst(2027, 1, 1)
    assert ceil(kst(2026, 2, 1), Unit.MONTH) == kst(2026, 2, 1)  # already a start
    assert floor(late, Unit.HOUR) == datetime(2026, 1, 31, 14, tzinfo=UTC)


def test_a_year_of_whole_months_is_read_from_the_monthly_rollup_only() -> None:
    c = cover(kst(2025, 12, 1), kst(2026, 12, 1), (Unit.MONTH, Unit.DAY))
    assert c.rolled == {Unit.MONTH: [Span(kst(2025, 12, 1), kst(2026, 12, 1))], Unit.DAY: []}
    assert c.live == []


def test_ragged_ends_fall_to_finer_units_then_to_live_reading() -> None:
    since = kst(2026, 1, 30, 10, 30)
    until = kst(2026, 3, 2, 8, 15)
    c = cover(since, until, (Unit.MONTH, Unit.DAY, Unit.HOUR))
    assert c.rolled[Unit.MONTH] == [Span(kst(2026, 2, 1), kst(2026, 3, 1))]
    assert c.rolled[Unit.DAY] == [Span(kst(2026, 1, 31), kst(2026, 2, 1)),
                                  Span(kst(2026, 3, 1), kst(2026, 3, 2))]
    assert c.rolled[Unit.HOUR] == [Span(kst(2026, 1, 30, 11), kst(2026, 1, 31)),
                                   Span(kst(2026, 3, 2), kst(2026, 3, 2, 8))]
    assert c.live == [Span(since, kst(2026, 1, 30, 11)), Span(kst(2026, 3, 2, 8), until)]


def test_the_pieces_cover_the_period_once() -> None:
    since = datetime(2026, 5, 17, 3, 7, 11, tzinfo=UTC)
    for hours in (0.5, 5, 30, 24 * 40, 24 * 366):
        until = since + timedelta(hours=hours)
        for units in ((), (Unit.HOUR,), (Unit.DAY, Unit.HOUR), (Unit.MONTH, Unit.DAY)):
            c = cover(since, until, units)
            spans = sorted([s for u in units for s in c.rolled[u]] + c.live,
                           key=lambda s: s.start)
            assert spans[0].start == since and spans[-1].end == until
            assert all(a.end == b.start for a, b in itertools.pairwise(spans))


def test_without_units_the_whole_period_is_read_live() -> None:
    c = cover(kst(2026, 1, 1), kst(2026, 2, 1), ())
    assert c.rolled == {} and c.live == [Span(kst(2026, 1, 1), kst(2026, 2, 1))]
