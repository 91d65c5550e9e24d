"""Extensions (내선번호) and tenants' SIP domains: plain SQL, one query per function.

Passwords are never stored: an extension keeps HA1 = H(extension:realm:password) for MD5 and
SHA-256, which is all digest verification needs.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from handlers import numbers
from handlers.errors import DomainError
from protocols.sip.auth import Algorithm

_EXTENSION = re.compile(r"^[0-9]{1,4}$")
MIN_PASSWORD = 8


@dataclass(frozen=True, slots=True)
class Extension:
    """An extension's public facts and the hashes digest verification uses."""

    tenant_id: uuid.UUID
    extension: str
    name: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    caller_id: str | None
    rid: str | None
    use_rid: bool
    created_at: datetime
    updated_at: datetime

    def ha1(self, algorithm: Algorithm) -> str:
        """The stored HA1 for `algorithm`."""
        return self.ha1_md5 if algorithm is Algorithm.MD5 else self.ha1_sha256

    @property
    def presented_number(self) -> str | None:
        """The caller ID shown on outgoing calls: the RID when switched on, else its own."""
        return self.rid if self.use_rid and self.rid else self.caller_id

    def public(self, domain: str) -> dict[str, object]:
        """The API view (no hashes)."""
        return {
            "extension": self.extension, "name": self.name, "sip_domain": domain,
            "username": self.extension, "caller_id": self.caller_id, "rid": self.rid,
            "use_rid": self.use_rid, "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


_COLUMNS = ("tenant_id, extension, name, realm, ha1_md5, ha1_sha256, caller_id, rid, use_rid, "
            "created_at, updated_at")


def _row(r: asyncpg.Record) -> Extension:
    return Extension(**dict(r))


def ha1_pair(extension: str, realm: str, password: str) -> tuple[str, str]:
    """(MD5 HA1, SHA-256 HA1) of a password."""
    text = f"{extension}:{realm}:{password}"
    return Algorithm.MD5.hash(text), Algorithm.SHA256.hash(text)


def check_extension(raw: object) -> str:
    """An extension number: 1 to 4 digits (seed 002 §4), else 422 naming the field."""
    if not isinstance(raw, str) or not _EXTENSION.match(raw):
        raise DomainError("invalid_extension", "an extension is 1 to 4 digits", field="extension")
    return raw


def check_password(raw: object) -> str:
    """A SIP password: 8 to 128 printable characters."""
    if not isinstance(raw, str) or not MIN_PASSWORD <= len(raw) <= 128 or not raw.isprintable():
        raise DomainError("invalid_password", "password must be 8-128 printable characters",
                          field="password")
    return raw


def check_number(raw: object, field: str) -> str | None:
    """An optional caller-ID number, canonical digits."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise DomainError("invalid_number", f"{field} must be a string", field=field)
    try:
        return numbers.normalise(raw)
    except numbers.NumberError as exc:
        raise DomainError("invalid_number", str(exc), field=field) from None


def check_name(raw: object) -> str:
    """A display name of at most 100 characters."""
    if raw is None:
        return ""
    if not isinstance(raw, str) or len(raw) > 100:
        raise DomainError("invalid_name", "name must be a string of at most 100 characters",
                          field="name")
    return raw.strip()


async def ensure_domain(conn: asyncpg.Connection, tenant_id: uuid.UUID, suffix: str) -> str:
    """The tenant's SIP domain, created as t<first 12 hex of its id>.<suffix> on first use."""
    domain: str | None = await conn.fetchval(
        "INSERT INTO sip_domains (tenant_id, domain) VALUES ($1, $2) "
        "ON CONFLICT (tenant_id) DO UPDATE SET domain = sip_domains.domain RETURNING domain",
        tenant_id, f"t{tenant_id.hex[:12]}.{suffix}".lower(),
    )
    assert domain is not None
    return domain


async def tenant_for_domain(conn: asyncpg.Connection, domain: str) -> uuid.UUID | None:
    """The tenant owning a SIP domain."""
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT tenant_id FROM sip_domains WHERE domain = $1", domain.lower())
    return found


async def tenant_by_name(conn: asyncpg.Connection, name: str) -> uuid.UUID | None:
    """A tenant's id by its name (configuration refers to tenants by name)."""
    found: uuid.UUID | None = await conn.fetchval("SELECT id FROM tenants WHERE name = $1", name)
    return found


async def create(conn: asyncpg.Connection, tenant_id: uuid.UUID, *, extension: str, password: str,
                 realm: str, name: str, caller_id: str | None, rid: str | None,
                 use_rid: bool) -> Extension:
    """Create an extension; an existing number is 409 `extension_exists`."""
    md5, sha = ha1_pair(extension, realm, password)
    try:
        row = await conn.fetchrow(
            f"INSERT INTO extensions (tenant_id, extension, name, realm, ha1_md5, ha1_sha256, "
            f"caller_id, rid, use_rid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            f"RETURNING {_COLUMNS}",
            tenant_id, extension, name, realm, md5, sha, caller_id, rid, use_rid)
    except asyncpg.UniqueViolationError:
        raise DomainError("extension_exists", f"extension {extension} exists", field="extension",
                          status=409) from None
    assert row is not None
    return _row(row)


async def get(conn: asyncpg.Connection, tenant_id: uuid.UUID, extension: str) -> Extension | None:
    """One extension of the tenant, or None."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM extensions WHERE tenant_id = $1 AND extension = $2",
        tenant_id, extension)
    return _row(row) if row is not None else None


async def list_all(conn: asyncpg.Connection, tenant_id: uuid.UUID, *, after: str | None,
                   limit: int) -> list[Extension]:
    """The tenant's extensions in number order (digits sort as text, then by length)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM extensions WHERE tenant_id = $1 "
        f"AND ($2::text IS NULL OR (length(extension), extension) > (length($2), $2)) "
        f"ORDER BY length(extension), extension LIMIT $3",
        tenant_id, after, limit)
    return [_row(r) for r in rows]


async def update(conn: asyncpg.Connection, tenant_id: uuid.UUID, extension: str, *,
                 changes: dict[str, object]) -> Extension | None:
    """Apply column changes (already validated) and return the new row, or None if absent."""
    sets = ", ".join(f"{col} = ${i}" for i, col in enumerate(changes, start=3))
    row = await conn.fetchrow(
        f"UPDATE extensions SET {sets}, updated_at = now() "
        f"WHERE tenant_id = $1 AND extension = $2 RETURNING {_COLUMNS}",
        tenant_id, extension, *changes.values())
    return _row(row) if row is not None else None


async def delete(conn: asyncpg.Connection, tenant_id: uuid.UUID, extension: str) -> bool:
    """Delete an extension; False when it did not exist."""
    status: str = await conn.execute(
        "DELETE FROM extensions WHERE tenant_id = $1 AND extension = $2", tenant_id, extension)
    return status.endswith(" 1")
