"""Digest verification against stored HA1 hashes, with lock-out per source address.

`protocols.sip.auth.DigestServer.verify` wants clear passwords; we keep only HA1 (RFC 8760
MD5 and SHA-256), so this verifier reuses its nonces and replay table and checks the response
from the stored hash. Unknown users and wrong passwords take the same path and get the same
answer, so extensions cannot be enumerated.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from protocols.sip.auth import (
    Algorithm,
    AuthResult,
    AuthStatus,
    DigestServer,
    digest_response,
    parse_auth_params,
)
from protocols.sip.errors import SipSyntaxError
from protocols.sip.message import Request
from protocols.sip.uri import parse_uri

Ha1Lookup = Callable[[str, Algorithm], str | None]


def credentials(request: Request, realm: str, *, proxy: bool) -> dict[str, str] | None:
    """The Digest parameters the request carries for `realm`, if any."""
    header = "Proxy-Authorization" if proxy else "Authorization"
    for value in request.headers.get_all(header):
        try:
            scheme, params = parse_auth_params(value)
        except SipSyntaxError:
            continue
        if scheme.lower() == "digest" and params.get("realm") == realm:
            return params
    return None


class Ha1DigestServer(DigestServer):
    """A DigestServer that verifies against HA1 hashes instead of passwords."""

    def verify_ha1(self, request: Request, lookup: Ha1Lookup, now: float, *,
                   proxy: bool = False) -> AuthResult:
        """Check the request's credentials; see `DigestServer.verify` for the outcomes."""
        params = credentials(request, self.realm, proxy=proxy)
        if params is None:
            return AuthResult(AuthStatus.MISSING)
        if any(name not in params for name in ("username", "nonce", "uri", "response")):
            return AuthResult(AuthStatus.REJECTED)
        algorithm = Algorithm.from_name(params.get("algorithm"))
        if algorithm is None or algorithm not in self.algorithms:
            return AuthResult(AuthStatus.REJECTED)
        qop = params.get("qop", "").lower()
        nc_text = params.get("nc", "")
        cnonce = params.get("cnonce")
        if qop != "auth" or not cnonce or len(nc_text) != 8:
            return AuthResult(AuthStatus.REJECTED)
        try:
            nc = int(nc_text, 16)
            if parse_uri(params["uri"]) != request.uri:
                return AuthResult(AuthStatus.REJECTED)
        except (ValueError, SipSyntaxError):
            return AuthResult(AuthStatus.REJECTED)
        issued = self._nonce_time(params["nonce"])
        if issued is None:
            # Not our nonce (e.g. issued before a restart, under another secret): ask again
            # with stale=true. No password was tried, so this is no failed attempt.
            return AuthResult(AuthStatus.STALE)
        if issued > now + 5.0:
            return AuthResult(AuthStatus.REJECTED)
        username = params["username"]
        ha1 = lookup(username, algorithm)
        known = ha1 is not None
        secret_ha1 = ha1 if ha1 is not None else algorithm.hash(self._random(16).hex())
        expected = digest_response(
            algorithm, username=username, realm=self.realm, ha1=secret_ha1,
            method=request.method, uri=params["uri"], nonce=params["nonce"], nc=nc_text,
            cnonce=cnonce, qop=qop)
        given = params["response"].lower().encode("utf-8", "surrogateescape")
        if not (hmac.compare_digest(expected.encode(), given) and known):
            return AuthResult(AuthStatus.REJECTED)
        if now - issued > self.nonce_ttl:
            return AuthResult(AuthStatus.STALE)
        if not self._accept_count(params["nonce"], issued, nc, now):
            return AuthResult(AuthStatus.REJECTED)
        return AuthResult(AuthStatus.OK, username)
