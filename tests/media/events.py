"""Media events collected by a test, awaitable."""

from __future__ import annotations

import asyncio

from handlers.media.interface import EventKind, MediaEvent


class Events(list[MediaEvent]):
    """The events of one session, awaitable."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def append(self, event: MediaEvent) -> None:
        super().append(event)
        self._changed.set()

    async def wait_for(self, kind: EventKind, seconds: float = 10.0) -> MediaEvent:
        async with asyncio.timeout(seconds):
            while True:
                for event in self:
                    if event.kind is kind:
                        return event
                self._changed.clear()
                await self._changed.wait()
