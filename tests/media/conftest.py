"""A real media process per test, on its own slice of the port range."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from handlers.media.client import MediaProcess, MediaSettings


def port_slice(size: int) -> tuple[int, int]:
    """A random range in 10000-32767, below the kernel's ephemeral ports (which other tests'
    free-port helpers hand out): tests running at once rarely overlap, and the pool skips
    ports another program holds anyway."""
    low = random.randrange(10000, 32768 - size, 2)
    return low, low + size


@pytest.fixture
async def media(tmp_path: Path) -> AsyncIterator[MediaProcess]:
    low, high = port_slice(400)
    process = MediaProcess(MediaSettings(control_path=tmp_path / "media.sock",
                                         recordings=tmp_path / "recordings",
                                         port_low=low, port_high=high, timeout=30.0))
    await process.start()
    try:
        yield process
    finally:
        await process.stop()
