"""The callback list (`callbacks`, migration 0014): plain SQL, one query per function.

An entry is written by the callback IVR with its `callback.created` event in one statement, so
the event log (the one outbox of the stream and the webhooks) has the event if and only if the
list has the entry. Agents complete entries one at a time or all open entries of a customer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
import structlog

from handlers import numbers
from handlers.errors import DomainError
from handlers.ivr.features import Trigger

log = structlog.get_logger("telgate.ivr.callbacks")

EVENT = "callback.created"
_COLUMNS = ("id, tenant_id, call_id, did, caller, number, trigger, created_at, completed_at, "
            "completed_by")
Status = Literal["open", "done", "all"]


@dataclass(frozen=True, slots=True)
class Callback:
    """One entry of the callback list."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    call_id: uuid.UUID | None  # the call record's id
    did: str | None
    caller: str  # caller ID as received ('anonymous' when withheld)
    number: str  # digits to call back on
    trigger: Trigger
    created_at: datetime
    completed_at: datetime | None
    completed_by: str | None

    @property
    def status(self) -> Literal["open", "done"]:
        """`done` once an agent completed it."""
        return "open" if self.completed_at is None else "done"


def _callback(r: asyncpg.Record) -> Callback:
    return Callback(r["id"], r["tenant_id"], r["call_id"], r["did"], r["caller"], r["number"],
                    Trigger(r["trigger"]), r["created_at"], r["completed_at"],
                    r["completed_by"])


async def create(conn: asyncpg.Connection, *, tenant_id: uuid.UUID, call_id: uuid.UUID | None,
                 did: str | None, caller: str, number: str, trigger: Trigger | str,
                 created_at: datetime | None = None) -> Callback:
    """Store an entry and its `callback.created` event in one statement (its own
    transaction, or the caller's). `number` is digits (2-20); `created_at` defaults to the
    database's now. ValueError for a number that is not digits or an unknown trigger."""
    kind = Trigger(trigger)
    if not (number.isascii() and number.isdigit() and 2 <= len(number) <= 20):
        raise ValueError("a callback number is 2-20 digits")
    row = await conn.fetchrow(
        f"""WITH c AS (
                INSERT INTO callbacks (id, tenant_id, call_id, did, caller, number, trigger,
                                       created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, now()))
                RETURNING {_COLUMNS}
            ), e AS (
                INSERT INTO event_log (tenant_id, type, data, created_at)
                SELECT tenant_id, '{EVENT}',
                       jsonb_build_object('callback_id', id, 'call_id', call_id, 'did', did,
                                          'caller', caller, 'number', number,
                                          'trigger', trigger),
                       created_at
                FROM c
            )
            SELECT {_COLUMNS} FROM c""",
        uuid.uuid4(), tenant_id, call_id, did, caller, number, kind.value, created_at)
    assert row is not None
    found = _callback(row)
    log.info("callback_created", tenant=str(tenant_id), callback_id=str(found.id),
             call_id=str(call_id) if call_id else None, number=numbers.mask(number),
             caller=numbers.mask(caller), trigger=kind.value)
    return found


async def search(conn: asyncpg.Connection, tenant_id: uuid.UUID, *, since: datetime,
                 until: datetime, status: Status = "open", number: str | None = None,
                 did: str | None = None, after: tuple[datetime, uuid.UUID] | None = None,
                 limit: int = 50) -> list[Callback]:
    """The tenant's entries created in [since, until), newest first; `after` continues after
    (created_at, id)."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM callbacks
            WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3
              AND ($4 = 'all' OR (completed_at IS NULL) = ($4 = 'open'))
              AND ($5::text IS NULL OR number = $5)
              AND ($6::text IS NULL OR did = $6)
              AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8::uuid))
            ORDER BY created_at DESC, id DESC LIMIT $9""",
        tenant_id, since, until, status, number, did, after[0] if after else None,
        after[1] if after else None, limit)
    return [_callback(r) for r in rows]


async def get(conn: asyncpg.Connection, tenant_id: uuid.UUID, callback_id: uuid.UUID
              ) -> Callback:
    """One of the tenant's entries; another tenant's is `callback_not_found` like a missing
    one."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM callbacks WHERE tenant_id = $1 AND id = $2",
        tenant_id, callback_id)
    if row is None:
        raise DomainError("callback_not_found", "no such callback")
    return _callback(row)


async def complete(conn: asyncpg.Connection, tenant_id: uuid.UUID, callback_id: uuid.UUID,
                   *, by: str, at: datetime | None = None) -> tuple[Callback, bool]:
    """Mark an entry done (idempotent: a done entry keeps who and when); the entry and
    whether this call completed it."""
    row = await conn.fetchrow(
        f"""WITH done AS (
                UPDATE callbacks SET completed_at = coalesce($3, now()), completed_by = $4
                WHERE tenant_id = $1 AND id = $2 AND completed_at IS NULL
                RETURNING {_COLUMNS}
            )
            SELECT {_COLUMNS}, true AS changed FROM done
            UNION ALL
            SELECT {_COLUMNS}, false FROM callbacks
            WHERE tenant_id = $1 AND id = $2 AND completed_at IS NOT NULL""",
        tenant_id, callback_id, at, by)
    if row is None:
        raise DomainError("callback_not_found", "no such callback")
    return _callback(row), bool(row["changed"])


async def complete_number(conn: asyncpg.Connection, tenant_id: uuid.UUID, number: str, *,
                          by: str, at: datetime | None = None) -> int:
    """Mark every open entry of one customer's number done; how many were open."""
    done = await conn.fetchval(
        """WITH done AS (
               UPDATE callbacks SET completed_at = coalesce($3, now()), completed_by = $4
               WHERE tenant_id = $1 AND number = $2 AND completed_at IS NULL
               RETURNING 1
           )
           SELECT count(*) FROM done""",
        tenant_id, number, at, by)
    return int(done or 0)
