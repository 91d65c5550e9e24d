"""Every instance follows the event log and fans it out to its streams.

The follower reads the log in id order over a LISTEN connection (`telgate_events`, sent once per
writing transaction by the log's trigger while some instance has streams open, migrations 0013
and 0023; a poll each second covers notifications lost while reconnecting or asking for them).
Ids are taken in insert order but commit in any order, so a missing id may still appear: the
follower then waits for the transactions that could commit it (the holders of the writer
mark, `log.writers`) to end, reads the gap again, and only then moves on. The high-water mark
`hwm` is therefore a prefix: every event at or below it that will ever exist has been seen,
which is what makes a resume from `Last-Event-ID` exact.

The newest events are kept in memory (`recent`) so a client resuming from a recent id is
served without reading the log; one further behind reads the log a page at a time first.

While no stream is open the follower reads nothing: every single send commits events twice
(accepted, then delivered) and a bulk send thousands a second, and reading them all was work
for nobody. A minute after its last stream closed it also stops asking for notifications
(`event_watchers`, 0023): a notifying commit holds a database-wide lock through its flush. A
stream about to open first asks for them again and brings the follower to the end of the log
(`sync`: the same step as at start, the highest committed id once the writers open then have
ended), and from then on it reads at every notification until the last stream closes. What
was kept in `recent` before such a jump no longer joins up with the log's end and is dropped,
so a client resuming from an id of that time reads the log first.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import deque
from collections.abc import Callable, Sequence

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from config.schema import EventsConfig
from handlers.events import log as event_log
from handlers.events.log import LoggedEvent
from handlers.metrics import Metrics
from handlers.outage import describe

log = structlog.get_logger("telgate.events")

PAGE = 1000  # rows the follower reads at once (a stream's queue holds at least this many)
HISTORY_PAGE = 500  # rows a catching-up stream reads at once
GAP_WAIT_SECONDS = 30.0  # a writer transaction open longer than this no longer holds the stream
SYNC_WAIT_SECONDS = 2.0  # a new stream waits at most this long for the follower to catch up
WATCH_LINGER_SECONDS = 60.0  # notifications stay asked for this long after the last stream
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError,
              TimeoutError)


class HubMetrics:
    """The streams' gauges and counters (registered once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.streams = Gauge("telgate_event_streams", "open /v1/events streams",
                             registry=registry)
        self.cut = Counter("telgate_event_streams_cut_total",
                           "streams cut off, by reason (slow_client, write_timeout)", ["reason"],
                           registry=registry)
        self.sent = Counter("telgate_event_stream_events_total",
                            "events sent on /v1/events streams", registry=registry)


class Stream:
    """One client's stream: its filter, a bounded queue of events to send, its position."""

    def __init__(self, tenant_id: uuid.UUID, *, sp_id: str | None = None,
                 types: frozenset[str] | None = None, extension: str | None = None,
                 bound: int = 2000) -> None:
        self.tenant_id = tenant_id
        self.sp_id = sp_id
        self.types = types
        self.extension = extension
        self.bound = bound
        self.queue: deque[LoggedEvent] = deque()
        self.after = 0  # events at or below were sent before this stream joined
        self.seen = 0  # every matching event at or below is queued or sent
        self.cut: str | None = None
        self.wake = asyncio.Event()
        self.on_cut: Callable[[], None] | None = None  # drops the connection at once

    def matches(self, e: LoggedEvent) -> bool:
        """Whether the client asked for this event (and may see it)."""
        if e.tenant_id != self.tenant_id:
            return False
        if self.types is not None and e.type not in self.types:
            return False
        if self.extension is not None and self.extension not in e.extensions:
            return False
        # A key narrowed to an SP ID sees that SP's messages only (as the message routes do).
        return self.sp_id is None or not e.type.startswith("message.") or e.sp_id == self.sp_id

    def offer(self, e: LoggedEvent) -> None:
        """A new event of the log (called in id order, never blocks)."""
        if self.cut is not None or e.id <= self.after:
            return
        if self.matches(e):
            if len(self.queue) >= self.bound:
                self.cut_off("slow_client")
                return
            self.queue.append(e)
            self.wake.set()
        self.seen = e.id

    def cut_off(self, reason: str) -> None:
        """Stop queueing and drop the connection (a write blocked on a stuck client ends
        too); the handler logs why."""
        if self.cut is None:
            self.cut = reason
            if self.on_cut is not None:
                self.on_cut()
        self.wake.set()


class EventHub:
    """Follows the event log for one instance and feeds its streams."""

    def __init__(self, dsn: str, pool: asyncpg.Pool, config: EventsConfig, *,
                 metrics: Metrics | None = None, poll_seconds: float = 1.0,
                 watch_linger_seconds: float = WATCH_LINGER_SECONDS) -> None:
        self.dsn = dsn
        self.pool = pool
        self.config = config
        self.poll_seconds = poll_seconds
        self.watch_linger_seconds = watch_linger_seconds
        self.hwm = 0
        self.recent: deque[LoggedEvent] = deque(maxlen=config.recent_events)
        self.streams: set[Stream] = set()
        self.ready = asyncio.Event()  # the first high-water mark is known
        self.following = asyncio.Event()
        self.metrics = metrics.group("event_streams", HubMetrics) if metrics else None
        if self.metrics is not None:
            self.metrics.streams.set_function(lambda: len(self.streams))
        self.reads = 0  # pages read by the follower (the tests read it)
        self._wake = asyncio.Event()
        self._syncs: list[asyncio.Future[None]] = []
        self._lost = asyncio.Event()
        self.watching = False  # notifications asked for on the follower's connection (0023)
        self._last_stream = 0.0  # loop time a stream was last seen open
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the log's end and start following; returns once streams can be served."""
        self._task = asyncio.create_task(self._run(), name="event-log-follower")
        waiter = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="event-log-retention")

    async def stop(self) -> None:
        """Stop following and sweeping; open streams end at their next wake-up."""
        for task in (self._sweeper, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for stream in list(self.streams):
            stream.cut_off("shutdown")

    async def readiness(self) -> tuple[bool, str]:
        """Ready while the log is followed."""
        if self.following.is_set():
            return True, f"following the event log at {self.hwm}, {len(self.streams)} streams"
        return False, "not following the event log"

    # -- streams ----------------------------------------------------------------------------

    def attach(self, stream: Stream, after: int) -> bool:
        """Join the live fan-out right after `after`: the kept events past it are queued at
        once. False (not joined) when `after` is older than what is kept: read the log first."""
        if after < self.hwm:
            if not self.recent or self.recent[0].id > after + 1:
                return False
            pending = [e for e in self.recent if e.id > after and stream.matches(e)]
            if len(pending) > stream.bound:
                return False
            stream.queue.extend(pending)
        stream.after = after
        stream.seen = max(after, self.hwm)
        self.streams.add(stream)
        self._wake.set()
        return True

    async def sync(self) -> None:
        """Bring `hwm` up to the end of the log before a stream opens (while no stream is open
        the follower reads nothing). Gives up after `SYNC_WAIT_SECONDS` (the follower
        reconnecting): the stream then starts from where the follower was."""
        if self.streams:
            return
        done = asyncio.get_running_loop().create_future()
        self._syncs.append(done)
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SYNC_WAIT_SECONDS):
                await asyncio.shield(done)

    def detach(self, stream: Stream) -> None:
        """The stream ended."""
        self.streams.discard(stream)
        self._last_stream = asyncio.get_running_loop().time()

    async def history(self, stream: Stream, after: int, upto: int,
                      limit: int = HISTORY_PAGE) -> list[LoggedEvent]:
        """The stream's events with `after` < id <= `upto`, from the log."""
        async with self.pool.acquire() as conn:
            return await event_log.history(
                conn, stream.tenant_id, after=after, upto=upto, limit=limit,
                sp_id=stream.sp_id, types=sorted(stream.types) if stream.types else None,
                extension=stream.extension)

    async def bounds(self) -> tuple[int, int]:
        """(floor, last issued): ids at or below the floor are gone, above the other never
        existed."""
        async with self.pool.acquire() as conn:
            return await event_log.floor(conn), await event_log.last_issued(conn)

    # -- following --------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn)
                self.watching = False
                self._lost.clear()
                conn.add_termination_listener(lambda _c: self._lost.set())
                await conn.add_listener(event_log.CHANNEL, self._on_notify)
                if not self.ready.is_set():
                    top = await event_log.last_id(conn)
                    await self._wait_for_writers(conn, await event_log.writers(conn))
                    self.hwm = top
                    self.ready.set()
                self.following.set()
                log.info("event_log_followed", hwm=self.hwm)
                backoff = 0.1
                while not self._lost.is_set():
                    self._wake.clear()
                    syncs, self._syncs = self._syncs, []
                    await self._watch(conn, bool(syncs))
                    if self.streams:
                        await self._catch_up(conn)
                    elif syncs:
                        await self._jump(conn)
                    for done in syncs:
                        if not done.done():
                            done.set_result(None)
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
                    # cancellation that arrives as the wake-up does, and stop() then waits
                    # for this task forever (seen in the tests' teardown).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_seconds):
                            await self._wake.wait()
                raise ConnectionError("listen connection lost")
            except asyncio.CancelledError:
                raise
            except _DB_ERRORS as exc:
                self.following.clear()
                log.warning("event_log_follower_disconnected", error=describe(exc),
                            retry_s=round(backoff, 2))
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(*_DB_ERRORS):
                        if self.watching:  # (a row left behind is cleared by the next watch)
                            await event_log.unwatch(conn)
                        await conn.close()
                self.watching = False

    async def _watch(self, conn: asyncpg.Connection, opening: bool) -> None:
        """Ask for notifications before a first stream opens (before `_jump`, so a statement
        committed after it notifies); stop asking a while after the last one closed. A
        notification missed around either is made up by the poll."""
        now = asyncio.get_running_loop().time()
        if self.streams or opening:
            self._last_stream = now
            if not self.watching:
                await event_log.watch(conn)
                self.watching = True
        elif self.watching and now - self._last_stream >= self.watch_linger_seconds:
            await event_log.unwatch(conn)
            self.watching = False

    def _on_notify(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self._wake.set()

    async def _jump(self, conn: asyncpg.Connection) -> None:
        """To the end of the log without reading it (no stream was open)."""
        top = await event_log.last_id(conn)
        await self._wait_for_writers(conn, await event_log.writers(conn))
        if top > self.hwm:
            self.hwm = top
            self.recent.clear()

    async def _catch_up(self, conn: asyncpg.Connection) -> None:
        while True:
            rows = await event_log.rows_after(conn, self.hwm, PAGE)
            self.reads += 1
            for row in rows:
                if row.id > self.hwm + 1:
                    # Missing ids: a transaction still open may commit them, or they were
                    # rolled back. Wait for every writer open now, then read them again.
                    await self._wait_for_writers(conn, await event_log.writers(conn))
                    for late in await event_log.rows_between(conn, self.hwm, row.id):
                        self._publish(late)
                self._publish(row)
            if len(rows) < PAGE:
                return

    async def _wait_for_writers(self, conn: asyncpg.Connection, vxids: Sequence[str]) -> None:
        if not vxids:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GAP_WAIT_SECONDS
        while await event_log.still_running(conn, vxids):
            if loop.time() > deadline:
                log.error("event_log_gap_wait_abandoned", hwm=self.hwm, writers=list(vxids))
                return
            await asyncio.sleep(0.005)

    def _publish(self, e: LoggedEvent) -> None:
        self.recent.append(e)
        self.hwm = e.id
        for stream in self.streams:
            stream.offer(e)

    # -- retention --------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        retention = self.config.retention_hours * 3600.0
        every = min(300.0, max(1.0, retention / 4))
        while True:
            await asyncio.sleep(every * (0.75 + random.random() / 2))
            try:
                await self.sweep()
            except _DB_ERRORS as exc:
                log.warning("event_log_sweep_failed", error=describe(exc))

    async def sweep(self) -> int:
        """Delete what is past retention; return how many events went."""
        retention = self.config.retention_hours * 3600.0
        total = 0
        while True:
            async with self.pool.acquire() as conn:
                deleted = await event_log.sweep(conn, retention)
            total += deleted
            if deleted < 10_000:
                break
        if total:
            log.info("event_log_swept", deleted=total)
        return total
