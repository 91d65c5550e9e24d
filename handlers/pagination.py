"""List cursors: the sort key of the last item returned, written so its pattern says it all.

Every string the published pattern of a cursor admits is a position in its list (perhaps past
the end), so a client that keeps to the document never gets a refused cursor. A cursor is
`<micros>.<key>` (a time in microseconds since the epoch, then a tie-breaking key) or a bare
key, depending on the list's order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handlers.errors import DomainError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Patterns of the cursors, as published in the OpenAPI document.
TIME_UUID = r"^[0-9]{1,18}\.[0-9a-f]{32}$"
TIME_DIGITS = r"^[0-9]{1,18}\.[0-9]{1,20}$"
_LAST = datetime.max.replace(tzinfo=UTC)
INDEX = r"^[0-9]{1,9}$"
DIGITS = r"^[0-9]{1,20}$"  # a list ordered by a number: the last number returned


def time_cursor(at: datetime, key: str) -> str:
    """The cursor continuing after the item with sort key (at, key)."""
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{key.replace('-', '')}"


def split_time_cursor(cursor: str) -> tuple[datetime, str]:
    """(time, key) of a `<micros>.<key>` cursor; 400 if it is not one (the pattern failed)."""
    micros, sep, key = cursor.partition(".")
    if not sep or not micros.isdigit() or not key:
        raise DomainError("invalid_cursor", "cursor is not one this list gave", field="cursor")
    try:
        return _EPOCH + timedelta(microseconds=int(micros)), key
    except OverflowError:  # past year 9999: after every item
        return _LAST, key
