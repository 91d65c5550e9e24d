"""Tenants, their SP IDs and API keys: creation, lookup and key authentication."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from handlers.errors import DomainError

KEY_PREFIX = "tgk_"
_SP_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True, slots=True)
class Tenant:
    """An account (사업자) of a portal."""

    id: uuid.UUID
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public facts (never its secret)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    sp_id: str | None
    prefix: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: one tenant, optionally narrowed to one SP ID."""

    tenant_id: uuid.UUID
    sp_id: str | None
    key_id: uuid.UUID
    key_prefix: str

    @property
    def actor(self) -> str:
        return f"key:{self.key_prefix}"


def hash_key(key: str) -> bytes:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> tuple[str, str]:
    """A fresh key and its display prefix: 'tgk_' + 43 url-safe chars (256 bits)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[: len(KEY_PREFIX) + 8]


async def create_tenant(conn: asyncpg.Connection, name: str, *, actor: str) -> Tenant:
    """Create a tenant; a duplicate name is `tenant_exists`."""
    name = name.strip()
    if not name or len(name) > 100:
        raise DomainError("invalid_name", "tenant name must be 1-100 characters", field="name")
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                "INSERT INTO tenants (name) VALUES ($1) RETURNING id, name, created_at", name
            )
        except asyncpg.UniqueViolationError:
            raise DomainError(
                "tenant_exists", f"a tenant named {name!r} exists", field="name", status=409
            ) from None
        assert row is not None
        await audit(conn, row["id"], actor, "tenant.create", name)
    return Tenant(row["id"], row["name"], row["created_at"])


async def find_tenant(conn: asyncpg.Connection, id_or_name: str) -> Tenant:
    """The tenant with this id or name; `tenant_not_found` otherwise."""
    try:
        tid: uuid.UUID | None = uuid.UUID(id_or_name)
    except ValueError:
        tid = None
    row = await conn.fetchrow(
        "SELECT id, name, created_at FROM tenants WHERE id = $1 OR name = $2", tid, id_or_name
    )
    if row is None:
        raise DomainError(
            "tenant_not_found", f"no tenant {id_or_name!r}", field="tenant", status=404
        )
    return Tenant(row["id"], row["name"], row["created_at"])


async def list_tenants(conn: asyncpg.Connection) -> list[Tenant]:
    """Every tenant, oldest first."""
    rows = await conn.fetch("SELECT id, name, created_at FROM tenants ORDER BY created_at, name")
    return [Tenant(r["id"], r["name"], r["created_at"]) for r in rows]


async def ensure_sp_id(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, sp_id: str, *, actor: str
) -> None:
    """Add an SP ID under a tenant (no-op if it is already that tenant's)."""
    if not _SP_ID.match(sp_id):
        raise DomainError(
            "invalid_sp_id", "SP ID must be 1-32 of A-Z a-z 0-9 _ . -", field="sp_id"
        )
    owner = await conn.fetchval("SELECT tenant_id FROM sp_ids WHERE sp_id = $1", sp_id)
    if owner == tenant_id:
        return
    if owner is not None:
        raise DomainError(
            "sp_id_taken", f"SP ID {sp_id!r} belongs to another tenant", field="sp_id", status=409
        )
    await conn.execute("INSERT INTO sp_ids (tenant_id, sp_id) VALUES ($1, $2)", tenant_id, sp_id)
    await audit(conn, tenant_id, actor, "sp_id.create", sp_id)


async def create_key(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    *,
    sp_id: str | None,
    label: str,
    actor: str,
) -> tuple[str, ApiKey]:
    """Create a key for a tenant (and SP ID); return the secret (shown once) and its record."""
    key, prefix = new_key()
    async with conn.transaction():
        if sp_id is not None:
            await ensure_sp_id(conn, tenant_id, sp_id, actor=actor)
        row = await conn.fetchrow(
            """INSERT INTO api_keys (tenant_id, sp_id, prefix, key_hash, label)
               VALUES ($1, $2, $3, $4, $5)
               RETURNING id, tenant_id, sp_id, prefix, label, created_at, revoked_at""",
            tenant_id, sp_id, prefix, hash_key(key), label,
        )
        assert row is not None
        await audit(conn, tenant_id, actor, "api_key.create", prefix, {"sp_id": sp_id})
    return key, _key(row)


async def list_keys(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[ApiKey]:
    """The tenant's keys, newest first."""
    rows = await conn.fetch(
        """SELECT id, tenant_id, sp_id, prefix, label, created_at, revoked_at
           FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id""",
        tenant_id,
    )
    return [_key(r) for r in rows]


async def get_key(conn: asyncpg.Connection, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """One of the tenant's keys; another tenant's key is `not_found`, like a missing one."""
    row = await conn.fetchrow(
        """SELECT id, tenant_id, sp_id, prefix, label, created_at, revoked_at
           FROM api_keys WHERE tenant_id = $1 AND id = $2""",
        tenant_id, key_id,
    )
    if row is None:
        raise DomainError("not_found", "no such API key", status=404)
    return _key(row)


async def relabel_key(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, key_id: uuid.UUID, label: str, *, actor: str
) -> ApiKey:
    """Set the label of one of the tenant's keys."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE api_keys SET label = $3 WHERE tenant_id = $1 AND id = $2
               RETURNING id, tenant_id, sp_id, prefix, label, created_at, revoked_at""",
            tenant_id, key_id, label,
        )
        if row is None:
            raise DomainError("not_found", "no such API key", status=404)
        await audit(conn, tenant_id, actor, "api_key.relabel", row["prefix"], {"label": label})
    return _key(row)


async def revoke_key(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, key_id: uuid.UUID, *, actor: str
) -> None:
    """Revoke one of the tenant's keys (idempotent)."""
    async with conn.transaction():
        prefix = await conn.fetchval(
            """UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
               WHERE tenant_id = $1 AND id = $2 RETURNING prefix""",
            tenant_id, key_id,
        )
        if prefix is None:
            raise DomainError("not_found", "no such API key", status=404)
        await audit(conn, tenant_id, actor, "api_key.revoke", prefix)


async def authenticate(conn: asyncpg.Connection, key: str) -> Principal | None:
    """The principal a presented key acts as, or None for an unknown or revoked key."""
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        return None
    row = await conn.fetchrow(
        """SELECT id, tenant_id, sp_id, prefix FROM api_keys
           WHERE key_hash = $1 AND revoked_at IS NULL""",
        hash_key(key),
    )
    if row is None:
        return None
    return Principal(row["tenant_id"], row["sp_id"], row["id"], row["prefix"])


async def audit(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID | None,
    actor: str,
    action: str,
    subject: str = "",
    details: dict[str, object] | None = None,
) -> None:
    """Append one entry to the audit trail (call inside the change's transaction)."""
    await conn.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, subject, details) "
        "VALUES ($1, $2, $3, $4, $5)",
        tenant_id, actor, action, subject, details or {},
    )


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        row["id"], row["tenant_id"], row["sp_id"], row["prefix"], row["label"],
        row["created_at"], row["revoked_at"],
    )
