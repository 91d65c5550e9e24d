"""The registrar's location store: contacts per (tenant, extension) with expiry (RFC 3261 §10).

Sans-I/O: it takes the REGISTER of an already authenticated extension and the current time,
updates the bindings and builds the response. It is the in-memory view of the
`sip_registrations` table: the driver stores an extension's bindings after each REGISTER and
`replace()`s them when the database says they changed (`handlers/calls/registrations.py`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from config.sip import SipConfig
from protocols.sip.errors import SipSyntaxError
from protocols.sip.message import Request, Response, make_response
from protocols.sip.transaction import Peer
from protocols.sip.uri import URI

Aor = tuple[uuid.UUID, str]  # (tenant, extension)


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact: its URI, where its REGISTER came from, and when it expires."""

    uri: URI
    contact: str
    peer: Peer
    expires_at: float
    call_id: str
    cseq: int
    user_agent: str = ""


class Registrar:
    """Bindings of every extension registered here."""

    def __init__(self, config: SipConfig) -> None:
        self._config = config
        self._bindings: dict[Aor, dict[str, Binding]] = {}

    def contacts(self, aor: Aor, now: float) -> list[Binding]:
        """Live bindings of an extension, most recent registration last."""
        found = self._bindings.get(aor)
        if not found:
            return []
        live = [b for b in found.values() if b.expires_at > now]
        if len(live) != len(found):
            self._bindings[aor] = {str(b.uri): b for b in live}
        return live

    def aors(self) -> list[Aor]:
        """Every extension with bindings."""
        return list(self._bindings)

    def prune(self, now: float) -> None:
        """Drop expired bindings (lookups do it lazily; this bounds memory)."""
        for aor in self.aors():
            if not self.contacts(aor, now):
                self._bindings.pop(aor, None)

    def bindings(self, aor: Aor) -> list[Binding]:
        """Every binding of an extension as held (expired ones included until pruned)."""
        return list(self._bindings.get(aor, {}).values())

    def replace(self, aor: Aor, bindings: list[Binding]) -> None:
        """Set an extension's bindings (as loaded from the database), oldest first."""
        if bindings:
            self._bindings[aor] = {str(b.uri): b for b in bindings}
        else:
            self._bindings.pop(aor, None)

    def forget(self, aor: Aor) -> None:
        """Drop every binding of an extension (it was deleted)."""
        self._bindings.pop(aor, None)

    def __len__(self) -> int:
        return sum(len(b) for b in self._bindings.values())

    def register(self, aor: Aor, request: Request, peer: Peer, now: float, *,
                 to_tag: str) -> Response:
        """Apply an authenticated REGISTER and return the response to send."""
        cfg = self._config
        try:
            contacts = request.contacts
            default = int(request.headers.get("Expires") or cfg.register_max_expires)
        except (SipSyntaxError, ValueError):
            return make_response(request, 400, "Bad Contact or Expires", to_tag=to_tag)
        current = self._bindings.setdefault(aor, {})
        if any(c.wildcard for c in contacts):
            if len(contacts) != 1 or default != 0:
                return make_response(request, 400, "Bad wildcard", to_tag=to_tag)
            current.clear()
        for contact in contacts:
            if contact.wildcard:
                continue
            raw = contact.param("expires")
            try:
                expires = int(raw) if raw else default
            except ValueError:
                return make_response(request, 400, "Bad expires", to_tag=to_tag)
            key = str(contact.uri)
            old = current.get(key)
            if old is not None and old.call_id == request.call_id and \
                    old.cseq >= request.cseq.seq:
                continue  # out-of-order REGISTER (§10.3 step 7)
            if expires == 0:
                current.pop(key, None)
                continue
            if expires < cfg.register_min_expires:
                return make_response(request, 423, to_tag=to_tag,
                                     headers=[("Min-Expires", str(cfg.register_min_expires))])
            expires = min(expires, cfg.register_max_expires)
            current.pop(key, None)
            current[key] = Binding(contact.uri, f"<{contact.uri}>", _reach(contact.uri, peer),
                                   now + expires, request.call_id, request.cseq.seq,
                                   (request.headers.get("User-Agent") or "")[:200])
        while len(current) > cfg.max_contacts:
            current.pop(next(iter(current)))
        headers = [("Contact", f"{b.contact};expires={max(0, int(b.expires_at - now))}")
                   for b in current.values()]
        if not current:
            del self._bindings[aor]
        return make_response(request, 200, to_tag=to_tag, headers=headers)


def _reach(uri: URI, source: Peer) -> Peer:
    """Where to send requests for a contact: over a stream, the connection the phone
    registered on (it may not accept new ones); over UDP, the contact's own address."""
    if source.reliable or not uri.host or uri.host.startswith("["):
        return source
    transport = (uri.transport or "udp").upper()
    if transport not in ("UDP", "TCP"):
        return source
    return Peer(transport, uri.host, uri.port or 5060)
