"""Departments (부서) of a tenant and their members: extensions (agents: an agent is an
extension) and SP IDs (the sending accounts of messages). Plain SQL, one query per function.

A member belongs to at most one department; naming it in another moves it. Call records and
messages keep the department their member had when they were written (migration 0012).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from handlers.errors import DomainError


@dataclass(frozen=True, slots=True)
class Department:
    """A department and the members it has now."""

    id: uuid.UUID
    name: str
    extensions: tuple[str, ...]
    sp_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


_SELECT = """
    SELECT d.id, d.name, d.created_at, d.updated_at,
           ARRAY(SELECT e.extension FROM extensions e
                  WHERE e.tenant_id = d.tenant_id AND e.department_id = d.id
                  ORDER BY length(e.extension), e.extension) AS extensions,
           ARRAY(SELECT s.sp_id FROM sp_ids s
                  WHERE s.tenant_id = d.tenant_id AND s.department_id = d.id
                  ORDER BY s.sp_id) AS sp_ids
    FROM departments d"""


def _row(r: asyncpg.Record) -> Department:
    return Department(r["id"], r["name"], tuple(r["extensions"]), tuple(r["sp_ids"]),
                      r["created_at"], r["updated_at"])


def check_name(raw: str) -> str:
    """A department name: 1-100 characters once trimmed."""
    name = raw.strip()
    if not name or len(name) > 100:
        raise DomainError("invalid_name", "a department name is 1-100 characters", field="name")
    return name


async def list_page(conn: asyncpg.Connection, tenant_id: uuid.UUID, *,
                    after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Department]:
    """The tenant's departments, oldest first, after the (created_at, id) position."""
    rows = await conn.fetch(
        f"""{_SELECT} WHERE d.tenant_id = $1
            AND ($2::timestamptz IS NULL OR (d.created_at, d.id) > ($2, $3::uuid))
            ORDER BY d.created_at, d.id LIMIT $4""",
        tenant_id, after[0] if after else None, after[1] if after else None, limit)
    return [_row(r) for r in rows]


async def get(conn: asyncpg.Connection, tenant_id: uuid.UUID,
              department_id: uuid.UUID) -> Department | None:
    """One department of the tenant, or None."""
    row = await conn.fetchrow(f"{_SELECT} WHERE d.tenant_id = $1 AND d.id = $2",
                              tenant_id, department_id)
    return _row(row) if row is not None else None


async def names(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """Every department's name by id (for reports)."""
    rows = await conn.fetch("SELECT id, name FROM departments WHERE tenant_id = $1", tenant_id)
    return {r["id"]: r["name"] for r in rows}


async def create(conn: asyncpg.Connection, tenant_id: uuid.UUID, name: str,
                 extensions: Sequence[str] | None, sp_ids: Sequence[str] | None) -> Department:
    """A new department with its members (moved from any other department)."""
    async with conn.transaction():
        try:
            new_id: uuid.UUID = await conn.fetchval(
                "INSERT INTO departments (tenant_id, name) VALUES ($1, $2) RETURNING id",
                tenant_id, name)
        except asyncpg.UniqueViolationError:
            raise DomainError("department_exists", f"a department named {name!r} exists",
                              field="name") from None
        await _set_members(conn, tenant_id, new_id, extensions, sp_ids)
        found = await get(conn, tenant_id, new_id)
    assert found is not None
    return found


async def update(conn: asyncpg.Connection, tenant_id: uuid.UUID, department_id: uuid.UUID, *,
                 name: str | None, extensions: Sequence[str] | None,
                 sp_ids: Sequence[str] | None) -> Department | None:
    """Rename and/or replace the member lists given (None: unchanged); None if absent."""
    async with conn.transaction():
        try:
            status = await conn.execute(
                "UPDATE departments SET name = coalesce($3, name), updated_at = now() "
                "WHERE tenant_id = $1 AND id = $2", tenant_id, department_id, name)
        except asyncpg.UniqueViolationError:
            raise DomainError("department_exists", f"a department named {name!r} exists",
                              field="name") from None
        if status.endswith(" 0"):
            return None
        await _set_members(conn, tenant_id, department_id, extensions, sp_ids)
        return await get(conn, tenant_id, department_id)


async def delete(conn: asyncpg.Connection, tenant_id: uuid.UUID,
                 department_id: uuid.UUID) -> bool:
    """Delete a department (its members are left without one); False if absent."""
    status: str = await conn.execute(
        "DELETE FROM departments WHERE tenant_id = $1 AND id = $2", tenant_id, department_id)
    return status.endswith(" 1")


async def _set_members(conn: asyncpg.Connection, tenant_id: uuid.UUID, department_id: uuid.UUID,
                       extensions: Sequence[str] | None, sp_ids: Sequence[str] | None) -> None:
    if extensions is not None:
        await _replace(conn, "extensions", "extension", tenant_id, department_id, extensions)
    if sp_ids is not None:
        await _replace(conn, "sp_ids", "sp_id", tenant_id, department_id, sp_ids)


async def _replace(conn: asyncpg.Connection, table: str, column: str, tenant_id: uuid.UUID,
                   department_id: uuid.UUID, members: Sequence[str]) -> None:
    # `table` and `column` are our own constants, never input.
    wanted = list(dict.fromkeys(members))
    found = {r[0] for r in await conn.fetch(
        f"SELECT {column} FROM {table} WHERE tenant_id = $1 AND {column} = ANY($2::text[])",
        tenant_id, wanted)}
    for i, member in enumerate(members):
        if member not in found:
            raise DomainError("unknown_member", f"{member!r} is not one of this tenant's "
                              f"{table.replace('_', ' ')}", field=f"{table}[{i}]")
    await conn.execute(
        f"UPDATE {table} SET department_id = NULL "
        f"WHERE tenant_id = $1 AND department_id = $2 AND {column} <> ALL($3::text[])",
        tenant_id, department_id, wanted)
    await conn.execute(
        f"UPDATE {table} SET department_id = $2 "
        f"WHERE tenant_id = $1 AND {column} = ANY($3::text[]) "
        f"AND department_id IS DISTINCT FROM $2", tenant_id, department_id, wanted)
