"""SIP registrations in PostgreSQL, followed in memory (the registrar is the memory side).

After a REGISTER the driver stores the extension's bindings (`store`); a row trigger
notifies `telgate_registrations` with the extension, and every instance's
`RegistrationFollower` reloads that extension's bindings into its registrar. At start (and
after the listening connection was lost, since notifications meanwhile are gone) it loads
every unexpired binding, so a restarted daemon still reaches phones that registered before.

Expiry instants are stored as wall-clock `timestamptz`; the registrar counts in the engine's
clock, and `Epoch` converts between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog

from handlers.calls.registrar import Aor, Binding, Registrar
from protocols.sip.errors import SipSyntaxError
from protocols.sip.transaction import Peer
from protocols.sip.uri import URI

log = structlog.get_logger("telgate.calls.registrations")

CHANNEL = "telgate_registrations"
_COLUMNS = "contact_uri, transport, host, port, user_agent, call_id, cseq, expires_at"


@dataclass(frozen=True, slots=True)
class Epoch:
    """Wall-clock seconds at engine time 0."""

    wall: float

    def to_wall(self, at: float) -> datetime:
        return datetime.fromtimestamp(self.wall + at, UTC)

    def to_engine(self, when: datetime) -> float:
        return when.timestamp() - self.wall


@dataclass(frozen=True, slots=True)
class Contact:
    """A registered contact as the API shows it."""

    uri: str
    transport: str
    address: str
    user_agent: str
    expires_at: datetime

    def public(self) -> dict[str, object]:
        return {"uri": self.uri, "transport": self.transport, "address": self.address,
                "user_agent": self.user_agent, "expires_at": self.expires_at.isoformat()}


async def store(conn: asyncpg.Connection, aor: Aor, bindings: list[Binding],
                epoch: Epoch) -> None:
    """Replace an extension's stored bindings by `bindings` (one transaction)."""
    tenant, extension = aor
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM sip_registrations WHERE tenant_id = $1 AND extension = $2",
            tenant, extension)
        if bindings:
            await conn.executemany(
                "INSERT INTO sip_registrations (tenant_id, extension, contact_uri, transport, "
                "host, port, user_agent, call_id, cseq, expires_at, position) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                [(tenant, extension, str(b.uri), b.peer.transport, b.peer.host, b.peer.port,
                  b.user_agent, b.call_id, b.cseq, epoch.to_wall(b.expires_at), i)
                 for i, b in enumerate(bindings)])


async def contacts(conn: asyncpg.Connection, tenant: uuid.UUID,
                   extension: str) -> list[Contact]:
    """An extension's unexpired contacts, oldest registration first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM sip_registrations WHERE tenant_id = $1 AND extension = $2 "
        "AND expires_at > now() ORDER BY position", tenant, extension)
    return [Contact(r["contact_uri"], r["transport"], f"{r['host']}:{r['port']}",
                    r["user_agent"], r["expires_at"]) for r in rows]


def _binding(r: asyncpg.Record, epoch: Epoch) -> Binding | None:
    try:
        uri = URI.parse(r["contact_uri"])
    except SipSyntaxError:
        return None
    return Binding(uri, f"<{uri}>", Peer(r["transport"], r["host"], r["port"]),
                   epoch.to_engine(r["expires_at"]), r["call_id"], r["cseq"], r["user_agent"])


async def load_aor(conn: asyncpg.Connection, registrar: Registrar, aor: Aor,
                   epoch: Epoch) -> None:
    """Reload one extension's bindings from the database."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM sip_registrations WHERE tenant_id = $1 AND extension = $2 "
        "AND expires_at > now() ORDER BY position", aor[0], aor[1])
    registrar.replace(aor, [b for r in rows if (b := _binding(r, epoch)) is not None])


async def load_all(conn: asyncpg.Connection, registrar: Registrar, epoch: Epoch) -> int:
    """Replace every binding by the database's unexpired ones; the number loaded."""
    rows = await conn.fetch(
        f"SELECT tenant_id, extension, {_COLUMNS} FROM sip_registrations "
        "WHERE expires_at > now() ORDER BY tenant_id, extension, position")
    found: dict[Aor, list[Binding]] = {}
    for r in rows:
        binding = _binding(r, epoch)
        if binding is not None:
            found.setdefault((r["tenant_id"], r["extension"]), []).append(binding)
    for aor in registrar.aors():
        if aor not in found:
            registrar.forget(aor)
    for aor, bindings in found.items():
        registrar.replace(aor, bindings)
    return len(rows)


async def delete_expired(conn: asyncpg.Connection) -> int:
    """Drop bindings that expired (housekeeping)."""
    result = await conn.execute("DELETE FROM sip_registrations WHERE expires_at <= now()")
    return int(result.split()[-1])


class RegistrationFollower:
    """Keeps a Registrar in step with `sip_registrations` over a LISTEN connection (one of
    the pool's, held while following)."""

    def __init__(self, pool: asyncpg.Pool, registrar: Registrar, epoch: Epoch, *,
                 max_backoff: float = 5.0) -> None:
        self.pool = pool
        self.registrar = registrar
        self.epoch = epoch
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._pending: asyncio.Queue[Aor] = asyncio.Queue()

    async def start(self) -> None:
        """Load everything and start following; returns once the first load is done."""
        self._task = asyncio.create_task(self._run(), name="sip-registration-follower")
        waiter = asyncio.create_task(self.connected.wait())
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self.pool.acquire()
                self._lost.clear()
                conn.add_termination_listener(lambda _c: self._lost.set())
                # LISTEN first, then load: a change in between is loaded and notified both.
                await conn.add_listener(CHANNEL, self._on_notify)
                loaded = await load_all(conn, self.registrar, self.epoch)
                self.connected.set()
                log.info("sip_registrations_loaded", bindings=loaded)
                backoff = 0.1
                while not self._lost.is_set():
                    get = asyncio.create_task(self._pending.get())
                    lost = asyncio.create_task(self._lost.wait())
                    try:
                        done, _ = await asyncio.wait({get, lost},
                                                     return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        get.cancel()
                        lost.cancel()
                    if get in done:
                        await load_aor(conn, self.registrar, get.result(), self.epoch)
                raise ConnectionError("listen connection lost")
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, ConnectionError,
                    asyncpg.InterfaceError) as exc:
                self.connected.clear()
                log.warning("sip_registrations_disconnected", error=str(exc), retry_s=backoff)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                if conn is not None:
                    with contextlib.suppress(OSError, asyncpg.PostgresError,
                                             asyncpg.InterfaceError):
                        await conn.remove_listener(CHANNEL, self._on_notify)
                    await self.pool.release(conn)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
            self._pending.put_nowait((uuid.UUID(str(data["t"])), str(data["e"])))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("sip_registrations_notify_unreadable", error=str(exc))
