"""Which NOTIFY channels a piece of work signalled, told without waiting on a clock.

A listener connection LISTENs to the channels and to a barrier; after the work has committed,
another connection notifies the barrier. Notifications reach a listener in the order of the
commits that sent them, so once the barrier arrives everything the work sent has arrived too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

BARRIER = "telgate_test_barrier"


@contextlib.asynccontextmanager
async def listening(dsn: str, *channels: str
                    ) -> AsyncIterator[Callable[[Callable[[], Awaitable[object]]],
                                                Awaitable[list[str]]]]:
    """Yields `signalled(work)`: runs `work` and returns the channels it notified, in order."""
    listener = await asyncpg.connect(dsn)
    other = await asyncpg.connect(dsn)
    heard: list[str] = []
    barrier = asyncio.Event()

    def on_notify(_c: object, _pid: int, channel: str, _payload: str) -> None:
        if channel == BARRIER:
            barrier.set()
        else:
            heard.append(channel)

    try:
        for channel in (*channels, BARRIER):
            await listener.add_listener(channel, on_notify)

        async def signalled(work: Callable[[], Awaitable[object]]) -> list[str]:
            heard.clear()
            barrier.clear()
            await work()
            await other.execute(f"NOTIFY {BARRIER}")
            async with asyncio.timeout(10):  # a safety net: the barrier comes with its commit
                await barrier.wait()
            return list(heard)

        yield signalled
    finally:
        await listener.close()
        await other.close()
