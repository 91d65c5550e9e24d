"""`telgate run --demo` (what `make run` starts): the simulators of the outside parties, a demo
tenant with a registered sender number, and a fresh API key printed with curl lines to try."""

from __future__ import annotations

import sys

import structlog

from daemon.app import Runtime, Stopper
from handlers import tenants
from handlers.errors import DomainError
from handlers.registry import senders
from sim.sip.demo import start_demo
from sim.smsc import SmscConfig, SmscSimulator

log = structlog.get_logger("telgate.demo")

DEMO_TENANT = "demo"
DEMO_SENDER = "0212345678"
# What the demo's phones received (the SMSC simulator's JSON-lines log); `make sms` shows it.
SMS_RECEIVED_LOG = "sms-received.jsonl"


async def start_simulators(runtime: Runtime) -> Stopper | None:
    """Start the SMSC simulator where the demo configuration's carrier points."""
    carriers = [c for c in runtime.config.smpp.carriers if c.host in ("127.0.0.1", "localhost")]
    if not carriers:
        return None
    first = carriers[0]
    smsc = SmscSimulator(SmscConfig(
        host=first.host, port=first.port, accounts={c.system_id: c.password for c in carriers},
        receipt_delay_ms=500, record_submits=False,
        received_log=runtime.config.state_dir / SMS_RECEIVED_LOG))
    await smsc.start()
    log.info("demo_smsc_started", port=first.port,
             received_log=str(runtime.config.state_dir / SMS_RECEIVED_LOG))
    return smsc.stop


async def start_demo_phone(runtime: Runtime) -> Stopper | None:
    """Extension 1001 of the demo tenant: a simulated phone that answers at once."""
    if not runtime.config.sip.enabled:
        return None
    return await start_demo(runtime.config.sip, runtime.pool, tenant=DEMO_TENANT,
                            extension="1001")


async def announce_demo(runtime: Runtime) -> None:
    """Ensure the demo tenant and its sender number; print a new key and curl lines to try."""
    async with runtime.pool.acquire() as conn:
        try:
            tenant = await tenants.find_tenant(conn, DEMO_TENANT)
        except DomainError:
            tenant = await tenants.create_tenant(conn, DEMO_TENANT, actor="demo")
        try:
            await senders.register(conn, tenant.id, DEMO_SENDER, actor="demo")
        except DomainError as exc:
            if exc.code != "already_registered":
                raise
        secret, _key = await tenants.create_key(
            conn, tenant.id, sp_id="demo-sp", label="make run", actor="demo")
    runtime.context.index.senders.setdefault(tenant.id, set()).add(DEMO_SENDER)
    api = f"http://{runtime.config.api.host}:{runtime.config.api.port}"
    banner = f"""
================================================================================
 telgate demo is up.  API: {api}   (Ctrl-C stops it)

   export TELGATE_KEY={secret}
   curl -s {api}/readyz
   curl -s -H "Authorization: Bearer $TELGATE_KEY" -H 'Content-Type: application/json' \\
        -d '{{"from":"02-1234-5678","to":["010-1234-5678"],"text":"안녕하세요 {{오늘날짜}}"}}' \\
        {api}/v1/messages
   curl -s -H "Authorization: Bearer $TELGATE_KEY" {api}/v1/messages/<id>

 SIP on 127.0.0.1:5060 (UDP/TCP): the trunk accepts 127.0.0.1, DID 0212345678 rings
 extension 1001 (a simulated phone that answers), e.g.
   sipp -sn uac -s 0212345678 127.0.0.1:5060 -m 1
   curl -s -H "Authorization: Bearer $TELGATE_KEY" {api}/v1/cdrs
================================================================================
"""
    print(banner, file=sys.stdout, flush=True)
