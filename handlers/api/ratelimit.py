"""Rate limits of the control API: token buckets per key and per tenant for requests, separate
budgets for sends (recipients per second and per day), imports and exports.

The limits are tenant settings (`api_requests_per_second`, `daily_recipients`, …). A refusal is
`429 rate_limited` with `Retry-After` and the `RateLimit` / `RateLimit-Policy` fields of the
IETF httpapi draft (draft-ietf-httpapi-ratelimit-headers).

Several instances sharing one database: the per-second and per-minute buckets live in each
instance's memory and refill at the tenant's rate divided by the number of live instances
(each one heartbeats a row of `api_instances`), so together they admit about the tenant's rate
when the load balancer spreads requests evenly. The daily recipient budget is exact: one
counter row per tenant and Korean day in `rate_usage`, raised in one statement that refuses to
pass the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter

from handlers.errors import DomainError
from handlers.metrics import Metrics
from handlers.tenants import Principal, TenantSettings, get_settings

log = structlog.get_logger("telgate.ratelimit")

SEOUL = ZoneInfo("Asia/Seoul")
SETTINGS_SECONDS = 10.0  # a changed limit reaches other instances within this
HEARTBEAT_SECONDS = 5.0
INSTANCE_STALE_SECONDS = 20.0
MAX_BUCKETS = 100_000


class RateLimited(DomainError):
    """429 with the headers that say when to come back."""

    def __init__(self, detail: str, *, budget: str, retry_after: float, quota: float,
                 window: int) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__("rate_limited", detail, extra={"budget": budget,
                                                        "retry_after": seconds})
        self.headers = {
            "Retry-After": str(seconds),
            "RateLimit-Policy": f'"{budget}";q={_q(quota)};w={window}',
            "RateLimit": f'"{budget}";r=0;t={seconds}',
        }


def _q(quota: float) -> int:
    return max(1, int(quota))


@dataclass(slots=True)
class Bucket:
    """A token bucket: `rate` tokens a second up to `capacity`; a take may run it into debt
    (a 5,000-recipient send on a 2,000/s budget waits for the debt to refill)."""

    rate: float
    capacity: float
    tokens: float
    at: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, n: float, now: float) -> float:
        """0.0 if `n` tokens were taken, else the seconds until they can be."""
        self.refill(now)
        need = min(n, self.capacity)
        if self.tokens >= need:
            self.tokens -= n
            return 0.0
        return (need - self.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class Limits:
    """One tenant's limits, read from its settings."""

    requests_per_second: float
    key_requests_per_second: float
    recipients_per_second: float
    daily_recipients: int
    imports_per_minute: float
    exports_per_minute: float

    @classmethod
    def of(cls, s: TenantSettings) -> Limits:
        return cls(s.api_requests_per_second, s.key_requests_per_second,
                   s.recipients_per_second, s.daily_recipients, s.imports_per_minute,
                   s.exports_per_minute)


def _metrics(registry: CollectorRegistry) -> Counter:
    return Counter("telgate_api_rate_limited_total",
                   "Control API requests refused with 429, by tenant and budget",
                   ["tenant", "budget"], registry=registry)


@dataclass(slots=True)
class RateLimiter:
    """The buckets of one instance, and the shared daily counters in the database."""

    pool: asyncpg.Pool
    metrics: Metrics
    clock: Callable[[], float] = time.monotonic
    instances: int = 1  # live instances sharing the database (see `InstanceHeartbeat`)
    _buckets: dict[tuple[str, object], Bucket] = field(default_factory=dict)
    _limits: dict[uuid.UUID, tuple[Limits, float]] = field(default_factory=dict)

    async def limits(self, tenant_id: uuid.UUID) -> Limits:
        """The tenant's limits (cached for SETTINGS_SECONDS)."""
        now = self.clock()
        cached = self._limits.get(tenant_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self.pool.acquire() as conn:
            found = Limits.of(await get_settings(conn, tenant_id))
        if len(self._limits) >= MAX_BUCKETS:
            self._limits.clear()
        self._limits[tenant_id] = (found, now + SETTINGS_SECONDS)
        return found

    def forget(self, tenant_id: uuid.UUID) -> None:
        """The tenant's settings changed: read them again on its next request."""
        self._limits.pop(tenant_id, None)
        for k in [k for k in self._buckets if k[1] == tenant_id]:
            del self._buckets[k]

    def _take(self, budget: str, owner: object, quota: float, window: int, n: float,
              tenant_id: uuid.UUID) -> None:
        """Take `n` from the bucket of (budget, owner) holding `quota` per `window` seconds."""
        share = quota / max(self.instances, 1)
        rate = share / window
        now = self.clock()
        key = (budget, owner)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            capacity = max(share, 1.0)
            tokens = capacity if bucket is None else min(bucket.tokens, capacity)
            bucket = Bucket(rate, capacity, tokens, now)
            self._buckets[key] = bucket
        wait = bucket.take(n, now)
        if wait > 0:
            self._refused(tenant_id, budget)
            raise RateLimited(f"over the {budget} limit ({_q(quota)} per {window} s); "
                              f"retry in {max(1, math.ceil(wait))} s",
                              budget=budget, retry_after=wait, quota=quota, window=window)

    def _refused(self, tenant_id: uuid.UUID, budget: str) -> None:
        self.metrics.group("ratelimit", _metrics).labels(str(tenant_id), budget).inc()
        log.info("rate_limited", budget=budget)

    async def check_request(self, who: Principal, budget: str | None) -> None:
        """Take one request from the key's and the tenant's buckets (and the route's own
        budget: `imports`, `exports`); raise RateLimited when one is empty."""
        lim = await self.limits(who.tenant_id)
        t = who.tenant_id
        self._take("key_requests", who.key_id, lim.key_requests_per_second, 1, 1, t)
        self._take("requests", t, lim.requests_per_second, 1, 1, t)
        if budget == "imports":
            self._take("imports", t, lim.imports_per_minute, 60, 1, t)
        elif budget == "exports":
            self._take("exports", t, lim.exports_per_minute, 60, 1, t)

    async def charge_recipients(self, conn: asyncpg.Connection, who: Principal, n: int,
                                now: datetime) -> None:
        """Take `n` recipients from the per-second bucket and the shared daily budget."""
        if n <= 0:
            return
        lim = await self.take_recipients(who, n)
        day = korean_day(now)
        used = await conn.fetchval(
            """INSERT INTO rate_usage AS u (tenant_id, budget, window_start, used)
               SELECT $1::uuid, 'daily_recipients', $2::timestamptz, $3::bigint
               WHERE $3::bigint <= $4::bigint
               ON CONFLICT (tenant_id, budget, window_start)
               DO UPDATE SET used = u.used + excluded.used
               WHERE u.used + excluded.used <= $4::bigint
               RETURNING used""",
            who.tenant_id, day, n, lim.daily_recipients)
        if used is None:
            raise self.daily_refusal(who, n, lim, now)

    async def take_recipients(self, who: Principal, n: int) -> Limits:
        """Take `n` recipients from the tenant's per-second bucket (or raise); its limits are
        returned for the daily budget, which the caller charges in its own statement."""
        lim = await self.limits(who.tenant_id)
        self._take("recipients", who.tenant_id, lim.recipients_per_second, 1, n, who.tenant_id)
        return lim

    def daily_refusal(self, who: Principal, n: int, lim: Limits, now: datetime) -> RateLimited:
        """The 429 of a send that would pass the tenant's daily budget (counted as refused)."""
        self._refused(who.tenant_id, "daily_recipients")
        wait = (korean_day(now) + timedelta(days=1) - now).total_seconds()
        return RateLimited(f"the daily budget of {lim.daily_recipients} recipients "
                           f"(Korean day) would be passed by {n}",
                           budget="daily_recipients", retry_after=wait,
                           quota=lim.daily_recipients, window=86400)


def korean_day(now: datetime) -> datetime:
    """The start of the Korean day of `now`: the daily budget's window."""
    return now.astimezone(SEOUL).replace(hour=0, minute=0, second=0, microsecond=0)


class InstanceHeartbeat:
    """Keeps this instance's row in `api_instances` fresh and the limiter's count of live
    instances current, so that local buckets split each tenant's rate between instances."""

    def __init__(self, pool: asyncpg.Pool, limiter: RateLimiter) -> None:
        self.pool = pool
        self.limiter = limiter
        self.id = uuid.uuid4()
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> int:
        """Refresh this instance's row; return the number of live instances."""
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO api_instances (id, seen_at) VALUES ($1, now()) "
                "ON CONFLICT (id) DO UPDATE SET seen_at = now()", self.id)
            live = await conn.fetchval(
                "SELECT count(*) FROM api_instances "
                "WHERE seen_at > now() - make_interval(secs => $1)", INSTANCE_STALE_SECONDS)
            await conn.execute("DELETE FROM api_instances WHERE seen_at < now() - "
                               "make_interval(secs => $1)", INSTANCE_STALE_SECONDS * 3)
        self.limiter.instances = max(int(live), 1)
        return self.limiter.instances

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name="api-instance-heartbeat")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.beat()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("instance_heartbeat_failed", error=str(exc))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            async with self.pool.acquire() as conn:
                await conn.execute("DELETE FROM api_instances WHERE id = $1", self.id)
