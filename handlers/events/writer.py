"""Call events into the event log, off the signalling path.

The call driver publishes synchronously; `EventLogWriter.offer` only appends to a bounded
in-memory buffer, and a task of its own writes batches (one statement each). While the database
is away the buffer holds up to `events.buffer_events` events and the batch in hand is retried
as it is (its event ids are fixed, so a retry after a lost commit answer writes nothing twice);
beyond the bound new events are dropped, counted (`telgate_event_log_dropped_total`) and logged
once per outage (`event_log_buffer_full`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from itertools import islice

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from handlers import customers
from handlers.calls import cdr
from handlers.calls.events import CallEvent
from handlers.events import log as event_log
from handlers.events.log import NewEvent
from handlers.metrics import Metrics
from handlers.outage import describe

log = structlog.get_logger("telgate.events")

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
RECORD_WAIT_SECONDS = 2.0  # how long call.ended waits for its call record to be stored
TRACKED_CALLS = 100_000  # calls remembered (extensions, customer) until they end


@dataclass(slots=True)
class _Tracked:
    """What the writer remembers of a call between its events."""

    extensions: set[str] = field(default_factory=set)  # rung or reached
    customer: str | None = None  # the customer's number (customers.customer_number)


class WriterMetrics:
    """The writer's counters (registered once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter("telgate_event_log_written_total",
                               "call events written to the event log", registry=registry)
        self.dropped = Counter("telgate_event_log_dropped_total",
                               "call events dropped: the database was away longer than the "
                               "buffer lasts", registry=registry)
        self.buffered = Gauge("telgate_event_log_buffered",
                              "call events waiting in memory for the database", registry=registry)


class EventLogWriter:
    """Takes call events from the bus (`offer`) and writes them to the log in batches."""

    def __init__(self, pool: asyncpg.Pool, *, capacity: int = 100_000, batch: int = 1000,
                 metrics: Metrics | None = None) -> None:
        self.pool = pool
        self.capacity = capacity
        self.batch = batch
        self._buffer: deque[tuple[uuid.UUID, CallEvent]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._calls: dict[uuid.UUID, _Tracked] = {}
        self._dropping = False
        self.dropped = 0
        self.written = 0
        self._metrics = metrics.group("event_log_writer", WriterMetrics) if metrics else None
        if self._metrics is not None:
            self._metrics.buffered.set_function(lambda: len(self._buffer))

    def offer(self, event: CallEvent) -> None:
        """Queue one event (never blocks; drops and counts when the buffer is full)."""
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            if self._metrics is not None:
                self._metrics.dropped.inc()
            if not self._dropping:
                self._dropping = True
                log.error("event_log_buffer_full", buffered=len(self._buffer),
                          capacity=self.capacity, type=event.type, call=str(event.call_id))
            return
        self._buffer.append((uuid.uuid4(), event))
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        """Start writing."""
        self._task = asyncio.create_task(self._run(), name="event-log-writer")

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything offered so far is written (or `timeout` passes)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Write what is buffered (up to `drain_seconds`), then stop."""
        await self.flush(drain_seconds)
        if self._buffer:
            log.error("event_log_unwritten_at_stop", events=len(self._buffer))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.1
        prepared: list[NewEvent] | None = None
        while True:
            if not self._buffer:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if prepared is None:
                prepared = [self._prepare(eid, e) for eid, e in islice(self._buffer, self.batch)]
            try:
                async with asyncio.timeout(30):
                    await self._write(prepared)
            except _DB_ERRORS as exc:
                log.warning("event_log_write_failed", error=describe(exc), events=len(prepared),
                            buffered=len(self._buffer), retry_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for _ in prepared:
                self._buffer.popleft()
            self.written += len(prepared)
            if self._metrics is not None:
                self._metrics.written.inc(len(prepared))
            prepared = None
            if self._dropping and len(self._buffer) < self.capacity // 2:
                self._dropping = False
                log.warning("event_log_buffer_recovered", dropped=self.dropped)

    def _prepare(self, event_id: uuid.UUID, e: CallEvent) -> NewEvent:
        """The row of one call event. Remembers which extensions each call involved, so that
        `call.ended` can be filtered by extension like the events before it, and its customer's
        number, whose name the statement writing the row looks up (log.insert)."""
        data: dict[str, object] = {"call_id": str(e.call_id), **e.data}
        call = self._calls.get(e.call_id)
        if e.type == "call.ringing":
            call = _Tracked({str(x) for x in _strings(e.data.get("extensions"))},
                            customers.customer_number(e.data.get("direction"),
                                                      e.data.get("caller"), e.data.get("callee")))
            self._calls[e.call_id] = call
            if len(self._calls) > TRACKED_CALLS:
                del self._calls[next(iter(self._calls))]
        elif e.type == "call.answered" and isinstance(e.data.get("extension"), str):
            call = self._calls.setdefault(e.call_id, _Tracked())
            call.extensions.add(str(e.data["extension"]))
        elif e.type == "call.ended":
            call = self._calls.pop(e.call_id, None)
        customer = call.customer if call is not None else None
        if e.type == "call.ringing" or customer is not None:
            data["customer_name"] = None  # filled from the directory when the number is in it
        return NewEvent(event_id, e.tenant_id, e.type,
                        tuple(sorted(call.extensions)) if call is not None else (), data, e.at,
                        customer)

    async def _write(self, events: list[NewEvent]) -> None:
        ended = [uuid.UUID(str(e.data["call_id"])) for e in events if e.type == "call.ended"]
        async with self.pool.acquire() as conn:
            if ended:
                records = await _records(conn, ended)
                events = [_with_record(e, records) if e.type == "call.ended" else e
                          for e in events]
            async with conn.transaction():
                await event_log.insert(conn, events)


def _with_record(e: NewEvent, records: dict[uuid.UUID, cdr.CallRecord]) -> NewEvent:
    """`call.ended` with its call record (as GET /v1/cdrs shows it), the extensions the
    record names, and its customer (a call that never rang is known by its record only)."""
    record = records.get(uuid.UUID(str(e.data["call_id"])))
    if record is None:
        log.warning("call_record_not_in_event", call=str(e.data["call_id"]))
        return replace(e, data={**e.data, "record": None})
    extensions = set(e.extensions) | {x for x in (record.extension, record.peer_extension) if x}
    data: dict[str, object] = {**e.data, "record": record.public()}
    customer = e.customer or customers.customer_number(
        "internal" if record.internal else record.direction, record.caller, record.callee)
    if customer is not None:
        data.setdefault("customer_name", None)
    return replace(e, data=data, extensions=tuple(sorted(extensions)), customer=customer)


async def _records(conn: asyncpg.Connection, call_ids: list[uuid.UUID]
                   ) -> dict[uuid.UUID, cdr.CallRecord]:
    """The call records of calls that just ended; the CDR writer stores them within
    milliseconds of the end, so wait for it briefly."""
    found: dict[uuid.UUID, cdr.CallRecord] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_WAIT_SECONDS
    while True:
        rows = await conn.fetch(
            f"SELECT {', '.join(cdr.COLUMNS)} FROM call_records WHERE id = ANY ($1::uuid[])",
            [c for c in call_ids if c not in found])
        for r in rows:
            record = cdr.from_row(r)
            found[record.id] = record
        if len(found) == len(call_ids) or loop.time() >= deadline:
            return found
        await asyncio.sleep(0.02)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else []
