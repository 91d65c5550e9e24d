"""Webhooks: events written to an outbox in the transaction of the change they report, then
delivered at least once, signed (see handlers/webhooks/delivery.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

Event = tuple[uuid.UUID, str, dict[str, object]]  # (tenant, event type, payload)


async def emit(conn: asyncpg.Connection, tenant_id: uuid.UUID, event_type: str,
               payload: dict[str, object]) -> None:
    """Queue one event for every webhook of the tenant subscribed to it."""
    await emit_many(conn, [(tenant_id, event_type, payload)])


async def emit_many(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """Queue events in one statement (cheap when no tenant has webhooks)."""
    if not events:
        return
    await conn.execute(
        """INSERT INTO webhook_outbox (tenant_id, webhook_id, event_type, payload)
           SELECT e.tenant_id, w.id, e.event_type, e.payload
           FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) AS e(tenant_id, event_type, payload)
           JOIN webhooks w ON w.tenant_id = e.tenant_id
                          AND (w.events = '{}' OR e.event_type = ANY (w.events))""",
        [e[0] for e in events], [e[1] for e in events], [e[2] for e in events])
