"""The `Range` header of a recording download (RFC 9110 §14): one byte range is served, what
we do not serve is ignored (the whole file), and a range past the end is unsatisfiable."""

from __future__ import annotations

import pytest

from handlers.media.recording_routes import ByteRange, Unsatisfiable, byte_range

SIZE = 1000


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-99", ByteRange(0, 99)),
    ("bytes=500-", ByteRange(500, 999)),
    ("bytes=-100", ByteRange(900, 999)),
    ("bytes=-5000", ByteRange(0, 999)),  # a suffix longer than the file: all of it
    ("bytes=990-5000", ByteRange(990, 999)),  # a last byte past the end: up to the end
    ("Bytes = 7 - 7", ByteRange(7, 7)),  # unit case and spaces
])
def test_one_range_is_served(header: str, expected: ByteRange) -> None:
    assert byte_range(header, SIZE) == expected


@pytest.mark.parametrize("header", [
    None, "", "bytes=", "bytes=-", "bytes=5-2", "bytes=0-1,4-5", "items=0-9", "bytes=a-b",
    "bytes=" + "9" * 5000 + "-",  # more digits than Python converts
])
def test_what_is_not_one_valid_byte_range_means_the_whole_file(header: str | None) -> None:
    assert byte_range(header, SIZE) is None


@pytest.mark.parametrize(("header", "size"), [
    ("bytes=1000-", SIZE), ("bytes=2000-3000", SIZE), ("bytes=-0", SIZE), ("bytes=0-", 0),
    ("bytes=-10", 0),
])
def test_a_range_with_no_byte_of_the_file_is_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(header, size)
