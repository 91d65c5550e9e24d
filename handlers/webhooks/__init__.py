"""Webhooks: the signed deliveries of the event log's events (see handlers/webhooks/delivery.py).

An event is written once, to `event_log`, in the transaction of the change it reports; the
statement that adds it adds its `webhook_outbox` rows too (migration 0013), so the event stream
(`GET /v1/events`) and the webhooks are fed by the same rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

Event = tuple[uuid.UUID, str, dict[str, object]]  # (tenant, event type, payload)


async def emit(conn: asyncpg.Connection, tenant_id: uuid.UUID, event_type: str,
               payload: dict[str, object], *, sp_id: str | None = None) -> None:
    """Log one event (and queue it for every webhook of the tenant subscribed to it)."""
    await emit_many(conn, [(tenant_id, event_type, payload)], sp_ids=[sp_id])


async def emit_many(conn: asyncpg.Connection, events: Sequence[Event], *,
                    sp_ids: Sequence[str | None] | None = None) -> None:
    """Log events in one statement; `sp_ids` (one per event) scope message events to an SP."""
    if not events:
        return
    await conn.execute(
        """INSERT INTO event_log (tenant_id, type, data, sp_id)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::text[])""",
        [e[0] for e in events], [e[1] for e in events], [e[2] for e in events],
        list(sp_ids) if sp_ids is not None else [None] * len(events))
