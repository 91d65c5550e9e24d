"""Where webhooks may point: public addresses only, unless the operator allows a range.

A tenant chooses its webhook URL, so without a rule any tenant could make telgate call
loopback (telgate's own control API), the private network behind it or a cloud metadata
service (SSRF). A URL is refused when its host is, or resolves to, an address that is not
globally routable: loopback, private, link-local (169.254.169.254 included), shared (CGNAT),
multicast, reserved, unspecified (0.0.0.0, ::), and the same behind IPv4-mapped, 6to4, NAT64
and Teredo IPv6 forms. `webhooks.allow_networks` admits ranges on purpose (a portal on the
same private network).

The check runs twice: when the webhook is saved, and at every delivery through
`PinnedResolver`, which resolves, checks and hands aiohttp only the checked addresses, so the
connection goes to an address that passed (no DNS rebinding between check and connect).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from handlers.errors import DomainError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[str]]]

RESOLVE_SECONDS = 3.0
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")


class ForbiddenTarget(OSError):
    """A webhook host resolved to an address telgate does not call."""


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, NAT64, Teredo client), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def why_not_public(ip: IPAddress) -> str | None:
    """Why an address is not one to call on a tenant's behalf, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            reason = why_not_public(inner)
            return f"{reason} (inside {ip})" if reason else None
    for test, name in ((ip.is_unspecified, "an unspecified"), (ip.is_loopback, "a loopback"),
                       (ip.is_link_local, "a link-local"), (ip.is_multicast, "a multicast"),
                       (ip.is_private, "a private"), (ip.is_reserved, "a reserved")):
        if test:
            return f"{ip} is {name} address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return f"{ip} is a shared (carrier-grade NAT) address"
    if not ip.is_global:
        return f"{ip} is not a globally routable address"
    return None


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """Which addresses webhooks may reach: public ones, and the operator's allowed ranges."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, networks: Iterable[str]) -> TargetPolicy:
        """From `webhooks.allow_networks` (CIDR strings); a malformed one is a ValueError."""
        return cls(tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks))

    def refusal(self, ip: IPAddress) -> str | None:
        """None if webhooks may call `ip`, else why not."""
        reason = why_not_public(ip)
        if reason is None:
            return None
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if any(c.version == n.version and c in n for c in candidates for n in self.allow):
            return None
        return reason


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host` (TCP)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_url(url: str, policy: TargetPolicy, resolve: Resolve = system_resolve) -> None:
    """Refuse (422 `forbidden_target`) a URL whose host is or resolves to an address the
    policy forbids. A name that does not resolve now is accepted: delivery checks again."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ip = _literal(host)
    if ip is not None:
        addresses: list[IPAddress] = [ip]
    else:
        try:
            found = await asyncio.wait_for(resolve(host, port), RESOLVE_SECONDS)
        except (OSError, TimeoutError, UnicodeError):
            return
        addresses = [a for a in (_literal(x) for x in found) if a is not None]
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise DomainError("forbidden_target",
                              f"webhooks do not call {host}: {reason}; the operator can "
                              "allow a range with webhooks.allow_networks", field="url")


def literal_refusal(url: str, policy: TargetPolicy) -> str | None:
    """Why a URL whose host is an IP literal may not be called (aiohttp connects to a literal
    without asking the resolver), or None."""
    ip = _literal(urlsplit(url).hostname or "")
    return policy.refusal(ip) if ip is not None else None


class PinnedResolver(AbstractResolver):
    """aiohttp resolver that returns only addresses the policy admits, and refuses a host with
    any forbidden address: the connection is made to exactly what was checked."""

    def __init__(self, policy: TargetPolicy, base: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._base = base

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self._base is None:
            self._base = ThreadedResolver()
        found = await self._base.resolve(host, port, family)
        for entry in found:
            ip = _literal(entry["host"])
            reason = "not an IP address" if ip is None else self.policy.refusal(ip)
            if reason is not None:
                raise ForbiddenTarget(f"webhook host {host} refused: {reason}")
        return found

    async def close(self) -> None:
        if self._base is not None:
            await self._base.close()
