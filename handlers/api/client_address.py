"""The client's address as the audit trail records it: the peer, or, when the peer is one of
the operator's reverse proxies (`api.trusted_proxies`), the address that proxy says it served."""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

from handlers.api.context import CTX

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(ranges: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(r.strip(), strict=False) for r in ranges)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in networks)


def client_address(request: web.Request) -> str | None:
    """The peer address; behind trusted proxies, the last `X-Forwarded-For` hop that is not
    one of them (the entries before it are the client's word and could be forged)."""
    peer = request.remote
    networks = _networks(tuple(request.app[CTX].config.api.trusted_proxies))
    if peer is None or not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
            if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return peer
