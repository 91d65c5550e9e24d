"""Minimal SDP (RFC 4566/3264): enough to read and rewrite addresses, ports and direction.

Unknown lines are kept verbatim in order, so rewriting touches only what the relay needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.sip.errors import SipSyntaxError
from protocols.sip.headers import is_digits

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(slots=True)
class Connection:
    """A ``c=`` line: network type, address type, address (TTL/count suffix kept)."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @classmethod
    def parse(cls, value: str) -> Connection:
        """Parse ``IN IP4 192.0.2.1``."""
        parts = value.split()
        if len(parts) != 3:
            raise SipSyntaxError(f"bad c= line {value!r}")
        return cls(parts[2], parts[1], parts[0])

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class Media:
    """One ``m=`` section with its attribute and other lines."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)  # other lines, e.g. ("a", "...")

    def attributes(self, name: str) -> list[str]:
        """Values of ``a=name:value`` lines (``""`` for flag attributes)."""
        out = []
        for kind, value in self.lines:
            if kind == "a":
                key, _, rest = value.partition(":")
                if key == name:
                    out.append(rest)
        return out

    @property
    def rtpmap(self) -> dict[str, str]:
        """Payload type -> ``encoding/clock[/channels]``."""
        out: dict[str, str] = {}
        for value in self.attributes("rtpmap"):
            pt, _, codec = value.partition(" ")
            out[pt] = codec.strip()
        return out

    @property
    def ptime(self) -> int | None:
        """Packetisation time in ms, if given."""
        values = self.attributes("ptime")
        return int(values[0]) if values and is_digits(values[0].strip()) else None

    @property
    def direction(self) -> str:
        """sendrecv / sendonly / recvonly / inactive (default sendrecv)."""
        for kind, value in self.lines:
            if kind == "a" and value in DIRECTIONS:
                return value
        return "sendrecv"

    @direction.setter
    def direction(self, value: str) -> None:
        if value not in DIRECTIONS:
            raise ValueError(value)
        self.lines = [(k, v) for k, v in self.lines if not (k == "a" and v in DIRECTIONS)]
        self.lines.append(("a", value))

    def __str__(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}".rstrip()]
        if self.connection is not None:
            # Placed straight after m=; an i= line (rare) would then follow c=, which
            # parsers accept, and it keeps the common m/c/a layout unchanged.
            out.append(f"c={self.connection}")
        out.extend(f"{kind}={value}" for kind, value in self.lines)
        return "\r\n".join(out)


@dataclass(slots=True)
class SessionDescription:
    """A parsed SDP body."""

    lines: list[tuple[str, str]]  # session-level lines except c=
    connection: Connection | None
    media: list[Media]

    @classmethod
    def parse(cls, body: bytes | str) -> SessionDescription:
        """Parse an SDP body; raise SipSyntaxError if a line is not ``x=value``."""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        session: list[tuple[str, str]] = []
        connection: Connection | None = None
        media: list[Media] = []
        for raw in text.split("\n"):
            line = raw.rstrip("\r")
            if not line:
                continue
            if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
                raise SipSyntaxError(f"bad SDP line {line[:40]!r}")
            kind, value = line[0], line[2:]
            if kind == "m":
                media.append(_parse_media(value))
            elif kind == "c":
                if media:
                    media[-1].connection = Connection.parse(value)
                else:
                    connection = Connection.parse(value)
            elif media:
                media[-1].lines.append((kind, value))
            else:
                session.append((kind, value))
        if not session or session[0][0] != "v":
            raise SipSyntaxError("SDP must start with v=")
        return cls(session, connection, media)

    def encode(self) -> bytes:
        """Serialise with CRLF line endings."""
        out: list[str] = []
        placed = False
        for kind, value in self.lines:
            # Session c= belongs before t= (RFC 4566 §5 order: ... i u e p c b t ...).
            if kind in ("b", "t") and not placed and self.connection is not None:
                out.append(f"c={self.connection}")
                placed = True
            out.append(f"{kind}={value}")
        if not placed and self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(str(m) for m in self.media)
        return ("\r\n".join(out) + "\r\n").encode()

    def rewrite_address(self, address: str, addrtype: str = "IP4") -> None:
        """Point every c= line (session and media) at ``address`` (media anchoring)."""
        if self.connection is not None or not any(m.connection for m in self.media):
            self.connection = Connection(address, addrtype)
        for m in self.media:
            if m.connection is not None:
                m.connection = Connection(address, addrtype)

    def address_for(self, media: Media) -> str | None:
        """Effective connection address of ``media`` (its own c= or the session's)."""
        conn = media.connection or self.connection
        return conn.address if conn is not None else None


def _parse_media(value: str) -> Media:
    parts = value.split()
    if len(parts) < 3:
        raise SipSyntaxError(f"bad m= line {value!r}")
    port_text, _, count = parts[1].partition("/")
    if not is_digits(port_text) or int(port_text) > 65535 or (count and not is_digits(count)):
        raise SipSyntaxError(f"bad m= port {parts[1]!r}")
    return Media(parts[0], int(port_text), parts[2], parts[3:], int(count) if count else None)
