"""The customer directory of a tenant (seed 002 §13-2): the portal's customers as it knows
them, a name per number, so that call events can name who is calling. Plain SQL, one query per
function; the event log's writer reads the table itself (handlers/events/log.py).

Names are personal data: logs carry the masked number, never the name.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from handlers import numbers
from handlers.calls.cdr import Direction
from handlers.errors import DomainError
from handlers.registry.optouts import canonical_customer

log = structlog.get_logger("telgate.customers")

NAME_MAX = 100

__all__ = ["Customer", "canonical_customer", "check_name", "customer_number", "delete", "get",
           "list_page", "put"]


@dataclass(frozen=True, slots=True)
class Customer:
    """One entry: the number in canonical digits and the name the portal gave it."""

    number: str
    name: str
    updated_at: datetime


def check_name(raw: str) -> str:
    """A customer's name: 1-100 characters once trimmed."""
    name = raw.strip()
    if not name or len(name) > NAME_MAX:
        raise DomainError("invalid_name", f"a customer name is 1-{NAME_MAX} characters",
                          field="name")
    return name


def customer_number(direction: object, caller: object, callee: object) -> str | None:
    """Which party of a call is the customer: the caller of an incoming call, the callee of an
    outgoing one; internal calls (and withheld numbers) have none."""
    party = caller if direction == Direction.INCOMING else \
        callee if direction == Direction.OUTGOING else None
    return party if isinstance(party, str) and party.isdigit() else None


def _row(r: asyncpg.Record) -> Customer:
    return Customer(r["number"], r["name"], r["updated_at"])


async def put(conn: asyncpg.Connection, tenant_id: uuid.UUID, number: str,
              name: str) -> tuple[Customer, bool]:
    """Create or replace the entry of `number`; returns it and whether it is new."""
    row = await conn.fetchrow(
        """INSERT INTO customers (tenant_id, number, name) VALUES ($1, $2, $3)
           ON CONFLICT (tenant_id, number)
               DO UPDATE SET name = EXCLUDED.name, updated_at = now()
           RETURNING number, name, updated_at, xmax = 0 AS created""",
        tenant_id, number, name)
    created = bool(row["created"])
    log.info("customer_saved", tenant=str(tenant_id), number=numbers.mask(number),
             created=created)
    return _row(row), created


async def get(conn: asyncpg.Connection, tenant_id: uuid.UUID, number: str) -> Customer | None:
    """The tenant's entry of `number`, or None."""
    row = await conn.fetchrow(
        "SELECT number, name, updated_at FROM customers WHERE tenant_id = $1 AND number = $2",
        tenant_id, number)
    return _row(row) if row is not None else None


async def list_page(conn: asyncpg.Connection, tenant_id: uuid.UUID, *, name_prefix: str,
                    number_prefix: str, after: str | None, limit: int) -> list[Customer]:
    """The tenant's entries whose name and number start as given, by number, after `after`."""
    rows = await conn.fetch(
        """SELECT number, name, updated_at FROM customers
           WHERE tenant_id = $1 AND starts_with(name, $2) AND starts_with(number, $3)
             AND ($4::text IS NULL OR number > $4)
           ORDER BY number LIMIT $5""",
        tenant_id, name_prefix, number_prefix, after, limit)
    return [_row(r) for r in rows]


async def delete(conn: asyncpg.Connection, tenant_id: uuid.UUID, number: str) -> bool:
    """Remove the entry of `number`; False if there was none."""
    status: str = await conn.execute(
        "DELETE FROM customers WHERE tenant_id = $1 AND number = $2", tenant_id, number)
    gone = status.endswith(" 1")
    if gone:
        log.info("customer_deleted", tenant=str(tenant_id), number=numbers.mask(number))
    return gone
