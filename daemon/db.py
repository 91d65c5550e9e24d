"""Database access for the daemon: the asyncpg pool, versioned SQL migrations, and `open_database`.

Migrations are plain SQL files `daemon/migrations/NNNN_name.sql`, applied in order, each in
its own transaction, under a session advisory lock so that daemons starting together never
race. An applied migration whose file changed afterwards is an error (its checksum is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from config.schema import Config
from daemon.embedded_pg import EmbeddedPostgres, running_dsn
from handlers.outage import Backoff, describe, is_outage

log = structlog.get_logger("telgate.db")

# An arbitrary constant shared by every telgate instance: "telgate migrations".
MIGRATION_LOCK_ID = 0x7E16A7E_0001
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class DatabaseUnreachable(Exception):
    """The database did not answer within lifecycle.database_outage_seconds of the start."""


class MigrationError(Exception):
    """The schema in the database does not match the migrations shipped with this version."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file of the schema history."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def shipped_migrations() -> list[Migration]:
    """The migrations packaged with this version, in order."""
    found: list[Migration] = []
    for entry in resources.files("daemon.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the pending migrations under the advisory lock; return the versions applied."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        shipped = shipped_migrations()
        newest_shipped = shipped[-1].version if shipped else 0
        if done and max(done) > newest_shipped:
            raise MigrationError(
                f"database schema is version {max(done)}, newer than this telgate "
                f"({newest_shipped}); upgrade telgate"
            )
        for m in shipped:
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name} was changed after it was applied"
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version, m.name, m.checksum,
                )
            log.info("migration_applied", version=m.version, name=m.name)
            applied_now.append(m.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection set-up: json and jsonb as Python values."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _release(conn: asyncpg.Connection) -> None:
    """What a connection needs when it returns to the pool.

    asyncpg's default reset (unlisten, unlock advisory locks, RESET ALL) costs a round trip
    per release, twice per API request. Pooled connections hold no session state here:
    LISTEN and the instance lock live on dedicated connections, and the only advisory locks
    taken on pooled ones are released in the same function. So only an open transaction,
    which a failure could leave, needs undoing.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(dsn: str, config: Config) -> asyncpg.Pool:
    """A pool whose connections decode json/jsonb to Python values."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=config.database.pool_min,
        max_size=max(config.database.pool_max, config.database.pool_min, 1),
        init=init_connection,
        reset=_release,
        command_timeout=60,
    )
    assert pool is not None
    return pool


async def close_pool(pool: asyncpg.Pool, timeout: float = 5.0) -> None:
    """Close the pool gracefully; with the database gone or hung, drop the connections."""
    try:
        async with asyncio.timeout(timeout):
            await pool.close()
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("db_pool_terminated", error=type(exc).__name__)
        pool.terminate()


async def _pool_when_reachable(dsn: str, config: Config) -> asyncpg.Pool:
    """The daemon's pool, waiting (with back-off) up to lifecycle.database_outage_seconds for a
    database that is restarting or not up yet, as it would while running."""
    backoff = Backoff(base=0.2, cap=5.0)
    loop = asyncio.get_running_loop()
    until = loop.time() + config.lifecycle.database_outage_seconds
    while True:
        try:
            return await create_pool(dsn, config)
        except Exception as exc:
            delay = backoff.next()
            if not is_outage(exc):
                raise
            if loop.time() + delay > until:
                raise DatabaseUnreachable(describe(exc)) from exc
            log.warning("database_waiting", error=describe(exc), retry_s=round(delay, 2))
            await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def open_database(
    config: Config, *, migrate_schema: bool = True, attach: bool = True
) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """Yield (pool, dsn): the configured server, the daemon's running embedded one, or a new one.

    With `attach` (admin commands) a running embedded server owned by the daemon is used;
    otherwise, and for the daemon itself (`attach=False`, which waits for ownership), the
    embedded server is started here and stopped on exit.
    """
    async with open_database_server(config, migrate_schema=migrate_schema, attach=attach) as (
            pool, dsn, _server):
        yield pool, dsn


@contextlib.asynccontextmanager
async def open_database_server(
    config: Config, *, migrate_schema: bool = True, attach: bool = True
) -> AsyncIterator[tuple[asyncpg.Pool, str, EmbeddedPostgres | None]]:
    """`open_database`, also yielding the embedded server when this process runs one."""
    embedded: EmbeddedPostgres | None = None
    dsn = config.database.dsn
    if dsn is None and attach:
        dsn = await running_dsn(config.state_dir)
    if dsn is None:
        # Only the daemon keeps a server for long enough to need a supervisor.
        embedded = EmbeddedPostgres(config.state_dir, config.database.embedded,
                                    supervise=not attach)
        await embedded.start()
        dsn = embedded.dsn
    try:
        pool = await (_pool_when_reachable(dsn, config) if not attach else create_pool(dsn, config))
        try:
            if migrate_schema:
                async with pool.acquire() as conn:
                    await migrate(conn)
            yield pool, dsn, embedded
        finally:
            await close_pool(pool)
    finally:
        if embedded is not None:
            await embedded.stop()
