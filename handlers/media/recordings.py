"""The recordings index in PostgreSQL: a row per recorded call, its search, the per-tenant
policy of what is recorded, and retention (file and row deleted together)."""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import structlog

from handlers.errors import DomainError
from handlers.media.interface import RecordingResult, RecordingStatus
from protocols.rtp.g711 import Codec
from protocols.rtp.wav import HEADER_BYTES, WavError, read_wav

log = structlog.get_logger("telgate.recordings")

DEFAULT_RETENTION = timedelta(days=365)
MAX_PERIOD = timedelta(days=366)


class RecordingPolicy(enum.StrEnum):
    """The tenant setting `recording_policy`: record every call, none, or all but internal ones."""

    ALL = "all"
    NONE = "none"
    EXCLUDE_INTERNAL = "exclude_internal"

    @classmethod
    def from_settings(cls, settings: dict[str, object]) -> RecordingPolicy:
        """The policy in a tenant's settings (default: none, as the tenant settings API says:
        callers must be told they are recorded, so a tenant opts in)."""
        value = settings.get("recording_policy", cls.NONE.value)
        try:
            return cls(str(value))
        except ValueError as exc:
            raise DomainError("invalid_recording_policy", f"recording_policy must be one of "
                              f"{', '.join(p.value for p in cls)}", field="recording_policy") from exc

    def records(self, *, internal: bool) -> bool:
        """Whether a call (internal or not) is recorded under this policy."""
        return self is RecordingPolicy.ALL or (self is RecordingPolicy.EXCLUDE_INTERNAL and not internal)


@dataclass(frozen=True, slots=True)
class Recording:
    """One row of the index."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    call_id: uuid.UUID
    sip_call_id: str
    status: str
    codec: str
    path: str
    extension: str | None
    customer: str | None
    internal: bool
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: float | None
    bytes: int | None
    sha256: str | None
    error: str | None
    expires_at: datetime
    call_end_reason: str | None = None  # from its call record, once stored (e.g. abuse_blocked)


_COLUMNS = ("id, tenant_id, call_id, sip_call_id, status, codec, path, extension, customer, internal, "
            "started_at, ended_at, duration_seconds, bytes, sha256, error, expires_at")
# What the API shows: the row and how its call ended (an abuse block is noted with the audio).
_SHOWN = _COLUMNS + (", (SELECT c.end_reason FROM call_records c WHERE c.id = recordings.call_id"
                     " AND c.tenant_id = recordings.tenant_id) AS call_end_reason")


async def start(conn: asyncpg.Connection, *, tenant_id: uuid.UUID, call_id: uuid.UUID, sip_call_id: str,
                codec: Codec, path: str, started_at: datetime, extension: str | None,
                customer: str | None, internal: bool,
                retention: timedelta = DEFAULT_RETENTION) -> Recording:
    """The row of a recording that has just started (status `recording`)."""
    row = await conn.fetchrow(
        f"""INSERT INTO recordings (id, tenant_id, call_id, sip_call_id, status, codec, path, extension,
                                    customer, internal, started_at, expires_at)
            VALUES ($1, $2, $3, $4, 'recording', $5, $6, $7, $8, $9, $10, $11)
            RETURNING {_COLUMNS}""",
        uuid.uuid4(), tenant_id, call_id, sip_call_id, codec.encoding, path, extension, customer,
        internal, started_at, started_at + retention)
    return Recording(**dict(row))


async def finish(conn: asyncpg.Connection, recording_id: uuid.UUID, result: RecordingResult,
                 ended_at: datetime) -> Recording:
    """Complete a row with what the media side reported at close."""
    status = "ok" if result.status is RecordingStatus.OK else "failed"
    row = await conn.fetchrow(
        f"""UPDATE recordings SET status = $2, ended_at = $3, duration_seconds = $4, bytes = $5,
                                  sha256 = $6, error = $7
            WHERE id = $1 RETURNING {_COLUMNS}""",
        recording_id, status, ended_at, result.duration if status == "ok" else None,
        result.bytes if status == "ok" else None, result.sha256, result.error)
    if row is None:
        raise DomainError("recording_not_found", "no such recording", status=404)
    return Recording(**dict(row))


async def recover_interrupted(conn: asyncpg.Connection, *, now: datetime) -> int:
    """After a crash: rows still `recording` become `interrupted` with the size, digest and
    duration of what their file holds (the header is kept valid while recording)."""
    rows = await conn.fetch("SELECT id, path FROM recordings WHERE status = 'recording'")
    for row in rows:
        size, digest, duration, error = _inspect(Path(row["path"]))
        await conn.execute(
            """UPDATE recordings SET status = 'interrupted', ended_at = $2, bytes = $3, sha256 = $4,
                                     duration_seconds = $5, error = $6
               WHERE id = $1 AND status = 'recording'""",
            row["id"], now, size, digest, duration, error)
    return len(rows)


async def finish_interrupted(conn: asyncpg.Connection, recording_id: uuid.UUID, *, now: datetime) -> None:
    """A recording whose media process died under it: `interrupted`, with what its file holds
    (the header was kept valid while recording, so the file plays up to about its last second)."""
    path = await conn.fetchval("SELECT path FROM recordings WHERE id = $1", recording_id)
    if path is None:
        return
    size, digest, duration, error = _inspect(Path(path), "the media process going away")
    await conn.execute(
        """UPDATE recordings SET status = 'interrupted', ended_at = $2, bytes = $3, sha256 = $4,
                                 duration_seconds = $5, error = $6
           WHERE id = $1 AND status = 'recording'""",
        recording_id, now, size, digest, duration, error)


def _inspect(path: Path, cause: str = "a restart") -> tuple[int | None, str | None, float | None, str | None]:
    try:
        blob = path.read_bytes()
    except OSError as exc:
        return None, None, None, f"file unreadable after {cause}: {exc.strerror}"
    try:
        audio = read_wav(blob)
        duration = len(audio.data) / max(audio.channels, 1) / audio.rate
    except WavError:
        duration = max(len(blob) - HEADER_BYTES, 0) / 16000
    return len(blob), hashlib.sha256(blob).hexdigest(), duration, f"recording interrupted by {cause}"


async def search(conn: asyncpg.Connection, tenant_id: uuid.UUID, *, since: datetime, until: datetime,
                 customer: str | None = None, extension: str | None = None,
                 include_internal: bool = False, limit: int = 50,
                 after: tuple[datetime, uuid.UUID] | None = None) -> list[Recording]:
    """Recordings started in [since, until) (at most a year), newest first, keyset-paged by
    (started_at, id) of the last row of the previous page."""
    if until <= since or until - since > MAX_PERIOD:
        raise DomainError("invalid_period", "the period must be positive and at most one year",
                          field="since")
    rows = await conn.fetch(
        f"""SELECT {_SHOWN} FROM recordings
            WHERE tenant_id = $1 AND started_at >= $2 AND started_at < $3
              AND ($4::text IS NULL OR customer = $4)
              AND ($5::text IS NULL OR extension = $5)
              AND ($6 OR NOT internal)
              AND ($7::timestamptz IS NULL OR (started_at, id) < ($7, $8))
            ORDER BY started_at DESC, id DESC LIMIT $9""",
        tenant_id, since, until, customer, extension, include_internal,
        after[0] if after else None, after[1] if after else None, limit)
    return [Recording(**dict(r)) for r in rows]


async def get(conn: asyncpg.Connection, tenant_id: uuid.UUID, recording_id: uuid.UUID) -> Recording:
    """One recording of the tenant, or 404."""
    row = await conn.fetchrow(f"SELECT {_SHOWN} FROM recordings WHERE tenant_id = $1 AND id = $2",
                              tenant_id, recording_id)
    if row is None:
        raise DomainError("recording_not_found", "no such recording", status=404)
    return Recording(**dict(row))


async def apply_retention(conn: asyncpg.Connection, retention: timedelta) -> int:
    """Make every row expire `retention` after it started (the operator's setting, longer or
    shorter than when the row was written); the number of rows changed."""
    status = await conn.execute(
        """UPDATE recordings SET expires_at = started_at + $1
           WHERE expires_at <> started_at + $1""", retention)
    return int(status.split()[-1])


async def delete(conn: asyncpg.Connection, tenant_id: uuid.UUID, recording_id: uuid.UUID, *,
                 delete_file: Callable[[Path], None] = lambda p: p.unlink(missing_ok=True)
                 ) -> Recording:
    """Delete one finished recording of the tenant: its file, then its row, in one transaction
    holding the row (404 if none, 409 while the call is still recorded)."""
    # File first, under the row's lock: if the file cannot be deleted, the transaction rolls
    # back and nothing changed; if the row's deletion fails once the file is gone, the row
    # stays and says its audio is gone (410), and deleting it again finishes the job. The
    # other order could leave a file no row points to: personal data nobody can find or erase.
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM recordings WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            tenant_id, recording_id)
        if row is None:
            raise DomainError("recording_not_found", "no such recording", status=404)
        found = Recording(**dict(row))
        if found.status == "recording":
            raise DomainError("recording_in_progress", "the call is still being recorded; "
                              "delete the recording once the call has ended", status=409)
        delete_file(Path(found.path))
        await conn.execute("DELETE FROM recordings WHERE id = $1", recording_id)
    return found


async def sweep(conn: asyncpg.Connection, *, now: datetime, batch: int = 500,
                delete_file: Callable[[Path], None] = lambda p: p.unlink(missing_ok=True)) -> int:
    """Delete recordings past their retention, the file first and then the row, in one
    transaction per batch (a file that cannot be deleted keeps its row for the next sweep)."""
    deleted = 0
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT id, path FROM recordings WHERE expires_at <= $1 AND status <> 'recording'
               ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED""", now, batch)
        gone = []
        for row in rows:
            try:
                delete_file(Path(row["path"]))
            except OSError as exc:
                log.warning("recording_file_not_deleted", recording_id=str(row["id"]),
                            error=f"{type(exc).__name__}: {exc.strerror or exc}")
                continue
            gone.append(row["id"])
        if gone:
            await conn.execute("DELETE FROM recordings WHERE id = ANY($1::uuid[])", gone)
            deleted = len(gone)
    return deleted
