"""The audit trail: who (key id and label, or the operator's CLI) changed or looked at what,
when, and from which address.

Entries are appended in the transaction of the change they record (`record`); the table
refuses UPDATE, DELETE and TRUNCATE (migration 0011). The control API binds the acting key and
the client address to the request (`acting`), so every entry written while serving it says who
and from where without each caller passing them on.
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg


@dataclass(slots=True)
class Acting:
    """Who the current request acts as; `recorded` turns true once it wrote an entry."""

    key_id: uuid.UUID | None
    key_label: str | None
    address: str | None
    recorded: bool = field(default=False)


_ACTING: contextvars.ContextVar[Acting | None] = contextvars.ContextVar("telgate_acting",
                                                                        default=None)


def acting(key_id: uuid.UUID | None, key_label: str | None,
           address: str | None) -> tuple[Acting, contextvars.Token[Acting | None]]:
    """Bind the acting key and client address to the current request; `release` the token
    when the request is answered (a keep-alive connection serves the next one in this task)."""
    now = Acting(key_id, key_label, _inet(address))
    return now, _ACTING.set(now)


def release(token: contextvars.Token[Acting | None]) -> None:
    """Unbind what `acting` bound."""
    _ACTING.reset(token)


@functools.lru_cache(maxsize=1024)  # per request; the same clients come back
def _inet(address: str | None) -> str | None:
    if not address:
        return None
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """An entry a change writes in a statement of its own making (a grouped send): who and
    from where are taken from the request now, while it is being served."""

    tenant_id: uuid.UUID | None
    actor: str
    action: str
    subject: str
    details: dict[str, object]
    key_id: uuid.UUID | None
    key_label: str | None
    address: str | None


def pending(tenant_id: uuid.UUID | None, actor: str, action: str, subject: str = "",
            details: dict[str, object] | None = None) -> PendingEntry:
    """The entry `record` would write, for the caller to write itself; call `recorded()` once
    it is committed."""
    who = _ACTING.get()
    return PendingEntry(tenant_id, actor, action, subject, details or {},
                        who.key_id if who else None, who.key_label if who else None,
                        who.address if who else None)


def recorded() -> None:
    """The current request's entry was written (by `pending`'s caller)."""
    who = _ACTING.get()
    if who is not None:
        who.recorded = True


async def record(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID | None,
    actor: str,
    action: str,
    subject: str = "",
    details: dict[str, object] | None = None,
) -> None:
    """Append one entry (call inside the change's transaction)."""
    who = _ACTING.get()
    await conn.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, subject, details, key_id, key_label,"
        " address) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::inet)",
        tenant_id, actor, action, subject, details or {},
        who.key_id if who else None, who.key_label if who else None,
        who.address if who else None,
    )
    if who is not None:
        who.recorded = True


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit entry as GET /v1/audit shows it."""

    id: int
    at: datetime
    actor: str
    key_id: uuid.UUID | None
    key_label: str | None
    address: str | None
    action: str
    subject: str
    details: dict[str, object]


async def entries(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    *,
    since: datetime | None,
    until: datetime | None,
    actor: str | None,
    action: str | None,
    before_id: int | None,
    limit: int,
) -> list[Entry]:
    """The tenant's entries, newest first, filtered; `actor` matches the actor text or key id,
    `action` an exact action or a prefix ending in '.' (`api_key.`)."""
    rows = await conn.fetch(
        """SELECT id, at, actor, key_id, key_label, host(address) AS address, action, subject,
                  details
           FROM audit_log
           WHERE tenant_id = $1
             AND ($2::timestamptz IS NULL OR at >= $2)
             AND ($3::timestamptz IS NULL OR at < $3)
             AND ($4::text IS NULL OR actor = $4 OR key_id::text = $4)
             AND ($5::text IS NULL OR action = $5
                  OR (right($5, 1) = '.' AND starts_with(action, $5)))
             AND ($6::bigint IS NULL OR id < $6)
           ORDER BY id DESC LIMIT $7""",
        tenant_id, since, until, actor, action, before_id, limit)
    return [Entry(r["id"], r["at"], r["actor"], r["key_id"], r["key_label"], r["address"],
                  r["action"], r["subject"], dict(_obj(r["details"]))) for r in rows]


def _obj(value: object) -> dict[str, object]:
    if isinstance(value, str):
        loaded = json.loads(value)
        return loaded if isinstance(loaded, dict) else {}
    return value if isinstance(value, dict) else {}
