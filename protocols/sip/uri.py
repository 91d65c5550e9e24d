"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), parsed into frozen values."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace

from protocols.sip.errors import SipSyntaxError

Params = tuple[tuple[str, str | None], ...]
CACHE_LIMIT = 512  # longest text kept in the parse caches (here and in headers.py)

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
# Hostname, IPv4 or bracketed IPv6; permissive on label shape. Keep every pattern here
# free of nested quantifiers: a backtracking host regex let one datagram burn 20 s of CPU.
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-.]*\Z|\[[0-9A-Fa-f:.]+\]\Z")
_PORT_RE = re.compile(r"[0-9]{1,5}\Z")
# user / password / param characters: unreserved, escaped and the RFC 3261 extra marks.
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+\Z")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*\Z")
_PARAMCHAR_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+\Z")
_HCHAR_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*\Z")
_OPAQUE_RE = re.compile(r"[^\s<>\"]+\Z")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape(text: str) -> str:
    """Decode %XX escapes (as UTF-8, lenient) in a URI component."""
    if "%" not in text:
        return text
    raw = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class URI:
    """A parsed URI; ``opaque`` holds the body of schemes other than sip/sips/tel."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = ()
    headers: Params = ()
    opaque: str | None = None

    @classmethod
    def parse(cls, text: str) -> URI:
        """Parse ``text``; raise SipSyntaxError when it is not a valid URI."""
        return parse_uri(text)

    def param(self, name: str, default: str | None = None) -> str | None:
        """Value of a URI parameter (empty string for a flag such as ``lr``)."""
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return "" if value is None else value
        return default

    def has_param(self, name: str) -> bool:
        """Whether the URI carries parameter ``name``."""
        name = name.lower()
        return any(key == name for key, _ in self.params)

    def with_params(self, **values: str | None) -> URI:
        """Copy with parameters replaced/added (None value: flag parameter)."""
        kept = tuple((k, v) for k, v in self.params if k not in values)
        return replace(self, params=kept + tuple(values.items()))

    def without_params(self, *names: str) -> URI:
        """Copy with the named parameters removed."""
        return replace(self, params=tuple((k, v) for k, v in self.params if k not in names))

    @property
    def is_sip(self) -> bool:
        """True for sip: and sips: URIs."""
        return self.scheme in ("sip", "sips")

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lowercased."""
        value = self.param("transport")
        return value.lower() if value else None

    def aor(self) -> str:
        """Canonical address-of-record (§10.3 step 5): no parameters, user unescaped."""
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{unescape(self.user or '')}"
        user = f"{unescape(self.user)}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host_port}"

    def matches(self, other: URI) -> bool:
        """URI equivalence of RFC 3261 §19.1.4 (escapes, case rules, parameter rules)."""
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if unescape(self.user or "") != unescape(other.user or ""):
            return False
        if unescape(self.password or "") != unescape(other.password or ""):
            return False
        if self.host != other.host or self.port != other.port:
            return False
        mine = {k: (v or "").lower() for k, v in self.params}
        theirs = {k: (v or "").lower() for k, v in other.params}
        for name in ("user", "ttl", "method", "maddr", "transport"):
            if mine.get(name) != theirs.get(name):
                return False  # present in one only, or different
        if any(mine[k] != theirs[k] for k in mine.keys() & theirs.keys()):
            return False
        return {k.lower(): unescape(v or "") for k, v in self.headers} == {
            k.lower(): unescape(v or "") for k, v in other.headers
        }

    @property
    def host_port(self) -> str:
        """``host`` or ``host:port``."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(self.user or "")
        else:
            if self.user is not None:
                parts.append(self.user)
                if self.password is not None:
                    parts.append(":" + self.password)
                parts.append("@")
            parts.append(self.host_port)
        for key, value in self.params:
            parts.append(f";{key}" if value is None else f";{key}={value}")
        if self.headers:
            parts.append("?" + "&".join(f"{k}={v or ''}" for k, v in self.headers))
        return "".join(parts)


def _parse_params(text: str, what: str) -> Params:
    out: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not _PARAMCHAR_RE.match(name) or (eq and not _PARAMCHAR_RE.match(value)):
            raise SipSyntaxError(f"bad {what} parameter {item!r}")
        out.append((name.lower(), value if eq else None))
    return tuple(out)


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 references in brackets); validate both parts."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipSyntaxError("unterminated IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipSyntaxError("garbage after IPv6 reference")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_str = text.partition(":")
        port_text = port_str if colon else None
    if not _HOST_RE.match(host):
        raise SipSyntaxError(f"bad host {host!r}")
    port: int | None = None
    if port_text is not None:
        if not _PORT_RE.match(port_text) or int(port_text) > 65535:
            raise SipSyntaxError(f"bad port {port_text!r}")
        port = int(port_text)
    return host.lower(), port


def parse_uri(text: str) -> URI:
    """Parse a URI; raise SipSyntaxError if invalid."""
    # URIs repeat across a call's messages and URI values are immutable, so short ones are
    # cached; long ones are not, so a peer cannot pin large strings in memory.
    return _parse_uri_cached(text) if len(text) <= CACHE_LIMIT else _parse_uri(text)


@functools.lru_cache(maxsize=8192)
def _parse_uri_cached(text: str) -> URI:
    return _parse_uri(text)


def _parse_uri(text: str) -> URI:
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.match(scheme) or not rest:
        raise SipSyntaxError(f"bad URI {text[:80]!r}")
    scheme = scheme.lower()
    if scheme == "tel":
        number, _, ptext = rest.partition(";")
        if not number or not _PARAMCHAR_RE.match(number):
            raise SipSyntaxError("bad tel URI")
        return URI(scheme, user=number, params=_parse_params(ptext, "tel") if ptext else ())
    if scheme not in ("sip", "sips"):
        if not _OPAQUE_RE.match(rest):
            raise SipSyntaxError("bad absolute URI")
        return URI(scheme, opaque=rest)

    # '@' cannot appear unescaped after the userinfo, while '?' and ';' can appear inside it
    # (RFC 4475 "intmeth"), so the last '@' is the only safe first cut.
    user: str | None = None
    password: str | None = None
    at = rest.rfind("@")
    body = rest
    if at >= 0:
        userinfo, body = rest[:at], rest[at + 1 :]
        # A password is introduced by the first ':' in userinfo; ';' is legal in the user part.
        u, pcolon, pw = userinfo.partition(":")
        if not _USER_RE.match(u):
            raise SipSyntaxError(f"bad URI user {u!r}")
        if pcolon:
            if not _PASSWORD_RE.match(pw):
                raise SipSyntaxError("bad URI password")
            password = pw
        user = u
    body, qmark, htext = body.partition("?")
    headers: Params = ()
    if qmark:
        hlist: list[tuple[str, str | None]] = []
        for item in htext.split("&"):
            hname, _, hvalue = item.partition("=")
            if not hname or not _HCHAR_RE.match(hname) or not _HCHAR_RE.match(hvalue):
                raise SipSyntaxError("bad URI header")
            hlist.append((hname, hvalue))
        headers = tuple(hlist)
    hostport, semi, ptext = body.partition(";")
    host, port = split_host_port(hostport)
    params = _parse_params(ptext, "uri") if semi else ()
    return URI(scheme, user, password, host, port, params, headers)
