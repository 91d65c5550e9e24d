"""The retention sweeper: a daemon loop that deletes recordings, file and row together, once
they are older than the configured retention (`[recordings] retention_days`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from config.schema import RecordingsConfig
from handlers.media import recordings
from handlers.outage import LoopTracker, PeriodicSweep

# Files are deleted on the event loop inside the batch's transaction (recordings.sweep): a small
# batch bounds how long one round can hold the loop on a slow disk or network volume.
BATCH = 100


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RetentionSweeper(PeriodicSweep):
    """Every `sweep_interval_seconds`: re-date every recording to the configured retention,
    then delete those past it, batch by batch; survives database outages with the loops'
    back-off and stops between batches."""

    task_name = "recording-retention"
    done_event = "recordings_expired"
    failed_event = "recording_sweep_failed"

    def __init__(self, pool: asyncpg.Pool, tracker: LoopTracker, config: RecordingsConfig, *,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        super().__init__(tracker, config.sweep_interval_seconds)
        self.pool = pool
        self.config = config
        self.clock = clock

    async def sweep_once(self) -> int:
        """One round: the recordings deleted."""
        deleted = 0
        async with self.pool.acquire() as conn:
            await recordings.apply_retention(conn, self.config.retention)
            while not self.stopping:
                # A file that cannot be deleted keeps its row, so a batch can delete fewer
                # than BATCH and still leave work behind: stop only when one deletes nothing.
                n = await recordings.sweep(conn, now=self.clock(), batch=BATCH)
                deleted += n
                if n == 0:
                    break
        return deleted
