"""The embedded database from a clone in a private folder: as root, the server's own user
cannot enter a 0700 directory, and telgate must not open it up (no chmod outside its state)."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from config.schema import EmbeddedDatabaseConfig
from daemon.embedded_pg import EmbeddedPostgres, find_bin_dir, relocated_root, running_dsn

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the private-folder problem is root's")


@pytest.fixture
def private() -> Iterator[Path]:
    """A root-owned 0700 folder, like `mktemp -d` or /root, holding binaries and state."""
    d = Path(tempfile.mkdtemp(prefix="telgate-private-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_server_runs_from_a_private_folder_without_opening_it(private: Path) -> None:
    # The wheel's layout, as in a virtualenv inside the clone: <pkg>/pginstall and <pkg>.libs.
    install = find_bin_dir(None).parent
    package = install.parent
    site = private / "clone" / ".venv" / "site-packages"
    await asyncio.to_thread(shutil.copytree, install, site / package.name / install.name,
                            ignore=shutil.ignore_patterns("include"))
    libs = package.parent / f"{package.name}.libs"
    if libs.exists():
        await asyncio.to_thread(shutil.copytree, libs, site / libs.name)
    bin_dir = site / package.name / install.name / "bin"
    state = private / "clone" / "var"
    server = EmbeddedPostgres(state, EmbeddedDatabaseConfig(bin_dir=bin_dir))
    try:
        await _started_or_cleaned(server, relocated_root(state))
        conn = await asyncpg.connect(server.dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        # Admin commands find the same (moved) cluster through the state directory.
        assert await running_dsn(state) == server.dsn
        relocated = server.paths.root
    finally:
        await server.stop()
    try:
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o700  # nothing outside was opened up
        assert not relocated.is_relative_to(private)
        assert not os.stat(relocated).st_mode & stat.S_IRWXO  # the moved cluster stays private
        # A second start reuses the cluster and the copied binaries.
        again = EmbeddedPostgres(state, EmbeddedDatabaseConfig(bin_dir=bin_dir), supervise=False)
        await again.start()
        assert again.paths.root == relocated
        await again.stop()
    finally:
        shutil.rmtree(relocated, ignore_errors=True)


async def _started_or_cleaned(server: EmbeddedPostgres, relocated: Path) -> None:
    try:
        await server.start()
    except BaseException:
        shutil.rmtree(relocated, ignore_errors=True)
        raise
