"""Carrier message ids as keys: one canonical spelling plus the same number read in the other base.

SMSCs disagree on the id format: many answer submit_sm_resp with a hex id and report the same
message in its receipt in decimal (or the reverse), the best-known complaint against Jasmin.
We store the id as given (lower case, leading zeros dropped) and its alternate reading, and
match a receipt's id against either.
"""

from __future__ import annotations

_HEX_DIGITS = "0123456789abcdef"
_MAX_DIGITS = 40  # ids longer than this are opaque strings, not numbers


def canonical(message_id: str) -> str:
    """The id as stored: stripped, lower case, leading zeros dropped (all zeros stays '0')."""
    text = message_id.strip().lower()
    if text and not text.strip(_HEX_DIGITS):  # only hex digits (a set of them cost more)
        text = text.lstrip("0") or "0"
    return text


def alternate(message_id: str) -> str | None:
    """The same id read in the other base: decimal digits → hex, hex (with a-f) → decimal."""
    text = canonical(message_id)
    if not text or len(text) > _MAX_DIGITS or text.strip(_HEX_DIGITS):
        return None
    if text.isdigit():
        return format(int(text), "x")
    return str(int(text, 16))
