"""The SIP part of `make run`'s demo: extension 1001 of the demo tenant, a simulated phone
that registers, answers every call at once with a looping tone (real RTP, so a call to it is
heard and recorded) and stays until the caller hangs up."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from config.sip import SipConfig
from handlers import tenants
from handlers.calls import extensions as ext_db
from handlers.errors import DomainError
from sim.media import Audio
from sim.sip.phone import Script, SimCall, SimPhone

log = structlog.get_logger("telgate.sim.demo")


async def start_demo(config: SipConfig, pool: asyncpg.Pool, *, tenant: str = "demo",
                     extension: str = "1001") -> Callable[[], Awaitable[None]]:
    """Ensure the demo tenant and its extension exist, register the simulated phone at
    127.0.0.1:<sip port>, and return the stopper. The extension gets a fresh password on every
    start (only this phone needs it)."""
    password = secrets.token_urlsafe(12)
    async with pool.acquire() as conn:
        try:
            tenant_id = (await tenants.find_tenant(conn, tenant)).id
        except DomainError:
            tenant_id = (await tenants.create_tenant(conn, tenant, actor="demo")).id
        domain = await ext_db.ensure_domain(conn, tenant_id, config.domain_suffix)
        md5, sha = ext_db.ha1_pair(extension, config.realm, password)
        updated = await ext_db.update(conn, tenant_id, extension, changes={
            "ha1_md5": md5, "ha1_sha256": sha, "realm": config.realm})
        if updated is None:
            await ext_db.create(conn, tenant_id, extension=extension, password=password,
                                realm=config.realm, name="demo phone", caller_id=None,
                                rid=None, use_rid=False)
    host = config.host if config.host not in ("0.0.0.0", "") else "127.0.0.1"
    phone = SimPhone(extension, gateway=(host, config.port), domain=domain, password=password,
                     script=Script(audio=Audio()))
    await phone.start()
    status = await phone.register(3600)
    log.info("demo_phone_registered", extension=extension, status=status, port=phone.port)

    async def refresh() -> None:
        while True:
            await asyncio.sleep(1800)
            await phone.register(3600)

    async def forget(call: SimCall) -> None:
        await call.ended.wait()
        phone.forget(call)  # retransmitted BYEs are answered by their transaction

    async def tidy() -> None:
        # The phone keeps every call and what it received: drop each one once it has ended.
        while True:
            call = await phone.incoming.get()
            ended = asyncio.create_task(forget(call))
            watchers.add(ended)
            ended.add_done_callback(watchers.discard)

    watchers: set[asyncio.Task[None]] = set()
    tasks = [asyncio.create_task(refresh(), name="demo-phone-register"),
             asyncio.create_task(tidy(), name="demo-phone-tidy")]

    async def stop() -> None:
        running = [*tasks, *watchers]
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await phone.close()

    return stop
