"""The daemon's lifecycle: wire the capabilities, serve, and drain on SIGTERM.

Order at start: database (embedded or configured) → migrations → capabilities → HTTP listener
→ READY=1. On the first SIGTERM/SIGINT: STOPPING=1, /readyz turns 503, the listener stops
accepting, in-flight requests and capability work get `lifecycle.drain_seconds`, then the pool
closes and the embedded database stops; exit 0. A second signal exits at once (status 130),
the embedded server being stopped by the kernel's parent-death signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import structlog
from aiohttp import web

from config.schema import Config
from daemon import __version__, heap
from daemon.db import open_database_server
from daemon.embedded_pg import EmbeddedPostgres
from daemon.systemd import Notifier
from handlers.api.app import build_app
from handlers.api.context import AppContext, ReadinessCheck
from handlers.api.framework import RouteTable
from handlers.metrics import Metrics
from handlers.outage import DatabaseHealth, LoopMetrics, LoopTracker, describe, is_outage

log = structlog.get_logger("telgate.daemon")

# A started capability hands back how to stop it (within the drain deadline).
Stopper = Callable[[], Awaitable[None]]
Starter = Callable[["Runtime"], Awaitable[Stopper | None]]


@dataclass(slots=True)
class Runtime:
    """What capabilities are wired with at start-up."""

    config: Config
    pool: asyncpg.Pool
    dsn: str
    context: AppContext
    stoppers: list[Stopper] = field(default_factory=list)


DB_PROBE_SECONDS = 1.0


async def _ping(pool: asyncpg.Pool) -> None:
    async with pool.acquire(timeout=1.5) as conn:
        await conn.fetchval("SELECT 1", timeout=1.5)


def _database_check(pool: asyncpg.Pool, health: DatabaseHealth) -> ReadinessCheck:
    async def check() -> tuple[bool, str]:
        if not health.is_down:
            try:
                await _ping(pool)
            except Exception as exc:
                if not is_outage(exc) and not isinstance(exc, TimeoutError):
                    raise
                health.failed(exc)
        return not health.is_down, health.detail()

    return check


async def _watch_database(pool: asyncpg.Pool, health: DatabaseHealth,
                          embedded: EmbeddedPostgres | None, tracker: LoopTracker) -> None:
    """Probe the database every second, so that its absence (and return) is known at once."""
    while True:
        try:
            await _ping(pool)
        except Exception as exc:  # the probe reports; it never ends
            if health.down_since is None:
                log.error("database_unreachable", error=describe(exc))
            health.failed(exc)
            tracker.failed(exc)
        else:
            if health.is_down:
                log.warning("database_back", after_s=round(health.down_for(), 1))
            tracker.ok()
        health.supervisor_state = (
            "" if embedded is None or embedded.status == "running" else embedded.status)
        await asyncio.sleep(DB_PROBE_SECONDS)


async def run_daemon(
    config: Config,
    *,
    starters: list[Starter] | None = None,
    on_ready: Callable[[Runtime], Awaitable[None]] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; return the exit status."""
    loop = asyncio.get_running_loop()
    notifier = Notifier()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("shutdown_requested", signal=signame)
            stop.set()
        else:
            log.warning("shutdown_forced", signal=signame)
            os._exit(130)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)

    async with open_database_server(config, attach=False) as (pool, dsn, embedded):
        context = AppContext(
            config=config, pool=pool, metrics=Metrics(), routes=RouteTable(), version=__version__
        )
        context.readiness["database"] = _database_check(pool, context.db)
        probe = LoopTracker("database-probe", context.metrics.group("loops", LoopMetrics))
        db_watch = asyncio.create_task(
            _watch_database(pool, context.db, embedded, probe), name="database-probe")
        runtime = Runtime(config, pool, dsn, context)
        for start in starters or []:
            stopper = await start(runtime)
            if stopper is not None:
                runtime.stoppers.append(stopper)
        app = build_app(context)
        runner = make_runner(app, config)
        await runner.setup()
        site = web.TCPSite(runner, config.api.host, config.api.port, reuse_address=True)
        await site.start()
        log.info("api_listening", host=config.api.host, port=config.api.port)
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's full passes, which otherwise stall the loop as the heap grows.
        heap.settle()
        _watch_gc(context.metrics)
        lag_probe = asyncio.create_task(_watch_loop_lag(context.metrics), name="loop-lag")
        notifier.notify("READY=1")
        watchdog = _start_watchdog(notifier, context.db, config.lifecycle.database_outage_seconds)
        if on_ready is not None:
            await on_ready(runtime)
        await stop.wait()

        notifier.notify("STOPPING=1")
        context.draining = True
        log.info("draining", deadline_s=config.lifecycle.drain_seconds)
        try:
            async with asyncio.timeout(config.lifecycle.drain_seconds + 1):
                # Stops accepting, then waits for in-flight requests up to shutdown_timeout.
                started = time.monotonic()
                await runner.cleanup()
                log.info("drain_step_done", step="http", ms=_ms_since(started))
                for stopper in reversed(runtime.stoppers):
                    started = time.monotonic()
                    step = getattr(stopper, "__qualname__", "?")
                    try:
                        await stopper()
                    except Exception as exc:  # one step failing must not skip the others
                        log.exception("drain_step_failed", step=step, error=describe(exc))
                        continue
                    log.info("drain_step_done", step=step, ms=_ms_since(started))
        except TimeoutError:
            log.warning("drain_deadline_passed")
        for task in (watchdog, lag_probe, db_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    log.info("stopped")
    return 0


def make_runner(app: web.Application, config: Config) -> web.AppRunner:
    """The HTTP server of the control API with the daemon's timeouts."""
    return web.AppRunner(
        app, handle_signals=False, access_log=None,
        shutdown_timeout=config.lifecycle.drain_seconds,
        # aiohttp closes a connection that has not delivered a whole request head within its
        # keep-alive timeout (armed at connect and after each answer): our header timeout.
        keepalive_timeout=config.api.header_timeout_seconds,
    )


LAG_PROBE_SECONDS = 0.1
STALL_WARN_SECONDS = 0.1


async def _watch_loop_lag(metrics: Metrics) -> None:
    """Measure how late a periodic timer fires; warn on stalls long enough to hurt requests."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + LAG_PROBE_SECONDS
        await asyncio.sleep(LAG_PROBE_SECONDS)
        lag = max(0.0, loop.time() - expected)
        metrics.loop_lag.observe(lag)
        if lag > STALL_WARN_SECONDS:
            log.warning("event_loop_stalled", ms=round(lag * 1000, 1))


def _watch_gc(metrics: Metrics) -> None:
    """Time each cyclic-GC pass; long ones are logged (they stall every request)."""
    started: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            took = time.perf_counter() - started[0]
            metrics.gc_pause.labels(str(info["generation"])).observe(took)
            if took > STALL_WARN_SECONDS:
                log.warning("gc_pause", generation=info["generation"], ms=round(took * 1000, 1),
                            collected=info.get("collected"))

    gc.callbacks.append(callback)


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _start_watchdog(notifier: Notifier, health: DatabaseHealth,
                    outage_limit: float) -> asyncio.Task[None] | None:
    """Feed the systemd watchdog, unless the database has been away longer than `outage_limit`
    (then systemd restarts the unit, which is all that is left to try)."""
    interval = notifier.watchdog_interval
    if interval is None:
        return None

    async def ping() -> None:
        withheld = False
        while True:
            if health.down_for() <= outage_limit:
                if withheld:
                    log.warning("watchdog_resumed")
                withheld = False
                notifier.notify("WATCHDOG=1")
            elif not withheld:
                withheld = True
                log.error("watchdog_withheld", database_down_s=round(health.down_for(), 1),
                          limit_s=outage_limit)
            await asyncio.sleep(interval)

    return asyncio.create_task(ping(), name="systemd-watchdog")
