"""Calls anchored in the media process: the engine's `MediaBridge` over `handlers.media`.

The engine is synchronous and sans-I/O, the media process is across a socket. Two things make
them meet without the engine ever waiting:
- **Sessions made ahead.** A reservoir keeps a few media sessions (four bound ports each)
  created before any call needs them, so a call's first SDP is rewritten at once: the body
  for the other leg only needs our address and port, which the reserved session already has.
- **One ordered chain of work per call.** What the media process must hear (the far end of a
  leg, the answer, hold, close) and what the recordings index must store go onto the call's
  own chain of tasks, in the order the engine said them; calls do not wait for each other.

At the answer the tenant's `recording_policy` decides whether the call is recorded (customer
on the left channel: the caller of an incoming call, the callee of an outgoing one); the
recording's row is written when it starts and completed when the call ends. Media events come
back as engine commands: an RTP timeout or a lost media process ends the call with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import structlog

from handlers.calls.call import Call
from handlers.calls.cdr import Direction
from handlers.calls.media import MediaBridge, Side
from handlers.errors import DomainError
from handlers.media import recordings
from handlers.media.client import MediaProcess, RelaySession
from handlers.media.interface import EventKind, MediaEvent, RecordingResult, RecordingStatus
from handlers.media.interface import Side as MediaSide
from handlers.media.recordings import RecordingPolicy
from handlers.media.sdp import FarEnd, SdpError, anchor, far_end, local_answer, local_offer
from protocols.rtp.g711 import Codec

log = structlog.get_logger("telgate.calls.media")

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
REVIVE_FIRST_DELAY = 0.2  # seconds before starting a media process that went away again...
REVIVE_MAX_DELAY = 30.0  # ... doubling while it fails to start, up to this


class PromptFiles(Protocol):
    """Where a tenant's prompt is, as the media process plays it (handlers/ivr/prompts.py)."""

    def path(self, tenant_id: uuid.UUID | None, name: str, codec: Codec) -> Path: ...


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the answer decided to record, and the facts the recordings index keeps."""

    tenant_id: uuid.UUID
    call_id: uuid.UUID
    sip_call_id: str
    customer_side: Side
    customer: str | None
    extension: str | None
    internal: bool
    path: Path


class Anchoring:
    """The engine's `MediaFactory` when a media process runs: every call's audio goes through
    our ports, and is recorded per the tenant's policy."""

    def __init__(self, media: MediaProcess, pool: asyncpg.Pool, *, recordings_root: Path,
                 retention: timedelta = recordings.DEFAULT_RETENTION, reserve: int = 16,
                 prompts: PromptFiles | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.media = media
        self.prompts = prompts
        self.pool = pool
        self.recordings_root = recordings_root
        self.retention = retention
        self.reserve = reserve
        self.clock = clock
        # Bound to the call driver once it exists (`bind`).
        self.policy: Callable[[uuid.UUID], RecordingPolicy] = lambda _t: RecordingPolicy.NONE
        self.lookup: Callable[[uuid.UUID], Call | None] = lambda _c: None
        self.on_media_end: Callable[[uuid.UUID, EventKind, str], None] = lambda _c, _k, _d: None
        self.on_digit: Callable[[uuid.UUID, MediaSide, str], None] | None = None
        self.on_played: Callable[[uuid.UUID, MediaSide, str], None] | None = None
        self._ready: deque[RelaySession] = deque()
        self._refilling = False
        self._by_session: dict[str, uuid.UUID] = {}  # media session id -> call id
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._reviving = False
        self.restarts = 0  # media processes started again after one went away

    def bind(self, *, policy: Callable[[uuid.UUID], RecordingPolicy],
             lookup: Callable[[uuid.UUID], Call | None],
             on_media_end: Callable[[uuid.UUID, EventKind, str], None],
             on_digit: Callable[[uuid.UUID, MediaSide, str], None] | None = None,
             on_played: Callable[[uuid.UUID, MediaSide, str], None] | None = None) -> None:
        """Connect to the call driver: tenants' policies, live calls, and where media events
        go (ends, keys, prompts played)."""
        self.policy, self.lookup, self.on_media_end = policy, lookup, on_media_end
        self.on_digit, self.on_played = on_digit, on_played

    # -- the factory ------------------------------------------------------------------------

    def __call__(self, call_id: uuid.UUID) -> MediaBridge:
        return AnchoredBridge(self, call_id)

    async def start(self) -> None:
        """Fill the reservoir (the media process must be running)."""
        await self._refill()

    async def stop(self) -> None:
        """Close the sessions nobody took and wait for every call's chain to finish."""
        self._closing = True
        while self._ready:
            with contextlib.suppress(DomainError):
                await self._ready.popleft().close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10.0)

    @property
    def reserved(self) -> int:
        """Media sessions ready for the next calls."""
        return len(self._ready)

    def take(self, call_id: uuid.UUID) -> RelaySession | None:
        """A reserved session for `call_id`, or None when the reservoir ran dry."""
        session = self._ready.popleft() if self._ready else None
        self._schedule_refill()
        if session is not None:
            self._by_session[session.call_id] = call_id
        return session

    def _schedule_refill(self) -> None:
        if not self._refilling and not self._closing and len(self._ready) < self.reserve:
            self._refilling = True
            self.spawn(self._refill())

    async def _refill(self) -> None:
        try:
            while len(self._ready) < self.reserve and not self._closing:
                session = await self.media.create(f"r-{uuid.uuid4()}", Codec.PCMU, record=None,
                                                  on_event=self._event)
                self._ready.append(session)
        except DomainError as exc:
            log.warning("media_reservoir_not_filled", code=exc.code, error=exc.detail,
                        ready=len(self._ready))
        finally:
            self._refilling = False

    # -- events from the media process -------------------------------------------------------

    def _event(self, event: MediaEvent) -> None:
        if event.kind is EventKind.LOST:
            self._lost()
        call_id = self._by_session.get(event.call_id)
        if call_id is None:
            return
        if event.kind in (EventKind.TIMEOUT, EventKind.LOST):
            self.on_media_end(call_id, event.kind, event.detail)
        elif event.kind is EventKind.DTMF and event.side is not None and self.on_digit is not None:
            self.on_digit(call_id, event.side, event.detail)
        elif event.kind is EventKind.PLAYED and event.side is not None:
            self.played(call_id, event.side, event.detail)
        elif event.kind is EventKind.RECORDING_FAILED:
            log.warning("call_recording_failed", call=str(call_id), error=event.detail)

    def _lost(self) -> None:
        """The media process went away: its reserved sessions went with it; start another."""
        self._ready.clear()
        if not self._reviving and not self._closing:
            self._reviving = True
            self.spawn(self._revive())

    async def _revive(self) -> None:
        delay = REVIVE_FIRST_DELAY
        try:
            while not self._closing:
                log.error("media_process_lost", restart_in=delay)
                await asyncio.sleep(delay)
                try:
                    await self.media.stop()  # whatever is left of the old one
                    await self.media.start()
                    break
                except (DomainError, OSError) as exc:
                    log.error("media_process_restart_failed", error=str(exc))
                    delay = min(delay * 2, REVIVE_MAX_DELAY)
            if not self._closing:
                self.restarts += 1
                log.warning("media_process_restarted", restarts=self.restarts)
                await self._refill()
        finally:
            self._reviving = False

    def played(self, call_id: uuid.UUID, side: MediaSide, play_id: str) -> None:
        """Tell the driver a prompt ended (also when it could not be played at all, so that
        a flow waiting for it goes on)."""
        if self.on_played is not None:
            self.on_played(call_id, side, play_id)

    def forget(self, session: RelaySession) -> None:
        self._by_session.pop(session.call_id, None)

    # -- work off the engine's path ------------------------------------------------------------

    def spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("media_task_failed", error=repr(task.exception()))

    def decide(self, call: Call) -> Recorded | None:
        """Whether the answered `call` is recorded under its tenant's policy, and as what."""
        internal = call.direction is Direction.INTERNAL
        if not self.policy(call.tenant_id).records(internal=internal):
            return None
        if call.direction is Direction.OUTGOING:
            customer_side, customer, extension = Side.B, call.callee, call.extension
        elif internal:
            customer_side, customer, extension = Side.A, None, call.extension
        else:
            customer_side, customer, extension = Side.A, call.caller, call.extension
        started = self.clock()
        path = self.recordings_root / started.strftime("%Y/%m/%d") / f"{call.id}.wav"
        sip_call_id = call.a.invite.call_id if call.a is not None else ""
        return Recorded(call.tenant_id, call.id, sip_call_id, customer_side, _digits(customer, 3, 15),
                        _digits(extension, 1, 4), internal, path)


class AnchoredBridge:
    """One call's media in the media process (a `MediaBridge`)."""

    __slots__ = (
        "_call_id",
        "_chain",
        "_closed",
        "_codec",
        "_music",
        "_owner",
        "_row",
        "_session",
        "_unanchored",
    )

    def __init__(self, owner: Anchoring, call_id: uuid.UUID) -> None:
        self._owner = owner
        self._call_id = call_id
        self._session: RelaySession | None = None  # taken at the first SDP
        self._chain: asyncio.Task[None] | None = None
        self._codec: Codec | None = None
        self._row: uuid.UUID | None = None
        self._closed = False
        self._unanchored = False
        self._music: set[Side] = set()  # sides hearing music on hold

    # -- MediaBridge -------------------------------------------------------------------------

    def offer(self, source: Side, sdp: bytes) -> bytes:
        return self._rewrite(source, sdp, answer=False)

    def answer(self, source: Side, sdp: bytes) -> bytes:
        return self._rewrite(source, sdp, answer=True)

    def answered(self) -> None:
        session = self._session
        if session is None or self._closed:
            return
        call = self._owner.lookup(self._call_id)
        recorded = self._owner.decide(call) if call is not None else None
        codec = self._codec or Codec.PCMU
        self._then(lambda: self._answered(session, codec, recorded))

    def hold(self, side: Side) -> None:
        if self._session is not None and not self._closed:
            session = self._session
            self._then(lambda: session.hold(MediaSide(side.value)))
            if self._owner.prompts is not None:
                self._music.add(side)
                self.play(side, "hold_music", 0, loop=True)

    def unhold(self, side: Side) -> None:
        if self._session is not None and not self._closed:
            session = self._session
            if side in self._music:
                self._music.discard(side)
                self.stop(side)
            self._then(lambda: session.unhold(MediaSide(side.value)))

    def can_play(self) -> bool:
        return self._owner.prompts is not None and self.anchored()

    def anchored(self) -> bool:
        return not self._closed and not self._unanchored and (
            self._session is not None or self._owner.reserved > 0)

    def repoint(self, side: Side, sdp: bytes) -> None:
        session = self._session
        if session is None or self._closed:
            return
        try:
            target = far_end(sdp)
        except SdpError as exc:
            log.info("call_sdp_not_anchored", call=str(self._call_id), side=side.value, error=str(exc))
            return
        if target.address != "0.0.0.0":
            self._then(lambda: session.point(MediaSide(side.value), target.address, target.port,
                                             relatch=True))

    def local_offer(self, side: Side) -> bytes | None:
        if self._closed or self._unanchored:
            return None
        session = self._taken()
        if session is None:
            return None
        return local_offer(session.address, session.ports[MediaSide(side.value)],
                           session=self._call_id.int % 10**12)

    def local_answer(self, source: Side, offer: bytes) -> bytes | None:
        if self._closed or self._unanchored:
            return None
        session = self._taken()
        if session is None:
            return None
        try:
            answer = local_answer(offer, session.address, session.ports[MediaSide(source.value)],
                                  session=self._call_id.int % 10**12)
        except SdpError as exc:
            log.info("call_sdp_not_answerable", call=str(self._call_id), error=str(exc))
            return None
        self._codec = answer.codec
        target = answer.far
        if target.address != "0.0.0.0":
            self._then(lambda: self._remote(session, source, target))
        return answer.body

    def play(self, side: Side, prompt: str, play_id: int, *, loop: bool = False) -> None:
        session, owner = self._session, self._owner
        if session is None or self._closed:
            return
        call = owner.lookup(self._call_id)
        codec = self._codec or Codec.PCMU
        media_side = MediaSide(side.value)
        try:
            if owner.prompts is None:
                raise LookupError("no prompt store")
            path = owner.prompts.path(call.tenant_id if call is not None else None, prompt, codec)
        except (LookupError, OSError, DomainError) as exc:
            log.error("call_prompt_missing", call=str(self._call_id), prompt=prompt,
                      error=str(exc))
            asyncio.get_running_loop().call_soon(owner.played, self._call_id, media_side,
                                                 str(play_id))
            return

        async def start() -> None:
            try:
                await session.play(media_side, path, loop=loop, play_id=str(play_id))
            except DomainError:
                owner.played(self._call_id, media_side, str(play_id))  # the flow goes on
                raise

        self._then(start)

    def stop(self, side: Side) -> None:
        session = self._session
        if session is not None and not self._closed:
            self._then(lambda: session.stop(MediaSide(side.value)))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        session = self._session
        if session is not None:
            self._then(lambda: self._close(session))

    # -- the work ---------------------------------------------------------------------------

    def _taken(self) -> RelaySession | None:
        """This call's media session, taken from the reservoir at its first use."""
        if self._session is None:
            self._session = self._owner.take(self._call_id)
        return self._session

    def _rewrite(self, source: Side, sdp: bytes, *, answer: bool) -> bytes:
        if self._closed or self._unanchored:
            return sdp
        session = self._taken()
        if session is None:
            # Refusing the call would be worse than carrying it unrecorded; say so loudly.
            self._unanchored = True
            log.warning("call_media_not_anchored", call=str(self._call_id),
                        reason="no reserved media session")
            return sdp
        try:
            body, target = anchor(sdp, session.address, session.ports[MediaSide(source.other.value)])
        except SdpError as exc:
            log.info("call_sdp_not_anchored", call=str(self._call_id), side=source.value, error=str(exc))
            return sdp
        if answer or self._codec is None:
            self._codec = target.codec or self._codec
        if target.address != "0.0.0.0":
            self._then(lambda: self._remote(session, source, target))
        return body

    def _then(self, step: Callable[[], Awaitable[Any]]) -> None:
        """Run `step` after everything said before it for this call."""
        previous = self._chain

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):  # logged by `spawn` if it failed
                    await previous
            try:
                await step()
            except DomainError as exc:  # the call goes on; what it costs is logged here
                log.warning("call_media_step_failed", call=str(self._call_id), code=exc.code,
                            error=exc.detail)

        self._chain = self._owner.spawn(run())

    async def _remote(self, session: RelaySession, source: Side, target: FarEnd) -> None:
        await session.point(MediaSide(source.value), target.address, target.port)

    async def _answered(self, session: RelaySession, codec: Codec, recorded: Recorded | None) -> None:
        fields: dict[str, Any] = {"call": session.call_id, "codec": codec.encoding}
        if recorded is not None:
            fields["record"] = {"customer": recorded.customer_side.value, "path": str(recorded.path)}
        await self._owner.media.request("answered", **fields)
        if recorded is None:
            return
        try:
            async with self._owner.pool.acquire() as conn:
                row = await recordings.start(
                    conn, tenant_id=recorded.tenant_id, call_id=recorded.call_id,
                    sip_call_id=recorded.sip_call_id, codec=codec, path=str(recorded.path),
                    started_at=self._owner.clock(), extension=recorded.extension,
                    customer=recorded.customer, internal=recorded.internal,
                    retention=self._owner.retention)
            self._row = row.id
        except _DB_ERRORS as exc:
            # The file is written all the same; the row is what a database outage costs.
            log.error("recording_not_indexed", call=str(recorded.call_id), error=str(exc),
                      path=str(recorded.path))

    async def _close(self, session: RelaySession) -> None:
        self._owner.forget(session)
        result = await session.close()
        if self._row is None:
            if result.status is RecordingStatus.FAILED:
                log.error("recording_lost", call=str(self._call_id), error=result.error)
            return
        if result.status is not RecordingStatus.OK and result.path is None:
            # The media process went away under the call: its file holds what was written.
            await self._interrupted()
            return
        await self._finish(result)

    async def _interrupted(self) -> None:
        assert self._row is not None
        try:
            async with self._owner.pool.acquire() as conn:
                await recordings.finish_interrupted(conn, self._row, now=self._owner.clock())
        except _DB_ERRORS as exc:
            log.error("recording_not_completed", call=str(self._call_id), error=str(exc))

    async def _finish(self, result: RecordingResult) -> None:
        assert self._row is not None
        try:
            async with self._owner.pool.acquire() as conn:
                await recordings.finish(conn, self._row, result, self._owner.clock())
        except _DB_ERRORS as exc:
            # Left `recording`: the start-up recovery completes it from the file.
            log.error("recording_not_completed", call=str(self._call_id), error=str(exc))


def _digits(value: str | None, shortest: int, longest: int) -> str | None:
    """`value` if it is a number the index can search (an anonymous caller is not)."""
    if value is not None and value.isascii() and value.isdigit() and shortest <= len(value) <= longest:
        return value
    return None
