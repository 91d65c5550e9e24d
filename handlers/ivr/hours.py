"""Business hours: whether a tenant (or one of its DIDs) is open at an instant.

Sans-I/O: a `BusinessCalendar` is built once from the stored settings (the JSON shape of
`handlers.tenants.BusinessHours`) and answers `is_open(at)` for a UTC-aware instant, evaluated
on the wall clock of the tenant's zone (Asia/Seoul by default). The caller supplies the time;
nothing here reads a clock.

Rules, in order: an instant inside a one-off closure (`starts` <= at < `ends`) is closed; a
holiday (a calendar date in the tenant's zone) is closed all day; otherwise the day is open
from `opens` (inclusive) to `closes` (exclusive) if its weekday is in `days`, in the window of
`hours_by_day` for that weekday when one is given. A window lies within its own calendar day:
`closes` may be "24:00" (until midnight); a window across midnight is written as two days'
windows (22:00-24:00 and 00:00-06:00).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def clock_minutes(text: str) -> int:
    """Minutes after midnight of "HH:MM" (00:00-24:00); ValueError for anything else."""
    hh, sep, mm = text.partition(":")
    if not (sep and len(hh) == 2 and len(mm) == 2 and hh.isdigit() and mm.isdigit()
            and hh.isascii() and mm.isascii()):
        raise ValueError(f"not an HH:MM time: {text!r}")
    minutes = int(hh) * 60 + int(mm)
    if int(mm) > 59 or minutes > 24 * 60:
        raise ValueError(f"not a time of day: {text!r}")
    return minutes


@dataclass(frozen=True, slots=True)
class Window:
    """Open from `opens` to `closes`, in minutes after local midnight (closes <= 1440)."""

    opens: int
    closes: int

    def __post_init__(self) -> None:
        if not 0 <= self.opens < self.closes <= 24 * 60:
            raise ValueError(f"a window must open before it closes, within one day: "
                             f"{self.opens}-{self.closes}")

    def holds(self, seconds: float) -> bool:
        """Whether `seconds` after local midnight is inside the window."""
        return self.opens * 60 <= seconds < self.closes * 60


@dataclass(frozen=True, slots=True)
class Closure:
    """A one-off closure: closed from `starts` (inclusive) to `ends` (exclusive)."""

    starts: datetime
    ends: datetime
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """A week of opening windows (Monday first; None: closed that weekday), holidays and
    closures, on the wall clock of `zone`."""

    zone: ZoneInfo
    week: tuple[Window | None, ...]
    holidays: frozenset[date] = frozenset()
    closures: tuple[Closure, ...] = ()

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise ValueError("a week has seven days")

    def is_open(self, at: datetime) -> bool:
        """Whether calls are answered at `at` (timezone-aware; naive is refused)."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("is_open needs a timezone-aware datetime")
        if any(c.starts <= at < c.ends for c in self.closures):
            return False
        local = at.astimezone(self.zone)
        if local.date() in self.holidays:
            return False
        window = self.week[local.weekday()]
        if window is None:
            return False
        seconds = local.hour * 3600 + local.minute * 60 + local.second \
            + local.microsecond / 1e6
        return window.holds(seconds)

    @classmethod
    def from_settings(cls, hours: Mapping[str, object], zone: str | ZoneInfo
                      ) -> BusinessCalendar:
        """The calendar of a stored `business_hours` value (ValueError if it is malformed)."""
        tz = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)
        default = Window(clock_minutes(_text(hours["opens"])),
                         clock_minutes(_text(hours["closes"])))
        days = {_text(d) for d in _list(hours["days"])}
        unknown = days - set(WEEKDAYS)
        if unknown:
            raise ValueError(f"unknown weekdays: {sorted(unknown)}")
        by_day: dict[str, Window] = {}
        for day, window in _mapping(hours.get("hours_by_day") or {}).items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown weekday: {day!r}")
            w = _mapping(window)
            by_day[day] = Window(clock_minutes(_text(w["opens"])),
                                 clock_minutes(_text(w["closes"])))
        week = tuple(by_day.get(d, default) if d in days else None for d in WEEKDAYS)
        holidays = frozenset(date.fromisoformat(_text(d))
                             for d in _list(hours.get("holidays") or []))
        closures = []
        for item in _list(hours.get("closures") or []):
            c = _mapping(item)
            starts, ends = _instant(c["starts"]), _instant(c["ends"])
            closures.append(Closure(starts, ends, _text(c.get("reason") or "")))
        return cls(tz, week, holidays, tuple(closures))


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return value


def _mapping(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    return value


def _instant(value: object) -> datetime:
    if isinstance(value, datetime):
        found = value
    else:
        found = datetime.fromisoformat(_text(value).replace("Z", "+00:00").replace("z", "+00:00"))
    if found.tzinfo is None:
        raise ValueError("a closure's times need an offset")
    return found
