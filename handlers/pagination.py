"""Opaque list cursors: the sort key of the last item returned, base64-encoded JSON."""

from __future__ import annotations

import base64
import json

from handlers.errors import DomainError


def encode_cursor(values: list[str]) -> str:
    """The cursor that continues after an item with these sort-key values."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list[str] | None:
    """The sort-key values in a cursor (None for the first page); 400 if it is not ours."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != size or not all(
        isinstance(v, str) for v in values
    ):
        raise DomainError("invalid_cursor", "cursor is not one this list gave", field="cursor",
                          status=400)
    return values
