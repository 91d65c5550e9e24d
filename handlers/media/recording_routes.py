"""Control API routes of call recordings (DESIGN.md §9): search, metadata, the WAV one
recording at a time (with `Range`), and deletion by an administrator.

Recordings are personal data (PIPA): every search, metadata read and audio access leaves an
entry in the audit trail before the data goes out; there is no bulk or archive download.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import stat
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Annotated, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from handlers import audit, numbers
from handlers.api.audit_routes import record_access
from handlers.api.context import CTX
from handlers.api.framework import File, Route, RouteTable, arg, principal, problem, respond
from handlers.api.models import Day, Limit, Page, Params, PhoneText, Timestamp, TimeUuidCursor, Uuid
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.media import recordings
from handlers.messages import history as h
from handlers.outage import describe
from handlers.pagination import split_time_cursor, time_cursor

log = structlog.get_logger("telgate.recordings")

TAG = "recordings"
WAV = "audio/wav"
CHUNK = 256 * 1024  # bytes read per step while streaming a file

Extension = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,4}$")]
# A time, or a date meaning a whole Korean day (since: its start, until: its end), as
# /v1/stats/messages takes them.
TimeOrDay = Annotated[Timestamp | Day, Field(union_mode="left_to_right")]
HeaderText = Annotated[str, StringConstraints(max_length=200)]


class RecordingPath(Params):
    id: Uuid


class RecordingQuery(Params):
    since: TimeOrDay | None = Field(None, description="started at or after: RFC 3339 time or "
                                                      "date (YYYY-MM-DD, Korean day); default: "
                                                      "30 days before until")
    until: TimeOrDay | None = Field(None, description="started before: RFC 3339 time or date "
                                                      "(inclusive Korean day); default: now. "
                                                      "At most 366 days after since")
    customer: PhoneText | None = Field(None, description="the customer's number (any common "
                                                         "form)")
    extension: Extension | None = Field(None, description="the agent's extension")
    internal: bool = Field(False, description="true includes internal (extension to "
                                              "extension) calls, left out by default")
    limit: Limit = 50
    cursor: TimeUuidCursor | None = None


class AudioHeaders(Params):
    range: HeaderText | None = Field(
        None, alias="Range", description="one byte range (`bytes=0-1023`, `bytes=4096-`, "
                                         "`bytes=-1024`); other units, several ranges or a "
                                         "malformed value are ignored (the whole file)")
    if_range: HeaderText | None = Field(
        None, alias="If-Range", description="the ETag (or Last-Modified) the client holds: "
                                            "`Range` applies only if the file still matches")


class RecordingOut(BaseModel):
    """One call's recording: stereo WAV, customer left, agent right, in the call's G.711 law."""

    id: uuid.UUID
    call_id: uuid.UUID = Field(description="the call; its call record has the same id")
    sip_call_id: str
    status: Literal["recording", "ok", "failed", "interrupted"] = Field(
        description="recording: the call is going on; ok; failed: writing it failed (`error`), "
                    "no audio; interrupted: the daemon stopped mid-call, the file plays up to "
                    "then")
    codec: Literal["PCMU", "PCMA"]
    extension: str | None = Field(description="the agent's extension")
    customer: str | None = Field(description="the customer's number, digits")
    internal: bool = Field(description="an internal (extension to extension) call")
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: float | None
    bytes: int | None = Field(description="size of the WAV file")
    sha256: str | None = Field(description="SHA-256 of the WAV file (hex); also its ETag")
    error: str | None = Field(description="why recording failed or was interrupted")
    expires_at: datetime = Field(description="when retention deletes it (file and metadata)")
    call_end_reason: str | None = Field(
        description="how the call ended, from its call record once stored (e.g. `normal`, "
                    "`abuse_blocked`: the agent blocked the caller; the file goes on, with the "
                    "caller's side only, until the warning ended)")


def _out(r: recordings.Recording) -> RecordingOut:
    return RecordingOut.model_validate({k: getattr(r, k) for k in RecordingOut.model_fields})


# -- Range (RFC 9110 §14) ---------------------------------------------------------------------

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes first..last (inclusive) of a file."""

    first: int
    last: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.last - self.first + 1


class Unsatisfiable(Exception):
    """The range asks for no byte the file has."""


def byte_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range `header` asks of a file of `size` bytes; None: send the whole
    file (no header, another unit, several ranges, or an invalid one, which RFC 9110 §14.2
    lets a server ignore). Raises Unsatisfiable when no byte of the range exists."""
    if header is None:
        return None
    found = _RANGE.match(header)
    if found is None:
        return None
    first_text, last_text = found.groups()
    try:
        if first_text:
            first = int(first_text)
            last = int(last_text) if last_text else None
            if last is not None and last < first:
                return None  # invalid: ignored
            if first >= size:
                raise Unsatisfiable
            return ByteRange(first, size - 1 if last is None else min(last, size - 1))
        if not last_text:
            return None  # `bytes=-`
        suffix = int(last_text)
    except ValueError:  # more digits than Python converts
        return None
    if suffix == 0 or size == 0:
        raise Unsatisfiable
    return ByteRange(max(size - suffix, 0), size - 1)


def _validator_matches(if_range: str | None, etag: str | None, modified: float) -> bool:
    """Whether an If-Range validator still describes the file (RFC 9110 §13.1.5): the same
    strong ETag, or exactly its Last-Modified date. No If-Range: true."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return etag is not None and value == etag
    try:
        return int(parsedate_to_datetime(value).timestamp()) == int(modified)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


# -- handlers ------------------------------------------------------------------------------------


async def _audit(request: web.Request, action: str, subject: str,
                 details: dict[str, object]) -> None:
    """Leave the access in the audit trail; HEAD hands out no personal data, so it leaves none."""
    if request.method != "HEAD":
        await record_access(request, action, subject, details)


def _text(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


async def list_recordings(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, RecordingQuery)
    try:
        period = h.parse_period(_text(q.since), _text(q.until), datetime.now(UTC))
    except OverflowError:
        raise DomainError("invalid_time", "the period reaches outside the years 1-9999",
                          field="since" if q.since is not None else "until") from None
    customer = h.parse_number(q.customer, "customer")
    after: tuple[datetime, uuid.UUID] | None = None
    if q.cursor is not None:
        at, key = split_time_cursor(q.cursor)
        after = (at, uuid.UUID(key))
    async with request.app[CTX].pool.acquire() as conn:
        found = await recordings.search(
            conn, who.tenant_id, since=period.since, until=period.until, customer=customer,
            extension=q.extension, include_internal=q.internal, limit=q.limit + 1, after=after)
    items = found[:q.limit]
    # The trail is kept for good: it names the customer searched for as the portals show
    # numbers, so it does not become a second, undeletable copy of the index.
    await _audit(request, "recording.search", "", {
        "since": period.since.isoformat(), "until": period.until.isoformat(),
        "customer": numbers.mask(customer) if customer else None, "extension": q.extension,
        "internal": q.internal, "found": len(items)})
    nxt = (time_cursor(items[-1].started_at, items[-1].id.hex)
           if len(found) > q.limit and items else None)
    return respond(Page[RecordingOut](items=[_out(r) for r in items], next_cursor=nxt))


async def get_recording(request: web.Request) -> web.Response:
    who = principal(request)
    rid = arg(request, RecordingPath).id
    async with request.app[CTX].pool.acquire() as conn:
        found = await recordings.get(conn, who.tenant_id, rid)
    await _audit(request, "recording.read", str(rid), {"call_id": str(found.call_id)})
    return respond(_out(found))


def _open(path: Path, rid: uuid.UUID) -> tuple[int, os.stat_result]:
    """An open descriptor of a recording's file and its status (run off the event loop)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise DomainError("recording_unavailable", "the recording's file is gone",
                          status=410) from None
    except OSError as exc:
        log.error("recording_unreadable", recording_id=str(rid), error=describe(exc))
        raise DomainError("recording_storage_error", "the recording's file cannot be read",
                          status=500) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file")
    except OSError as exc:
        os.close(fd)
        log.error("recording_unreadable", recording_id=str(rid), error=describe(exc))
        raise DomainError("recording_storage_error", "the recording's file cannot be read",
                          status=500) from None
    return fd, st


async def get_audio(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    rid = arg(request, RecordingPath).id
    sent = arg(request, AudioHeaders)
    async with request.app[CTX].pool.acquire() as conn:
        found = await recordings.get(conn, who.tenant_id, rid)
    if found.status == "recording":
        raise DomainError("recording_in_progress", "the call is still being recorded; fetch "
                          "the audio once it has ended", status=409)
    if found.status == "failed":
        raise DomainError("recording_unavailable", f"recording this call failed: "
                          f"{found.error or 'no reason given'}", status=410)
    fd, st = await asyncio.to_thread(_open, Path(found.path), rid)
    try:
        etag = f'"{found.sha256}"' if found.sha256 else None
        span: ByteRange | None = None
        if _validator_matches(sent.if_range, etag, st.st_mtime):
            try:
                span = byte_range(sent.range, st.st_size)
            except Unsatisfiable:
                return problem(416, "range_not_satisfiable",
                               f"the file has {st.st_size} bytes", field_name="Range",
                               headers={"Content-Range": f"bytes */{st.st_size}"})
        first, length = (span.first, span.length) if span else (0, st.st_size)
        await _audit(request, "recording.download", str(rid), {
            "call_id": str(found.call_id),
            "range": f"{span.first}-{span.last}" if span else None, "bytes": length})
        resp = web.StreamResponse(status=206 if span else 200, headers={
            "Content-Type": WAV, "Accept-Ranges": "bytes",
            "Content-Disposition": f'attachment; filename="{rid}.wav"',
            "Cache-Control": "private, no-store",
            "Last-Modified": formatdate(st.st_mtime, usegmt=True)})
        if etag:
            resp.headers["ETag"] = etag
        if span:
            resp.headers["Content-Range"] = f"bytes {span.first}-{span.last}/{st.st_size}"
        resp.content_length = length
        await resp.prepare(request)
        if request.method != "HEAD":
            await _stream(resp, fd, first, length, rid)
        await resp.write_eof()
        return resp
    finally:
        os.close(fd)


async def _stream(resp: web.StreamResponse, fd: int, offset: int, length: int,
                  rid: uuid.UUID) -> None:
    """Send `length` bytes of the file from `offset`, a chunk at a time (reads off the loop)."""
    while length > 0:
        try:
            chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, length), offset)
            error = "" if chunk else "the file is shorter than when it was opened"
        except OSError as exc:
            chunk, error = b"", describe(exc)
        if error:
            # The headers are gone: the client can only be told by a cut connection.
            log.error("recording_stream_failed", recording_id=str(rid), error=error)
            resp.force_close()
            return
        await resp.write(chunk)
        offset += len(chunk)
        length -= len(chunk)


async def delete_recording(request: web.Request) -> web.Response:
    who = principal(request)
    rid = arg(request, RecordingPath).id

    def unlink(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("recording_file_not_deleted", recording_id=str(rid), error=describe(exc))
            raise DomainError("recording_storage_error", "the recording's file cannot be "
                              "deleted; nothing was deleted", status=500) from None

    async with request.app[CTX].pool.acquire() as conn, conn.transaction():
        gone = await recordings.delete(conn, who.tenant_id, rid, delete_file=unlink)
        await audit.record(conn, who.tenant_id, who.actor, "recording.delete", str(rid), {
            "call_id": str(gone.call_id), "started_at": gone.started_at.isoformat(),
            "bytes": gone.bytes})
    return web.Response(status=204)


# -- declarations --------------------------------------------------------------------------------

_LIST_CODES = ("invalid_time", "invalid_period", "period_too_long", "empty", "not_digits",
               "international", "too_short", "too_long")
_ONE_AT_A_TIME = ("Recordings are personal data: each access is written to the audit trail "
                  "(`GET /v1/audit`), and audio is served one recording at a time; there is "
                  "no bulk or archive download.")


def add_routes(t: RouteTable) -> None:
    """Declare the recordings routes."""
    t.add(Route("GET", "/v1/recordings", list_recordings,
                "Search recordings by period, customer and agent, newest first", TAG,
                query=RecordingQuery, responses={200: Page[RecordingOut]}, errors=_LIST_CODES,
                scope=Scope.READ,
                description="Internal calls are left out unless `internal=true`. "
                            + _ONE_AT_A_TIME))
    t.add(Route("GET", "/v1/recordings/{id}", get_recording, "A recording's metadata", TAG,
                path_params=RecordingPath, responses={200: RecordingOut},
                errors=("recording_not_found",), scope=Scope.READ,
                description=_ONE_AT_A_TIME))
    t.add(Route("GET", "/v1/recordings/{id}/audio", get_audio, "Download or play a recording",
                TAG, path_params=RecordingPath, headers=AudioHeaders,
                responses={200: File((WAV,), "the whole stereo WAV (customer left, agent "
                                             "right), G.711 as recorded"),
                           206: File((WAV,), "the byte range asked for; `Content-Range` says "
                                             "which")},
                errors=("recording_not_found", "recording_in_progress", "recording_unavailable",
                        "range_not_satisfiable", "recording_storage_error"),
                scope=Scope.READ,
                description="Supports one `Range` (206 with `Content-Range`; 416 if it starts "
                            "past the end) and `If-Range`; the ETag is the file's SHA-256. "
                            + _ONE_AT_A_TIME))
    t.add(Route("DELETE", "/v1/recordings/{id}", delete_recording,
                "Delete a recording (file and metadata)", TAG, path_params=RecordingPath,
                responses={204: None},
                errors=("recording_not_found", "recording_in_progress",
                        "recording_storage_error"),
                scope=Scope.ADMIN, description="Audited. A recording still being made (the call "
                                               "goes on) cannot be deleted."))
