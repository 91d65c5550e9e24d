"""Search periods at the edges of the calendar: a refusal naming the field, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from handlers.errors import DomainError
from handlers.messages.history import parse_period

NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(("since", "until", "field"), [
    ("0001-01-01", None, "since"),  # the first Korean day starts before year 1 in UTC
    ("0001-01-01T00:00:00", None, "since"),
    (None, "0001-01-01T08:00:00", "until"),  # a 30-day default period before year 1
    (None, "9999-12-31", "until"),  # the end of the last day is past year 9999
])
def test_times_off_the_calendar_are_refused_with_the_field(since: str | None, until: str | None,
                                                           field: str) -> None:
    with pytest.raises(DomainError) as caught:
        parse_period(since, until, NOW)
    assert caught.value.code == "invalid_time" and caught.value.field == field


def test_an_ordinary_day_is_that_korean_day() -> None:
    period = parse_period("2026-12-01", "2026-12-01", NOW)
    assert period.since == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    assert period.until == datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
