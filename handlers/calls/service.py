"""Starting and stopping the calls capability: SIP listeners, the B2BUA and the CDR writer."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from config.sip import SipConfig
from handlers.api.context import AppContext
from handlers.calls import extensions as ext_db
from handlers.calls.b2bua import B2bua
from handlers.calls.cdr import CallRecord, CdrWriter
from handlers.calls.events import EventBus
from handlers.calls.media import MediaFactory, PassThrough
from protocols.sip.transport import TcpTransport, UdpTransport

log = structlog.get_logger("telgate.calls")


SWEEP_SECONDS = 30.0
RECEIVE_BUFFER = 4 * 1024 * 1024  # capped by net.core.rmem_max


@dataclass(slots=True)
class CallsServer:
    """A running calls capability (tests and the demo reach the B2BUA and ports through it)."""

    b2bua: B2bua
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
        """Ready while the SIP listeners are open."""
        return True, f"SIP on port {self.port}, {len(self.b2bua.calls)} calls"

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
                      bus: EventBus | None = None, media: MediaFactory = PassThrough,
                      secret: bytes | None = None) -> CallsServer:
    """Bind UDP and TCP on the same port and start routing calls."""
    cdrs = CdrWriter(pool)
    bus = bus or EventBus()
    tenants = await _resolve_tenants(pool, config)
    # Nonces must verify on every instance sharing the realm; a per-process secret is enough
    # until the SIP load balancer pins a phone to one instance (it does, by Call-ID/source).
    secret = secret or hashlib.sha256(os.urandom(32)).digest()
    b2bua = B2bua(config, pool, may_send=context.index.may_send, cdrs=cdrs, bus=bus,
                  tenants=tenants, media=media, secret=secret)
    endpoint = b2bua.endpoint
    for attempt in range(20):
        udp = await UdpTransport.listen(config.host, config.port, endpoint.on_message)
        port = udp.local_address[1]
        tcp = TcpTransport(endpoint.on_message, on_error=endpoint.on_transport_error)
        try:
            await tcp.listen(config.host, port)
            break
        except OSError:
            udp.close()
            # Port 0 gave a UDP port whose TCP twin is taken: pick another pair.
            if config.port != 0 or attempt == 19:
                raise
    # Bursts of hundreds of calls per second overflow the default 208 KiB buffer while the
    # loop is busy, and a lost BYE is only recovered by retransmission.
    udp.set_receive_buffer(RECEIVE_BUFFER)
    endpoint.add_transport(udp)
    endpoint.add_transport(tcp)
    cdrs.start()
    b2bua.port = port
    _count_calls(b2bua, context)
    server = CallsServer(b2bua, udp, tcp, cdrs, bus)
    server.sweeper = asyncio.create_task(_housekeeping(b2bua, config), name="sip-sweep")
    log.info("sip_listening", host=config.host, port=port, trunks=len(config.trunks),
             dids=len(config.dids))
    return server


async def _housekeeping(b2bua: B2bua, config: SipConfig) -> None:
    """Trunk keep-alives, and the sweep of bindings and lock-outs."""
    loop = asyncio.get_running_loop()
    probe_every = config.trunk_keepalive_seconds
    next_sweep = loop.time() + SWEEP_SECONDS
    while True:
        if probe_every:
            b2bua.probe_trunks()
        await asyncio.sleep(min(probe_every or SWEEP_SECONDS, SWEEP_SECONDS))
        if loop.time() >= next_sweep:
            next_sweep = loop.time() + SWEEP_SECONDS
            try:
                await b2bua.sweep()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("sip_sweep_failed", error=str(exc))


def _count_calls(b2bua: B2bua, context: AppContext) -> None:
    """Prometheus: finished calls by class and direction, calls in progress, registrations."""
    registry = context.metrics.registry
    try:
        ended = Counter("telgate_calls_total", "Finished calls", ["direction", "class"],
                        registry=registry)
        active = Gauge("telgate_calls_active", "Calls in progress", registry=registry)
        bound = Gauge("telgate_sip_registrations", "Registered contacts", registry=registry)
    except ValueError:
        return  # a second server on the same context (tests): counted by the first
    active.set_function(lambda: len(b2bua.calls))
    bound.set_function(lambda: len(b2bua.registrar))

    def record(r: CallRecord) -> None:
        ended.labels(r.direction, r.call_class).inc()

    b2bua.on_record = record


async def start_calls(config: SipConfig, pool: asyncpg.Pool, context: AppContext, dsn: str,
                      *, bus: EventBus | None = None) -> Callable[[], Awaitable[None]]:
    """Daemon starter: serve SIP per `config`, add the `sip` readiness check, and return the
    stopper. Pass `bus` to share call events with the API's stream (dsn: reserved for a
    LISTEN follower sharing registrations across instances)."""
    del dsn
    if not config.enabled:
        log.info("sip_disabled")

        async def nothing() -> None:
            return None

        return nothing
    server = await serve_calls(config, pool, context, bus=bus)
    context.readiness["sip"] = server.readiness
    return server.stop
