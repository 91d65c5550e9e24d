"""SIP digest authentication (RFC 3261 §22, RFC 8760: MD5 and SHA-256, qop=auth).

The server side is stateless apart from a nonce-count table: a nonce carries its issue time
and an HMAC, so any instance sharing the secret can check it and tell when it expired.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import struct
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from protocols.sip.errors import SipSyntaxError
from protocols.sip.headers import is_token, quote
from protocols.sip.message import Request, Response, make_response
from protocols.sip.uri import parse_uri


class Algorithm(enum.Enum):
    """Digest hash algorithms, strongest first in ``PREFERENCE``."""

    MD5 = "MD5"
    SHA256 = "SHA-256"

    def hash(self, text: str) -> str:
        """Hex digest of ``text`` (UTF-8)."""
        data = text.encode("utf-8")
        if self is Algorithm.MD5:
            return hashlib.md5(data, usedforsecurity=False).hexdigest()
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def from_name(cls, name: str | None) -> Algorithm | None:
        """Algorithm for a header token (absent means MD5); None when unsupported."""
        if name is None:
            return cls.MD5
        return _BY_NAME.get(name.upper())


_BY_NAME = {a.value.upper(): a for a in Algorithm}
PREFERENCE = (Algorithm.SHA256, Algorithm.MD5)


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest a=b, c="d"`` into the scheme and unquoted parameters (names lowered)."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if not is_token(scheme):
        raise SipSyntaxError("bad auth scheme")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise SipSyntaxError("auth parameter without value")
        name = rest[i:eq].strip().lower()
        if not is_token(name):
            raise SipSyntaxError("bad auth parameter name")
        j = eq + 1
        while j < n and rest[j] in " \t":
            j += 1
        if j < n and rest[j] == '"':
            out: list[str] = []
            j += 1
            while j < n and rest[j] != '"':
                if rest[j] == "\\" and j + 1 < n:
                    j += 1
                out.append(rest[j])
                j += 1
            if j >= n:
                raise SipSyntaxError("unterminated quoted auth parameter")
            params[name] = "".join(out)
            j += 1
        else:
            k = j
            while k < n and rest[k] not in ", \t":
                k += 1
            params[name] = rest[j:k]
            j = k
        i = j
    return scheme, params


def digest_response(
    algorithm: Algorithm,
    *,
    username: str,
    realm: str,
    password: str | None = None,
    ha1: str | None = None,
    method: str,
    uri: str,
    nonce: str,
    nc: str | None = None,
    cnonce: str | None = None,
    qop: str | None = None,
) -> str:
    """The ``response`` value of RFC 2617 / RFC 7616 (qop=auth or none)."""
    if ha1 is None:
        ha1 = algorithm.hash(f"{username}:{realm}:{password or ''}")
    ha2 = algorithm.hash(f"{method}:{uri}")
    if qop:
        return algorithm.hash(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return algorithm.hash(f"{ha1}:{nonce}:{ha2}")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One parsed WWW-Authenticate / Proxy-Authenticate Digest challenge."""

    realm: str
    nonce: str
    algorithm: Algorithm
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> Challenge | None:
        """Parse a challenge; None for other schemes or unsupported algorithms."""
        scheme, params = parse_auth_params(value)
        if scheme.lower() != "digest" or "realm" not in params or "nonce" not in params:
            return None
        algorithm = Algorithm.from_name(params.get("algorithm"))
        if algorithm is None:
            return None
        qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            params["realm"], params["nonce"], algorithm, qop, params.get("opaque"),
            params.get("stale", "").lower() == "true",
        )


class AuthStatus(enum.Enum):
    """What ``DigestServer.verify`` concluded."""

    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: challenge
    STALE = "stale"  # right password, expired nonce: challenge with stale=true
    REJECTED = "rejected"  # wrong password, unknown user, replay, forged nonce


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of a verification; ``username`` is set only for OK."""

    status: AuthStatus
    username: str | None = None

    @property
    def ok(self) -> bool:
        """True when the request is authenticated."""
        return self.status is AuthStatus.OK


PasswordLookup = Callable[[str], str | None]
Ha1Lookup = Callable[[str, Algorithm], str | None]  # (username, algorithm) -> HA1 hex
"""Returns the user's SIP password, or None for an unknown user."""


class DigestServer:
    """Issues stateless expiring nonces and verifies Authorization headers."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_ttl: float = 300.0,
        algorithms: tuple[Algorithm, ...] = PREFERENCE,
        random_bytes: Callable[[int], bytes] = os.urandom,
        max_nonces: int = 100_000,
    ) -> None:
        self.realm = realm
        self._secret = secret
        self.nonce_ttl = nonce_ttl
        self.algorithms = algorithms
        self._random = random_bytes
        self._max_nonces = max_nonces
        # nonce -> (issue time, highest nonce-count seen); insertion order ~ issue order
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()

    # - nonces -

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload + self.realm.encode(), hashlib.sha256).digest()[:16]

    def make_nonce(self, now: float) -> str:
        """A nonce embedding ``now`` (ms) and 64 random bits, authenticated by HMAC."""
        payload = struct.pack(">Q", int(now * 1000)) + self._random(8)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def _nonce_time(self, nonce: str) -> float | None:
        """Issue time of a genuine nonce, or None when forged/garbled."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) != 32 or not hmac.compare_digest(self._mac(raw[:16]), raw[16:]):
            return None
        (millis,) = struct.unpack(">Q", raw[:8])
        return float(millis) / 1000.0

    # - challenges -

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """Header values, one per algorithm, strongest first (RFC 8760 §2.4)."""
        nonce = self.make_nonce(now)
        tail = ", stale=true" if stale else ""
        return [
            f"Digest realm={quote(self.realm)}, nonce={quote(nonce)}, "
            f"algorithm={algorithm.value}, qop=\"auth\"{tail}"
            for algorithm in self.algorithms
        ]

    def challenge_response(
        self, request: Request, now: float, *, proxy: bool = False, stale: bool = False,
        to_tag: str | None = None,
    ) -> Response:
        """401 (or 407 when ``proxy``) carrying fresh challenges."""
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        return make_response(
            request,
            407 if proxy else 401,
            to_tag=to_tag,
            headers=[(header, value) for value in self.challenges(now, stale=stale)],
        )

    # - verification -

    def verify(
        self, request: Request, lookup: PasswordLookup, now: float, *, proxy: bool = False
    ) -> AuthResult:
        """Check the request's credentials against clear passwords (see `verify_ha1`)."""

        def ha1(username: str, algorithm: Algorithm) -> str | None:
            password = lookup(username)
            if password is None:
                return None
            return algorithm.hash(f"{username}:{self.realm}:{password}")

        return self.verify_ha1(request, ha1, now, proxy=proxy)

    def credentials(self, request: Request, *, proxy: bool = False) -> dict[str, str] | None:
        """The Digest parameters the request carries for our realm, if any."""
        header = "Proxy-Authorization" if proxy else "Authorization"
        for value in request.headers.get_all(header):
            try:
                scheme, params = parse_auth_params(value)
            except SipSyntaxError:
                continue
            if scheme.lower() == "digest" and params.get("realm") == self.realm:
                return params
        return None

    def verify_ha1(
        self, request: Request, lookup: Ha1Lookup, now: float, *, proxy: bool = False
    ) -> AuthResult:
        """Check the request's credentials against stored HA1 hashes (RFC 8760 per algorithm).

        Unknown users and wrong passwords both yield REJECTED after the same work, so the
        caller answers them identically and extensions cannot be enumerated. A nonce that is
        not ours (issued before a restart, under another secret) is STALE: the client is
        asked again and no password was tried, so it is no failed attempt.
        """
        params = self.credentials(request, proxy=proxy)
        if params is None:
            return AuthResult(AuthStatus.MISSING)
        required = ("username", "nonce", "uri", "response")
        if any(name not in params for name in required):
            return AuthResult(AuthStatus.REJECTED)
        algorithm = Algorithm.from_name(params.get("algorithm"))
        if algorithm is None or algorithm not in self.algorithms:
            return AuthResult(AuthStatus.REJECTED)
        qop = params.get("qop", "").lower()
        nc_text = params.get("nc", "")
        cnonce = params.get("cnonce")
        # qop=auth is mandatory here: without nonce-count there is no replay protection.
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
            return AuthResult(AuthStatus.STALE)
        if issued > now + 5.0:
            return AuthResult(AuthStatus.REJECTED)

        username = params["username"]
        stored = lookup(username, algorithm)
        known = stored is not None
        # Unknown user: compute against a random hash so the timing and outcome match.
        ha1 = stored if stored is not None else algorithm.hash(self._random(16).hex())
        expected = digest_response(
            algorithm, username=username, realm=self.realm, ha1=ha1,
            method=request.method, uri=params["uri"], nonce=params["nonce"],
            nc=nc_text, cnonce=cnonce, qop=qop,
        )
        given = params["response"].lower().encode("utf-8", "surrogateescape")
        if not (hmac.compare_digest(expected.encode(), given) and known):
            return AuthResult(AuthStatus.REJECTED)
        if now - issued > self.nonce_ttl:
            return AuthResult(AuthStatus.STALE)
        if not self._accept_count(params["nonce"], issued, nc, now):
            return AuthResult(AuthStatus.REJECTED)
        return AuthResult(AuthStatus.OK, username)

    def _accept_count(self, nonce: str, issued: float, nc: int, now: float) -> bool:
        seen = self._counts.get(nonce)
        if seen is not None and nc <= seen[1]:
            return False  # replayed (or reordered) nonce-count
        self._counts[nonce] = (issued, nc)
        if seen is None:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        counts = self._counts
        while counts:
            nonce, (issued, _) = next(iter(counts.items()))
            if now - issued <= self.nonce_ttl and len(counts) <= self._max_nonces:
                break
            del counts[nonce]


class DigestClient:
    """Answers 401/407 challenges for one account."""

    def __init__(
        self, username: str, password: str, *, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.username = username
        self.password = password
        self._random = random_bytes
        self._nc: dict[str, int] = {}

    @staticmethod
    def pick(response: Response) -> tuple[str, Challenge] | None:
        """(header name to answer with, strongest supported challenge) from a 401/407."""
        if response.status == 407:
            source, answer = "Proxy-Authenticate", "Proxy-Authorization"
        else:
            source, answer = "WWW-Authenticate", "Authorization"
        best: Challenge | None = None
        for value in response.headers.get_all(source):
            try:
                challenge = Challenge.parse(value)
            except SipSyntaxError:
                continue
            if challenge is None or (challenge.qop and "auth" not in challenge.qop):
                continue
            if best is None or PREFERENCE.index(challenge.algorithm) < PREFERENCE.index(
                best.algorithm
            ):
                best = challenge
        return (answer, best) if best is not None else None

    def authorization(self, challenge: Challenge, method: str, uri: str) -> str:
        """The Authorization/Proxy-Authorization value answering ``challenge``."""
        parts = [
            f"Digest username={quote(self.username)}",
            f"realm={quote(challenge.realm)}",
            f"nonce={quote(challenge.nonce)}",
            f"uri={quote(uri)}",
        ]
        if challenge.qop:
            nc = self._nc.get(challenge.nonce, 0) + 1
            self._nc[challenge.nonce] = nc
            nc_text = f"{nc:08x}"
            cnonce = self._random(8).hex()
            response = digest_response(
                challenge.algorithm, username=self.username, realm=challenge.realm,
                password=self.password, method=method, uri=uri, nonce=challenge.nonce,
                nc=nc_text, cnonce=cnonce, qop="auth",
            )
            parts += [f"response={quote(response)}", f"algorithm={challenge.algorithm.value}",
                      f'cnonce="{cnonce}"', "qop=auth", f"nc={nc_text}"]
        else:
            response = digest_response(
                challenge.algorithm, username=self.username, realm=challenge.realm,
                password=self.password, method=method, uri=uri, nonce=challenge.nonce,
            )
            parts += [f"response={quote(response)}", f"algorithm={challenge.algorithm.value}"]
        if challenge.opaque is not None:
            parts.append(f"opaque={quote(challenge.opaque)}")
        return ", ".join(parts)

    def authorize(self, request: Request, response: Response) -> bool:
        """Set credentials answering ``response`` on ``request`` in place; False when no
        supported challenge was offered. See ``retry`` for a ready-to-send copy."""
        picked = self.pick(response)
        if picked is None:
            return False
        header, challenge = picked
        request.headers.set(header, self.authorization(challenge, request.method, str(request.uri)))
        return True

    def retry(self, request: Request, response: Response, *, branch: str) -> Request | None:
        """A copy of ``request`` with credentials, a new branch and the next CSeq (§22.2)."""
        retry = request.copy()
        if not self.authorize(retry, response):
            return None
        via = retry.top_via.with_params(branch=branch)
        retry.headers.replace_first("Via", str(via))
        retry.headers.set("CSeq", f"{request.cseq.seq + 1} {request.method}")
        return retry


class LockoutTracker:
    """Locks a source after ``max_failures`` failures within ``window`` seconds."""

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 600.0,
        lock_for: float = 600.0,
        *,
        max_sources: int = 100_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lock_for = lock_for
        self.max_sources = max_sources  # spoofed UDP sources must not grow memory unbounded
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def is_locked(self, source: str, now: float) -> bool:
        """Whether ``source`` is currently locked out."""
        until = self._locked_until.get(source)
        if until is None:
            return False
        if now >= until:
            del self._locked_until[source]
            return False
        return True

    def record_failure(self, source: str, now: float) -> bool:
        """Count a failed attempt; return True if the source is now locked."""
        if source not in self._failures and len(self._failures) >= self.max_sources:
            self.prune(now)
            while len(self._failures) >= self.max_sources:
                del self._failures[next(iter(self._failures))]  # oldest first
        times = self._failures.setdefault(source, deque())
        times.append(now)
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) >= self.max_failures:
            self._locked_until[source] = now + self.lock_for
            del self._failures[source]
            return True
        return False

    def record_success(self, source: str) -> None:
        """Clear the failure history of ``source``."""
        self._failures.pop(source, None)

    def prune(self, now: float) -> None:
        """Drop expired state (call now and then to bound memory)."""
        for source in [s for s, t in self._failures.items() if not t or now - t[-1] > self.window]:
            del self._failures[source]
        for source in [s for s, until in self._locked_until.items() if now >= until]:
            del self._locked_until[source]
