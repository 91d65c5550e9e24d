"""The SMPP dispatcher in a process of its own, so that messaging uses the machine's second core.

In one event loop, a bulk send being dispatched (thousands of submits, responses and receipts a
second) and the control API take turns: a verification code's POST waits behind the dispatch
work, and so does every single send. With `messaging.dispatch_process` on (the default), the
daemon starts `Dispatcher` in a child process (multiprocessing, spawn) with its own event loop,
database pool and SMPP binds; the API process only accepts and queues, and wakes the child
through a pipe when it has queued something (handlers/messages/wake). Otherwise the two share
nothing but PostgreSQL, which is what several instances already share safely (`SKIP LOCKED`
claims, per-instance recovery locks, LISTEN wake-ups).

The child dies with the daemon (a kill -9 of the daemon is a kill -9 of both: the next start
requeues its claimed rows as in doubt, as before). Every second it reports its readiness and
its metrics (the `telgate_smpp_*` and `telgate_dispatch_*` families) to the daemon, which
shows them on /readyz and /metrics. If it dies on its own, the daemon logs it and starts
another after a back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import structlog
from prometheus_client.registry import Collector

from config.schema import Config
from handlers.metrics import Metrics

log = structlog.get_logger("telgate.dispatch")

REPORT_SECONDS = 1.0
MIRRORED = ("telgate_smpp_", "telgate_dispatch_")  # metric families the child owns
RESTART_SECONDS = (0.5, 10.0)  # back-off bounds for restarting a child that died
PR_SET_PDEATHSIG = 1


class _Mirror(Collector):
    """The child's last reported metric families, on the daemon's registry."""

    def __init__(self) -> None:
        self.families: list[Any] = []

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


class DispatchProcess:
    """The daemon's handle on the dispatcher child: start, supervise, mirror, stop."""

    def __init__(self, config: Config, dsn: str, metrics: Metrics) -> None:
        self.config = config
        self.dsn = dsn
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self._wake_fd: Connection | None = None  # write end of the child's wake-up pipe
        self._status: tuple[bool, str] = (False, "dispatch process starting")
        self._started = asyncio.Event()
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._mirror = _Mirror()
        metrics.registry.register(self._mirror)

    async def start(self, timeout: float = 30.0) -> None:
        """Start the child and wait until its dispatcher runs (binds may still be coming up)."""
        self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="dispatch-process")
        async with asyncio.timeout(timeout):
            await self._started.wait()

    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe()
        wake_r, wake_w = self._ctx.Pipe(duplex=False)
        self._proc = self._ctx.Process(target=child_main,
                                       args=(self.config, self.dsn, child, wake_r),
                                       name="telgate-dispatch", daemon=False)
        self._proc.start()
        child.close()
        wake_r.close()
        os.set_blocking(wake_w.fileno(), False)
        self._conn = parent
        self._wake_fd = wake_w
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_message)
        log.info("dispatch_process_started", pid=self._proc.pid)

    def _on_message(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            return
        if kind == "status":
            ready, detail, families = payload
            self._status = (ready, detail)
            self._mirror.families = families
            self._started.set()

    async def _supervise(self) -> None:
        delay = RESTART_SECONDS[0]
        while True:
            proc = self._proc
            await asyncio.to_thread(proc.join)
            if self._stopping:
                return
            log.error("dispatch_process_died", pid=proc.pid, exitcode=proc.exitcode,
                      restart_s=delay)
            self._status = (False, f"dispatch process died (exit {proc.exitcode}); restarting")
            self._close_conn()
            await asyncio.sleep(delay)
            started = time.monotonic()
            self._spawn()
            # A child that kept running a while earns a quick restart next time.
            delay = RESTART_SECONDS[0] if time.monotonic() - started > 60 else \
                min(delay * 2, RESTART_SECONDS[1])

    def wake(self) -> None:
        """Recipients were queued by this daemon: one byte down the child's wake-up pipe. Never
        blocks: a full pipe already holds wake-ups the child has not read, and a dead child's
        successor claims on start."""
        if self._wake_fd is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_fd.fileno(), b"w")

    def _close_conn(self) -> None:
        if self._wake_fd is not None:
            self._wake_fd.close()
            self._wake_fd = None
        if self._conn is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None

    async def readiness(self) -> tuple[bool, str]:
        return self._status

    async def stop(self, drain_seconds: float) -> None:
        """Ask the child to drain (submits in flight finish, outcomes stored) and wait."""
        self._stopping = True
        proc = self._proc
        if proc is None:
            return
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("stop", drain_seconds))
        await asyncio.to_thread(proc.join, drain_seconds + 10)
        if proc.is_alive():
            log.error("dispatch_process_kill", pid=proc.pid)
            proc.kill()
            await asyncio.to_thread(proc.join, 5)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._close_conn()


# -- the child ---------------------------------------------------------------------------------

def child_main(config: Config, dsn: str, conn: Connection, wake: Connection) -> None:
    """The dispatcher process: dies with its parent, runs until told to stop."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # SIGTERM/SIGINT reach the daemon's whole process group; the daemon tells us when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from daemon.logs import configure_logging

    configure_logging(config.log)
    structlog.contextvars.bind_contextvars(process="dispatch")
    asyncio.run(_serve(config, dsn, conn, wake))


async def _serve(config: Config, dsn: str, conn: Connection, wake: Connection) -> None:
    from daemon import heap
    from daemon.db import close_pool, create_pool
    from handlers.messages.dispatch import Dispatcher
    from handlers.outage import DatabaseHealth

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    drain = config.lifecycle.drain_seconds

    def on_message() -> None:
        nonlocal drain
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):  # the daemon is gone
            loop.remove_reader(conn.fileno())
            stop.set()
            return
        if kind == "stop":
            drain = float(payload)
            stop.set()

    loop.add_reader(conn.fileno(), on_message)
    metrics = Metrics()
    pool = await create_pool(dsn, config)
    dispatcher = Dispatcher(config, pool, dsn, metrics, health=DatabaseHealth())
    await dispatcher.start()

    def on_wake() -> None:
        try:
            woken = os.read(wake.fileno(), 4096)  # every wake-up sent so far: one claim
        except BlockingIOError:
            return
        except OSError:
            woken = b""
        if not woken:  # the daemon closed its end
            loop.remove_reader(wake.fileno())
            return
        dispatcher.wake()

    os.set_blocking(wake.fileno(), False)
    loop.add_reader(wake.fileno(), on_wake)
    heap.settle()  # what the dispatcher keeps is built; see daemon/heap.py
    try:
        while not stop.is_set():
            ready, detail = await dispatcher.readiness()
            families = [f for f in metrics.registry.collect() if f.name.startswith(MIRRORED)]
            try:
                conn.send(("status", (ready, detail, families)))
            except (OSError, ValueError):
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPORT_SECONDS):
                    await stop.wait()
    finally:
        await dispatcher.stop(drain)
        await close_pool(pool)
