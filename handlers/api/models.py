"""Building blocks of the request and response models (pydantic v2) every route declares.

`Body` models validate JSON bodies strictly (no coercion: `"5"` is not an integer, unknown
fields are refused); `Params` models take path, query and header strings and convert them; any
other `BaseModel` describes an answer. The JSON Schema pydantic derives from these classes is
the OpenAPI 3.1 document, so a constraint written here is both enforced and published.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

from handlers import pagination

T = TypeVar("T")


class Body(BaseModel):
    """A JSON request body: strict types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Params(BaseModel):
    """Path, query or header parameters: strings converted to the declared types."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Page(BaseModel, Generic[T]):
    """One page of a list; `next_cursor` continues it (null on the last page)."""

    items: list[T]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: "
                                                "this was the last page")


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(raw: object) -> object:
    if isinstance(raw, datetime):
        return raw
    if not isinstance(raw, str) or not _RFC3339.match(raw):
        raise ValueError("must be an RFC 3339 date-time with a time zone offset")
    text = raw.upper().replace("Z", "+00:00")
    frac = re.search(r"\.(\d+)", text)
    if frac and len(frac.group(1)) > 6:  # Python reads at most microseconds
        text = text.replace(frac.group(0), "." + frac.group(1)[:6])
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"must be an RFC 3339 date-time: {exc}") from None


def _day(raw: object) -> object:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    if not isinstance(raw, str) or not re.match(r"^\d{4}-\d{2}-\d{2}$", raw):
        raise ValueError("must be a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"must be a date: {exc}") from None


def _uuid(raw: object) -> object:
    if isinstance(raw, uuid.UUID):
        return raw
    if not isinstance(raw, str):
        raise ValueError("must be a UUID string")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValueError("must be a UUID") from None


# An RFC 3339 time with an offset, given as a JSON string (strict bodies included).
Timestamp = Annotated[datetime, BeforeValidator(_rfc3339),
                      WithJsonSchema({"type": "string", "format": "date-time"})]
# A calendar date, YYYY-MM-DD.
Day = Annotated[date, BeforeValidator(_day), WithJsonSchema({"type": "string", "format": "date"})]
# A UUID given as a JSON string.
Uuid = Annotated[uuid.UUID, BeforeValidator(_uuid),
                 WithJsonSchema({"type": "string", "format": "uuid"})]

# A Korean phone number as people type it: digits with the usual separators (`010-1234-5678`,
# `+82 10 1234 5678`, full-width forms); the numbering plan is checked beyond the schema.
PHONE_PATTERN = r"^ *[+＋]?[0-9０-９][0-9０-９ ()./\-‐-―−－]{0,39}$"
PhoneText = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=PHONE_PATTERN)]
# Digits to search for in a number (`5678` finds 010-1234-5678).
DIGITS_PATTERN = r"^[0-9 ()./\-]{0,40}$"

Limit = Annotated[int, Field(ge=1, le=1000, description="items per page (1-1000)")]


CURSOR_DOC = Field(description="the `next_cursor` of the previous page")
TimeUuidCursor = Annotated[str, StringConstraints(pattern=pagination.TIME_UUID), CURSOR_DOC]
TimeDigitsCursor = Annotated[str, StringConstraints(pattern=pagination.TIME_DIGITS), CURSOR_DOC]
IndexCursor = Annotated[str, StringConstraints(pattern=pagination.INDEX), CURSOR_DOC]
DigitsCursor = Annotated[str, StringConstraints(pattern=pagination.DIGITS), CURSOR_DOC]


class TimeUuidPage(Params):
    """`limit` and `cursor` of a list ordered by (time, id)."""

    limit: Limit = 50
    cursor: TimeUuidCursor | None = None
