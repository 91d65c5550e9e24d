"""Which carrier trunk a request comes from: its source address in a trunk's allow-list, or
(for a trunk with no addresses) its digest user; and the digest check of trunks with
credentials. Sans-I/O: configuration and a secret, no database."""

from __future__ import annotations

from config.sip import SipConfig, TrunkConfig
from protocols.sip.auth import Algorithm, AuthStatus, DigestServer
from protocols.sip.message import Request, Response
from protocols.sip.transaction import Peer


class TrunkGate:
    """The trunks of the configuration, as the engine asks about them."""

    def __init__(self, config: SipConfig, *, secret: bytes) -> None:
        self.config = config
        algorithms = tuple(Algorithm(name) for name in config.digest_algorithms)
        self.digest = DigestServer(config.realm, secret, nonce_ttl=config.nonce_seconds,
                                   algorithms=algorithms)
        self.trunk_digest = {
            t.username: DigestServer(config.realm, secret, nonce_ttl=config.nonce_seconds,
                                     algorithms=algorithms)
            for t in config.trunks if t.username
        }

    def trunk_for(self, request: Request, peer: Peer) -> TrunkConfig | None:
        """The trunk a new request comes from: by source address, else by digest user."""
        return self.trunk_by_address(peer) or self.digest_trunk(request)

    def trunk_by_address(self, peer: Peer) -> TrunkConfig | None:
        for trunk in self.config.trunks:
            if peer.host in trunk.addresses or f"{peer.host}:{peer.port}" in trunk.addresses:
                return trunk
        return None

    def challenge(self, trunk: TrunkConfig, request: Request, now: float, *,
                  to_tag: str) -> Response | None:
        """None when the carrier's credentials check out, else the 407 to answer with."""
        server = self.trunk_digest[trunk.username]
        result = server.verify(
            request, lambda user: trunk.password if user == trunk.username else None, now,
            proxy=True)
        if result.ok:
            return None
        return server.challenge_response(request, now, proxy=True,
                                         stale=result.status is AuthStatus.STALE, to_tag=to_tag)

    def digest_trunk(self, request: Request) -> TrunkConfig | None:
        params = self.digest.credentials(request, proxy=True)
        if params is None:
            return None
        for trunk in self.config.trunks:
            if trunk.username and not trunk.addresses and params.get("username") == trunk.username:
                return trunk
        return None
