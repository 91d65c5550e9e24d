"""`GET /v1/events`: the tenant's events as server-sent events (docs/events.md).

A stream starts at the log's end, or right after `Last-Event-ID` (header, or `last_event_id`
for clients that cannot set headers). It first reads what it missed from the log, a page at a
time, then joins its instance's live fan-out (hub.py). Its queue is bounded: a client that
falls that far behind, or takes no bytes for `events.write_timeout_seconds`, is cut off with a
logged reason and resumes from the log. A resume from an id retention deleted (or that never
existed) starts with a `reset` event instead of a silent gap.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from handlers.api.context import CTX
from handlers.api.framework import File, Route, RouteTable, arg, principal
from handlers.api.models import Params
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.events.hub import HISTORY_PAGE, EventHub, Stream
from handlers.events.types import CATALOGUE, NAMES, TYPES_PATTERN

log = structlog.get_logger("telgate.events")

EVENT_STREAM = "text/event-stream"
LogId = Annotated[int, Field(ge=0, le=9_223_372_036_854_775_807)]

EVENT_NAMES = tuple(sorted(NAMES | {"reset"}))
_TYPES_TEXT = ", ".join(f"`{t.name}`" + ("" if t.emitted else " (not emitted yet)")
                        for t in CATALOGUE)


class EventsQuery(Params):
    types: Annotated[str, StringConstraints(pattern=TYPES_PATTERN)] | None = Field(
        None, description=f"comma-separated event types to receive (default: all): {_TYPES_TEXT}")
    extension: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,4}$")] | None \
        = Field(None, description="only events involving this extension (calls it was rung "
                                  "for, answered or is in the record of, and its presence "
                                  "changes); other events are left out")
    last_event_id: LogId | None = Field(
        None, description="resume after this event id, for clients that cannot send the "
                          "`Last-Event-ID` header (the header wins when both are given)")
    max_seconds: Annotated[int, Field(ge=1, le=86_400)] | None = Field(
        None, description="close the stream after this many seconds (default: never)")


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # an absent header has no value at all, not null


class EventsHeaders(Params):
    # SkipJsonSchema: a header is absent or a string; "null" is not a value it can take.
    last_event_id: LogId | SkipJsonSchema[None] = Field(
        None, alias="Last-Event-ID", json_schema_extra=_no_default,
        description="resume after this event id (EventSource sends it when it reconnects)")


class StreamEvent(BaseModel):
    """One server-sent event (a `: heartbeat` comment carries no event, perhaps an `id`)."""

    id: str | None = Field(None, pattern=r"^[0-9]+$",
                           description="the log id: send it back as Last-Event-ID")
    event: Literal[EVENT_NAMES] | None = Field(  # type: ignore[valid-type]
        None, description="the type, or `reset` when events were lost")
    data: str | None = Field(None, description="JSON: the webhook body of the event "
                                               "(`id`, `type`, `created_at`, `data`)")
    retry: int | None = Field(None, description="reconnection delay advice, milliseconds")


class _Closed(Exception):
    """The stream ends: the client left or was cut off."""


class _Sender:
    """Writes to one client, cutting it off when it takes no bytes for `timeout`."""

    def __init__(self, resp: web.StreamResponse, stream: Stream, timeout: float) -> None:
        self.resp = resp
        self.stream = stream
        self.timeout = timeout
        self.position = 0  # the last id the client was told (event or heartbeat)

    async def send(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.resp.write(data)
        except TimeoutError:
            self.stream.cut_off("write_timeout")
            raise _Closed from None
        except (ConnectionError, RuntimeError) as exc:  # RuntimeError: aiohttp, transport gone
            if self.stream.cut is None:
                self.stream.cut = "client_left"
            raise _Closed from exc

    async def events(self, frames: list[bytes], last_id: int) -> None:
        await self.send(b"".join(frames))
        self.position = last_id


async def stream_events(request: web.Request) -> web.StreamResponse:
    """The tenant's events as they happen, resumable with Last-Event-ID."""
    who = principal(request)
    q = arg(request, EventsQuery)
    h = arg(request, EventsHeaders)
    ctx = request.app[CTX]
    hub = ctx.events
    if hub is None or not hub.ready.is_set():
        raise DomainError("events_unavailable", "the event stream is starting", retry_after=2)
    last = h.last_event_id if h.last_event_id is not None else q.last_event_id
    reset: dict[str, object] | None = None
    if last is not None:
        floor, issued = await hub.bounds()
        if last < floor or last > issued:
            reset = {"reason": "expired" if last < floor else "unknown_id",
                     "last_event_id": last, "oldest_id": floor + 1}
    # Before the answer starts: the stream begins at the log's end as of now (the follower
    # reads nothing while no stream is open).
    await hub.sync()
    now_at = hub.hwm
    resp = web.StreamResponse(headers={
        "Content-Type": f"{EVENT_STREAM}; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})  # nginx: pass events through unbuffered
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    config = ctx.config.events
    stream = Stream(who.tenant_id, sp_id=who.sp_id,
                    types=frozenset(q.types.split(",")) if q.types else None,
                    extension=q.extension, bound=config.stream_queue_events)
    if request.transport is not None:
        stream.on_cut = request.transport.abort
    sender = _Sender(resp, stream, config.write_timeout_seconds)
    started = time.monotonic()
    deadline = started + q.max_seconds if q.max_seconds else float("inf")
    cursor = now_at if last is None or reset is not None else last
    log.info("event_stream_opened", last_event_id=last, cursor=cursor, types=q.types,
             extension=q.extension, reset=reset is not None)
    try:
        await sender.send(b"retry: 2000\n\n")
        if reset is not None:
            reset["resume_id"] = cursor
            await sender.events([f"id: {cursor}\nevent: reset\ndata: {json.dumps(reset)}\n\n"
                                 .encode()], cursor)
        sender.position = cursor
        await _serve(hub, stream, sender, cursor, deadline, config.heartbeat_seconds)
        await resp.write_eof()
    except _Closed:
        pass
    finally:
        hub.detach(stream)
        if stream.cut not in (None, "shutdown", "client_left"):
            if hub.metrics is not None:
                hub.metrics.cut.labels(stream.cut).inc()
            log.warning("event_stream_cut_off", reason=stream.cut, position=sender.position,
                        queued=len(stream.queue), bound=stream.bound)
        log.info("event_stream_closed", position=sender.position,
                 seconds=round(time.monotonic() - started, 3))
    return resp


async def _serve(hub: EventHub, stream: Stream, sender: _Sender, cursor: int,
                 deadline: float, heartbeat: float) -> None:
    """Catch up from the log, then send live events until the deadline or a cut-off."""
    next_beat = time.monotonic() + heartbeat
    while not hub.attach(stream, cursor):  # further behind than the events kept in memory
        upto = hub.hwm
        page = await hub.history(stream, cursor, upto)
        if page:
            await sender.events([e.frame for e in page], page[-1].id)
        cursor = page[-1].id if len(page) == HISTORY_PAGE else upto
        if time.monotonic() >= deadline:
            return
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        if not stream.queue and stream.cut is None:
            stream.wake.clear()
            try:
                async with asyncio.timeout(max(0.0, min(next_beat, deadline) - now)):
                    await stream.wake.wait()
            except TimeoutError:
                pass
        if stream.cut is not None:
            raise _Closed
        if stream.queue:
            batch = list(stream.queue)
            stream.queue.clear()
            await sender.events([e.frame for e in batch], batch[-1].id)
            if hub.metrics is not None:
                hub.metrics.sent.inc(len(batch))
        if time.monotonic() >= next_beat:
            next_beat = time.monotonic() + heartbeat
            # Past events this stream's filter left out, the client may resume from here.
            if not stream.queue and stream.seen > sender.position:
                await sender.events([f": heartbeat\nid: {stream.seen}\n\n".encode()],
                                    stream.seen)
            else:
                await sender.send(b": heartbeat\n\n")


def add_routes(t: RouteTable) -> None:
    t.add(Route(
        "GET", "/v1/events", stream_events, "The tenant's events, live (server-sent events)",
        "events", query=EventsQuery, headers=EventsHeaders,
        responses={200: File((EVENT_STREAM,), "server-sent events: `id` (the log id to resume "
                                              "from), `event` (the type), `data` (the same JSON "
                                              "as a webhook body); `reset` when events were "
                                              "lost; `: heartbeat` comments when idle",
                             item=StreamEvent)},
        errors=("events_unavailable",), scope=Scope.READ,
        description="Events of the key's tenant as they happen, resumable within the retention "
                    "window (docs/events.md)."))
