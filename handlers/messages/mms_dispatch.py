"""The MM7 dispatcher: MMS recipients in the PostgreSQL queue → SubmitReq to carriers' MMSCs.

It runs beside the SMPP dispatcher with the same guarantees and its own instance key: it claims
queued recipients marked `mms` (`FOR UPDATE SKIP LOCKED`, state `claimed`), posts one SubmitReq
per recipient, and a writer stores outcomes in batches: `submitted` with the MMSC's message id,
`failed` with the MMSC's status code (`mm7_status`, reason `mm7_<code>`), or back to `queued`
with a back-off, marked `in_doubt` when the request went out and no answer came (timeout,
connection cut, unreadable answer): only those can be duplicated, and they are counted.
Delivery reports are taken by `mms_reports`; the claimed rows of a dead instance (kill -9) are
requeued as in doubt by `recover()`, as the SMPP dispatcher does.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from config.schema import Config, Mm7CarrierConfig
from handlers.messages import mms_reports, mms_store
from handlers.messages.carriers import take
from handlers.messages.dispatch import INSTANCE_LOCK_CLASS
from handlers.messages.wake import DISPATCH_CHANNEL
from handlers.metrics import Metrics
from protocols.mm7.client import Mm7Client, Mm7ClientError, Mm7HttpError, Mm7Unreachable
from protocols.mm7.messages import (
    Address,
    AddressKind,
    Fault,
    Part,
    RSErrorRsp,
    SubmitReq,
    SubmitRsp,
)
from protocols.mm7.smil import presentation
from protocols.mm7.status import StatusCode, is_success
from protocols.mm7.versions import SchemaVersion
from protocols.smpp.throttle import TokenBucket

log = structlog.get_logger("telgate.mms")

CONTENT_REFUSED = frozenset({StatusCode.CONTENT_REFUSED})
UNREACHABLE = "mmsc_unreachable"  # no connection: retried without counting an attempt
DOWN_SECONDS = 5.0  # an unreachable MMSC is skipped this long when another route exists
IMAGE_CACHE = 64


@dataclass(frozen=True, slots=True)
class MmsClaimed:
    """An MMS recipient this instance took from the queue."""

    message_id: uuid.UUID
    idx: int
    tenant_id: uuid.UUID
    number: str
    text: str
    sender: str
    subject: str | None
    ad: bool
    attempts: int
    lms_fallback: bool


@dataclass(frozen=True, slots=True)
class MmsOutcome:
    """What happened to one claimed recipient: submitted | failed | retry | fallback."""

    row: MmsClaimed
    kind: str
    carrier: str | None = None
    message_id: str | None = None
    status: int | None = None
    delay: float = 0.0
    in_doubt: bool = False
    reason: str | None = None


class MmsMetrics:
    """Counters operators watch for MMS."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.outcomes = Counter("telgate_mm7_submits_total", "SubmitReq outcomes", ["outcome"],
                                registry=r)
        self.in_doubt = Counter("telgate_mm7_submits_in_doubt_total",
                                "SubmitReq whose fate is unknown (possible duplicates)",
                                registry=r)
        self.reports = Counter("telgate_mm7_reports_total", "delivery reports", ["status"],
                               registry=r)
        self.inflight = Gauge("telgate_mm7_inflight", "claimed MMS recipients not yet stored",
                              registry=r)


class MmsCarrier:
    """One MMSC: its client, TPS bucket, concurrency and whether it answered lately."""

    def __init__(self, config: Mm7CarrierConfig) -> None:
        try:
            codecs.lookup(config.charset)
        except LookupError:
            raise ValueError(f"mm7 carrier {config.name}: unknown charset {config.charset!r}"
                             ) from None
        self.config = config
        self.schema = SchemaVersion(config.schema_version)
        self.client = Mm7Client(
            config.url, schema=self.schema, mm7_version=config.mm7_version or None,
            username=config.username or None, password=config.password,
            timeout=config.timeout_seconds, http_headers=config.http_headers,
            soap_headers=config.soap_headers, text_cte=config.text_transfer_encoding,
            connections=config.connections)
        self.bucket = (TokenBucket(config.tps, max(config.tps / 10, 1.0), time.monotonic)
                       if config.tps > 0 else None)
        self.slots = asyncio.Semaphore(config.connections)
        self.down_until = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    def up(self, now: float) -> bool:
        return now >= self.down_until


def routes(carriers: Sequence[MmsCarrier], destination: str) -> list[MmsCarrier]:
    """Carriers for a destination: longest matching prefix first, then priority."""
    matches: list[tuple[int, int, int, MmsCarrier]] = []
    for order, c in enumerate(carriers):
        best = max((len(p) for p in c.config.prefixes if destination.startswith(p)), default=-1)
        if best >= 0:
            matches.append((-best, c.config.priority, order, c))
    return [m[3] for m in sorted(matches, key=lambda m: m[:3])]


def encode_text(text: str, charset: str) -> tuple[bytes, str]:
    """The text in the carrier's charset, or in UTF-8 when that charset cannot carry it.

    Python's EUC-KR codec writes a syllable outside KS X 1001's 2,350 (똠, 햏 ...) as an 8-byte
    jamo composition sequence that handsets show as garbage: such text goes as UTF-8."""
    try:
        data = text.encode(charset)
    except UnicodeEncodeError:
        return text.encode("utf-8"), "utf-8"
    if codecs.lookup(charset).name == "euc_kr" and len(data) > 2 * len(text) - sum(
            ch.isascii() for ch in text):
        return text.encode("utf-8"), "utf-8"
    return data, charset


def build_submit(carrier: Mm7CarrierConfig, row: MmsClaimed, images: Sequence[bytes],
                 now: datetime) -> SubmitReq:
    """The SubmitReq of one recipient: the text in the carrier's charset, the JPEGs as sent,
    a SMIL presentation first when the carrier wants one."""
    parts: list[Part] = [Part("image/jpeg", data, f"image{i + 1}", None, f"image{i + 1}.jpg")
                         for i, data in enumerate(images)]
    if row.text:
        encoded, charset = encode_text(row.text, carrier.charset)
        parts.append(Part("text/plain", encoded, "text1", charset, "text1.txt"))
    content = tuple(parts)
    if carrier.smil:
        content = (presentation(content), *content)
    kind = AddressKind.SHORT_CODE if carrier.sender_address == "ShortCode" else AddressKind.NUMBER
    message_class = carrier.message_class or ("Advertisement" if row.ad else None)
    return SubmitReq(
        f"{row.message_id.hex[:16]}-{row.idx}-{row.attempts}",
        carrier.vasp_id, carrier.vas_id or None, (Address(row.number),),
        Address(row.sender, kind), service_code=carrier.service_code or None,
        message_class=message_class, timestamp=now.replace(microsecond=0),
        expiry=carrier.expiry or None, delivery_report=True, subject=row.subject,
        content=content)


class MmsDispatcher:
    """Drives the MMS part of the message queue of one daemon instance."""

    def __init__(self, config: Config, pool: asyncpg.Pool, dsn: str, metrics: Metrics) -> None:
        self.config = config
        self.mcfg = config.messaging
        self.pool = pool
        self.dsn = dsn
        self.metrics = metrics.group("mms", MmsMetrics)
        self.key = random.randrange(1, 2**31 - 1)
        names = [c.name for c in config.mm7.carriers]
        clash = sorted({n for n in names if names.count(n) > 1}
                       | set(names) & {c.name for c in config.smpp.carriers})
        if clash:  # recipients and reports are matched by carrier name
            raise ValueError(f"carrier names must be unique across smpp and mm7: {clash}")
        self.carriers = [MmsCarrier(c) for c in config.mm7.carriers]
        self._images: OrderedDict[uuid.UUID, list[bytes]] = OrderedDict()
        self._outcomes: list[MmsOutcome] = []
        self._wake = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._closed = asyncio.Event()
        self._inflight = 0
        self._stopping = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._submits: set[asyncio.Task[None]] = set()
        self._lock_conn: asyncpg.Connection | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the instance lock, recover dead instances' work, start the loops."""
        self._lock_conn = await asyncpg.connect(self.dsn)
        await self._lock_conn.execute("SELECT pg_advisory_lock($1, $2)", INSTANCE_LOCK_CLASS,
                                      self.key)
        await self._lock_conn.add_listener(mms_store.MMS_CHANNEL, lambda *_: self._wake.set())
        await self.recover()
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="mms-claim"),
            asyncio.create_task(self._writer_loop(), name="mms-writer"),
            asyncio.create_task(self._housekeeping_loop(), name="mms-housekeeping"),
        ]
        mms_store.set_route_available(bool(self.carriers))
        log.info("mms_dispatcher_started", instance=self.key, carriers=len(self.carriers))

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop claiming, let requests in flight finish, store their outcomes."""
        mms_store.set_route_available(False)
        self._stopping = True
        self._wake.set()
        if self._submits:
            await asyncio.wait(set(self._submits), timeout=drain_seconds)
        for task in list(self._submits):  # cut off: stored as in doubt by _submit
            task.cancel()
        if self._submits:
            await asyncio.wait(set(self._submits), timeout=2)
        self._closing = True
        self._closed.set()
        self._flush_now.set()
        await asyncio.wait(set(self._tasks), timeout=5)
        for t in self._tasks:
            t.cancel()
        await self._flush()
        for c in self.carriers:
            await c.client.close()
        if self._lock_conn is not None:
            await self._lock_conn.close()
        log.info("mms_dispatcher_stopped", instance=self.key)

    async def readiness(self) -> tuple[bool, str]:
        """Ready unless every MMSC refused our last connection (HTTP has no session to watch)."""
        now = time.monotonic()
        down = [c.name for c in self.carriers if not c.up(now)]
        if self.carriers and len(down) == len(self.carriers):
            return False, f"no MMSC reachable: {', '.join(down)}"
        return True, ", ".join(f"{c.name}: {'unreachable' if c.name in down else 'up'}"
                               for c in self.carriers)

    # -- claiming and submitting -----------------------------------------------------------

    def _capacity(self) -> int:
        return sum(c.config.connections for c in self.carriers) * 2

    async def _claim_loop(self) -> None:
        while not self._stopping:
            room = min(self._capacity() - self._inflight, self.mcfg.dispatch_batch)
            if room <= 0 or not self.carriers:
                await self._sleep_until_woken(0.5)
                continue
            try:
                rows = await self._claim(room)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.error("mms_claim_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            if not rows:
                await self._sleep_until_woken(0.5)
                continue
            self._inflight += len(rows)
            self.metrics.inflight.set(self._inflight)
            for row in rows:
                task = asyncio.create_task(self._submit(row))
                self._submits.add(task)
                task.add_done_callback(self._submits.discard)

    async def _sleep_until_woken(self, timeout: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _claim(self, limit: int) -> list[MmsClaimed]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """WITH due AS (
                       SELECT r.message_id, r.idx FROM recipients r
                       JOIN messages m ON m.id = r.message_id
                       WHERE r.state = 'queued' AND r.mms AND r.next_attempt_at <= now()
                       ORDER BY r.next_attempt_at
                       LIMIT $1
                       FOR UPDATE OF r SKIP LOCKED
                       FOR SHARE OF m SKIP LOCKED
                   ), claimed AS (
                       UPDATE recipients r SET state = 'claimed', claimed_by = $2,
                                               attempts = r.attempts + 1
                       FROM due WHERE r.message_id = due.message_id AND r.idx = due.idx
                       RETURNING r.message_id, r.idx, r.tenant_id, r.number, r.text, r.attempts
                   )
                   SELECT c.*, m.sender, m.text AS message_text, m.subject, m.ad,
                          t.mms_lms_fallback
                   FROM claimed c JOIN messages m ON m.id = c.message_id
                   JOIN tenants t ON t.id = m.tenant_id""",
                limit, self.key)
        return [MmsClaimed(r["message_id"], r["idx"], r["tenant_id"], r["number"],
                           r["text"] or r["message_text"], r["sender"], r["subject"], r["ad"],
                           r["attempts"], r["mms_lms_fallback"]) for r in rows]

    async def _images_of(self, message_id: uuid.UUID) -> list[bytes]:
        hit = self._images.get(message_id)
        if hit is not None:
            self._images.move_to_end(message_id)
            return hit
        async with self.pool.acquire() as conn:
            images = await mms_store.load_images(conn, message_id)
        self._images[message_id] = images
        while len(self._images) > IMAGE_CACHE:
            self._images.popitem(last=False)
        return images

    async def _submit(self, row: MmsClaimed) -> None:
        try:
            outcome = await self._submit_one(row)
        except asyncio.CancelledError:  # stopped mid-request: the MMSC may have it
            outcome = MmsOutcome(row, "retry", delay=1.0, in_doubt=True, reason="stopped")
        except Exception as exc:  # never lose a claimed row: store it as in doubt
            log.exception("mms_submit_crashed", error=str(exc))
            outcome = MmsOutcome(row, "retry", delay=1.0, in_doubt=True)
        self._outcomes.append(outcome)
        self._inflight -= 1
        self.metrics.inflight.set(self._inflight)
        if len(self._outcomes) >= 200:
            self._flush_now.set()
        self._wake.set()

    def _backoff(self, row: MmsClaimed) -> float:
        delay: float = min(self.mcfg.retry_max_seconds,
                           self.mcfg.retry_base_seconds * 2.0 ** (row.attempts - 1))
        return delay * (0.5 + random.random() / 2)

    def _retry(self, row: MmsClaimed, carrier: str | None, reason: str, *,
               in_doubt: bool = False, status: int | None = None) -> MmsOutcome:
        if row.attempts >= self.mcfg.max_attempts:
            return MmsOutcome(row, "failed", carrier, status=status, in_doubt=in_doubt,
                              reason=reason)
        return MmsOutcome(row, "retry", carrier, status=status, delay=self._backoff(row),
                          in_doubt=in_doubt, reason=reason)

    async def _submit_one(self, row: MmsClaimed) -> MmsOutcome:
        now = time.monotonic()
        candidates = routes(self.carriers, row.number)
        if not candidates:
            return MmsOutcome(row, "failed", reason="no_route")
        carrier = next((c for c in candidates if c.up(now)), candidates[0])
        images = await self._images_of(row.message_id)
        request = build_submit(carrier.config, row, images, datetime.now(UTC))
        await take(carrier.bucket)
        async with carrier.slots:
            try:
                answer = await carrier.client.send(request)
            except Mm7Unreachable as exc:
                now = time.monotonic()
                carrier.down_until = now + DOWN_SECONDS
                log.warning("mms_mmsc_unreachable", carrier=carrier.name, error=exc.detail)
                # Another route up: try it at once; else wait for this one to come back.
                other = any(c.up(now) for c in candidates if c is not carrier)
                delay = 0.0 if other else DOWN_SECONDS * (0.5 + random.random() / 2)
                return MmsOutcome(row, "retry", carrier.name, delay=delay, reason=UNREACHABLE)
            except Mm7HttpError as exc:
                log.warning("mms_http_error", carrier=carrier.name, status=exc.http_status)
                reason = ("throttled" if exc.http_status in (429, 503)
                          else f"http_{exc.http_status}")
                return self._retry(row, carrier.name, reason, in_doubt=exc.in_doubt)
            except Mm7ClientError as exc:
                log.warning("mms_submit_in_doubt", carrier=carrier.name, error=exc.detail)
                return self._retry(row, carrier.name, "no_answer", in_doubt=exc.in_doubt)
        return self._judge(row, carrier, answer.message)

    def _judge(self, row: MmsClaimed, carrier: MmsCarrier, answer: object) -> MmsOutcome:
        if isinstance(answer, SubmitRsp) and is_success(answer.status.code):
            if not answer.message_id:
                return MmsOutcome(row, "failed", carrier.name, status=answer.status.code,
                                  reason="no_message_id")
            return MmsOutcome(row, "submitted", carrier.name, message_id=answer.message_id,
                              status=answer.status.code)
        if isinstance(answer, SubmitRsp | RSErrorRsp):
            code = answer.status.code
        elif isinstance(answer, Fault):
            code = answer.status_code or (StatusCode.SERVER_ERROR if "Server" in answer.faultcode
                                          else StatusCode.CLIENT_ERROR)
        else:
            return MmsOutcome(row, "retry", carrier.name, delay=self._backoff(row),
                              in_doubt=True, reason="unexpected_answer")
        if code in carrier.config.retry_status_codes:
            return self._retry(row, carrier.name, f"mm7_{code}", status=code)
        if code in CONTENT_REFUSED and row.lms_fallback and row.text:
            return MmsOutcome(row, "fallback", carrier.name, status=code, reason="lms_fallback")
        return MmsOutcome(row, "failed", carrier.name, status=code, reason=f"mm7_{code}")

    # -- the writer --------------------------------------------------------------------------

    async def _writer_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.02):
                    await self._flush_now.wait()
            self._flush_now.clear()
            try:
                await self._flush()
            except Exception as exc:  # the outcomes were put back: the next round retries
                log.exception("mms_store_failed", error=str(exc))
                await asyncio.sleep(0.5)

    async def _flush(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        if not outcomes:
            return
        try:
            async with self.pool.acquire() as conn:
                await self._store(conn, outcomes)
                if any(o.kind == "submitted" for o in outcomes):
                    await mms_reports.match_reports(conn)
        except BaseException:
            self._outcomes[:0] = outcomes
            raise
        for o in outcomes:
            self.metrics.outcomes.labels(o.kind).inc()
            if o.in_doubt:
                self.metrics.in_doubt.inc()
        retry = [o for o in outcomes if o.kind == "retry"]
        if retry:
            asyncio.get_running_loop().call_later(min(o.delay for o in retry), self._wake.set)

    async def _store(self, conn: asyncpg.Connection, outcomes: Sequence[MmsOutcome]) -> None:
        def cols(kind: str, *names: str) -> list[list[Any]]:
            chosen = [o for o in outcomes if o.kind == kind]
            return [[o.row.message_id for o in chosen], [o.row.idx for o in chosen],
                    *[[getattr(o, n) for o in chosen] for n in names]]

        ok, failed, retry, fallback = (cols("submitted", "carrier", "message_id"),
                                       cols("failed", "carrier", "status", "reason",
                                            "in_doubt"),
                                       cols("retry", "delay", "in_doubt", "reason"),
                                       cols("fallback", "carrier", "status"))
        async with conn.transaction():
            if ok[0]:
                await conn.execute(
                    """UPDATE recipients r SET state = 'submitted', carrier = u.carrier,
                              carrier_msg_id = u.mid, submitted_at = now(), claimed_by = NULL,
                              mm7_status = 1000, reason = NULL
                       FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[])
                            AS u(message_id, idx, carrier, mid)
                       WHERE r.message_id = u.message_id AND r.idx = u.idx
                         AND r.state = 'claimed' AND r.claimed_by = $5""", *ok, self.key)
                await conn.execute(
                    """UPDATE messages SET dispatch_started_at = now()
                       WHERE id = ANY($1::uuid[]) AND dispatch_started_at IS NULL""",
                    list(set(ok[0])))
            if failed[0]:
                await conn.execute(
                    """WITH u AS (
                           SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[],
                                                $5::text[], $6::bool[])
                                         AS u(message_id, idx, carrier, status, reason, doubt)
                       ), upd AS (
                           UPDATE recipients r SET state = 'failed', carrier = u.carrier,
                                  mm7_status = u.status, reason = u.reason, done_at = now(),
                                  claimed_by = NULL, in_doubt = r.in_doubt OR u.doubt
                           FROM u WHERE r.message_id = u.message_id AND r.idx = u.idx
                             AND r.state = 'claimed' AND r.claimed_by = $7
                           RETURNING r.tenant_id, r.message_id, r.idx, r.number, r.state, r.reason
                       )
                       INSERT INTO event_log (tenant_id, sp_id, type, data)
                       SELECT upd.tenant_id, m.sp_id, 'message.recipient.failed',
                              jsonb_build_object('message_id', upd.message_id, 'index', upd.idx,
                                                 'number', upd.number, 'state', upd.state,
                                                 'reason', upd.reason)
                       FROM upd JOIN messages m ON m.id = upd.message_id""",
                    *failed, self.key)
            if retry[0]:
                await conn.execute(
                    """UPDATE recipients r SET state = 'queued', claimed_by = NULL,
                              next_attempt_at = now() + make_interval(secs => u.delay),
                              in_doubt = r.in_doubt OR u.doubt, reason = u.reason,
                              -- nothing reached an unreachable MMSC: not an attempt
                              attempts = CASE WHEN u.reason = 'mmsc_unreachable'
                                              THEN r.attempts - 1 ELSE r.attempts END
                       FROM unnest($1::uuid[], $2::int[], $3::float8[], $4::bool[], $5::text[])
                            AS u(message_id, idx, delay, doubt, reason)
                       WHERE r.message_id = u.message_id AND r.idx = u.idx
                         AND r.state = 'claimed' AND r.claimed_by = $6""", *retry, self.key)
            if fallback[0]:
                # The MMSC refused the image: the text goes as LMS through the SMPP dispatcher.
                await conn.execute(
                    """UPDATE recipients r SET state = 'queued', claimed_by = NULL, mms = false,
                              next_attempt_at = now(), mm7_status = u.status,
                              reason = 'lms_fallback', attempts = 0
                       FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[])
                            AS u(message_id, idx, carrier, status)
                       WHERE r.message_id = u.message_id AND r.idx = u.idx
                         AND r.state = 'claimed' AND r.claimed_by = $5;""",
                    *fallback, self.key)
                await conn.execute("SELECT pg_notify($1, '')", DISPATCH_CHANNEL)

    # -- housekeeping ---------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.mcfg.recovery_seconds):
                    await self._closed.wait()
            if self._closing:
                return
            try:
                await self.recover()
                async with self.pool.acquire() as conn:
                    await mms_reports.match_reports(conn)
                    await conn.execute("DELETE FROM mm7_report_inbox "
                                       "WHERE received_at < now() - interval '1 day'")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.error("mms_housekeeping_failed", error=str(exc))

    async def recover(self) -> int:
        """Requeue, as in doubt, MMS recipients claimed by instances that are no longer alive."""
        requeued = 0
        async with self.pool.acquire() as conn:
            keys = [r["claimed_by"] for r in await conn.fetch(
                "SELECT DISTINCT claimed_by FROM recipients "
                "WHERE state = 'claimed' AND mms AND claimed_by <> $1", self.key)]
            for key in keys:
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)",
                                           INSTANCE_LOCK_CLASS, key):
                    continue  # that instance is alive
                try:
                    status = await conn.execute(
                        """UPDATE recipients SET state = 'queued', claimed_by = NULL,
                                  in_doubt = true, next_attempt_at = now()
                           WHERE state = 'claimed' AND mms AND claimed_by = $1""", key)
                    n = int(status.split()[-1])
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1, $2)",
                                       INSTANCE_LOCK_CLASS, key)
                if n:
                    requeued += n
                    self.metrics.in_doubt.inc(n)
                    log.warning("mms_recovered_dead_instance", instance=key, in_doubt=n)
        if requeued:
            self._wake.set()
        return requeued
