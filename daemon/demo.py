"""`telgate run --demo` (what `make run` starts): the simulators of the outside parties, a demo
tenant with a registered sender number, and a fresh API key printed with curl lines to try."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

import structlog

from daemon.app import Runtime, Stopper
from handlers import tenants
from handlers.errors import DomainError
from handlers.registry import senders
from sim.mmsc import MmscConfig, MmscSimulator
from sim.sip.demo import start_demo
from sim.smsc import SmscConfig, SmscSimulator

log = structlog.get_logger("telgate.demo")

DEMO_TENANT = "demo"
DEMO_SENDER = "0212345678"


async def start_simulators(runtime: Runtime) -> Stopper | None:
    """Start the SMSC and MMSC simulators where the demo configuration's carriers point."""
    stoppers: list[Stopper] = []
    carriers = [c for c in runtime.config.smpp.carriers if c.host in ("127.0.0.1", "localhost")]
    if carriers:
        first = carriers[0]
        smsc = SmscSimulator(SmscConfig(
            host=first.host, port=first.port,
            accounts={c.system_id: c.password for c in carriers},
            receipt_delay_ms=500, record_submits=False))
        await smsc.start()
        stoppers.append(smsc.stop)
        log.info("demo_smsc_started", port=first.port)
    mm7 = runtime.config.mm7
    local = [c for c in mm7.carriers if urlsplit(c.url).hostname in ("127.0.0.1", "localhost")]
    if local:
        first_mms = local[0]
        url = urlsplit(first_mms.url)
        mmsc = MmscSimulator(MmscConfig(
            host=url.hostname or "127.0.0.1", port=url.port or 80, path=url.path or "/",
            accounts={c.username: c.password for c in local if c.username},
            report_url=f"http://{mm7.report_host}:{mm7.report_port}{mm7.report_path}",
            report_username=first_mms.report_username,
            report_password=first_mms.report_password, report_delay_ms=500,
            record_messages=False))
        await mmsc.start()
        stoppers.append(mmsc.stop)
        log.info("demo_mmsc_started", url=mmsc.url)
    if not stoppers:
        return None

    async def stop() -> None:
        for s in reversed(stoppers):
            await s()

    return stop


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
 MMS (the MMSC simulator, MM7): add "images": ["<base64 of a JPEG under 300 KB>"], e.g.
   base64 -w0 photo.jpg > photo.b64; jq -n --rawfile img photo.b64 \\
      '{{from:"0212345678",to:["01012345678"],text:"사진입니다",images:[$img]}}' |
   curl -s -H "Authorization: Bearer $TELGATE_KEY" -H 'Content-Type: application/json' \\
        --data-binary @- {api}/v1/messages

 SIP on 127.0.0.1:5060 (UDP/TCP): the trunk accepts 127.0.0.1, DID 0212345678 rings
 extension 1001 (a simulated phone that answers), e.g.
   sipp -sn uac -s 0212345678 127.0.0.1:5060 -m 1
   curl -s -H "Authorization: Bearer $TELGATE_KEY" {api}/v1/cdrs
================================================================================
"""
    print(banner, file=sys.stdout, flush=True)
