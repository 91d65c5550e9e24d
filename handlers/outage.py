"""Database outages: which errors mean "the database is away", how long it has been away, and
how the long-running loops back off and report their last success.

A loop that meets an outage error logs it, waits a bounded, growing delay and tries again; it
never ends. Every part of the daemon that talks to the database feeds one `DatabaseHealth`, so
that `/readyz`, the API's 503 answers and the systemd watchdog agree on whether it is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

_log = structlog.get_logger("telgate.housekeeping")

# SQLSTATE classes meaning the server is not there for us right now: 08 connection exception,
# 53 insufficient resources (too many connections), 57P operator intervention (shutdown,
# crash, cannot connect now). 57014 (query canceled) is a statement timeout, not an outage.
_OUTAGE_SQLSTATES = ("08", "53", "57P")


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the database cannot be reached or is restarting."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError):  # refused, reset, socket file gone
            return True
        if isinstance(cur, asyncpg.InterfaceError):
            return "closed" in str(cur)  # "connection is closed"; others are our own mistakes
        if isinstance(cur, asyncpg.exceptions.InternalClientError):
            # "cannot switch to state …; another operation is in progress": a connection
            # whose operation was cut by the server going away.
            return True
        if isinstance(cur, asyncpg.PostgresError):
            state = getattr(cur, "sqlstate", None) or ""
            return state.startswith(_OUTAGE_SQLSTATES)
        cur = cur.__cause__ or cur.__context__
    return False


def describe(exc: BaseException) -> str:
    """A short, log- and readiness-friendly form of an error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(slots=True)
class DatabaseHealth:
    """Whether the database answers, since when it does not, and why (one per daemon)."""

    clock: Callable[[], float] = time.monotonic
    down_since: float | None = None
    last_error: str = ""
    supervisor_state: str = ""  # what the embedded server's supervisor is doing, if any

    def ok(self) -> None:
        """A round trip to the database just succeeded."""
        self.down_since = None
        self.last_error = ""

    def failed(self, exc: BaseException) -> None:
        """A round trip failed with an outage error."""
        if self.down_since is None:
            self.down_since = self.clock()
        self.last_error = describe(exc)

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    def down_for(self) -> float:
        """Seconds the database has been away (0 when it answers)."""
        return 0.0 if self.down_since is None else self.clock() - self.down_since

    def detail(self) -> str:
        """What /readyz says about the database."""
        if self.down_since is None:
            return "reachable"
        words = f"unreachable for {self.down_for():.0f} s ({self.last_error})"
        if self.supervisor_state:
            words += f"; embedded server: {self.supervisor_state}"
        return words


@dataclass(slots=True)
class Backoff:
    """Bounded exponential back-off with jitter: base, 2×base, … up to `cap` seconds."""

    base: float = 0.1
    cap: float = 5.0
    rand: Callable[[], float] = random.random
    attempt: int = field(default=0)

    def next(self) -> float:
        """The delay before the next try (grows until `cap`)."""
        delay = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt += 1
        return float(delay * (0.5 + self.rand() / 2))

    def reset(self) -> None:
        self.attempt = 0


class LoopMetrics:
    """Each long-running loop's last success and errors, for operators' alerts."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.last_success = Gauge(
            "telgate_loop_last_success_timestamp_seconds",
            "Unix time of each long-running loop's last successful round", ["loop"], registry=r)
        self.errors = Counter(
            "telgate_loop_errors_total", "failed rounds of each long-running loop", ["loop"],
            registry=r)


@dataclass(slots=True)
class LoopTracker:
    """One loop's bookkeeping: marks successes and failures, and paces retries."""

    name: str
    metrics: LoopMetrics | None = None
    health: DatabaseHealth | None = None
    backoff: Backoff = field(default_factory=Backoff)
    wall: Callable[[], float] = time.time

    def idle(self) -> None:
        """A round that needed no database round trip went fine (the loop lives)."""
        if self.metrics is not None:
            self.metrics.last_success.labels(self.name).set(self.wall())

    def ok(self) -> None:
        """A round, with its database round trips, succeeded."""
        self.backoff.reset()
        if self.metrics is not None:
            self.metrics.last_success.labels(self.name).set(self.wall())
        if self.health is not None:
            self.health.ok()

    def failed(self, exc: BaseException) -> float:
        """Record a failed round; return how long to wait before the next one."""
        if self.metrics is not None:
            self.metrics.errors.labels(self.name).inc()
        if self.health is not None and is_outage(exc):
            self.health.failed(exc)
        return self.backoff.next()


class PeriodicSweep:
    """A round of database housekeeping every `every` seconds, the first at once: a failed
    round is logged and retried after the loops' back-off (its `tracker`), and `stop()` ends the
    loop between rounds. Subclasses say what a round does (`sweep_once`, returning how many
    things it removed) and name their task and log events."""

    task_name = "sweep"
    done_event = "swept"  # logged with `count` when a round removed something
    failed_event = "sweep_failed"

    def __init__(self, tracker: LoopTracker, every: float) -> None:
        self.tracker = tracker
        self.every = every
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def sweep_once(self) -> int:
        """One round: how many things it removed."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the loop; its first round runs at once."""
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Stop after the round in hand."""
        self._stop.set()
        if self._task is not None:
            await self._task

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def _run(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                count = await self.sweep_once()
            except Exception as exc:  # the next round tries again
                delay = self.tracker.failed(exc)
                _log.error(self.failed_event, error=describe(exc))
                continue
            self.tracker.ok()
            if count:
                _log.info(self.done_event, count=count)
            delay = self.every
