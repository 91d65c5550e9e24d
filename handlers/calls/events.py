"""The in-process bus of call state changes (call.ringing, call.answered, call.ended).

Publishing never blocks signalling: each subscriber has a bounded queue and a subscriber too
slow to keep up loses the oldest events (its `dropped` count says how many). Sinks (the event
log's writer, handlers/events/writer.py) are called synchronously and must not block either.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One state change of a call, as the CRM stream will show it."""

    type: str  # call.ringing | call.answered | call.ended
    call_id: uuid.UUID
    tenant_id: uuid.UUID
    at: datetime
    data: Mapping[str, object] = field(default_factory=dict)


class Subscription:
    """A subscriber's queue; iterate with `get()`, leave with `close()`."""

    def __init__(self, bus: EventBus, tenant_id: uuid.UUID | None, size: int) -> None:
        self._bus = bus
        self.tenant_id = tenant_id
        self.queue: asyncio.Queue[CallEvent] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, event: CallEvent) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self) -> CallEvent:
        """The next event."""
        return await self.queue.get()

    def close(self) -> None:
        """Stop receiving."""
        self._bus._subs.discard(self)


class EventBus:
    """Fan-out of call events to subscribers, optionally filtered by tenant."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._sinks: list[Callable[[CallEvent], None]] = []

    def add_sink(self, sink: Callable[[CallEvent], None]) -> None:
        """Hand every event to `sink` too, in publishing order (it must return at once)."""
        self._sinks.append(sink)

    def remove_sink(self, sink: Callable[[CallEvent], None]) -> None:
        """Stop handing events to `sink`."""
        self._sinks.remove(sink)

    def subscribe(self, tenant_id: uuid.UUID | None = None, *, size: int = 1000) -> Subscription:
        """A new subscription to every tenant's events, or to one tenant's."""
        sub = Subscription(self, tenant_id, size)
        self._subs.add(sub)
        return sub

    def publish(self, event: CallEvent) -> None:
        """Deliver to every matching subscriber without waiting."""
        for sink in self._sinks:
            sink(event)
        for sub in self._subs:
            if sub.tenant_id is None or sub.tenant_id == event.tenant_id:
                sub.offer(event)
