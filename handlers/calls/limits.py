"""Per-tenant call limits: the maximum duration of an answered call.

A tenant's `max_call_seconds` setting (in `tenants.settings`, edited through the tenant
settings API) overrides the configured default `sip.max_call_seconds`; 0 means no limit.
The engine asks synchronously, so the values are cached and refreshed by the driver.
"""

from __future__ import annotations

import uuid

import asyncpg
import structlog

log = structlog.get_logger("telgate.calls.limits")

SETTING = "max_call_seconds"


async def tenant_max_call_seconds(conn: asyncpg.Connection) -> dict[uuid.UUID, float]:
    """Every tenant's own `max_call_seconds` setting (tenants without one are absent)."""
    rows = await conn.fetch(
        """SELECT id, settings->>$1 AS value FROM tenants
           WHERE settings ? $1 AND jsonb_typeof(settings->$1) <> 'null'""", SETTING)
    found: dict[uuid.UUID, float] = {}
    for r in rows:
        try:
            found[r["id"]] = max(0.0, float(r["value"]))
        except (TypeError, ValueError):
            log.warning("tenant_setting_unreadable", tenant=str(r["id"]), setting=SETTING)
    return found


class CallLimits:
    """The cached limits the engine reads."""

    def __init__(self, default_max_call_seconds: float) -> None:
        self.default = default_max_call_seconds
        self._tenants: dict[uuid.UUID, float] = {}

    def max_call_seconds(self, tenant: uuid.UUID) -> float | None:
        """The longest answered call of `tenant`, or None for no limit."""
        value = self._tenants.get(tenant, self.default)
        return value or None

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Read every tenant's setting again."""
        async with pool.acquire() as conn:
            self._tenants = await tenant_max_call_seconds(conn)
