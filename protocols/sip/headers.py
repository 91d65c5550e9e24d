"""Header names and structured header values (name-addr, Via, CSeq) of RFC 3261 §20/§25."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace

from protocols.sip.errors import SipSyntaxError
from protocols.sip.uri import CACHE_LIMIT, URI, Params, parse_uri, split_host_port

COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_CANONICAL = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version",
    "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Priority",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Session-Expires", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
]
CANONICAL_NAMES: dict[str, str] = {name.lower(): name for name in _CANONICAL}
CANONICAL_NAMES.update({k: v for k, v in COMPACT_FORMS.items()})

# Headers whose grammar is a comma-separated list (so "A, B" equals two header lines).
# Authorization-like headers and Date contain commas that are not separators.
LIST_HEADERS = frozenset(
    {
        "via", "route", "record-route", "contact", "allow", "supported", "require",
        "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "content-encoding", "content-language", "in-reply-to", "alert-info",
        "call-info", "error-info", "warning", "reason", "p-asserted-identity",
        "p-preferred-identity", "accept-contact", "reject-contact", "request-disposition",
    }
)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")


def canonical_name(name: str) -> str:
    """Expand compact forms and normalise the case of well-known header names."""
    return CANONICAL_NAMES.get(name.lower(), name)


_KEYS: dict[str, str] = {}


def header_key(name: str) -> str:
    """Lookup key (lowercased canonical name) for ``name``; cached for the names code uses."""
    key = _KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_KEYS) < 1024 and len(name) <= 64:
            _KEYS[name] = key
    return key


def is_digits(text: str) -> bool:
    """ASCII decimal digits only (``str.isdigit`` also accepts e.g. superscripts)."""
    return text.isascii() and text.isdigit()


def is_token(text: str) -> bool:
    """Whether ``text`` is a non-empty RFC 3261 token."""
    return _TOKEN_RE.match(text) is not None


def split_values(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes and <...>."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    out: list[str] = []
    start = 0
    in_quote = in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    if in_quote:
        raise SipSyntaxError("unterminated quoted string")
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


def quote(text: str) -> str:
    """Render ``text`` as a quoted-string, escaping backslash and double quote."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string beginning at ``text[start] == '"'``; return (value, end index)."""
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n:
                break
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise SipSyntaxError("unterminated quoted string")


def unquote(text: str) -> str:
    """Undo ``quote`` when ``text`` is a quoted-string; return other text unchanged."""
    text = text.strip()
    if text.startswith('"'):
        value, end = _read_quoted(text, 0)
        if end != len(text):
            raise SipSyntaxError("garbage after quoted string")
        return value
    return text


def parse_params(text: str) -> Params:
    """Parse ``;name=value;flag`` (LWS allowed around ; and =); quoted values keep quotes."""
    out: list[tuple[str, str | None]] = []
    i = 0
    n = len(text)
    ws = " \t"
    while i < n and text[i] in ws:
        i += 1
    while i < n:
        if text[i] != ";":
            raise SipSyntaxError("parameters must start with ';'")
        i += 1
        while i < n and text[i] in ws:
            i += 1
        j = i
        while j < n and text[j] not in "=; \t":
            j += 1
        name = text[i:j]
        if not is_token(name):
            raise SipSyntaxError(f"bad parameter name {name!r}")
        while j < n and text[j] in ws:
            j += 1
        value: str | None = None
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j] in ws:
                j += 1
            if j < n and text[j] == '"':
                _, end = _read_quoted(text, j)
                value = text[j:end]
                j = end
            else:
                k = j
                while k < n and text[k] not in "; \t":
                    k += 1
                value = text[j:k]
                if not value:
                    raise SipSyntaxError(f"empty value for parameter {name!r}")
                j = k
            while j < n and text[j] in ws:
                j += 1
        out.append((name.lower(), value))
        i = j
    return tuple(out)


def format_params(params: Params) -> str:
    """Render parameters as ``;a=b;c``."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def _param(params: Params, name: str) -> str | None:
    for key, value in params:
        if key == name:
            return "" if value is None else value
    return None


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From/To/Contact/Route value: optional display name, URI and header parameters."""

    uri: URI
    display_name: str | None = None
    params: Params = ()
    wildcard: bool = False  # "Contact: *"

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse name-addr or addr-spec form; raise SipSyntaxError if invalid."""
        return parse_name_addr(text)

    def param(self, name: str) -> str | None:
        """A header parameter such as ``tag`` or ``expires`` (``""`` for a flag)."""
        return _param(self.params, name)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter, if any."""
        return _param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        """Copy carrying ``tag`` (replacing any existing one)."""
        return self.with_params(tag=tag)

    def with_params(self, **values: str | None) -> NameAddr:
        """Copy with header parameters replaced/added."""
        kept = tuple((k, v) for k, v in self.params if k not in values)
        return replace(self, params=kept + tuple(values.items()))

    def without_tag(self) -> NameAddr:
        """Copy without the ``tag`` parameter."""
        return replace(self, params=tuple((k, v) for k, v in self.params if k != "tag"))

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        display = f"{quote(self.display_name)} " if self.display_name is not None else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


WILDCARD_CONTACT = NameAddr(URI("sip", host="*"), wildcard=True)


def parse_name_addr(text: str) -> NameAddr:
    """Parse a name-addr / addr-spec header value; raise SipSyntaxError if invalid."""
    # Only short values are cached, so a peer cannot pin large strings in memory.
    return _parse_name_addr_cached(text) if len(text) <= CACHE_LIMIT else _parse_name_addr(text)


@functools.lru_cache(maxsize=8192)
def _parse_name_addr_cached(text: str) -> NameAddr:
    return _parse_name_addr(text)


def _parse_name_addr(text: str) -> NameAddr:
    text = text.strip()
    if text == "*":
        return WILDCARD_CONTACT
    display: str | None = None
    rest = text
    if text.startswith('"'):
        display, end = _read_quoted(text, 0)
        rest = text[end:].lstrip()
        if not rest.startswith("<"):
            raise SipSyntaxError("quoted display name without <URI>")
    lt = rest.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            words = rest[:lt].split()
            if not all(is_token(w) for w in words):
                raise SipSyntaxError("display name must be tokens or a quoted string")
            display = " ".join(words)
        gt = rest.find(">", lt)
        if gt < 0:
            raise SipSyntaxError("unterminated <URI>")
        uri_text = rest[lt + 1 : gt]
        if uri_text != uri_text.strip() or not uri_text:
            raise SipSyntaxError("whitespace inside <URI>")
        tail = rest[gt + 1 :].strip()
        if tail and not tail.startswith(";"):
            raise SipSyntaxError("garbage after <URI>")
    else:
        # addr-spec: parameters after the URI belong to the header, not the URI (§20.10).
        # The user part may hold ';' (RFC 4475 "intmeth"), so look only past the last '@'.
        semi = rest.find(";", rest.rfind("@") + 1)
        uri_text, tail = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
        uri_text = uri_text.strip()
        if not uri_text or " " in uri_text or "\t" in uri_text:
            raise SipSyntaxError("bad addr-spec")
    return NameAddr(parse_uri(uri_text), display, parse_params(tail))


@dataclass(frozen=True, slots=True)
class Via:
    """One Via header value (``SIP/2.0/UDP host:port;branch=...``)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via value; raise SipSyntaxError if invalid."""
        return parse_via(text)

    def param(self, name: str) -> str | None:
        """A Via parameter (``""`` for a flag such as an empty ``rport``)."""
        return _param(self.params, name)

    @property
    def branch(self) -> str | None:
        """The branch parameter."""
        return _param(self.params, "branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """(host, port) as the sender wrote them."""
        return self.host, self.port

    @property
    def received(self) -> str | None:
        """The ``received`` parameter set by the receiving hop."""
        return _param(self.params, "received")

    @property
    def rport(self) -> int | None:
        """The filled-in ``rport`` value (None when absent or still empty)."""
        value = _param(self.params, "rport")
        return int(value) if value else None

    @property
    def wants_rport(self) -> bool:
        """Whether the sender asked for symmetric response routing (RFC 3581)."""
        return any(k == "rport" for k, _ in self.params)

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter."""
        return _param(self.params, "maddr")

    @property
    def reliable(self) -> bool:
        """Whether the transport named in this Via is reliable (everything but UDP)."""
        return self.transport != "UDP"

    def with_params(self, **values: str | None) -> Via:
        """Copy with parameters replaced/added, keeping the others in order."""
        out: list[tuple[str, str | None]] = []
        for key, value in self.params:
            if key in values:
                out.append((key, values.pop(key)))
            else:
                out.append((key, value))
        return replace(self, params=tuple(out) + tuple(values.items()))

    def __str__(self) -> str:
        host = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {host}{format_params(self.params)}"


_VIA_PROTO_RE = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+", re.IGNORECASE)


def parse_via(text: str) -> Via:
    """Parse one Via value; raise SipSyntaxError if invalid."""
    # Only short values are cached, so a peer cannot pin large strings in memory.
    return _parse_via_cached(text) if len(text) <= CACHE_LIMIT else _parse_via(text)


@functools.lru_cache(maxsize=8192)
def _parse_via_cached(text: str) -> Via:
    return _parse_via(text)


def _parse_via(text: str) -> Via:
    m = _VIA_PROTO_RE.match(text)
    if m is None:
        raise SipSyntaxError(f"bad Via {text[:80]!r}")
    rest = text[m.end() :]
    semi = rest.find(";")
    hostport, ptext = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
    # Comments in Via are legal but unused; drop them rather than fail.
    paren = hostport.find("(")
    if paren >= 0:
        hostport = hostport[:paren]
    hostport = "".join(hostport.split())
    host, port = split_host_port(hostport)
    params = parse_params(ptext)
    for key, value in params:
        if key == "branch" and not value:
            raise SipSyntaxError("empty Via branch")
        if key == "rport" and value is not None and (not is_digits(value) or int(value) > 65535):
            raise SipSyntaxError("bad Via rport")
    return Via(m.group(1).upper(), host, port, params)


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq value: sequence number and method."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(text: str) -> CSeq:
    """Parse ``<number> <METHOD>``; the number must be below 2**31 (RFC 3261 §8.1.1.5)."""
    # Only short values are cached, so a peer cannot pin large strings in memory.
    return _parse_cseq_cached(text) if len(text) <= CACHE_LIMIT else _parse_cseq(text)


@functools.lru_cache(maxsize=4096)
def _parse_cseq_cached(text: str) -> CSeq:
    return _parse_cseq(text)


def _parse_cseq(text: str) -> CSeq:
    parts = text.split()
    if len(parts) != 2 or not is_digits(parts[0]) or not is_token(parts[1]):
        raise SipSyntaxError(f"bad CSeq {text[:80]!r}")
    seq = int(parts[0])
    if len(parts[0]) > 10 or seq >= 2**31:
        raise SipSyntaxError("CSeq number too large")
    return CSeq(seq, parts[1])
