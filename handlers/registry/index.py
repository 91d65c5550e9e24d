"""In-memory indexes of registered sender numbers and opt-outs, shared by every check.

Checks never query the database: they look up a dict of sets. Each daemon keeps its index in
step through PostgreSQL LISTEN/NOTIFY on channel `telgate_numbers` (statement triggers of
migration 0002): a notification either carries the numbers that changed or asks for a reload
of one tenant. When the listening connection drops, the index reconnects with backoff and
reloads everything, since notifications sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from dataclasses import dataclass, field

import asyncpg
import structlog

from handlers.outage import LoopMetrics, LoopTracker, describe

log = structlog.get_logger("telgate.registry.index")

CHANNEL = "telgate_numbers"


@dataclass(slots=True)
class NumberIndex:
    """Registered sender numbers and opt-outs per tenant, plus each tenant's opt-out scope."""

    senders: dict[uuid.UUID, set[str]] = field(default_factory=dict)
    optouts: dict[uuid.UUID, set[str]] = field(default_factory=dict)
    ad_only: set[uuid.UUID] = field(default_factory=set)  # tenants whose opt-out scope is 'ad'
    generation: int = 0  # bumped on every applied change (tests and metrics watch it)

    def may_send(self, tenant_id: uuid.UUID, number: str) -> bool:
        """Whether canonical `number` is registered for the tenant (any of its SP IDs may use it)."""
        numbers = self.senders.get(tenant_id)
        return numbers is not None and number in numbers

    def is_opted_out(self, tenant_id: uuid.UUID, number: str, *, advertising: bool) -> bool:
        """Whether a message to canonical `number` must be withheld under the tenant's scope."""
        numbers = self.optouts.get(tenant_id)
        if numbers is None or number not in numbers:
            return False
        return advertising or tenant_id not in self.ad_only

    def apply(self, payload: dict[str, object]) -> uuid.UUID | None:
        """Apply one notification; return the tenant to reload when it carries no numbers."""
        tenant = uuid.UUID(str(payload["t"]))
        kind = payload.get("k")
        self.generation += 1
        if kind == "scope":
            if payload.get("scope") == "ad":
                self.ad_only.add(tenant)
            else:
                self.ad_only.discard(tenant)
            return None
        numbers = payload.get("n")
        if not isinstance(numbers, list):
            return tenant
        target = (self.senders if kind == "s" else self.optouts).setdefault(tenant, set())
        if payload.get("op") == "+":
            target.update(str(n) for n in numbers)
        else:
            target.difference_update(str(n) for n in numbers)
        return None

    async def reload_all(self, conn: asyncpg.Connection) -> None:
        """Replace the whole index from the database."""
        senders: dict[uuid.UUID, set[str]] = {}
        for r in await conn.fetch("SELECT tenant_id, number FROM sender_numbers"):
            senders.setdefault(r["tenant_id"], set()).add(r["number"])
        optouts: dict[uuid.UUID, set[str]] = {}
        for r in await conn.fetch("SELECT tenant_id, number FROM opt_outs"):
            optouts.setdefault(r["tenant_id"], set()).add(r["number"])
        ad_only = {r["id"] for r in await conn.fetch(
            "SELECT id FROM tenants WHERE optout_scope = 'ad'")}
        self.senders, self.optouts, self.ad_only = senders, optouts, ad_only
        self.generation += 1

    async def reload_tenant(self, conn: asyncpg.Connection, tenant: uuid.UUID) -> None:
        """Replace one tenant's sets from the database."""
        s = await conn.fetch("SELECT number FROM sender_numbers WHERE tenant_id = $1", tenant)
        o = await conn.fetch("SELECT number FROM opt_outs WHERE tenant_id = $1", tenant)
        self.senders[tenant] = {r["number"] for r in s}
        self.optouts[tenant] = {r["number"] for r in o}
        self.generation += 1


class IndexFollower:
    """Keeps a NumberIndex in step with the database over a dedicated LISTEN connection."""

    def __init__(self, dsn: str, index: NumberIndex, *, max_backoff: float = 5.0,
                 loops: LoopMetrics | None = None) -> None:
        self.dsn = dsn
        self.index = index
        self.max_backoff = max_backoff
        self._tracker = LoopTracker("registry-follower", loops)
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._pending: asyncio.Queue[uuid.UUID] = asyncio.Queue()

    async def start(self) -> None:
        """Load everything and start following; returns once the first load is done."""
        self._task = asyncio.create_task(self._run(), name="registry-index-follower")
        waiter = asyncio.create_task(self.connected.wait())
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()  # re-raise the start-up failure

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def readiness(self) -> tuple[bool, str]:
        if self.connected.is_set():
            return True, "following changes"
        return False, "not listening for registry changes"

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn)
                self._lost.clear()
                conn.add_termination_listener(lambda _c: self._lost.set())
                # LISTEN first, then load: a change committed in between is both loaded and
                # notified, and applying a notification twice is harmless.
                await conn.add_listener(CHANNEL, self._on_notify)
                await self.index.reload_all(conn)
                self.connected.set()
                log.info("registry_index_loaded", tenants=len(self.index.senders),
                         optout_tenants=len(self.index.optouts))
                backoff = 0.1
                self._tracker.ok()
                while not self._lost.is_set():
                    reload_task = asyncio.create_task(self._pending.get())
                    lost_task = asyncio.create_task(self._lost.wait())
                    done, pending = await asyncio.wait(
                        {reload_task, lost_task}, return_when=asyncio.FIRST_COMPLETED)
                    for t in pending:
                        t.cancel()
                    if reload_task in done:
                        await self.index.reload_tenant(conn, reload_task.result())
                        self._tracker.ok()
                raise ConnectionError("listen connection lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: reconnect and reload, never stop following
                self.connected.clear()
                self._tracker.failed(exc)
                log.warning("registry_index_disconnected", error=describe(exc), retry_s=backoff)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            reload = self.index.apply(json.loads(payload))
        except (ValueError, KeyError) as exc:
            log.error("registry_notify_unreadable", error=str(exc))
            return
        if reload is not None:
            self._pending.put_nowait(reload)
