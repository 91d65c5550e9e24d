"""`telgate run --demo`: a ready-to-try tenant with a fresh API key printed on the console."""

from __future__ import annotations

import sys

from daemon.app import Runtime
from handlers import tenants
from handlers.errors import DomainError

DEMO_TENANT = "demo"


async def announce_demo(runtime: Runtime) -> None:
    """Ensure the demo tenant exists and print a new key for it with a first curl to try."""
    async with runtime.pool.acquire() as conn:
        try:
            tenant = await tenants.find_tenant(conn, DEMO_TENANT)
        except DomainError:
            tenant = await tenants.create_tenant(conn, DEMO_TENANT, actor="demo")
        secret, _key = await tenants.create_key(
            conn, tenant.id, sp_id="demo-sp", label="make run", actor="demo"
        )
    api = f"http://{runtime.config.api.host}:{runtime.config.api.port}"
    banner = f"""
================================================================================
 telgate demo is up.  API: {api}   (Ctrl-C stops it)

   export TELGATE_KEY={secret}
   curl -s {api}/readyz
   curl -s -H "Authorization: Bearer $TELGATE_KEY" {api}/v1/tenant
================================================================================
"""
    print(banner, file=sys.stdout, flush=True)
