"""SIP configuration: listeners, digest realm, carrier trunks and the DIDs they deliver.

The lead adds `sip: SipConfig` to `config.schema.Config`; the loader builds it like any other
section (frozen dataclasses with `help` metadata).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def _help(text: str, *, secret: bool = False, min: float | None = None,
          max: float | None = None) -> dict[str, object]:
    return {"help": text, "secret": secret, "min": min, "max": max}


@dataclass(frozen=True, slots=True)
class TrunkConfig:
    """One carrier trunk: who may send us calls (address allow-list and/or digest) and where
    our outgoing calls go."""

    name: str = field(metadata=_help("trunk name used in logs and call records"))
    addresses: list[str] = field(
        default_factory=list,
        metadata=_help("source IP addresses accepted as this carrier (empty: digest only)"),
    )
    username: str = field(
        default="", metadata=_help("digest user the carrier must authenticate as (empty: none)")
    )
    password: str = field(default="", metadata=_help("digest password of `username`", secret=True))
    host: str = field(default="", metadata=_help("where outgoing calls go (empty: no outgoing)"))
    port: int = field(default=5060, metadata=_help("port of `host`", min=1, max=65535))
    transport: Literal["udp", "tcp"] = field(default="udp", metadata=_help("transport to `host`"))
    outbound_username: str = field(
        default="", metadata=_help("user we answer the carrier's challenges with (empty: none)")
    )
    outbound_password: str = field(
        default="", metadata=_help("password for `outbound_username`", secret=True)
    )
    tenant: str = field(
        default="",
        metadata=_help("tenant whose extensions may call out through this trunk (empty: any)"),
    )


@dataclass(frozen=True, slots=True)
class DidConfig:
    """An inbound number (DID) the carriers deliver, mapped to a tenant and its extensions."""

    number: str = field(metadata=_help("the DID as dialled, canonical digits"))
    tenant: str = field(metadata=_help("tenant name owning the DID"))
    extensions: list[str] = field(metadata=_help("extension(s) rung; several make a ring group"))
    strategy: Literal["simultaneous", "sequential"] = field(
        default="simultaneous",
        metadata=_help("ring group: every extension at once, or one after another"),
    )
    ring_seconds: float = field(
        default=20.0, metadata=_help("sequential: how long each extension rings", min=0.1)
    )
    no_answer_seconds: float = field(
        default=60.0, metadata=_help("the caller gets 480 after this long unanswered", min=0.1)
    )


@dataclass(frozen=True, slots=True)
class SipConfig:
    """The SIP side of the B2BUA: listeners, registrar and trunks."""

    enabled: bool = field(default=True, metadata=_help("start the SIP listeners"))
    host: str = field(default="127.0.0.1", metadata=_help("address the UDP and TCP listeners bind"))
    port: int = field(default=5060, metadata=_help("SIP port (UDP and TCP); 0 picks one", min=0,
                                                   max=65535))
    advertise: str = field(
        default="", metadata=_help("address written in Via/Contact (empty: `host`)")
    )
    tcp_source_host: str = field(
        default="",
        metadata=_help("local address TCP connections we open leave from (empty: the "
                       "kernel's choice), for hosts with several addresses"),
    )
    tcp_idle_seconds: float = field(
        default=3900.0,
        metadata=_help("a TCP connection that sends nothing (not even a CRLF keep-alive) this "
                       "long, with no transaction in progress, is closed; keep it above "
                       "`register_max_expires`, since a phone registered over TCP is reached "
                       "through its connection and may only speak to re-register (0: never)",
                       min=0),
    )
    tcp_first_message_seconds: float = field(
        default=30.0,
        metadata=_help("a TCP connection we accepted that has not sent one complete SIP "
                       "message this long after connecting is closed (0: never)", min=0),
    )
    realm: str = field(
        default="telgate",
        metadata=_help("digest realm; stored extension hashes depend on it (changing it "
                       "invalidates every extension password)"),
    )
    domain_suffix: str = field(
        default="sip.telgate.local",
        metadata=_help("tenants' SIP domains are t<id>.<suffix>; phones register there"),
    )
    default_tenant: str = field(
        default="",
        metadata=_help("tenant owning requests to any other domain, such as an IP literal"),
    )
    digest_algorithms: list[Literal["MD5", "SHA-256"]] = field(
        default_factory=lambda: ["MD5"],
        metadata=_help('challenges offered, strongest first, e.g. ["SHA-256", "MD5"]; some '
                       "phones (baresip 1.0) refuse a 401 listing an algorithm they lack, so "
                       "the default offers MD5 only"),
    )
    nonce_seconds: float = field(default=300.0, metadata=_help("digest nonce lifetime", min=1))
    lockout_failures: int = field(
        default=5, metadata=_help("failed authentications from one address before lock-out", min=1)
    )
    lockout_seconds: float = field(default=600.0, metadata=_help("lock-out duration", min=1))
    register_min_expires: int = field(default=60, metadata=_help("shortest registration", min=1))
    register_max_expires: int = field(default=3600, metadata=_help("longest registration", min=1))
    max_contacts: int = field(default=5, metadata=_help("contacts one extension may register",
                                                        min=1))
    trunk_keepalive_seconds: float = field(
        default=30.0,
        metadata=_help("OPTIONS to each trunk with a host this often; a trunk that stops "
                       "answering is skipped for outgoing calls (0: never probe)", min=0),
    )
    session_expires_seconds: int = field(
        default=1800,
        metadata=_help("RFC 4028 session interval offered on outgoing legs and granted to "
                       "callers asking for one; a leg nobody refreshes in time is hung up "
                       "(0: no session timers)", min=0),
    )
    max_call_seconds: float = field(
        default=0.0,
        metadata=_help("longest answered call before the gateway hangs up, unless the tenant "
                       "setting `max_call_seconds` says otherwise (0: no limit)", min=0),
    )
    trunks: list[TrunkConfig] = field(
        default_factory=list, metadata=_help("[[sip.trunks]] tables, one per carrier")
    )
    dids: list[DidConfig] = field(
        default_factory=list, metadata=_help("[[sip.dids]] tables, one per inbound number")
    )

    @property
    def advertised_host(self) -> str:
        """The address peers should reach us at."""
        return self.advertise or self.host
