"""Prompt files as the media process plays them: raw G.711 bytes, read once per version.

A prompt is read on the media loop itself (it is small, and usually cached): a file is read
again only when its inode, modification time or size changes, so a prompt replaced through
the API (written in place or renamed over) is heard from the next play on.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_FILE_BYTES = 8 * 1024 * 1024  # about 17 minutes of G.711: longer would stall the loop to read
MAX_CACHED = 256  # files kept; the oldest read goes first


class PromptUnavailable(Exception):
    """A prompt file that cannot be played; `code` says why (the media process's refusal)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class PromptCache:
    """Prompt bytes by path, kept with the (inode, mtime, size) they were read at."""

    def __init__(self, *, max_file_bytes: int = MAX_FILE_BYTES, max_cached: int = MAX_CACHED) -> None:
        self._files: dict[Path, tuple[tuple[int, int, int], bytes]] = {}
        self._max_file_bytes = max_file_bytes
        self._max_cached = max_cached

    def __contains__(self, path: Path) -> bool:
        return path in self._files

    def read(self, path: Path) -> bytes:
        """The file's bytes; PromptUnavailable if it is missing, unreadable, empty or too large."""
        try:
            info = os.stat(path)
            version = (info.st_ino, info.st_mtime_ns, info.st_size)
            cached = self._files.get(path)
            if cached is not None and cached[0] == version:
                return cached[1]
            if not stat.S_ISREG(info.st_mode):  # a FIFO or device could block the loop for good
                raise PromptUnavailable("prompt_unreadable", f"{path} is not a regular file")
            if info.st_size == 0:
                raise PromptUnavailable("prompt_empty", f"{path} is empty")
            if info.st_size > self._max_file_bytes:
                raise PromptUnavailable("prompt_too_large", f"{path} is over {self._max_file_bytes} bytes")
            with open(path, "rb") as file:
                data = file.read(self._max_file_bytes + 1)
        except FileNotFoundError as exc:
            raise PromptUnavailable("prompt_not_found", f"no file {path}") from exc
        except OSError as exc:  # a directory, no permission, an I/O error
            raise PromptUnavailable("prompt_unreadable", f"{path}: {exc.strerror or exc}") from exc
        if not data or len(data) > self._max_file_bytes:  # changed while being read
            raise PromptUnavailable("prompt_unreadable", f"{path} changed while being read")
        self._files.pop(path, None)
        while len(self._files) >= self._max_cached:
            del self._files[next(iter(self._files))]
        self._files[path] = (version, data)
        return data
