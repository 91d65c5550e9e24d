"""Prompt files as the media process reads them: once per version of the file, again when the
file is replaced, a bounded number kept, refused with a reason when they cannot be played."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from handlers.media.prompt_cache import PromptCache, PromptUnavailable


def test_prompt_is_read_once_and_again_when_replaced(tmp_path: Path) -> None:
    path = tmp_path / "welcome.pcma"
    path.write_bytes(b"\x01" * 320)
    cache = PromptCache()
    assert cache.read(path) == b"\x01" * 320
    os.utime(path, ns=(1, 1))
    path.write_bytes(b"\x02" * 320)  # same size, written in place: the mtime tells
    assert cache.read(path) == b"\x02" * 320
    replacement = tmp_path / "upload.tmp"
    replacement.write_bytes(b"\x03" * 320)
    os.utime(replacement, ns=(os.stat(path).st_mtime_ns,) * 2)
    replacement.rename(path)  # renamed over it with the same size and mtime: the inode tells
    assert cache.read(path) == b"\x03" * 320


def test_oldest_prompt_leaves_the_cache_first(tmp_path: Path) -> None:
    cache = PromptCache(max_cached=2)
    paths = [tmp_path / f"{n}.pcma" for n in range(3)]
    for n, path in enumerate(paths):
        path.write_bytes(bytes([n + 1]) * 10)
        cache.read(path)
    assert [path in cache for path in paths] == [False, True, True]


@pytest.mark.parametrize("name,content,code", [
    ("missing.pcma", None, "prompt_not_found"),
    ("empty.pcma", b"", "prompt_empty"),
    ("huge.pcma", b"\x00" * 1001, "prompt_too_large"),
    ("directory", "dir", "prompt_unreadable"),
    ("fifo", "fifo", "prompt_unreadable"),
])
def test_prompt_that_cannot_be_played_is_refused_with_its_reason(
        tmp_path: Path, name: str, content: bytes | str | None, code: str) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content == "fifo":
        os.mkfifo(path)  # reading it would block the media loop until a writer came
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(PromptUnavailable) as refused:
        PromptCache(max_file_bytes=1000).read(path)
    assert refused.value.code == code
