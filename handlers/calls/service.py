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
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from config.schema import MediaConfig
from config.sip import SipConfig
from handlers import numbers
from handlers.api.context import AppContext
from handlers.calls import extensions as ext_db
from handlers.calls import registrations
from handlers.calls.admission import Admission
from handlers.calls.anchoring import Anchoring, PromptFiles
from handlers.calls.call import (
    Authenticate,
    Call,
    CallbackCaptured,
    Command,
    CommandRefused,
    Hangup,
    Originate,
    Published,
    RecordReady,
    ResolveTenants,
)
from handlers.calls.cdr import CallRecord, CdrWriter, EndReason
from handlers.calls.engine import CallEngine
from handlers.calls.events import EventBus
from handlers.calls.limits import CallLimits
from handlers.calls.media import MediaFactory, Side, pass_through
from handlers.calls.presence import Presence, PresenceCache
from handlers.calls.registrar import Registrar
from handlers.calls.registrations import Epoch, RegistrationFollower
from handlers.calls.trunks import TrunkGate
from handlers.ivr import callbacks
from handlers.media import recordings
from handlers.media.client import MediaProcess, MediaSettings
from handlers.media.interface import EventKind
from handlers.media.interface import Side as MediaSide
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
        self.presence = PresenceCache()
        self.admission = Admission(config, pool, tenants, secret=secret, ids=self.ids,
                                   clock=self.endpoint.now)
        self.engine = CallEngine(
            self.core.layer, config, registrar=self.registrar,
            trunks=TrunkGate(config, secret=secret), tenants=tenants, may_send=may_send,
            max_call_seconds=self.limits.max_call_seconds, features=self.limits.features,
            accepts_calls=self.presence.accepts_calls, media=media, ids=self.ids,
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
            elif isinstance(out, CallbackCaptured):
                self._spawn(self._store_callback(out))

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

    def originate(self, command: Originate) -> Call:
        """Place a click-to-call; CommandRefused when it cannot be."""
        call = self.engine.originate(command, self.now)
        self._drain()
        return call

    def command(self, command: Command) -> None:
        """Carry out a call command (control API, IVRs); CommandRefused when it cannot be."""
        self.engine.command(command, self.now)
        self._drain()

    def settings_changed(self, tenant: uuid.UUID) -> None:
        """A tenant changed its settings here: read the call settings again now, not at the
        next sweep (a recording policy switched on applies to the very next call)."""
        del tenant
        self._spawn(self._refresh_limits())

    def presence_changed(self, tenant: uuid.UUID, extension: str, presence: Presence) -> None:
        """An agent's presence changed here: the next call sees it."""
        self.presence.update(tenant, extension, presence)

    async def _refresh_limits(self) -> None:
        try:
            await self.limits.refresh(self.pool)
        except _DB_ERRORS as exc:
            log.warning("call_settings_not_refreshed", error=str(exc))

    async def _store_callback(self, request: CallbackCaptured) -> None:
        """Put the IVR's request on the tenant's callback list (with its `callback.created`
        event, in one transaction); tried again while the database is away."""
        delay = 0.5
        for attempt in range(8):
            try:
                async with self.pool.acquire() as conn:
                    await callbacks.create(
                        conn, tenant_id=request.tenant_id, call_id=request.call_id,
                        did=request.did, caller=request.caller, number=request.number,
                        trigger=request.trigger)
                return
            except _DB_ERRORS as exc:
                log.warning("callback_not_stored", call=str(request.call_id), attempt=attempt,
                            error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        log.error("callback_lost", call=str(request.call_id), tenant=str(request.tenant_id),
                  number=numbers.mask(request.number))

    def digit(self, call_id: uuid.UUID, side: MediaSide, key: str) -> None:
        """A key pressed on a call (RFC 4733, seen by the media process)."""
        self.engine.digit(call_id, Side(side.value), key, self.now)
        self._drain()

    def played(self, call_id: uuid.UUID, side: MediaSide, play_id: str) -> None:
        """A prompt ended on a call."""
        if play_id.isdigit():
            self.engine.played(call_id, Side(side.value), int(play_id), self.now)
            self._drain()

    def media_ended(self, call_id: uuid.UUID, kind: EventKind, detail: str) -> None:
        """The media side gave up on a call (no RTP, or the media process went away)."""
        reason = EndReason.RTP_TIMEOUT if kind is EventKind.TIMEOUT else EndReason.MEDIA_LOST
        log.info("call_media_ended", call=str(call_id), reason=reason.value, detail=detail)
        with contextlib.suppress(CommandRefused):  # it ended meanwhile
            self.command(Hangup(call_id, reason))

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
        await self.presence.refresh(self.pool)  # changes made on other instances
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
    anchoring: Anchoring | None = None
    context: AppContext | None = None

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
        if self.context is not None:
            with contextlib.suppress(ValueError):
                self.context.settings_changed.remove(self.b2bua.settings_changed)
            with contextlib.suppress(ValueError):
                self.context.presence_changed.remove(self.b2bua.presence_changed)
            if self.context.calls is self.b2bua:
                self.context.calls = None
        await self.b2bua.close()
        if self.anchoring is not None:
            await self.anchoring.stop()  # every ended call's recording completed and indexed
            await self.anchoring.media.stop()
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
                      anchoring: Anchoring | None = None,
                      secret: bytes | None = None) -> CallsServer:
    """Bind UDP and TCP on the same port, load registrations and start routing calls; with
    `anchoring` (its media process running) every call's audio goes through our ports."""
    cdrs = CdrWriter(pool)
    bus = bus or EventBus()
    tenants = await _resolve_tenants(pool, config)
    # Nonces must verify on every instance sharing the realm; a per-process secret is enough
    # until the SIP load balancer pins a phone to one instance (it does, by Call-ID/source).
    secret = secret or hashlib.sha256(os.urandom(32)).digest()
    driver = CallDriver(config, pool, may_send=context.index.may_send, cdrs=cdrs, bus=bus,
                        tenants=tenants, media=anchoring or media, secret=secret)
    await driver.limits.refresh(pool)
    await driver.presence.refresh(pool)
    if anchoring is not None:
        anchoring.bind(policy=driver.limits.recording_policy, lookup=driver.calls.get,
                       on_media_end=driver.media_ended, on_digit=driver.digit,
                       on_played=driver.played)
        await anchoring.start()
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
    context.settings_changed.append(driver.settings_changed)
    context.calls = driver
    context.presence_changed.append(driver.presence_changed)
    server = CallsServer(driver, udp, tcp, cdrs, bus, anchoring=anchoring, context=context)
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
                           status=endpoint.stream_status,
                           idle_seconds=config.tcp_idle_seconds,
                           first_message_seconds=config.tcp_first_message_seconds,
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


async def start_media(config: MediaConfig, pool: asyncpg.Pool, state_dir: Path, *,
                      retention: timedelta = recordings.DEFAULT_RETENTION,
                      prompts: PromptFiles | None = None) -> Anchoring:
    """Start the media process per `config` and the anchoring the engine uses; recordings
    left `recording` by a crash are completed from their files first."""
    control = state_dir / "media.sock"
    if len(str(control.absolute())) > 100:  # sun_path holds 108 bytes: a deep state_dir cannot
        control = Path(tempfile.gettempdir()) / f"telgate-media-{os.getpid()}.sock"
    settings = MediaSettings(
        control_path=control,
        recordings=Path(config.recordings_dir) if config.recordings_dir else state_dir / "recordings",
        address=config.address, port_low=config.port_low, port_high=config.port_high,
        timeout=config.rtp_timeout_seconds, hold_timeout=config.hold_timeout_seconds)
    async with pool.acquire() as conn:
        recovered = await recordings.recover_interrupted(conn, now=datetime.now(UTC))
    if recovered:
        log.warning("recordings_interrupted", count=recovered)
    process = MediaProcess(settings)
    await process.start()
    return Anchoring(process, pool, recordings_root=settings.recordings, retention=retention,
                     reserve=config.reserve, prompts=prompts)


async def start_calls(config: SipConfig, pool: asyncpg.Pool, context: AppContext, dsn: str,
                      *, bus: EventBus | None = None, media: MediaConfig | None = None,
                      state_dir: Path | None = None,
                      retention: timedelta = recordings.DEFAULT_RETENTION,
                      prompts: PromptFiles | None = None,
                      ) -> Callable[[], Awaitable[None]]:
    """Daemon starter: serve SIP per `config` (media anchored and recorded per `media` when
    it is enabled), add the `sip` readiness check, and return the stopper. Pass `bus` to
    share call events with the API's stream."""
    del dsn  # registrations are followed on one of the pool's connections
    if not config.enabled:
        log.info("sip_disabled")

        async def nothing() -> None:
            return None

        return nothing
    anchoring = None
    if media is not None and media.enabled:
        anchoring = await start_media(media, pool, state_dir or Path("var"), retention=retention,
                                      prompts=prompts)
    try:
        server = await serve_calls(config, pool, context, bus=bus, anchoring=anchoring)
    except BaseException:
        if anchoring is not None:
            await anchoring.media.stop()
        raise
    context.readiness["sip"] = server.readiness
    return server.stop
