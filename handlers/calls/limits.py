"""Per-tenant call settings the engine and media read synchronously: the maximum duration of
an answered call, the recording policy, and the call features (business hours, callback
triggers: handlers/ivr/features.py).

A tenant's `max_call_seconds` setting (in `tenants.settings`, edited through the tenant
settings API) overrides the configured default `sip.max_call_seconds`; 0 means no limit.
`recording_policy` is `all`, `none` (the default) or `exclude_internal`. The values are cached
and refreshed by the driver (at start, every sweep, and when a tenant's settings change).
"""

from __future__ import annotations

import uuid

import asyncpg
import structlog

from handlers.ivr.features import CallFeatures, tenant_call_features
from handlers.media.recordings import RecordingPolicy

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


async def tenant_recording_policies(conn: asyncpg.Connection) -> dict[uuid.UUID, RecordingPolicy]:
    """Every tenant's `recording_policy` that is not the default."""
    rows = await conn.fetch("SELECT id, settings->>'recording_policy' AS value FROM tenants "
                            "WHERE settings ? 'recording_policy'")
    found: dict[uuid.UUID, RecordingPolicy] = {}
    for r in rows:
        if r["value"] is None:
            continue
        try:
            found[r["id"]] = RecordingPolicy(r["value"])
        except ValueError:
            log.warning("tenant_setting_unreadable", tenant=str(r["id"]), setting="recording_policy")
    return found


class CallLimits:
    """The cached limits the engine reads."""

    def __init__(self, default_max_call_seconds: float) -> None:
        self.default = default_max_call_seconds
        self._tenants: dict[uuid.UUID, float] = {}
        self._policies: dict[uuid.UUID, RecordingPolicy] = {}
        self._features: dict[uuid.UUID, CallFeatures] = {}

    def features(self, tenant: uuid.UUID) -> CallFeatures | None:
        """`tenant`'s business hours and callback triggers (None: always open, no IVR)."""
        return self._features.get(tenant)

    def recording_policy(self, tenant: uuid.UUID) -> RecordingPolicy:
        """What `tenant` records (default: nothing, as the tenant settings say)."""
        return self._policies.get(tenant, RecordingPolicy.NONE)

    def max_call_seconds(self, tenant: uuid.UUID) -> float | None:
        """The longest answered call of `tenant`, or None for no limit."""
        value = self._tenants.get(tenant, self.default)
        return value or None

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Read every tenant's setting again."""
        async with pool.acquire() as conn:
            self._tenants = await tenant_max_call_seconds(conn)
            self._policies = await tenant_recording_policies(conn)
            self._features = await tenant_call_features(conn)
