"""Business hours on a fake clock: whether a call at an instant finds the tenant (or its DID)
open, evaluated on the tenant's wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from handlers import tenants
from handlers.ivr.features import NO_FEATURES, CallFeatures, Trigger, features_of
from handlers.ivr.hours import BusinessCalendar, Window, clock_minutes

SEOUL = ZoneInfo("Asia/Seoul")
WEEKDAYS_9_TO_6: dict[str, Any] = {"days": ["mon", "tue", "wed", "thu", "fri"],
                                   "opens": "09:00", "closes": "18:00"}


def seoul(y: int, m: int, d: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    """A Korean wall-clock time, handed over as UTC (as the engine's clock gives it)."""
    return datetime(y, m, d, hh, mm, ss, tzinfo=SEOUL).astimezone(UTC)


def calendar(zone: str = "Asia/Seoul", **changes: Any) -> BusinessCalendar:
    return BusinessCalendar.from_settings({**WEEKDAYS_9_TO_6, **changes}, zone)


# 2026-12-07 is a Monday, 2026-12-12 a Saturday.

def test_a_weekday_is_open_from_opening_time_until_just_before_closing() -> None:
    hours = calendar()
    assert not hours.is_open(seoul(2026, 12, 7, 8, 59, 59))
    assert hours.is_open(seoul(2026, 12, 7, 9, 0))
    assert hours.is_open(seoul(2026, 12, 7, 17, 59, 59))
    assert not hours.is_open(seoul(2026, 12, 7, 18, 0))


def test_a_day_not_listed_is_closed_all_day() -> None:
    hours = calendar()
    assert not hours.is_open(seoul(2026, 12, 12, 12, 0))  # Saturday
    assert not hours.is_open(seoul(2026, 12, 13, 12, 0))  # Sunday


def test_the_korean_day_decides_not_the_utc_day() -> None:
    # Monday 08:30 in Seoul is Sunday 23:30 UTC: open by the Korean calendar only at 09:00.
    hours = calendar(opens="08:00")
    at = seoul(2026, 12, 7, 8, 30)
    assert at.weekday() == 6 and hours.is_open(at)
    # Saturday 01:00 in Seoul is Friday 16:00 UTC, within Friday's hours in UTC but closed.
    assert not calendar().is_open(seoul(2026, 12, 12, 1, 0))


def test_a_saturday_half_day_overrides_the_default_window() -> None:
    hours = calendar(days=["mon", "tue", "wed", "thu", "fri", "sat"],
                     hours_by_day={"sat": {"opens": "09:00", "closes": "13:00"}})
    assert hours.is_open(seoul(2026, 12, 12, 12, 59))
    assert not hours.is_open(seoul(2026, 12, 12, 13, 0))
    assert hours.is_open(seoul(2026, 12, 11, 17, 0))  # Friday keeps 09-18


def test_a_holiday_is_closed_all_day_in_the_tenants_zone() -> None:
    hours = calendar(holidays=["2026-12-25"])  # a Friday
    assert not hours.is_open(seoul(2026, 12, 25, 10, 0))
    assert hours.is_open(seoul(2026, 12, 24, 10, 0))
    assert hours.is_open(seoul(2026, 12, 28, 10, 0))


def test_a_closure_is_closed_from_its_start_until_its_end() -> None:
    hours = calendar(closures=[{"starts": "2026-12-08T14:00:00+09:00",
                                "ends": "2026-12-09T05:00:00Z", "reason": "창립기념일"}])
    assert hours.is_open(seoul(2026, 12, 8, 13, 59))
    assert not hours.is_open(seoul(2026, 12, 8, 14, 0))
    assert not hours.is_open(seoul(2026, 12, 9, 13, 59))  # 04:59 UTC
    assert hours.is_open(seoul(2026, 12, 9, 14, 0))


def test_closing_at_24_00_keeps_the_line_open_until_midnight() -> None:
    hours = calendar(days=["mon"], opens="00:00", closes="24:00")
    assert hours.is_open(seoul(2026, 12, 7, 0, 0))
    assert hours.is_open(seoul(2026, 12, 7, 23, 59, 59))
    assert not hours.is_open(seoul(2026, 12, 8, 0, 0))  # Tuesday is not listed
    assert not hours.is_open(seoul(2026, 12, 6, 23, 59, 59))  # nor Sunday


def test_a_night_line_across_midnight_is_two_days_windows() -> None:
    hours = calendar(days=["mon", "tue"], opens="22:00", closes="24:00",
                     hours_by_day={"tue": {"opens": "00:00", "closes": "06:00"}})
    assert not hours.is_open(seoul(2026, 12, 7, 21, 59))
    assert hours.is_open(seoul(2026, 12, 7, 23, 30))
    assert hours.is_open(seoul(2026, 12, 8, 0, 0))
    assert hours.is_open(seoul(2026, 12, 8, 5, 59))
    assert not hours.is_open(seoul(2026, 12, 8, 6, 0))


def test_a_zone_with_summer_time_follows_its_wall_clock_and_seoul_has_none() -> None:
    york = calendar("America/New_York")
    # 09:00 in New York is 13:00 UTC in July (EDT) and 14:00 UTC in January (EST).
    assert york.is_open(datetime(2026, 7, 6, 13, 0, tzinfo=UTC))
    assert not york.is_open(datetime(2026, 1, 5, 13, 30, tzinfo=UTC))
    assert york.is_open(datetime(2026, 1, 5, 14, 0, tzinfo=UTC))
    seoul_hours = calendar()
    # Seoul is UTC+9 all year: 00:00 UTC is 09:00 in both seasons.
    assert seoul_hours.is_open(datetime(2026, 7, 6, 0, 0, tzinfo=UTC))
    assert seoul_hours.is_open(datetime(2026, 1, 5, 0, 0, tzinfo=UTC))
    assert not seoul_hours.is_open(datetime(2026, 1, 4, 23, 59, tzinfo=UTC))


def test_any_offset_of_the_same_instant_gives_the_same_answer() -> None:
    hours = calendar()
    at = seoul(2026, 12, 7, 9, 0)
    assert hours.is_open(at.astimezone(timezone(timedelta(hours=-5))))
    assert hours.is_open(at.astimezone(SEOUL))


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        calendar().is_open(datetime(2026, 12, 7, 10, 0))


def test_a_window_must_open_before_it_closes_within_a_day() -> None:
    assert clock_minutes("24:00") == 1440
    for opens, closes in ((540, 540), (1080, 540), (0, 1441)):
        with pytest.raises(ValueError):
            Window(opens, closes)
    for text in ("24:01", "9:00", "09:60", "０９:００"):
        with pytest.raises(ValueError):
            clock_minutes(text)


# -- per-tenant features --------------------------------------------------------------------


def test_no_business_hours_is_always_open_and_no_callback_ivr() -> None:
    assert NO_FEATURES.open_at(None, seoul(2026, 12, 13, 3, 0))
    assert NO_FEATURES.open_at("0212345678", seoul(2026, 12, 13, 3, 0))
    assert NO_FEATURES.callback_on == frozenset()
    assert features_of({"callback_on": []}) == NO_FEATURES


def test_a_did_with_its_own_hours_overrides_the_tenants() -> None:
    features = features_of({
        "timezone": "Asia/Seoul", "business_hours": WEEKDAYS_9_TO_6,
        "did_business_hours": {"15881234": {"days": ["sat", "sun"], "opens": "10:00",
                                            "closes": "16:00"}},
        "callback_on": ["closed", "no_answer"]})
    saturday_noon, monday_noon = seoul(2026, 12, 12, 12, 0), seoul(2026, 12, 7, 12, 0)
    assert features.open_at("15881234", saturday_noon)
    assert not features.open_at("15881234", monday_noon)
    assert not features.open_at("0212345678", saturday_noon)  # the tenant's hours
    assert features.open_at("0212345678", monday_noon)
    assert features.open_at(None, monday_noon)
    assert features.callback_on == frozenset({"closed", "no_answer"})


def test_did_hours_alone_leave_the_tenants_other_numbers_always_open() -> None:
    features = features_of({"did_business_hours": {"15881234": WEEKDAYS_9_TO_6}})
    sunday = seoul(2026, 12, 13, 12, 0)
    assert not features.open_at("15881234", sunday)
    assert features.open_at("0212345678", sunday)


def test_did_hours_use_the_tenants_zone() -> None:
    features = features_of({"timezone": "Europe/London",
                            "did_business_hours": {"15881234": WEEKDAYS_9_TO_6}})
    assert features.open_at("15881234", datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    assert not features.open_at("15881234", seoul(2026, 12, 7, 9, 0))  # 00:00 in London


def test_callback_features_are_frozen_values() -> None:
    features = CallFeatures(callback_on=frozenset({"closed"}))
    with pytest.raises(AttributeError):
        features.callback_on = frozenset()  # type: ignore[misc]


def test_the_settings_triggers_are_the_engines() -> None:
    assert set(tenants.CallbackTrigger.__args__) == {t.value for t in Trigger}
