"""The asyncio driver of the calls capability: the only place with sockets, tasks and the
database. It binds the SIP listeners around a `SipCore`, hands the core's events to the
`CallEngine`, does the engine's database work (authenticating phones, storing registrations
and call records) and runs housekeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from config.sip import SipConfig
from handlers.api.context import AppContext
from handlers.calls import extensions as ext_db
from handlers.calls import registrations
from handlers.calls.admission import Admission
from handlers.calls.call import Authenticate, Command, Published, RecordReady, ResolveTenants
from handlers.calls.cdr import CallRecord, CdrWriter
from handlers.calls.engine import CallEngine
from handlers.calls.events import EventBus
from handlers.calls.limits import CallLimits
from handlers.calls.media import MediaFactory, pass_through
from handlers.calls.registrar import Registrar
from handlers.calls.registrations import Epoch, RegistrationFollower
from handlers.calls.trunks import TrunkGate
from protocols.sip.core import SipCore
from protocols.sip.errors import SipSyntaxError
from protocols.sip.message import IdGenerator, make_response
from protocols.sip.transaction import Event
from protocols.sip.transport import SipEndpoint, TcpTransport, UdpTransport

log = structlog.get_logger("telgate.calls")

SWEEP_SECONDS = 30.0
RECEIVE_BUFFER = 4 * 1024 * 1024  # capped by net.core.rmem_max
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class CallDriver:
    """Runs a `CallEngine` on the event loop."""

    def __init__(self, config: SipConfig, pool: asyncpg.Pool, *,
                 may_send: Callable[[uuid.UUID, str], bool], cdrs: CdrWriter, bus: EventBus,
                 tenants: dict[str, uuid.UUID], media: MediaFactory, secret: bytes) -> None:
        self.config = config
        self.pool = pool
        self.cdrs = cdrs
        self.bus = bus
        self.tenants = tenants
        self.ids = IdGenerator()
        self.core = SipCore()
        self.endpoint = SipEndpoint(self.core, self._on_event)
        loop = asyncio.get_running_loop()
        # The one reading of the wall clock: engine time (loop time) + wall = UTC seconds.
        self.epoch = Epoch(time.time() - loop.time())
        self.registrar = Registrar(config)
        self.limits = CallLimits(config.max_call_seconds)
        self.admission = Admission(config, pool, tenants, secret=secret, ids=self.ids,
                                   clock=self.endpoint.now)
        self.engine = CallEngine(
            self.core.layer, config, registrar=self.registrar,
            trunks=TrunkGate(config, secret=secret), tenants=tenants, may_send=may_send,
            max_call_seconds=self.limits.max_call_seconds, media=media, ids=self.ids,
            epoch=self.epoch.wall)
        self.endpoint.extra_timer = self.engine.get_timer
        self.endpoint.on_timer = self._on_timer
        self.follower = RegistrationFollower(pool, self.registrar, self.epoch)
        self.on_record: Callable[[CallRecord], None] | None = None  # metrics hook
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def now(self) -> float:
        """Engine time (the loop's clock)."""
        return self.endpoint.now()

    @property
    def calls(self) -> dict[uuid.UUID, Any]:
        """Calls in progress."""
        return self.engine.calls

    @property
    def trunk_down(self) -> set[str]:
        """Trunks that stopped answering keep-alives."""
        return self.engine.monitor.down

    @property
    def port(self) -> int:
        return self.engine.port

    @port.setter
    def port(self, value: int) -> None:
        self.engine.port = value

    # -- engine glue ------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        self.engine.handle_event(event, self.now)
        self._drain()

    def _on_timer(self, now: float) -> None:
        self.engine.handle_timer(now)
        self._drain()

    def _drain(self) -> None:
        engine = self.engine
        while (out := engine.next_output()) is not None:
            if isinstance(out, RecordReady):
                self.cdrs.submit(out.record)
                if self.on_record is not None:
                    self.on_record(out.record)
            elif isinstance(out, Published):
                self.bus.publish(out.event)
            elif isinstance(out, Authenticate):
                self._spawn(self._authenticate(out))
            elif isinstance(out, ResolveTenants):
                self._spawn(self._resolve(out))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sip_task_failed", error=repr(task.exception()))

    async def _resolve(self, pending: ResolveTenants) -> None:
        await self.admission.resolve_tenants()
        self.engine.trunk_invite(pending.request, pending.peer, pending.transaction,
                                 pending.trunk, self.now, resolved=True)
        self._drain()

    async def _authenticate(self, pending: Authenticate) -> None:
        request, peer, txn = pending.request, pending.peer, pending.transaction
        if request.method == "REGISTER":
            await self._register(pending)
            return
        extension = await self.admission.authenticate(request, peer, txn, request.from_.uri,
                                                      proxy=True)
        if extension is None:
            return
        await self.admission.resolve_tenants()
        self.engine.admitted(pending, extension, self.now)
        self._drain()

    async def _register(self, pending: Authenticate) -> None:
        request, peer, txn = pending.request, pending.peer, pending.transaction
        try:
            aor_uri = request.to.uri
        except SipSyntaxError:
            txn.respond(make_response(request, 400), self.now)
            return
        extension = await self.admission.authenticate(request, peer, txn, aor_uri, proxy=False)
        if extension is None:
            return
        if aor_uri.user != extension.extension:
            txn.respond(make_response(request, 403, "Not Your AOR", to_tag=self.ids.tag()),
                        self.now)
            return
        aor = (extension.tenant_id, extension.extension)
        response = self.registrar.register(aor, request, peer, self.now, to_tag=self.ids.tag())
        if response.status == 200:
            try:
                async with self.pool.acquire() as conn:
                    await registrations.store(conn, aor, self.registrar.contacts(aor, self.now),
                                              self.epoch)
            except _DB_ERRORS as exc:
                # Held in memory all the same; only a restart before re-registration loses it.
                log.warning("sip_registration_not_stored", error=str(exc))
        txn.respond(response, self.now)
        log.info("extension_registered", extension=extension.extension,
                 tenant=str(extension.tenant_id), status=response.status, source=peer.host)

    def command(self, command: Command) -> None:
        """Carry out a call command (control API, IVRs); CommandRefused when it cannot be."""
        self.engine.command(command, self.now)
        self._drain()

    # -- housekeeping -----------------------------------------------------------------------

    def probe_trunks(self) -> None:
        """Send OPTIONS to every trunk we call out through."""
        self.engine.probe_trunks(self.now)

    async def sweep(self) -> None:
        """Expired bindings and lock-outs, bindings of deleted extensions, tenant limits."""
        now = self.now
        self.registrar.prune(now)
        self.admission.lockout.prune(now)
        await self.limits.refresh(self.pool)
        aors = self.registrar.aors()
        async with self.pool.acquire() as conn:
            await registrations.delete_expired(conn)
            if not aors:
                return
            rows = await conn.fetch(
                "SELECT e.tenant_id, e.extension FROM extensions e "
                "JOIN unnest($1::uuid[], $2::text[]) AS b(tenant_id, extension) "
                "ON e.tenant_id = b.tenant_id AND e.extension = b.extension",
                [a[0] for a in aors], [a[1] for a in aors])
        alive = {(r["tenant_id"], r["extension"]) for r in rows}
        for aor in aors:
            if aor not in alive:
                self.registrar.forget(aor)
                log.info("extension_bindings_dropped", extension=aor[1], tenant=str(aor[0]))

    async def close(self) -> None:
        """The process is stopping: hang up answered calls (BYE both legs), refuse ringing
        ones (503, CANCEL the attempts), then close the sockets."""
        for task in list(self._tasks):
            task.cancel()
        self.engine.shutdown(self.now)
        self._drain()
        await asyncio.sleep(0.05)  # let the last datagrams and stream writes leave
        self.endpoint.close()
        await self.follower.stop()


@dataclass(slots=True)
class CallsServer:
    """A running calls capability (tests and the demo reach the driver and ports through
    it; `b2bua` is the driver)."""

    b2bua: CallDriver
    udp: UdpTransport
    tcp: TcpTransport
    cdrs: CdrWriter
    bus: EventBus
    sweeper: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The SIP port (UDP and TCP share it)."""
        return self.udp.local_address[1]

    async def readiness(self) -> tuple[bool, str]:
        """Ready while the SIP listeners are open and registrations are followed."""
        following = self.b2bua.follower.connected.is_set()
        detail = f"SIP on port {self.port}, {len(self.b2bua.calls)} calls"
        return following, detail if following else f"{detail}, registrations not followed"

    async def stop(self) -> None:
        """Close listeners, end calls, store the last records."""
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        await self.b2bua.close()
        await self.cdrs.stop()
        log.info("sip_stopped")


async def _resolve_tenants(pool: asyncpg.Pool, config: SipConfig) -> dict[str, uuid.UUID]:
    names = {d.tenant for d in config.dids} | {t.tenant for t in config.trunks if t.tenant}
    if config.default_tenant:
        names.add(config.default_tenant)
    found: dict[str, uuid.UUID] = {}
    async with pool.acquire() as conn:
        for name in sorted(names):
            tenant = await ext_db.tenant_by_name(conn, name)
            if tenant is None:
                log.warning("sip_tenant_unknown", tenant=name)
            else:
                found[name] = tenant
    return found


async def serve_calls(config: SipConfig, pool: asyncpg.Pool, context: AppContext, *,
                      bus: EventBus | None = None, media: MediaFactory = pass_through,
                      secret: bytes | None = None) -> CallsServer:
    """Bind UDP and TCP on the same port, load registrations and start routing calls."""
    cdrs = CdrWriter(pool)
    bus = bus or EventBus()
    tenants = await _resolve_tenants(pool, config)
    # Nonces must verify on every instance sharing the realm; a per-process secret is enough
    # until the SIP load balancer pins a phone to one instance (it does, by Call-ID/source).
    secret = secret or hashlib.sha256(os.urandom(32)).digest()
    driver = CallDriver(config, pool, may_send=context.index.may_send, cdrs=cdrs, bus=bus,
                        tenants=tenants, media=media, secret=secret)
    await driver.limits.refresh(pool)
    await driver.follower.start()
    try:
        udp, tcp = await _listen(config, driver.endpoint)
    except BaseException:
        await driver.follower.stop()  # it holds one of the pool's connections
        raise
    endpoint = driver.endpoint
    port = udp.local_address[1]
    # Bursts of hundreds of calls per second overflow the default 208 KiB buffer while the
    # loop is busy, and a lost BYE is only recovered by retransmission.
    udp.set_receive_buffer(RECEIVE_BUFFER)
    endpoint.add_transport(udp)
    endpoint.add_transport(tcp)
    cdrs.start()
    driver.port = port
    _count_calls(driver, context)
    server = CallsServer(driver, udp, tcp, cdrs, bus)
    server.sweeper = asyncio.create_task(_housekeeping(driver, config), name="sip-sweep")
    log.info("sip_listening", host=config.host, port=port, trunks=len(config.trunks),
             dids=len(config.dids), registrations=len(driver.registrar))
    return server


async def _listen(config: SipConfig, endpoint: SipEndpoint) -> tuple[UdpTransport, TcpTransport]:
    """UDP and TCP listeners on the same port."""
    for attempt in range(20):
        udp = await UdpTransport.listen(config.host, config.port, endpoint.on_message)
        tcp = TcpTransport(endpoint.on_message, on_error=endpoint.on_transport_error,
                           on_closed=endpoint.on_stream_closed,
                           source_host=config.tcp_source_host or None)
        try:
            await tcp.listen(config.host, udp.local_address[1])
            return udp, tcp
        except OSError:
            udp.close()
            # Port 0 gave a UDP port whose TCP twin is taken: pick another pair.
            if config.port != 0 or attempt == 19:
                raise
    raise AssertionError("unreachable")


async def _housekeeping(driver: CallDriver, config: SipConfig) -> None:
    """Trunk keep-alives, and the sweep of bindings, lock-outs and tenant limits."""
    loop = asyncio.get_running_loop()
    probe_every = config.trunk_keepalive_seconds
    next_sweep = loop.time() + SWEEP_SECONDS
    while True:
        if probe_every:
            driver.probe_trunks()
        await asyncio.sleep(min(probe_every or SWEEP_SECONDS, SWEEP_SECONDS))
        if loop.time() >= next_sweep:
            next_sweep = loop.time() + SWEEP_SECONDS
            try:
                await driver.sweep()
            except _DB_ERRORS as exc:
                log.warning("sip_sweep_failed", error=str(exc))


def _count_calls(driver: CallDriver, context: AppContext) -> None:
    """Prometheus: finished calls by class and direction, calls in progress, registrations."""
    registry = context.metrics.registry
    try:
        ended = Counter("telgate_calls_total", "Finished calls", ["direction", "class"],
                        registry=registry)
        active = Gauge("telgate_calls_active", "Calls in progress", registry=registry)
        bound = Gauge("telgate_sip_registrations", "Registered contacts", registry=registry)
    except ValueError:
        return  # a second server on the same context (tests): counted by the first
    active.set_function(lambda: len(driver.calls))
    bound.set_function(lambda: len(driver.registrar))

    def record(r: CallRecord) -> None:
        ended.labels(r.direction, r.call_class).inc()

    driver.on_record = record


async def start_calls(config: SipConfig, pool: asyncpg.Pool, context: AppContext, dsn: str,
                      *, bus: EventBus | None = None) -> Callable[[], Awaitable[None]]:
    """Daemon starter: serve SIP per `config`, add the `sip` readiness check, and return the
    stopper. Pass `bus` to share call events with the API's stream."""
    del dsn  # registrations are followed on one of the pool's connections
    if not config.enabled:
        log.info("sip_disabled")

        async def nothing() -> None:
            return None

        return nothing
    server = await serve_calls(config, pool, context, bus=bus)
    context.readiness["sip"] = server.readiness
    return server.stop
