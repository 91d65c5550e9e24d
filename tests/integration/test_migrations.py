"""Migrations: applied once, a no-op the second time, and safe when daemons start together."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from daemon.db import MigrationError, migrate, shipped_migrations
from tests.conftest import with_db


async def test_fresh_database_gets_every_migration_once_then_nothing(pg_admin_dsn: str) -> None:
    admin = await asyncpg.connect(pg_admin_dsn)
    await admin.execute("CREATE DATABASE mig_fresh")
    await admin.close()
    dsn = with_db(pg_admin_dsn, "mig_fresh")
    conn = await asyncpg.connect(dsn)
    try:
        first = await migrate(conn)
        assert first == [m.version for m in shipped_migrations()]
        before = await conn.fetch("SELECT version, applied_at FROM schema_migrations")
        assert await migrate(conn) == []
        assert await conn.fetch("SELECT version, applied_at FROM schema_migrations") == before
    finally:
        await conn.close()
        admin = await asyncpg.connect(pg_admin_dsn)
        await admin.execute("DROP DATABASE mig_fresh WITH (FORCE)")
        await admin.close()


async def test_concurrent_starts_do_not_race(pg_admin_dsn: str) -> None:
    admin = await asyncpg.connect(pg_admin_dsn)
    await admin.execute("CREATE DATABASE mig_race")
    await admin.close()
    dsn = with_db(pg_admin_dsn, "mig_race")
    conns = [await asyncpg.connect(dsn) for _ in range(6)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(v for r in results for v in r)
        # Every migration was applied by exactly one of the six "daemons".
        assert applied == [m.version for m in shipped_migrations()]
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(shipped_migrations())
    finally:
        for c in conns:
            await c.close()
        admin = await asyncpg.connect(pg_admin_dsn)
        await admin.execute("DROP DATABASE mig_race WITH (FORCE)")
        await admin.close()


async def test_an_edited_applied_migration_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn)


async def test_a_newer_schema_than_this_build_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
        with pytest.raises(MigrationError, match="newer than this telgate"):
            await migrate(conn)
