"""The dispatcher: PostgreSQL queue → SMPP windows → states and receipts back in PostgreSQL.

Every instance runs one. It claims due recipients in batches (`FOR UPDATE SKIP LOCKED`, state
`claimed` with its instance key), submits them over the carriers' binds, and a single writer
stores outcomes in batches: `submitted` with the carrier id, `failed` with the SMPP status, or
back to `queued` with a back-off (throttled, queue full) or marked `in_doubt` (no response:
the SMSC may have the message). Receipts are stored *before* deliver_sm_resp, in the same
statement as the round's outcomes (migration 0022): matched to recipients by carrier id or its
other-base reading (folded into their submit's outcome when both came in one round), or kept
in `dlr_inbox` until their recipient's submit is stored.

Each instance holds a PostgreSQL advisory lock on its key for its lifetime. Rows claimed under
a key whose lock is free belong to a dead instance (kill -9): they are requeued as in doubt.
Those are the only submits that can be duplicated, and they are counted.

The database may go away at any time. Every loop survives it with logged, bounded retries
(`handlers.outage`). While outcomes cannot be stored, nothing more is submitted: rows already
claimed go back to the queue unsent once the database returns, so an outage adds no duplicate.
The instance lock is taken again on a new connection before anything more is claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from config.schema import Config
from handlers.messages import carrier_ids
from handlers.messages.accept import LANE_BULK, LANE_SINGLE, LANES
from handlers.messages.carriers import (
    Bind,
    Carrier,
    GatewayClient,
    Router,
    build_submits,
    make_carriers,
    take,
)
from handlers.messages.wake import DISPATCH_CHANNEL
from handlers.metrics import Metrics
from handlers.outage import DatabaseHealth, LoopMetrics, LoopTracker, describe, is_outage
from handlers.registry import optouts
from protocols.smpp.client import SmppClientError
from protocols.smpp.constants import CommandStatus
from protocols.smpp.pdu import Pdu, SubmitSm
from protocols.smpp.session import DeliverSmReceived, Event, SessionError
from protocols.smpp.text import UnsupportedDataCoding, decode_text
from protocols.values import quick_init

log = structlog.get_logger("telgate.dispatch")

INSTANCE_LOCK_CLASS = 0x7E16  # advisory lock namespace: (class, instance key)
RETRYABLE = frozenset({CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL})
FINAL_BY_STAT = {"DELIVRD": "delivered", "EXPIRED": "expired"}
INTERMEDIATE_STATS = frozenset({"ENROUTE", "ACCEPTD"})
KST = ZoneInfo("Asia/Seoul")
CLAIM_COALESCE_SECONDS = 0.01


@quick_init
@dataclass(frozen=True, slots=True)
class Claimed:
    """A recipient this instance took from the queue."""

    message_id: Any
    idx: int
    tenant_id: Any
    number: str
    text: str
    sender: str
    attempts: int
    lane: int = LANE_BULK


@quick_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claimed recipient."""

    row: Claimed
    kind: str  # submitted | failed | retry
    carrier: str | None = None
    message_id: str | None = None
    status: int | None = None
    delay: float = 0.0
    in_doubt: bool = False
    reason: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class PendingDeliver:
    """A deliver_sm waiting to be stored before it is acknowledged."""

    client: GatewayClient | None  # the session that delivered it: acks go back on it only
    sequence_number: int
    carrier: str
    receipt_id: str | None
    stat: str | None
    err: str | None
    done_at: datetime | None
    source: str
    destination: str
    text: str


@quick_init
@dataclass(frozen=True, slots=True)
class _Begun:
    """A row whose first submit_sm is out: the rest of its segments, and its answer to come."""

    carrier: str
    bind: Bind
    client: GatewayClient
    pdus: list[SubmitSm]
    first: asyncio.Future[Pdu]


def _warn_unmatched(kind: str, updated: int, expected: int) -> None:
    """An outcome whose row is no longer claimed by us (recovered by another instance)."""
    if updated != expected:
        log.warning("dispatch_outcome_unmatched", kind=kind, expected=expected, updated=updated)


def _fold_receipts(ok: Sequence[Outcome], ids: Sequence[str], alts: Sequence[str | None],
                   receipts: Sequence[PendingDeliver],
                   ) -> tuple[list[PendingDeliver | None], list[PendingDeliver]]:
    """Pair each receipt with a submit answered in the same writer round, so that its
    recipient goes from claimed to final in one write; the others are matched in the database.

    Looked up as the database would (migration 0021): the receipt's id as stored, then as the
    stored id's other-base reading, then a decimal receipt read back to a hex id made only of
    digits. A submit takes one receipt; a second one (sent again) is matched as a repeat.
    """
    folded: list[PendingDeliver | None] = [None] * len(ok)
    if not ok or not receipts:
        return folded, list(receipts)
    by_id: dict[tuple[str, str], int] = {}
    by_alt: dict[tuple[str, str], int] = {}
    for i, o in enumerate(ok):
        carrier = o.carrier or ""
        by_id.setdefault((carrier, ids[i]), i)
        if alts[i] is not None:
            by_alt.setdefault((carrier, alts[i] or ""), i)
    rest = []
    for d in receipts:
        rid = d.receipt_id or ""
        i = by_id.get((d.carrier, rid), by_alt.get((d.carrier, rid), -1))
        if i < 0 and rid.isascii() and rid.isdigit() and len(rid) <= 18:
            i = by_id.get((d.carrier, format(int(rid), "x")), -1)
        if i < 0 or folded[i] is not None:
            rest.append(d)
        else:
            folded[i] = d
    return folded, rest


def _aware(when: datetime | None) -> datetime | None:
    """Receipt dates carry no zone; Korean SMSCs write them in KST."""
    if when is None or when.tzinfo is not None:
        return when
    return _in_kst(when)


@lru_cache(maxsize=64)
def _in_kst(when: datetime) -> datetime:
    # The receipts of a busy minute share a few dates (and their parsed values, cached too).
    return when.replace(tzinfo=KST)


class DispatchMetrics:
    """Counters operators watch for messaging."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.outcomes = Counter("telgate_smpp_submits_total", "submit outcomes", ["outcome"],
                                registry=r)
        self.in_doubt = Counter("telgate_smpp_submits_in_doubt_total",
                                "submits whose fate is unknown (possible duplicates)", registry=r)
        self.receipts = Counter("telgate_smpp_receipts_total", "delivery receipts", ["stat"],
                                registry=r)
        self.mo = Counter("telgate_smpp_mo_total", "mobile-originated messages", registry=r)
        self.receipts_unmatched = Counter(
            "telgate_smpp_receipts_unmatched_total",
            "receipts no submit of ours carried after an hour (in-doubt copies), dropped",
            registry=r)
        self.receipt_repeats = Counter(
            "telgate_smpp_receipts_repeated_total",
            "receipts for recipients already final (SMSC redelivery), dropped", registry=r)
        self.binds_up = Gauge("telgate_smpp_binds_up", "bound SMPP sessions", ["carrier"],
                              registry=r)
        self.inflight = Gauge("telgate_smpp_inflight", "claimed recipients not yet stored",
                              registry=r)
        self.lane_depth = Gauge("telgate_dispatch_lane_due", "recipients due and waiting, per lane",
                                ["lane"], registry=r)
        self.lane_age = Gauge("telgate_dispatch_lane_age_seconds",
                              "how long the oldest due recipient of a lane has waited", ["lane"],
                              registry=r)


class Dispatcher:
    """Drives the message queue of one daemon instance."""

    def __init__(self, config: Config, pool: asyncpg.Pool, dsn: str, metrics: Metrics, *,
                 health: DatabaseHealth | None = None) -> None:
        self.config = config
        self.mcfg = config.messaging
        self.pool = pool
        self.dsn = dsn
        self.metrics = metrics.group("dispatch", DispatchMetrics)
        self.key = random.randrange(1, 2**31 - 1)
        self.carriers: list[Carrier] = make_carriers(
            list(config.smpp.carriers), self._on_event, self._on_bind_change)
        self.router = Router(self.carriers)
        self._window = 0  # the bound binds' windows together (`_on_bind_change`)
        self._wake = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._outcomes: list[Outcome] = []
        self._delivers: list[PendingDeliver] = []
        self._inflight = 0
        self._stopping = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._submits: set[asyncio.Task[None]] = set()
        self._lock_conn: asyncpg.Connection | None = None
        self._lock_lost = asyncio.Event()
        self._held: set[tuple[Any, int]] = set()  # claimed rows whose outcome is not stored yet
        self._queue_left = False  # the last claim may have left due rows behind (room ran out)
        self._ref = 0
        # False from the first failed store until a round trip succeeds again: no submits then.
        self._can_record = True
        loops = metrics.group("loops", LoopMetrics)
        self._claims = LoopTracker("dispatch-claim", loops, health)
        self._writes = LoopTracker("dispatch-writer", loops, health)
        self._house = LoopTracker("dispatch-recovery", loops, health)
        self._locker = LoopTracker("dispatch-instance-lock", loops, health)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the instance lock, recover dead instances' work, bind, start the loops."""
        await self._take_lock()
        await self.recover()
        for carrier in self.carriers:
            for bind in carrier.binds:
                bind.start()
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="dispatch-claim"),
            asyncio.create_task(self._writer_loop(), name="dispatch-writer"),
            asyncio.create_task(self._housekeeping_loop(), name="dispatch-housekeeping"),
            asyncio.create_task(self._lock_loop(), name="dispatch-instance-lock"),
        ]
        log.info("dispatcher_started", instance=self.key, carriers=len(self.carriers))

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop claiming, let submits in flight finish, store their outcomes, unbind."""
        self._stopping = True
        self._wake.set()
        if self._submits:
            await asyncio.wait(set(self._submits), timeout=drain_seconds)
        for b in (b for c in self.carriers for b in c.binds):
            await b.stop()
        # Outcomes of anything cut off by the unbind are in doubt; store them all.
        if self._submits:
            await asyncio.wait(set(self._submits), timeout=2)
        # Loops end on the flag (not by cancellation: on Python 3.11 asyncio.wait_for can
        # swallow a cancel that races with the event it waits for).
        self._closing = True
        self._closed_event.set()
        self._flush_now.set()
        self._wake.set()
        await asyncio.wait(set(self._tasks), timeout=5)
        for t in self._tasks:
            t.cancel()
        await self._final_flush(deadline=min(drain_seconds, 5.0))
        if self._lock_conn is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.wait_for(self._lock_conn.close(), 2)  # releases the instance lock
        log.info("dispatcher_stopped", instance=self.key)

    async def _final_flush(self, deadline: float) -> None:
        """Store what is left, retrying while the database is away, up to `deadline` seconds.

        What cannot be stored stays `claimed` under this instance's key: the next instance to
        start requeues it as in doubt, so nothing is lost.
        """
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline
        while True:
            try:
                await self._flush()
                return
            except Exception as exc:
                delay = self._writes.failed(exc)
                if loop.time() + delay > until:
                    log.error("dispatch_outcomes_unstored", outcomes=len(self._outcomes),
                              receipts=len(self._delivers), error=describe(exc))
                    return
                await asyncio.sleep(delay)

    async def _take_lock(self) -> None:
        """A dedicated connection holding this instance's advisory lock and LISTENing."""
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            await conn.execute("SELECT pg_advisory_lock($1, $2)", INSTANCE_LOCK_CLASS, self.key)
            await conn.add_listener(DISPATCH_CHANNEL, lambda *_: self._wake.set())
        except BaseException:
            conn.terminate()
            raise
        if self._lock_conn is not None:
            # Before claims resume (they wait for `_locked`), so none can race with this.
            try:
                await self._release_orphan_claims(conn)
            except BaseException:
                conn.terminate()
                raise
        self._lock_lost.clear()
        conn.add_termination_listener(lambda _c: self._lost_lock())
        self._lock_conn = conn

    async def _release_orphan_claims(self, conn: asyncpg.Connection) -> None:
        """Requeue rows claimed under our key that we never received (the claim's answer was
        lost with the connection): they were never submitted, so they are not in doubt."""
        held = list(self._held)
        status = await conn.execute(
            """UPDATE recipients r SET state = 'queued', claimed_by = NULL,
                      attempts = r.attempts - 1
               WHERE r.state = 'claimed' AND r.claimed_by = $1
                 AND NOT EXISTS (SELECT 1 FROM unnest($2::uuid[], $3::int[]) AS h(message_id, idx)
                                 WHERE h.message_id = r.message_id AND h.idx = r.idx)""",
            self.key, [h[0] for h in held], [h[1] for h in held])
        n = int(status.split()[-1])
        if n:
            log.warning("dispatch_orphan_claims_requeued", count=n)

    def _lost_lock(self) -> None:
        if not self._closing:
            log.warning("dispatch_instance_lock_lost", instance=self.key)
        self._lock_lost.set()

    @property
    def _locked(self) -> bool:
        return self._lock_conn is not None and not self._lock_conn.is_closed()

    async def _lock_loop(self) -> None:
        """Take the instance lock again whenever its connection ends (database restarted)."""
        while not self._closing:
            if self._locked:
                self._locker.idle()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._lock_lost.wait()
                continue
            try:
                await self._take_lock()
            except Exception as exc:
                delay = self._locker.failed(exc)
                log.warning("dispatch_instance_lock_retry", error=describe(exc),
                            retry_s=round(delay, 2))
                await self._sleep_unless_closing(delay)
                continue
            self._locker.ok()
            log.info("dispatch_instance_lock_taken", instance=self.key)
            self._wake.set()

    async def _sleep_unless_closing(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closed_event.wait()

    def wake(self) -> None:
        """Recipients were queued by this daemon (handlers/messages/wake): claim now."""
        self._wake.set()

    async def readiness(self) -> tuple[bool, str]:
        """Ready when every carrier has at least one bound session."""
        down = [c.name for c in self.carriers if not c.up_binds()]
        if down:
            return False, f"no bound SMPP session for: {', '.join(down)}"
        return True, ", ".join(f"{c.name}: {len(c.up_binds())}/{len(c.binds)} binds"
                               for c in self.carriers) or "no carriers configured"

    def _on_bind_change(self) -> None:
        # The bound binds' windows together, read on every submit's completion: summed here,
        # when a bind comes up or goes down, not there.
        self._window = sum(c.capacity() for c in self.carriers)
        for c in self.carriers:
            self.metrics.binds_up.labels(c.name).set(len(c.up_binds()))
        self._wake.set()

    # -- claiming and submitting -----------------------------------------------------------

    def _capacity(self) -> tuple[int, int]:
        """How many recipients may be claimed and not yet stored: of any lane, and of bulk.

        Claimed rows beyond the binds' windows wait for a window slot in arrival order, so bulk
        keeps only half a window of such rows: a verification code or a single send claimed
        next passes all the rest of the bulk send and waits behind that half window at most.
        """
        window = self._window
        return (window * 2, window + window // 2)

    def _inflight_for_claim(self) -> int:
        """The most rows in flight at which a bulk batch may be claimed."""
        return self._capacity()[1] - self._bulk_batch()

    def _bulk_batch(self) -> int:
        """The least room worth a claim of bulk rows: a quarter of the binds' windows. Between
        such claims only codes and single sends are claimed, so a steady bulk send costs a
        claim per quarter window, not one per freed slot."""
        return max(1, self._window // 4)

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()  # news arriving from here on ends the wait below
            any_lane, bulk = self._capacity()
            room = min(any_lane - self._inflight, self.mcfg.dispatch_batch)
            bulk_room = min(bulk - self._inflight, self.mcfg.dispatch_batch)
            if room <= 0 or not self._can_record or not self._locked:
                # Nothing is claimed while outcomes cannot be stored or the lock is not held
                # (another instance could take our claims for a dead instance's).
                await self._wait_for_news(0.5)
                continue
            with_bulk = bulk_room >= min(self._bulk_batch(), room)
            limit = bulk_room if with_bulk else room
            try:
                rows = await self._claim(limit, max_lane=LANE_BULK if with_bulk else LANE_SINGLE)
            except Exception as exc:  # any single failure: log, back off, claim again
                delay = self._claims.failed(exc)
                if is_outage(exc):
                    self._can_record = False
                log.warning("dispatch_claim_failed", error=describe(exc), retry_s=round(delay, 2))
                await self._sleep_unless_closing(delay)
                continue
            self._claims.ok()
            self._held.update((r.message_id, r.idx) for r in rows)
            if rows:
                self._inflight += len(rows)
                self.metrics.inflight.set(self._inflight)
                task = asyncio.create_task(self._submit_rows(rows))
                self._submits.add(task)
                task.add_done_callback(self._submits.discard)
            # Rows may be left behind only when this claim could not take them all.
            self._queue_left = not with_bulk or len(rows) == limit
            if len(rows) < limit:
                # Nothing more that may be claimed now is due: wait for news (a send queued,
                # room for a bulk batch, a bind up, a retry due).
                if not rows or not with_bulk:
                    # (A short claim of codes and single sends alone drained those lanes:
                    # claiming them again at once would only find nothing, a statement per
                    # code beside a bulk send. Room for bulk wakes us.)
                    await self._wait_for_news(self.mcfg.claim_poll_seconds)
                if with_bulk:
                    # The queue was drained: let a few more sends arrive, so that a burst of
                    # single sends costs one claim, not one each. (Beside a bulk send a code
                    # is claimed at once.)
                    await asyncio.sleep(CLAIM_COALESCE_SECONDS)

    async def _wait_for_news(self, timeout: float) -> None:
        """Wait until `_wake` is set (it is cleared at the top of each claim round)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _claim(self, limit: int, max_lane: int = LANE_BULK) -> list[Claimed]:
        async with self.pool.acquire() as conn:
            # migration 0019: the claim with a plan that stays index-ordered
            rows = await conn.fetch("SELECT * FROM telgate_claim($1, $2, $3)",
                                    limit, self.key, max_lane)
        return [Claimed(r["message_id"], r["idx"], r["tenant_id"], r["number"],
                        r["text"] or r["message_text"], r["sender"], r["attempts"], r["lane"])
                for r in rows]

    async def _submit_rows(self, rows: list[Claimed]) -> None:
        """Submit one claim's rows from one task (a task per row cost about 5 µs a message):
        each row's first submit_sm goes out as soon as its bind's window has room, then the
        answers are taken in order. Every row gets exactly one outcome, whatever fails: a row
        whose handling crashed is stored as in doubt, never lost."""
        begun: list[Outcome | _Begun | Exception] = []
        left = len(rows)  # not yet given an outcome
        try:
            for row in rows:
                try:
                    begun.append(await self._begin(row))
                except Exception as exc:
                    begun.append(exc)
            claim_at = self._inflight_for_claim()  # (a bind up or down wakes the claims too)
            for row, step in zip(rows, begun, strict=True):
                try:
                    if isinstance(step, Exception):
                        raise step
                    # Awaited first: `self._outcomes.append(await ...)` would bind the list
                    # the writer may swap out during the await, and the outcome would be lost.
                    outcome = (step if isinstance(step, Outcome)
                               else await self._complete(row, step))
                except Exception as exc:
                    log.exception("submit_crashed", error=str(exc))
                    outcome = Outcome(row, "retry", delay=1.0, in_doubt=True)
                self._outcomes.append(outcome)
                left -= 1
                self._inflight -= 1
                if len(self._outcomes) >= 500:
                    self._flush_now.set()
                if self._queue_left and self._inflight <= claim_at:
                    self._wake.set()  # room for another bulk batch
        finally:
            # Cancelled: the rows left stay claimed under our key (requeued as in doubt by the
            # next start); they no longer count as in flight here.
            self._inflight -= left
            self.metrics.inflight.set(self._inflight)

    async def _begin(self, row: Claimed) -> Outcome | _Begun:
        """Route the row and send its first submit_sm; an Outcome when it cannot go now."""
        route = self.router.choose(row.number)
        if route is None:  # no carrier up for this prefix: wait for a bind, not an attempt
            return Outcome(row, "retry", delay=1.0, reason="no_bind")
        carrier, bind = route
        await take(carrier.bucket)
        await take(bind.bucket)
        if not self._can_record or self._closing:
            # Its outcome could not be stored: a later restart would send it again.
            return Outcome(row, "retry", delay=0.0, reason="db_down")
        client = bind.client
        if client is None:
            return Outcome(row, "retry", delay=0.2, reason="no_bind")
        self._ref = (self._ref + 1) & 0xFFFF
        pdus = build_submits(carrier.config, source=row.sender, destination=row.number,
                             text=row.text, ref=self._ref)
        try:
            # Codes and single sends pass a bulk send's submits waiting for the window.
            first = await client.start(pdus[0], urgent=row.lane < LANE_BULK)
        except (SmppClientError, SessionError) as exc:
            log.warning("submit_in_doubt", bind=bind.name, error=type(exc).__name__)
            return Outcome(row, "retry", delay=0.5, in_doubt=True)
        return _Begun(carrier.name, bind, client, pdus, first)

    async def _complete(self, row: Claimed, b: _Begun) -> Outcome:
        """Wait for the first submit's answer, send the other segments one by one."""
        first_id: str | None = None
        try:
            resp = await b.first
            for pdu in (None, *b.pdus[1:]):
                if pdu is not None:
                    resp = await b.client.submit(pdu, urgent=row.lane < LANE_BULK)
                status = resp.command_status
                if status != CommandStatus.ESME_ROK:
                    return self._refused(row, b.carrier, status)
                first_id = first_id or getattr(resp, "message_id", None) or None
        except (SmppClientError, SessionError) as exc:
            # Not answered: the SMSC may or may not have it.
            log.warning("submit_in_doubt", bind=b.bind.name, error=type(exc).__name__)
            return Outcome(row, "retry", delay=0.5, in_doubt=True)
        if not first_id:
            return Outcome(row, "failed", b.carrier, status=None, reason="no_message_id")
        return Outcome(row, "submitted", b.carrier, message_id=first_id)

    def _refused(self, row: Claimed, carrier: str, status: int) -> Outcome:
        if status in RETRYABLE and row.attempts < self.mcfg.max_attempts:
            delay = min(self.mcfg.retry_max_seconds,
                        self.mcfg.retry_base_seconds * 2 ** (row.attempts - 1))
            return Outcome(row, "retry", carrier, status=status, delay=delay * (0.5 + random.random() / 2),
                           reason="throttled" if status == CommandStatus.ESME_RTHROTTLED
                           else "queue_full")
        return Outcome(row, "failed", carrier, status=status, reason="smpp_error")

    # -- inbound ---------------------------------------------------------------------------

    def _on_event(self, bind: Bind, client: GatewayClient, event: Event) -> None:
        if not isinstance(event, DeliverSmReceived):
            return
        pdu = event.pdu
        receipt = event.receipt
        if receipt is not None:
            stat = (receipt.stat or "").upper() or None
            self._delivers.append(PendingDeliver(
                client, pdu.sequence_number, bind.carrier.name,
                carrier_ids.canonical(receipt.message_id), stat, receipt.err,
                receipt.done_date, pdu.source_addr, pdu.destination_addr, ""))
        else:
            payload = pdu.message_payload or pdu.short_message
            try:
                text = decode_text(payload, pdu.data_coding)
            except UnsupportedDataCoding:
                text = payload.hex()
            self._delivers.append(PendingDeliver(
                client, pdu.sequence_number, bind.carrier.name, None, None, None, None,
                pdu.source_addr, pdu.destination_addr, text))
        if len(self._delivers) >= 500:
            self._flush_now.set()

    # -- the writer --------------------------------------------------------------------------

    async def _writer_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.02):
                    await self._flush_now.wait()
            self._flush_now.clear()
            try:
                stored = await self._flush()
                if not stored and not self._can_record:
                    await self._ping()  # nothing to store: is the database back?
            except Exception as exc:  # the buffers were put back: the next round retries
                delay = self._writes.failed(exc)
                if is_outage(exc):
                    if self._can_record:
                        log.error("dispatch_submits_paused", reason="outcomes cannot be stored",
                                  error=describe(exc))
                    self._can_record = False
                    log.warning("dispatch_store_failed", error=describe(exc),
                                pending=len(self._outcomes), retry_s=round(delay, 2))
                else:
                    log.exception("dispatch_store_failed", error=describe(exc))
                await self._sleep_unless_closing(delay)
                continue
            if stored or not self._can_record:
                self._writes.ok()
            else:
                self._writes.idle()
            if not self._can_record:
                self._can_record = True
                log.warning("dispatch_submits_resumed")
                self._wake.set()

    async def _ping(self) -> None:
        async with self.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)

    async def _flush(self) -> bool:
        """Store the buffered outcomes and receipts in one transaction; False when there was
        nothing to do.

        On failure everything is put back for the next round (nothing of it was committed);
        once committed it is never applied again: re-applying stored outcomes later could
        requeue a row that has been claimed again meanwhile.
        """
        outcomes, self._outcomes = self._outcomes, []
        delivers, self._delivers = self._delivers, []
        if not outcomes and not delivers:
            return False
        try:
            async with self.pool.acquire() as conn:
                await self._store(conn, outcomes, delivers)
        except BaseException:
            self._outcomes[:0] = outcomes
            self._delivers[:0] = delivers
            raise
        # Stored: now the SMSC may forget the receipts and MOs. A session that closed
        # meanwhile gets no ack, and the SMSC redelivers: the match and the MO store tolerate
        # the repeat.
        # Counted per label here and added once each: a labelled counter costs a few µs a call.
        stats: dict[str, int] = {}
        kinds: dict[str, int] = {}
        mos = in_doubt = 0
        for d in delivers:
            if d.client is not None:
                d.client.ack(d.sequence_number)
            if d.receipt_id is not None:
                stat = d.stat or "unknown"
                stats[stat] = stats.get(stat, 0) + 1
            else:
                mos += 1
        held = self._held
        for o in outcomes:
            held.discard((o.row.message_id, o.row.idx))
            kinds[o.kind] = kinds.get(o.kind, 0) + 1
            in_doubt += o.in_doubt
        for stat, n in stats.items():
            self.metrics.receipts.labels(stat).inc(n)
        for kind, n in kinds.items():
            self.metrics.outcomes.labels(kind).inc(n)
        if mos:
            self.metrics.mo.inc(mos)
        if in_doubt:
            self.metrics.in_doubt.inc(in_doubt)
        retry = [o.delay for o in outcomes if o.kind == "retry"]
        if retry:
            asyncio.get_running_loop().call_later(min(retry), self._wake.set)
        return True

    async def _store(self, conn: asyncpg.Connection, outcomes: Sequence[Outcome],
                     delivers: Sequence[PendingDeliver]) -> None:
        ok = [o for o in outcomes if o.kind == "submitted"]
        others = [o for o in outcomes if o.kind != "submitted"]
        receipts = [d for d in delivers if d.receipt_id is not None
                    and (d.stat or "") not in INTERMEDIATE_STATS]
        mos = [d for d in delivers if d.receipt_id is None]
        ids = [carrier_ids.canonical(o.message_id or "") for o in ok]
        alts = [carrier_ids.alternate(i) for i in ids]
        folded, receipts = _fold_receipts(ok, ids, alts, receipts)
        # migration 0022: outcomes (with the receipts folded into them), the inbox's waiting
        # receipts and this round's other receipts, in one statement
        store = ("SELECT * FROM telgate_store_round($1, $2, $3, $4, $5, $6, $7, $8, $9,"
                 " $10, $11, $12, $13, $14)")
        args = (
            [o.row.message_id for o in ok], [o.row.idx for o in ok], [o.carrier for o in ok],
            ids, alts, [f is not None for f in folded],
            [f.stat if f else None for f in folded], [f.err if f else None for f in folded],
            [_aware(f.done_at) if f else None for f in folded],
            [d.carrier for d in receipts], [d.receipt_id for d in receipts],
            [d.stat for d in receipts], [d.err for d in receipts],
            [_aware(d.done_at) for d in receipts])
        if others or mos:
            async with conn.transaction():
                if others:
                    await self._store_unsent(conn, others)
                row = await conn.fetchrow(store, *args)
                for d in mos:
                    await self._store_mo(conn, d)
        else:  # one statement is its own transaction
            row = await conn.fetchrow(store, *args)
        assert row is not None
        _warn_unmatched("submitted", row["stored"], len(ok))
        if row["repeated"]:
            self.metrics.receipt_repeats.inc(row["repeated"])

    async def _store_unsent(self, conn: asyncpg.Connection, outcomes: Sequence[Outcome]) -> None:
        """Outcomes of submits the SMSC refused or that must be tried again."""
        failed = [o for o in outcomes if o.kind == "failed"]
        retry = [o for o in outcomes if o.kind == "retry"]
        if failed:
            await conn.execute(
                """WITH u AS (
                       SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[],
                                            $5::text[]) AS u(message_id, idx, carrier, status, reason)
                   ), upd AS (
                       UPDATE recipients r SET state = 'failed', carrier = u.carrier,
                              smpp_status = u.status, reason = u.reason, done_at = now(),
                              claimed_by = NULL
                       FROM u WHERE r.message_id = u.message_id AND r.idx = u.idx
                         AND r.state = 'claimed'
                       RETURNING r.tenant_id, r.message_id, r.idx, r.number, r.state, r.reason
                   )
                   INSERT INTO event_log (tenant_id, sp_id, type, data)
                   SELECT upd.tenant_id, m.sp_id, 'message.recipient.failed',
                          jsonb_build_object('message_id', upd.message_id, 'index', upd.idx,
                                             'number', upd.number, 'state', upd.state,
                                             'reason', upd.reason)
                   FROM upd JOIN messages m ON m.id = upd.message_id""",
                [o.row.message_id for o in failed], [o.row.idx for o in failed],
                [o.carrier for o in failed], [o.status for o in failed],
                [o.reason for o in failed])
        if retry:
            status = await conn.execute(
                """UPDATE recipients r SET state = 'queued', claimed_by = NULL,
                          next_attempt_at = now() + make_interval(secs => u.delay),
                          in_doubt = r.in_doubt OR u.doubt, reason = u.reason,
                          attempts = CASE WHEN u.reason IN ('no_bind', 'db_down')
                                          THEN r.attempts - 1
                                          ELSE r.attempts END
                   FROM unnest($1::uuid[], $2::int[], $3::float8[], $4::bool[], $5::text[])
                        AS u(message_id, idx, delay, doubt, reason)
                   WHERE r.message_id = u.message_id AND r.idx = u.idx
                     AND r.state = 'claimed'""",
                [o.row.message_id for o in retry], [o.row.idx for o in retry],
                [o.delay for o in retry], [o.in_doubt for o in retry],
                [o.reason for o in retry])
            _warn_unmatched("retry", int(status.split()[-1]), len(retry))

    async def _store_mo(self, conn: asyncpg.Connection, d: PendingDeliver) -> None:
        destination = "".join(ch for ch in d.destination if ch.isdigit())
        tenant = await conn.fetchval("SELECT id FROM tenants WHERE optout_number = $1",
                                     destination)
        wants_out = tenant is not None and any(
            k.lower() in d.text.lower() for k in self.mcfg.optout_keywords)
        await conn.execute(
            """INSERT INTO mo_messages (tenant_id, carrier, source, destination, text, opt_out)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            tenant, d.carrier, d.source, destination, d.text, wants_out)
        if wants_out:
            try:
                await optouts.add_from_mo(conn, tenant, d.source)
            except Exception as exc:  # a malformed source number must not lose the MO row
                log.warning("mo_optout_not_added", error=str(exc))
            else:
                log.info("mo_optout_added", tenant=str(tenant), number=d.source)

    # -- housekeeping ---------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.mcfg.recovery_seconds):
                    await self._closed_event.wait()
            if self._closing:
                return
            try:
                await self.recover()
                await self.expire()
                await self.measure_lanes()
            except Exception as exc:  # the next round tries again
                self._house.failed(exc)
                log.error("dispatch_housekeeping_failed", error=describe(exc))
            else:
                self._house.ok()

    async def measure_lanes(self) -> dict[str, tuple[int, float]]:
        """Queue depth and oldest wait per lane, into the lane gauges (and returned)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT lane, count(*) AS n,
                          extract(epoch FROM now() - min(next_attempt_at))::float8 AS age
                   FROM recipients WHERE state = 'queued' AND next_attempt_at <= now()
                   GROUP BY lane""")
        seen = {LANES[r["lane"]]: (int(r["n"]), max(0.0, float(r["age"]))) for r in rows}
        for name in LANES:
            depth, age = seen.get(name, (0, 0.0))
            self.metrics.lane_depth.labels(name).set(depth)
            self.metrics.lane_age.labels(name).set(age)
        return seen

    async def recover(self) -> int:
        """Requeue, as in doubt, recipients claimed by instances that are no longer alive."""
        requeued = 0
        async with self.pool.acquire() as conn:
            keys = [r["claimed_by"] for r in await conn.fetch(
                "SELECT DISTINCT claimed_by FROM recipients "
                "WHERE state = 'claimed' AND claimed_by <> $1", self.key)]
            for key in keys:
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)",
                                           INSTANCE_LOCK_CLASS, key):
                    continue  # that instance is alive
                try:
                    status = await conn.execute(
                        """UPDATE recipients SET state = 'queued', claimed_by = NULL,
                                  in_doubt = true, next_attempt_at = now()
                           WHERE state = 'claimed' AND claimed_by = $1""", key)
                    n = int(status.split()[-1])
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1, $2)",
                                       INSTANCE_LOCK_CLASS, key)
                if n:
                    requeued += n
                    self.metrics.in_doubt.inc(n)
                    log.warning("dispatch_recovered_dead_instance", instance=key, in_doubt=n)
        if requeued:
            self._wake.set()
        return requeued

    async def expire(self) -> int:
        """Submitted recipients with no receipt within the timeout become `expired`."""
        async with self.pool.acquire() as conn:
            n = await conn.fetchval(
                """WITH upd AS (
                       UPDATE recipients SET state = 'expired', reason = 'no_receipt',
                              done_at = now()
                       WHERE state = 'submitted'
                         AND submitted_at < now() - make_interval(secs => $1)
                       RETURNING tenant_id, message_id, idx, number
                   ), hooks AS (
                       INSERT INTO event_log (tenant_id, sp_id, type, data)
                       SELECT upd.tenant_id, m.sp_id, 'message.recipient.expired',
                              jsonb_build_object('message_id', upd.message_id, 'index', upd.idx,
                                                 'number', upd.number, 'state', 'expired',
                                                 'reason', 'no_receipt')
                       FROM upd JOIN messages m ON m.id = upd.message_id
                   )
                   SELECT count(*) FROM upd""",
                self.mcfg.receipt_timeout_seconds)
            # A receipt matches within milliseconds of its submit's outcome being stored. One
            # still unmatched after an hour is for a submit whose response we never got (the
            # in-doubt copy of a resubmitted recipient): no row will ever carry its id.
            dropped = await conn.fetchval(
                """WITH gone AS (DELETE FROM dlr_inbox
                                 WHERE received_at < now() - interval '1 hour' RETURNING 1)
                   SELECT count(*) FROM gone""")
        if dropped:
            self.metrics.receipts_unmatched.inc(dropped)
            log.warning("dispatch_receipts_unmatched_dropped", count=dropped)
        return int(n or 0)
