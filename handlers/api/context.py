"""What every route can reach: configuration, the database pool, metrics, readiness checks."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from config.schema import Config
from handlers.messages.wake import DispatchWake
from handlers.metrics import Metrics
from handlers.outage import DatabaseHealth
from handlers.registry.index import NumberIndex
from handlers.tenants import Principal

if TYPE_CHECKING:
    from handlers.api.framework import RouteTable
    from handlers.api.ratelimit import RateLimiter
    from handlers.calls.presence import Presence
    from handlers.calls.service import CallDriver
    from handlers.events.hub import EventHub
    from handlers.ivr.prompts import PromptStore
    from handlers.messages.accept import PolicyCache
    from handlers.messages.group import SendGroup

# A readiness check answers (ok, detail); it must be quick (it runs on every /readyz).
ReadinessCheck = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass(slots=True)
class AppContext:
    """Shared state of one daemon's control API."""

    config: Config
    pool: asyncpg.Pool
    metrics: Metrics
    routes: RouteTable
    version: str
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    # Registered sender numbers and opt-outs; kept current by the registry's IndexFollower.
    index: NumberIndex = field(default_factory=NumberIndex)
    draining: bool = False
    # Whether the database answers; fed by the daemon's probe, the loops and the API.
    db: DatabaseHealth = field(default_factory=DatabaseHealth)
    # Authenticated keys by hash → (principal, valid until, monotonic). Saves a query per
    # request; a revocation on another instance takes effect within KEY_CACHE_SECONDS.
    key_cache: dict[bytes, tuple[Principal, float]] = field(default_factory=dict)
    # Rate limits (handlers/api/ratelimit.py); build_app makes one when none was given.
    limiter: RateLimiter | None = None
    # Tenants' composition settings and the group commit of small sends (build_app makes them).
    policies: PolicyCache | None = None
    sends: SendGroup | None = None
    # The dispatcher of this daemon, woken directly when it runs here (handlers/messages/wake).
    dispatch_wake: DispatchWake = field(default_factory=DispatchWake)
    # Told the tenant whose settings this instance just changed (caches refresh at once; other
    # instances' caches within their own refresh period).
    settings_changed: list[Callable[[uuid.UUID], None]] = field(default_factory=list)
    # Told (tenant, extension, presence) when an agent's presence was set here, so the call
    # engine's PresenceCache takes it at once (other instances' at their next refresh).
    presence_changed: list[Callable[[uuid.UUID, str, Presence], None]] = field(
        default_factory=list)
    # The event log's follower serving GET /v1/events (daemon/wiring.py starts it).
    events: EventHub | None = None
    # The SIP call driver of this instance (live calls, call commands); None without SIP.
    calls: CallDriver | None = None
    # The IVR prompts, under <state_dir>/prompts (daemon/wiring.py prepares it at start).
    prompts: PromptStore | None = None

    def forget_key(self, key_id: object) -> None:
        """Drop a revoked key from this instance's cache at once."""
        for digest, (who, _until) in list(self.key_cache.items()):
            if who.key_id == key_id:
                del self.key_cache[digest]


KEY_CACHE_SECONDS = 10.0
KEY_CACHE_MAX = 10_000

CTX = web.AppKey("telgate_ctx", AppContext)
PRINCIPAL = web.RequestKey("telgate_principal", Principal)

__all__ = ["CTX", "PRINCIPAL", "AppContext", "ReadinessCheck"]
