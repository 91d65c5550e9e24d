"""The retention sweeper: a daemon loop that deletes recordings, file and row together, once
they are older than the configured retention (`[recordings] retention_days`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import structlog

from config.schema import RecordingsConfig
from handlers.media import recordings
from handlers.outage import LoopTracker, describe

log = structlog.get_logger("telgate.recordings")

# Files are deleted on the event loop inside the batch's transaction (recordings.sweep): a small
# batch bounds how long one round can hold the loop on a slow disk or network volume.
BATCH = 100


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RetentionSweeper:
    """Every `sweep_interval_seconds`: re-date every recording to the configured retention,
    then delete those past it, batch by batch; survives database outages with the loops'
    back-off and stops between batches."""

    def __init__(self, pool: asyncpg.Pool, tracker: LoopTracker, config: RecordingsConfig, *,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.pool = pool
        self.tracker = tracker
        self.config = config
        self.clock = clock
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop; its first round runs at once."""
        self._task = asyncio.create_task(self._run(), name="recording-retention")

    async def stop(self) -> None:
        """Stop after the statement or batch in hand."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def sweep_once(self) -> int:
        """One round: the recordings deleted."""
        deleted = 0
        async with self.pool.acquire() as conn:
            await recordings.apply_retention(conn, self.config.retention)
            while not self._stop.is_set():
                # A file that cannot be deleted keeps its row, so a batch can delete fewer
                # than BATCH and still leave work behind: stop only when one deletes nothing.
                n = await recordings.sweep(conn, now=self.clock(), batch=BATCH)
                deleted += n
                if n == 0:
                    break
        return deleted

    async def _run(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                deleted = await self.sweep_once()
            except Exception as exc:  # the next round tries again
                delay = self.tracker.failed(exc)
                log.error("recording_sweep_failed", error=describe(exc))
                continue
            self.tracker.ok()
            if deleted:
                log.info("recordings_expired", count=deleted)
            delay = self.config.sweep_interval_seconds
