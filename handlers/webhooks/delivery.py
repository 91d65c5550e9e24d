"""Signed webhook delivery: the outbox is drained at least once, with back-off and jitter.

A row of `webhook_outbox` is *leased* by moving its `next_attempt_at` past the request timeout
in a short `FOR UPDATE SKIP LOCKED` transaction; the POST happens outside any transaction and
its outcome is written afterwards. A process that dies mid-delivery leaves the lease to expire
and another instance (or the same one after restart) sends the event again, so receivers must
de-duplicate on the event id (`X-Telgate-Event-Id`). A 2xx answer is a delivery; anything else
(non-2xx, timeout, refused connection) is retried with exponential back-off and jitter until
the event is `max_age` old, after which it is abandoned: `next_attempt_at` becomes `infinity`
and `last_error` says why.

Signature: ``X-Telgate-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``
where ``timestamp`` is the ``X-Telgate-Timestamp`` header (Unix seconds) and ``body`` the raw
request body. Receivers check it with `verify_signature` (or its few lines copied).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import structlog
from prometheus_client import Counter

from handlers.metrics import Metrics
from handlers.outage import DatabaseHealth, LoopMetrics, LoopTracker, describe, is_outage
from handlers.webhooks.targets import (
    ForbiddenTarget,
    PinnedResolver,
    TargetPolicy,
    literal_refusal,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryPolicy",
    "WebhookDeliverer",
    "envelope",
    "sign",
    "verify_signature",
]

log = structlog.get_logger("telgate.webhooks")

EVENT_ID_HEADER = "X-Telgate-Event-Id"
EVENT_TYPE_HEADER = "X-Telgate-Event-Type"
TIMESTAMP_HEADER = "X-Telgate-Timestamp"
SIGNATURE_HEADER = "X-Telgate-Signature"
USER_AGENT = "telgate-webhooks/1"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 of ``timestamp.body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, body: bytes, timestamp: str, signature: str, *,
                     tolerance_seconds: float = 300.0, now: float | None = None) -> bool:
    """True if `signature` (the X-Telgate-Signature header) signs `body` at `timestamp`.

    `timestamp` is the X-Telgate-Timestamp header; a request more than `tolerance_seconds`
    away from `now` (default: the clock) is refused, so a captured request cannot be replayed
    later. Compare in constant time; pass the raw body bytes, never re-serialised JSON.
    """
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature.strip())


def envelope(event_id: UUID, event_type: str, created_at: datetime,
             payload: object) -> bytes:
    """The JSON body of one delivery (UTF-8, compact, Korean kept readable)."""
    return json.dumps(
        {"id": str(event_id), "type": event_type, "created_at": created_at.isoformat(),
         "data": payload},
        ensure_ascii=False, separators=(",", ":"), default=str,
    ).encode()


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard and how fast the deliverer tries (DESIGN.md: at least once, signed)."""

    timeout_seconds: float = 10.0  # whole request, connect included
    connect_timeout_seconds: float = 5.0
    base_delay_seconds: float = 5.0  # first retry; doubles per attempt
    max_delay_seconds: float = 3600.0
    max_age_seconds: float = 3 * 86400.0  # abandon an event this old
    batch: int = 100  # rows leased per round
    concurrency: int = 50  # requests in flight per instance
    poll_seconds: float = 0.5  # idle wait between rounds
    retention_seconds: float = 7 * 86400.0  # delivered rows are deleted after this
    lease_margin_seconds: float = 30.0  # a lease outlives the request timeout by this much

    @property
    def lease_seconds(self) -> float:
        """How long a leased row is left alone: past any request that can still be running."""
        return self.timeout_seconds + self.lease_margin_seconds

    def backoff(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before the next attempt after `attempts` failures: exponential, 50-100 % jitter."""
        exponential: float = self.base_delay_seconds * 2.0 ** max(attempts - 1, 0)
        return min(self.max_delay_seconds, exponential) * (0.5 + rand() / 2)


@dataclass(frozen=True, slots=True)
class Leased:
    """One outbox row this instance is delivering."""

    id: int
    event_id: UUID
    event_type: str
    payload: object
    created_at: datetime
    attempts: int
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one POST."""

    row: Leased
    ok: bool
    error: str | None = None


class WebhookDeliverer:
    """Drains `webhook_outbox`: lease due rows, POST them signed, record the outcome.

    Any number of instances may run against one database. `start()` spawns the loop;
    `stop()` lets requests in flight finish (their rows otherwise wait for the lease).
    """

    def __init__(self, pool: asyncpg.Pool, policy: DeliveryPolicy | None = None, *,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
                 health: DatabaseHealth | None = None,
                 targets: TargetPolicy | None = None) -> None:
        self.pool = pool
        self._tracker = LoopTracker(
            "webhook-delivery", metrics.group("loops", LoopMetrics) if metrics else None, health)
        self.policy = policy or DeliveryPolicy()
        # Public addresses only unless the operator allowed ranges (handlers/webhooks/targets).
        self.targets = targets or TargetPolicy()
        self.clock = clock
        self._attempts: Counter | None = None
        if metrics is not None:
            self._attempts = Counter(
                "telgate_webhook_attempts_total",
                "webhook POSTs by outcome (delivered, retry, abandoned)", ["outcome"],
                registry=metrics.registry)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.delivered = 0
        self.failed_attempts = 0
        self.abandoned = 0

    async def start(self) -> None:
        """Open the HTTP client and start the delivery loop."""
        p = self.policy
        timeout = aiohttp.ClientTimeout(total=p.timeout_seconds, connect=p.connect_timeout_seconds)
        # Every name is resolved, checked and connected to through PinnedResolver: the address
        # connected to is the address checked.
        connector = aiohttp.TCPConnector(limit=p.concurrency, limit_per_host=p.concurrency,
                                         resolver=PinnedResolver(self.targets))
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector,
                                              headers={"User-Agent": USER_AGENT})
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="webhook-deliverer")
        log.info("webhook_deliverer_started")

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Stop leasing; wait up to `drain_seconds` for the current round, then close."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain_seconds)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        log.info("webhook_deliverer_stopped", delivered=self.delivered)

    def kick(self) -> None:
        """Look for due rows now instead of at the next poll."""
        self._wake.set()

    async def _loop(self) -> None:
        last_cleanup = 0.0
        while not self._stopping:
            try:
                done = await self.run_once()
                if self.clock() - last_cleanup > 3600:
                    last_cleanup = self.clock()
                    await self.cleanup()
            except Exception as exc:
                # Leased rows come back when their lease ends; keep the loop alive meanwhile.
                delay = self._tracker.failed(exc)
                if is_outage(exc):
                    log.error("webhook_outbox_unavailable", error=describe(exc),
                              retry_s=round(delay, 2))
                else:
                    log.exception("webhook_round_failed")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for: see below
                        await self._wake.wait()
                continue
            self._tracker.ok()
            if done < self.policy.batch:
                self._wake.clear()
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
                # cancellation that arrives together with the wake-up, and stopping then
                # waits for this loop forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.policy.poll_seconds):
                        await self._wake.wait()

    async def run_once(self) -> int:
        """Lease one batch of due rows, deliver them concurrently, store outcomes; return count."""
        rows = await self._lease(self.policy.batch)
        if not rows:
            return 0
        sem = asyncio.Semaphore(self.policy.concurrency)

        async def one(row: Leased) -> Result:
            async with sem:
                return await self._post(row)

        results = await asyncio.gather(*(one(r) for r in rows))
        await self._record(results)
        return len(rows)

    async def _lease(self, limit: int) -> list[Leased]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """WITH due AS (
                       SELECT id FROM webhook_outbox
                       WHERE delivered_at IS NULL AND next_attempt_at <= now()
                       ORDER BY next_attempt_at
                       LIMIT $1
                       FOR UPDATE SKIP LOCKED
                   )
                   UPDATE webhook_outbox o
                   SET next_attempt_at = now() + make_interval(secs => $2),
                       attempts = o.attempts + 1
                   FROM due, webhooks w
                   WHERE o.id = due.id AND w.id = o.webhook_id
                   RETURNING o.id, o.event_id, o.event_type, o.payload, o.created_at,
                             o.attempts, w.url, w.secret""",
                limit, self.policy.lease_seconds)
        return [Leased(r["id"], r["event_id"], r["event_type"], _json(r["payload"]),
                       r["created_at"], r["attempts"], r["url"], r["secret"]) for r in rows]

    async def _post(self, row: Leased) -> Result:
        assert self._session is not None, "start() first"
        body = envelope(row.event_id, row.event_type, row.created_at, row.payload)
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: str(row.event_id),
            EVENT_TYPE_HEADER: row.event_type,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(row.secret, timestamp, body),
        }
        refused = literal_refusal(row.url, self.targets)  # a literal skips the resolver
        if refused is not None:
            return Result(row, False, f"ForbiddenTarget: {refused}")
        try:
            # Redirects are never followed (a 3xx is a failed attempt) and the answer's body is
            # never read: only the status counts.
            async with self._session.post(row.url, data=body, headers=headers,
                                          allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    return Result(row, True)
                if 300 <= resp.status < 400:
                    return Result(row, False, f"HTTP {resp.status} (redirects are not followed)")
                return Result(row, False, f"HTTP {resp.status}")
        except TimeoutError:
            return Result(row, False, "timeout")
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error if isinstance(exc.os_error, ForbiddenTarget) else exc.__cause__
            if isinstance(cause, ForbiddenTarget):
                return Result(row, False, f"ForbiddenTarget: {cause}"[:300])
            return Result(row, False, f"{type(exc).__name__}: {exc}"[:300])
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Result(row, False, f"{type(exc).__name__}: {exc}"[:300])

    async def _record(self, results: Sequence[Result]) -> None:
        ok = [r.row.id for r in results if r.ok]
        retry: list[tuple[int, float, str]] = []
        abandon: list[tuple[int, str]] = []
        now = self.clock()
        for r in results:
            if r.ok:
                continue
            error = r.error or "unknown"
            age = now - r.row.created_at.timestamp()
            delay = self.policy.backoff(r.row.attempts)
            if age + delay > self.policy.max_age_seconds:
                abandon.append((r.row.id, f"gave up after {r.row.attempts} attempts: {error}"))
            else:
                retry.append((r.row.id, delay, error))
        async with self.pool.acquire() as conn, conn.transaction():
            if ok:
                await conn.execute(
                    """UPDATE webhook_outbox SET delivered_at = now(), last_error = NULL
                       WHERE id = ANY($1::bigint[])""", ok)
            if retry:
                await conn.execute(
                    """UPDATE webhook_outbox o
                       SET next_attempt_at = now() + make_interval(secs => u.delay),
                           last_error = u.error
                       FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS u(id, delay, error)
                       WHERE o.id = u.id AND o.delivered_at IS NULL""",
                    [x[0] for x in retry], [x[1] for x in retry], [x[2] for x in retry])
            if abandon:
                await conn.execute(
                    """UPDATE webhook_outbox o
                       SET next_attempt_at = 'infinity', last_error = u.error
                       FROM unnest($1::bigint[], $2::text[]) AS u(id, error)
                       WHERE o.id = u.id AND o.delivered_at IS NULL""",
                    [x[0] for x in abandon], [x[1] for x in abandon])
        self.delivered += len(ok)
        self.failed_attempts += len(retry) + len(abandon)
        self.abandoned += len(abandon)
        if self._attempts is not None:
            self._attempts.labels("delivered").inc(len(ok))
            self._attempts.labels("retry").inc(len(retry))
            self._attempts.labels("abandoned").inc(len(abandon))
        for r in results:
            if not r.ok:
                log.warning("webhook_delivery_failed", event_id=str(r.row.event_id),
                            attempts=r.row.attempts, error=r.error)
        for row_id, error in abandon:
            log.error("webhook_abandoned", outbox_id=row_id, error=error)

    async def cleanup(self) -> int:
        """Delete delivered rows older than the retention; return how many."""
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                """DELETE FROM webhook_outbox
                   WHERE delivered_at < now() - make_interval(secs => $1)""",
                self.policy.retention_seconds)
        return int(status.split()[-1])


def _json(value: Any) -> object:
    # Pools made by daemon.db decode jsonb; a bare asyncpg pool hands back text.
    return json.loads(value) if isinstance(value, str) else value
