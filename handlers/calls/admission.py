"""Admission of SIP requests: who is calling or registering.

A request not from a carrier trunk (`trunks.py`) comes from a phone, authenticated by digest
against the extension's stored HA1 with lock-out of addresses that keep failing. Unknown
extensions and wrong passwords get the same answer, so extensions cannot be enumerated.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import structlog

from config.sip import SipConfig
from handlers.calls import extensions as ext_db
from handlers.calls.routing import EXTENSION_DIGITS
from protocols.sip.auth import Algorithm, AuthStatus, DigestServer, LockoutTracker
from protocols.sip.message import IdGenerator, Request, make_response
from protocols.sip.transaction import Peer, ServerTransaction
from protocols.sip.uri import URI

log = structlog.get_logger("telgate.calls")


class Admission:
    """Identifies and authenticates the sender of each new request."""

    def __init__(self, config: SipConfig, pool: asyncpg.Pool, tenants: dict[str, uuid.UUID],
                 *, secret: bytes, ids: IdGenerator, clock: Callable[[], float]) -> None:
        self.config = config
        self.pool = pool
        self.tenants = tenants  # configured tenant names -> ids, filled as they appear
        self.ids = ids
        self.clock = clock
        algorithms = tuple(Algorithm(name) for name in config.digest_algorithms)
        self.digest = DigestServer(config.realm, secret, nonce_ttl=config.nonce_seconds,
                                      algorithms=algorithms)
        self.lockout = LockoutTracker(config.lockout_failures, config.lockout_seconds,
                                      config.lockout_seconds)
        self._domains: dict[str, uuid.UUID] = {}  # SIP domain -> tenant, as found

    async def resolve_tenants(self) -> None:
        """Look up configured tenant names not known yet (a tenant may be created after
        start, e.g. the demo's)."""
        wanted = {d.tenant for d in self.config.dids} | {
            t.tenant for t in self.config.trunks if t.tenant}
        if self.config.default_tenant:
            wanted.add(self.config.default_tenant)
        missing = wanted - self.tenants.keys()
        if not missing:
            return
        async with self.pool.acquire() as conn:
            for name in missing:
                found = await ext_db.tenant_by_name(conn, name)
                if found is not None:
                    self.tenants[name] = found

    async def tenant_for(self, uri: URI) -> uuid.UUID | None:
        domain = uri.host.lower()
        found = self._domains.get(domain)
        if found is None:
            # Unknown domains are not remembered: a tenant's domain appears with its first
            # extension, after which its phones must be able to register at once.
            async with self.pool.acquire() as conn:
                found = await ext_db.tenant_for_domain(conn, domain)
            if found is not None:
                self._domains[domain] = found
        if found is None and self.config.default_tenant:
            await self.resolve_tenants()
            found = self.tenants.get(self.config.default_tenant)
        return found

    async def authenticate(self, request: Request, peer: Peer, txn: ServerTransaction,
                            uri: URI, *, proxy: bool) -> ext_db.Extension | None:
        """The extension the request is authenticated as; else it was answered (401/407/403)."""
        now = self.clock()
        if self.lockout.is_locked(peer.host, now):
            txn.respond(make_response(request, 403, to_tag=self.ids.tag()), now)
            return None
        params = self.digest.credentials(request, proxy=proxy)
        if params is None:
            txn.respond(self.digest.challenge_response(request, now, proxy=proxy,
                                                       to_tag=self.ids.tag()), now)
            return None
        tenant = await self.tenant_for(uri)
        username = params.get("username", "")
        extension: ext_db.Extension | None = None
        if tenant is not None and username.isdigit() and len(username) <= EXTENSION_DIGITS:
            async with self.pool.acquire() as conn:
                extension = await ext_db.get(conn, tenant, username)
        if extension is not None and extension.realm != self.config.realm:
            extension = None
        now = self.clock()
        found = extension
        result = self.digest.verify_ha1(
            request, lambda user, alg: found.ha1(alg) if found and user == found.extension
            else None, now, proxy=proxy)
        if result.status is AuthStatus.OK:
            self.lockout.record_success(peer.host)
            return extension
        if result.status is AuthStatus.REJECTED:
            locked = self.lockout.record_failure(peer.host, now)
            log.info("sip_auth_failed", source=peer.host, method=request.method, locked=locked)
            if locked:
                txn.respond(make_response(request, 403, to_tag=self.ids.tag()), now)
                return None
        txn.respond(self.digest.challenge_response(
            request, now, proxy=proxy, stale=result.status is AuthStatus.STALE,
            to_tag=self.ids.tag()), now)
        return None

