"""Shared fixtures: a real PostgreSQL for the session, a fresh migrated database per test, and
the control API served on a real socket.

The cluster is telgate's own embedded one (the code path `make run` uses), started once in a
temporary state directory; set TELGATE_TEST_DSN to use an external server instead. Each test
gets a database cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from config import Config, load_config
from daemon.db import create_pool, migrate
from daemon.embedded_pg import EmbeddedPostgres
from daemon.logs import configure_logging
from handlers import tenants
from handlers.api.app import build_app
from handlers.api.context import AppContext
from handlers.api.framework import RouteTable
from handlers.metrics import Metrics

TEMPLATE_DB = "telgate_template"
_counter = itertools.count()

configure_logging(load_config(None, {}).log, force_json=True)
structlog.configure(cache_logger_on_first_use=False)

# Some tests configure logging in-process (the CLI's admin commands raise the level to warning;
# the log-masking test renders JSON). A logger cached then would keep that configuration for
# the rest of the run, and later tests reading logs (capture_logs) would see nothing.
_configure = structlog.configure


def _configure_uncached(*args: Any, **kwargs: Any) -> None:
    kwargs["cache_logger_on_first_use"] = False
    _configure(*args, **kwargs)


structlog.configure = _configure_uncached


@pytest.fixture(autouse=True)
def _logging_as_configured_for_tests() -> Iterator[None]:
    """Whatever a test does to the logging configuration is undone after it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def with_db(dsn: str, dbname: str) -> str:
    base, _, query = dsn.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{dbname}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def state_root() -> Iterator[Path]:
    """A temporary state directory for the whole test session (world-traversable /tmp)."""
    with tempfile.TemporaryDirectory(prefix="telgate-test-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


@pytest.fixture(scope="session")
async def pg_admin_dsn(state_root: Path) -> AsyncIterator[str]:
    """A DSN of the maintenance database of a running server with a migrated template."""
    external = os.environ.get("TELGATE_TEST_DSN")
    server: EmbeddedPostgres | None = None
    if external:
        dsn = external
    else:
        config = load_config(None, {"TELGATE_STATE_DIR": str(state_root / "pg")})
        server = EmbeddedPostgres(config.state_dir, config.database.embedded)
        await server.start()
        dsn = server.dsn
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await conn.close()
    tconn = await asyncpg.connect(with_db(dsn, TEMPLATE_DB))
    try:
        await migrate(tconn)
    finally:
        await tconn.close()
    try:
        yield dsn
    finally:
        if server is not None:
            await server.stop()


@pytest.fixture
async def db_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated, empty database for one test."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(pg_admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await conn.close()
    yield with_db(pg_admin_dsn, name)
    conn = await asyncpg.connect(pg_admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


def make_config(state_dir: Path, dsn: str, **env: str) -> Config:
    """A configuration for tests: the given database, plus TELGATE_* style overrides."""
    environ = {"TELGATE_STATE_DIR": str(state_dir), "TELGATE_DATABASE__DSN": f'"{dsn}"'}
    environ.update({f"TELGATE_{k.upper()}": v for k, v in env.items()})
    return load_config(None, environ)


@pytest.fixture
async def pool(db_dsn: str, state_root: Path) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the test's database, configured as the daemon configures it."""
    p = await create_pool(db_dsn, make_config(state_root, db_dsn))
    yield p
    await p.close()


@dataclass
class Api:
    """The control API served on a real loopback socket, with helpers to act as tenants."""

    client: TestClient[Any, Any]
    context: AppContext

    async def new_tenant(self, name: str | None = None, sp_id: str | None = None) -> Tenant:
        async with self.context.pool.acquire() as conn:
            t = await tenants.create_tenant(conn, name or f"t-{uuid.uuid4().hex[:8]}",
                                            actor="test")
            key, record = await tenants.create_key(conn, t.id, sp_id=sp_id, label="",
                                                   actor="test")
        return Tenant(t.id, t.name, key, record.id, self)


@dataclass
class Tenant:
    """A tenant with one API key, able to call the API as itself."""

    id: uuid.UUID
    name: str
    key: str
    key_id: uuid.UUID
    api: Api

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {**self.auth, **kw.pop("headers", {})}
        return await self.api.client.request(method, path, headers=headers, **kw)


@contextlib.asynccontextmanager
async def serve_api(pool: asyncpg.Pool, config: Config) -> AsyncIterator[Api]:
    """The control API with this configuration, on a real loopback socket."""
    ctx = AppContext(config=config, pool=pool, metrics=Metrics(), routes=RouteTable(),
                     version="test")
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    try:
        yield Api(client, ctx)
    finally:
        await client.close()


@pytest.fixture
async def api(pool: asyncpg.Pool, db_dsn: str, state_root: Path) -> AsyncIterator[Api]:
    """The control API on the test's database."""
    config = make_config(state_root, db_dsn, api__max_body_bytes="16384")
    async with serve_api(pool, config) as served:
        yield served
