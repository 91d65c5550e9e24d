"""The 080 opt-out list (수신거부, seed 002): customers flagged here receive no messages.

Scope per tenant: `all` (the seed's behaviour: an opted-out customer gets nothing) or `ad`
(only advertising is withheld). The messaging layer's MO handler calls `add_from_mo` when a
customer texts the tenant's 080 number with an opt-out keyword.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence

import asyncpg

from handlers import numbers
from handlers.errors import DomainError
from handlers.registry.senders import ImportRefused, ImportRow, RowStatus, judge_rows
from handlers.tenants import audit


class Scope(enum.StrEnum):
    """What an opt-out withholds."""

    ALL = "all"
    AD = "ad"


def canonical_customer(raw: object, *, field: str = "number") -> str:
    """A customer's number in canonical digits (any Korean number a customer may call from)."""
    if not isinstance(raw, str):
        raise DomainError("invalid_number", "number must be a string", field=field)
    try:
        number = numbers.normalise(raw)
    except numbers.NumberError as exc:
        raise DomainError(exc.code, exc.detail, field=field) from None
    if len(number) < 8:
        raise DomainError("too_short", "a customer number has at least 8 digits", field=field)
    return number


async def add(conn: asyncpg.Connection, tenant_id: uuid.UUID, raw: object, *, actor: str,
              source: str = "api") -> tuple[str, bool]:
    """Flag a customer; returns (number, whether it was newly added). Idempotent."""
    number = canonical_customer(raw)
    async with conn.transaction():
        added = await conn.fetchval(
            """INSERT INTO opt_outs (tenant_id, number, source, created_by)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
            tenant_id, number, source, actor)
        if added:
            await audit(conn, tenant_id, actor, "opt_out.add", number, {"source": source})
    return number, bool(added)


async def add_from_mo(conn: asyncpg.Connection, tenant_id: uuid.UUID, sender: str) -> bool:
    """The hook for an MO opt-out request to the tenant's 080 number; True if newly added."""
    _number, added = await add(conn, tenant_id, sender, actor="mo:080", source="mo_080")
    return added


async def remove(conn: asyncpg.Connection, tenant_id: uuid.UUID, raw: object, *,
                 actor: str) -> None:
    """Clear a customer's flag; 404 if it was not set."""
    number = canonical_customer(raw)
    async with conn.transaction():
        gone = await conn.fetchval(
            "DELETE FROM opt_outs WHERE tenant_id = $1 AND number = $2 RETURNING true",
            tenant_id, number)
        if not gone:
            raise DomainError("not_found", f"{numbers.mask(number)} is not opted out",
                              status=404)
        await audit(conn, tenant_id, actor, "opt_out.remove", number)


async def get_scope(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> Scope:
    """The tenant's opt-out scope."""
    value = await conn.fetchval("SELECT optout_scope FROM tenants WHERE id = $1", tenant_id)
    return Scope(value)


async def set_scope(conn: asyncpg.Connection, tenant_id: uuid.UUID, raw: object, *,
                    actor: str) -> Scope:
    """Set the tenant's opt-out scope (`all` or `ad`)."""
    try:
        scope = Scope(str(raw))
    except ValueError:
        raise DomainError("invalid_scope", "scope must be 'all' or 'ad'", field="scope") from None
    async with conn.transaction():
        await conn.execute("UPDATE tenants SET optout_scope = $2 WHERE id = $1",
                           tenant_id, scope.value)
        await audit(conn, tenant_id, actor, "opt_out.scope", scope.value)
    return scope


def _judge_customer(raw: str) -> tuple[str | None, str | None]:
    try:
        return canonical_customer(raw), None
    except DomainError as exc:
        return None, exc.code


async def import_optouts(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    cells: Sequence[tuple[int, str]],
    *,
    dry_run: bool,
    skip_invalid: bool,
    actor: str,
) -> tuple[list[ImportRow], int]:
    """Bulk opt-out from column A; already-listed numbers are reported, not an error."""
    async with conn.transaction():
        existing = {r["number"] for r in await conn.fetch(
            "SELECT number FROM opt_outs WHERE tenant_id = $1", tenant_id)}
        report = judge_rows(cells, _judge_customer, existing, None)
        good = [r for r in report if r.status is RowStatus.OK]
        invalid = [r for r in report if r.status is RowStatus.INVALID]
        if dry_run:
            return report, 0
        if invalid and not skip_invalid:
            raise ImportRefused(report)
        if good:
            await conn.copy_records_to_table(
                "opt_outs", records=[(tenant_id, r.number, "import", actor) for r in good],
                columns=["tenant_id", "number", "source", "created_by"])
            await audit(conn, tenant_id, actor, "opt_out.import", f"{len(good)} numbers",
                        {"added": len(good)})
    return report, len(good)
