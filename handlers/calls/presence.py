"""Agents' presence (seed 002 §13 do-not-disturb, §20 online/offline): stored on the extension
row (an agent is an extension with its name and department, migration 0015), changed with its
`presence.changed` event and audit entry in one transaction, and cached for the call engine.

Plain SQL, one query per function. `PresenceCache` is what the engine reads synchronously: it
holds only the agents who are not online, refreshed from the database by the driver and
updated at once by the control API through `AppContext.presence_changed`.
"""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from handlers import audit
from handlers.errors import DomainError

EVENT = "presence.changed"


class Presence(enum.StrEnum):
    """An agent's presence; only an online agent is offered calls."""

    ONLINE = "online"
    OFFLINE = "offline"  # 오프라인: logged out of the CRM (§20)
    DND = "dnd"  # 착신거부: at the desk but taking no calls (§13)

    @property
    def accepts_calls(self) -> bool:
        return self is Presence.ONLINE


@dataclass(frozen=True, slots=True)
class AgentPresence:
    """An agent as the API shows it: the extension's name and department, its presence, and
    how many unexpired registrations (contacts) its phone has."""

    extension: str
    name: str
    department_id: uuid.UUID | None
    presence: Presence
    presence_changed_at: datetime
    contacts: int

    @property
    def registered(self) -> bool:
        return self.contacts > 0

    def public(self) -> dict[str, object]:
        return {"extension": self.extension, "name": self.name,
                "department_id": self.department_id, "presence": self.presence.value,
                "presence_changed_at": self.presence_changed_at,
                "registered": self.registered, "contacts": self.contacts}


_SELECT = """
    SELECT e.extension, e.name, e.department_id, e.presence, e.presence_changed_at,
           (SELECT count(*) FROM sip_registrations r
             WHERE r.tenant_id = e.tenant_id AND r.extension = e.extension
               AND r.expires_at > now()) AS contacts
    FROM extensions e"""


def _row(r: asyncpg.Record) -> AgentPresence:
    return AgentPresence(r["extension"], r["name"], r["department_id"], Presence(r["presence"]),
                         r["presence_changed_at"], int(r["contacts"]))


async def get(conn: asyncpg.Connection, tenant_id: uuid.UUID,
              extension: str) -> AgentPresence | None:
    """One agent of the tenant, or None."""
    row = await conn.fetchrow(f"{_SELECT} WHERE e.tenant_id = $1 AND e.extension = $2",
                              tenant_id, extension)
    return _row(row) if row is not None else None


async def list_page(conn: asyncpg.Connection, tenant_id: uuid.UUID, *,
                    presence: Presence | None, department_id: uuid.UUID | None,
                    after: str | None, limit: int) -> list[AgentPresence]:
    """The tenant's agents in extension order (as /v1/extensions), optionally only those with
    this presence and/or in this department, after the extension `after`."""
    rows = await conn.fetch(
        f"""{_SELECT} WHERE e.tenant_id = $1
            AND ($2::text IS NULL OR e.presence = $2)
            AND ($3::uuid IS NULL OR e.department_id = $3)
            AND ($4::text IS NULL OR (length(e.extension), e.extension) > (length($4), $4))
            ORDER BY length(e.extension), e.extension LIMIT $5""",
        tenant_id, presence.value if presence is not None else None, department_id, after,
        limit)
    return [_row(r) for r in rows]


async def _lock(conn: asyncpg.Connection, tenant_id: uuid.UUID,
                extension: str) -> AgentPresence | None:
    """The agent, its row locked until the transaction ends (two changes at once log their
    events in the order they were made, each with the right `previous`)."""
    row = await conn.fetchrow(
        f"{_SELECT} WHERE e.tenant_id = $1 AND e.extension = $2 FOR UPDATE OF e",
        tenant_id, extension)
    return _row(row) if row is not None else None


async def _store(conn: asyncpg.Connection, tenant_id: uuid.UUID, extension: str,
                 presence: Presence) -> datetime:
    """Write the new presence; the instant it changed."""
    changed_at: datetime = await conn.fetchval(
        "UPDATE extensions SET presence = $3, presence_changed_at = now() "
        "WHERE tenant_id = $1 AND extension = $2 RETURNING presence_changed_at",
        tenant_id, extension, presence.value)
    return changed_at


async def _log_event(conn: asyncpg.Connection, tenant_id: uuid.UUID, agent: AgentPresence,
                     previous: Presence) -> None:
    """The `presence.changed` event (stream and webhooks), under the agent's extension so that
    `GET /v1/events?extension=` finds it."""
    data = {"extension": agent.extension, "name": agent.name,
            "department_id": str(agent.department_id) if agent.department_id else None,
            "presence": agent.presence.value, "previous": previous.value}
    await conn.execute(
        "INSERT INTO event_log (tenant_id, type, extensions, data, created_at) "
        "VALUES ($1, $2, ARRAY[$3::text], $4::text::jsonb, $5)",
        tenant_id, EVENT, agent.extension, json.dumps(data, ensure_ascii=False),
        agent.presence_changed_at)


async def set_presence(conn: asyncpg.Connection, tenant_id: uuid.UUID, extension: str,
                       presence: Presence, *, actor: str) -> AgentPresence:
    """Set an agent's presence: the row, its `presence.changed` event and the audit entry in one
    transaction. The same presence again changes nothing and logs nothing. An unknown
    extension is 404 `not_found`."""
    async with conn.transaction():
        agent = await _lock(conn, tenant_id, extension)
        if agent is None:
            raise DomainError("not_found", "no such extension")
        if agent.presence is presence:
            return agent
        changed_at = await _store(conn, tenant_id, extension, presence)
        changed = AgentPresence(agent.extension, agent.name, agent.department_id, presence,
                                changed_at, agent.contacts)
        await _log_event(conn, tenant_id, changed, agent.presence)
        await audit.record(conn, tenant_id, actor, "agent.presence", extension,
                           {"presence": presence.value, "previous": agent.presence.value})
    return changed


async def not_online(conn: asyncpg.Connection) -> dict[tuple[uuid.UUID, str], Presence]:
    """Every agent of every tenant who is offline or on do-not-disturb."""
    rows = await conn.fetch(
        "SELECT tenant_id, extension, presence FROM extensions WHERE presence <> 'online'")
    return {(r["tenant_id"], r["extension"]): Presence(r["presence"]) for r in rows}


class PresenceCache:
    """The presence the call engine reads without waiting: only agents who are not online are
    held, so an extension it has never heard of (or a new one) takes calls.

    `refresh` replaces everything with the database's view; an `update` made while a refresh
    is reading is applied again on top of what it read, so a change this instance just made is
    never undone by a read that started before it committed."""

    def __init__(self) -> None:
        self._away: dict[tuple[uuid.UUID, str], Presence] = {}
        self._refreshing = 0
        self._meanwhile: dict[tuple[uuid.UUID, str], Presence] = {}

    def __len__(self) -> int:
        return len(self._away)

    def presence(self, tenant_id: uuid.UUID, extension: str) -> Presence:
        """The agent's presence as last known (online when unknown)."""
        return self._away.get((tenant_id, extension), Presence.ONLINE)

    def accepts_calls(self, tenant_id: uuid.UUID, extension: str) -> bool:
        """False while the agent is offline or on do-not-disturb."""
        return (tenant_id, extension) not in self._away

    def update(self, tenant_id: uuid.UUID, extension: str, presence: Presence) -> None:
        """Take a change at once (the signature of an `AppContext.presence_changed` listener)."""
        key = (tenant_id, extension)
        if presence is Presence.ONLINE:
            self._away.pop(key, None)
        else:
            self._away[key] = presence
        if self._refreshing:
            self._meanwhile[key] = presence

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Read every agent who is not online again (at start and every sweep)."""
        self._refreshing += 1
        try:
            async with pool.acquire() as conn:
                found = await not_online(conn)
            for key, presence in self._meanwhile.items():
                if presence is Presence.ONLINE:
                    found.pop(key, None)
                else:
                    found[key] = presence
            self._away = found
        finally:
            self._refreshing -= 1
            if not self._refreshing:
                self._meanwhile.clear()
