"""Call records (CDR): the classes the portals report (seed 003) and their storage.

A record is written once, when the call ends, by a batching writer so that signalling never
waits for the database. Reading records first waits for the writers of the same pool to
store what they hold, so a call is listed as soon as it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import uuid
import weakref
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger("telgate.calls.cdr")


class Direction(enum.StrEnum):
    """Which way the call went through the gateway."""

    INCOMING = "incoming"  # trunk -> extension(s)
    OUTGOING = "outgoing"  # extension -> trunk
    INTERNAL = "internal"  # extension -> extension


class CallClass(enum.StrEnum):
    """통화 유형 of seed 003: 발신, 발신 연결 실패, 수신, 부재중, 통화중부재, 수신 전 종료."""

    OUTGOING = "outgoing"
    OUTGOING_FAILED = "outgoing_failed"
    INCOMING = "incoming"
    MISSED = "missed"
    BUSY_MISSED = "busy_missed"
    ENDED_BEFORE_ANSWER = "ended_before_answer"


class HangupBy(enum.StrEnum):
    """Who ended the call: the calling party, the called party, or the gateway (timeouts)."""

    CALLER = "caller"
    CALLEE = "callee"
    SYSTEM = "system"


class EndReason(enum.StrEnum):
    """Why the call ended, as the record keeps it."""

    NORMAL = "normal"  # a party hung up after answering
    CANCELLED = "cancelled"  # the caller gave up before an answer
    NO_ANSWER = "no_answer"  # rang until the ring time ran out
    BUSY = "busy"
    DECLINED = "declined"  # the called side refused (403/603/...)
    UNREACHABLE = "unreachable"  # nothing to ring, or attempts failed (408, 503, ...)
    REFUSED = "refused"  # not routed: unknown number, caller ID not registered, no trunk
    SESSION_EXPIRED = "session_expired"  # RFC 4028: the refresher went silent
    SESSION_REFRESH_FAILED = "session_refresh_failed"  # our refresh was refused or lost
    MAX_DURATION = "max_duration"  # the tenant's maximum call duration was reached
    ACK_TIMEOUT = "ack_timeout"  # the caller never confirmed our answer
    PEER_LOST = "peer_lost"  # a leg stopped answering in-dialog requests (408/481)
    COMMAND = "command"  # ended through the control API
    RTP_TIMEOUT = "rtp_timeout"  # no audio from either leg for media.rtp_timeout_seconds
    MEDIA_LOST = "media_lost"  # the media process carrying the call's audio went away
    SHUTDOWN = "shutdown"  # the gateway stopped
    CALLBACK_REQUESTED = "callback_requested"  # the callback IVR took a request to call back
    CALLBACK_IVR = "callback_ivr"  # ended in the callback IVR without a request
    ABUSE_BLOCKED = "abuse_blocked"  # the agent blocked an abusive caller (warning, then BYE)
    TRANSFER_FAILED = "transfer_failed"  # a blind transfer's target did not answer
    TRANSFERRED = "transferred"  # a consultation call handed over in an attended transfer


BUSY_STATUSES = frozenset({486, 600})


def classify(direction: Direction, *, answered: bool, final_status: int,
             caller_gave_up: bool) -> CallClass:
    """The class of a finished call.

    Outgoing calls are `outgoing` when answered, else `outgoing_failed`. Incoming and
    internal calls (seen from the called extension) are `incoming` when answered, else
    `ended_before_answer` when the caller hung up first, `busy_missed` when the extension was
    busy (486/600), and `missed` otherwise (no answer, unreachable, declined).
    """
    if direction is Direction.OUTGOING:
        return CallClass.OUTGOING if answered else CallClass.OUTGOING_FAILED
    if answered:
        return CallClass.INCOMING
    if caller_gave_up:
        return CallClass.ENDED_BEFORE_ANSWER
    if final_status in BUSY_STATUSES:
        return CallClass.BUSY_MISSED
    return CallClass.MISSED


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished call (column order matches `call_records`)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    sip_call_id: str
    direction: str
    internal: bool
    call_class: str
    caller: str
    callee: str
    did: str | None
    extension: str | None
    peer_extension: str | None
    trunk: str | None
    started_at: datetime
    ringing_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime
    talk_seconds: float
    final_status: int
    hangup_by: str
    end_reason: str = EndReason.NORMAL.value
    transfers: tuple[str, ...] = ()  # extensions the call went through, the last one included

    def public(self) -> dict[str, object]:
        """The API view."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            key = "class" if f.name == "call_class" else f.name
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, uuid.UUID):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        out.pop("tenant_id")
        return out


COLUMNS = ("id", "tenant_id", "sip_call_id", "direction", "internal", "class", "caller", "callee",
           "did", "extension", "peer_extension", "trunk", "started_at", "ringing_at",
           "answered_at", "ended_at", "talk_seconds", "final_status", "hangup_by", "end_reason",
           "transfers")


_FIELDS = tuple(f.name for f in fields(CallRecord))


def _row(record: CallRecord) -> tuple[object, ...]:
    # dataclasses.astuple deep-copies every value; a flat getattr is all COPY needs.
    return tuple(getattr(record, name) for name in _FIELDS)


def from_row(r: asyncpg.Record) -> CallRecord:
    """A stored record."""
    values: list[Any] = [r[c] for c in COLUMNS]
    values[-1] = tuple(values[-1])  # transfers: text[] comes back as a list
    return CallRecord(*values)


_WRITERS: weakref.WeakSet[CdrWriter] = weakref.WeakSet()
READ_WAIT_SECONDS = 2.0  # a reader waits at most this long for unsaved records


class CdrWriter:
    """Collects finished calls and inserts them in batches (COPY) on its own task."""

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 500) -> None:
        _WRITERS.add(self)
        self._pool = pool
        self._queue: asyncio.Queue[CallRecord] = asyncio.Queue()
        self._max_batch = max_batch
        self._task: asyncio.Task[None] | None = None
        self._unsaved = 0
        self.written = 0

    @property
    def unsaved(self) -> bool:
        """Whether records are queued or being written."""
        return self._unsaved > 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cdr-writer")

    def submit(self, record: CallRecord) -> None:
        """Queue a record (never blocks signalling)."""
        self._unsaved += 1
        self._queue.put_nowait(record)

    async def flush(self) -> None:
        """Wait until every queued record is stored."""
        await self._queue.join()

    async def stop(self) -> None:
        """Store what is queued, then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._store(batch)
                self._unsaved -= len(batch)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.error("cdr_store_failed", error=str(exc), records=len(batch))
                await asyncio.sleep(1.0)
                for record in batch:  # keep them: retried with the next batch
                    self._queue.put_nowait(record)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _store(self, batch: list[CallRecord]) -> None:
        async with self._pool.acquire() as conn:
            await conn.copy_records_to_table(
                "call_records", records=[_row(r) for r in batch], columns=list(COLUMNS))
        self.written += len(batch)


async def settle(conn: asyncpg.Connection) -> None:
    """Wait (briefly) until records of calls that already ended are stored."""
    pending = [w for w in _WRITERS if w.unsaved]
    if not pending:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(READ_WAIT_SECONDS):
            for writer in pending:
                await writer.flush()

