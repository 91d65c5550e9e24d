"""SIP requests and responses: parsing from bytes, serialising, building responses."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from protocols.sip.errors import MalformedMessage, SipSyntaxError
from protocols.sip.headers import (
    LIST_HEADERS,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    header_key,
    is_digits,
    is_token,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_values,
)
from protocols.sip.uri import URI, parse_uri

SIP_VERSION = "SIP/2.0"
MAGIC_COOKIE = "z9hG4bK"

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    429: "Provide Referrer Identity", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied to incoming messages."""

    max_message: int = 65535
    max_headers: int = 128
    max_line: int = 16384  # RFC 4475 "longreq" has ~8 KB header lines


DEFAULT_LIMITS = Limits()


class Headers:
    """Ordered, case-insensitive multi-map of header lines; values stay raw strings."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        # (lowercase key, display name, raw value) per header line
        self._items: list[tuple[str, str, str]] = []
        for name, value in items or ():
            self.add(name, value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """Raw value of the first header line called ``name``."""
        key = header_key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """All values of ``name``: every line, split on commas for list-valued headers."""
        key = header_key(name)
        values = [v for k, _, v in self._items if k == key]
        if key in LIST_HEADERS:
            return [part for v in values for part in split_values(v)]
        return values

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        name = canonical_name(name)
        self._items.append((name.lower(), name, value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before the first line of the same name (or at the top)."""
        name = canonical_name(name)
        key = name.lower()
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items.insert(i, (key, name, value))
                return
        self._items.insert(0, (key, name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line called ``name`` with one line holding ``value``."""
        name = canonical_name(name)
        key = name.lower()
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, name, value)
                self._items[i + 1 :] = [item for item in self._items[i + 1 :] if item[0] != key]
                return
        self._items.append((key, name, value))

    def remove(self, name: str) -> None:
        """Delete every line called ``name``."""
        key = header_key(name)
        self._items = [item for item in self._items if item[0] != key]

    def pop_first(self, name: str) -> str | None:
        """Remove the first list element of ``name`` (e.g. the top Via) and return it."""
        key = header_key(name)
        for i, (k, display, v) in enumerate(self._items):
            if k == key:
                parts = split_values(v) if key in LIST_HEADERS else [v]
                if len(parts) <= 1:
                    del self._items[i]
                else:
                    self._items[i] = (k, display, ", ".join(parts[1:]))
                return parts[0] if parts else None
        return None

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first list element of ``name`` (e.g. stamp the top Via)."""
        if self.pop_first(name) is not None:
            self.prepend(name, value)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(k == key for k, _, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for _, name, value in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        """Shallow copy (values are immutable strings)."""
        new = Headers()
        new._items = list(self._items)
        return new

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _, n, v in self._items]!r})"


class Message:
    """Common part of requests and responses; header values are parsed on access."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipSyntaxError(f"missing {name}")
        return value

    @property
    def call_id(self) -> str:
        """The Call-ID value."""
        return self._required("Call-ID")

    @property
    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        return parse_cseq(self._required("CSeq"))

    @property
    def from_(self) -> NameAddr:
        """The parsed From header."""
        return parse_name_addr(self._required("From"))

    @property
    def to(self) -> NameAddr:
        """The parsed To header."""
        return parse_name_addr(self._required("To"))

    @property
    def from_tag(self) -> str | None:
        """The From tag."""
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        """The To tag (None outside a dialog)."""
        return self.to.tag

    @property
    def top_via(self) -> Via:
        """The first Via value."""
        first = self._required("Via")
        if "," in first:
            first = split_values(first)[0]
        return parse_via(first)

    @property
    def vias(self) -> list[Via]:
        """All Via values, top first."""
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @property
    def contacts(self) -> list[NameAddr]:
        """All Contact values."""
        return [parse_name_addr(v) for v in self.headers.get_all("Contact")]

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route values in message order."""
        return [parse_name_addr(v) for v in self.headers.get_all("Record-Route")]

    @property
    def content_type(self) -> str | None:
        """Media type without parameters, lowercased."""
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value is not None else None

    def start_line(self) -> str:
        """The request line or status line."""
        raise NotImplementedError

    def encode(self) -> bytes:
        """Serialise; Content-Length always reflects ``body``."""
        lines = [self.start_line()]
        for _, name, value in self.headers._items:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.encode()


class Request(Message):
    """A SIP request."""

    __slots__ = ("method", "uri")

    def __init__(
        self, method: str, uri: URI, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def copy(self) -> Request:
        """Independent copy (headers list copied; values are immutable)."""
        return Request(self.method, self.uri, self.headers.copy(), self.body)

    def start_line(self) -> str:
        """``METHOD uri SIP/2.0``."""
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("reason", "status")

    def __init__(
        self, status: int, reason: str = "", headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason or REASON_PHRASES.get(status, "")

    def start_line(self) -> str:
        """``SIP/2.0 code reason``."""
        return f"{SIP_VERSION} {self.status} {self.reason}"

    @property
    def method(self) -> str:
        """Method of the request this answers (from CSeq)."""
        return self.cseq.method

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


_REQUIRED = ("via", "from", "to", "call-id", "cseq")
# No leading [ \t]* here: on long blank runs it would backtrack quadratically.
_FOLD_RE = re.compile(r"\n[ \t]+")
_HEADER_RE = re.compile(r"\n([^:\n]*):([^\n]*)")
# Raw header name as received -> (lookup key, display name); names repeat across messages.
_NAMES: dict[str, tuple[str, str]] = {}


def _name_entry(raw: str) -> tuple[str, str] | None:
    name = raw.rstrip(" \t")
    if not is_token(name):
        return None
    canonical = canonical_name(name)
    entry = (canonical.lower(), canonical)
    if len(_NAMES) < 4096 and len(raw) <= 64:  # bounded: a peer must not grow it
        _NAMES[raw] = entry
    return entry
_SINGLETONS = ("from", "to", "call-id", "cseq", "max-forwards")


def _find_head_end(data: bytes | bytearray) -> tuple[int, int]:
    """(index of the blank line, its length), or (-1, 0) when absent."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    if crlf >= 0:
        return crlf, 4
    return -1, 0


def parse_message(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, stream: bool = False
) -> Request | Response:
    """Parse one complete message; raise MalformedMessage (and only that) on bad input.

    ``stream`` makes Content-Length mandatory (RFC 3261 §18.3); on datagrams bytes past
    Content-Length are discarded.
    """
    try:
        return _parse(data, limits, stream)
    except MalformedMessage:
        raise
    except (ValueError, IndexError, UnicodeError, OverflowError) as exc:
        # Defensive net: grammar corner cases must still surface as the typed error.
        raise MalformedMessage(f"unparseable: {exc}") from exc


def _parse(data: bytes, limits: Limits, stream: bool) -> Request | Response:
    if len(data) > limits.max_message:
        raise MalformedMessage("message too large")
    data = data.lstrip(b"\r\n")
    end, sep = _find_head_end(data)
    if end < 0:
        head_bytes, body = data, b""
    else:
        head_bytes, body = data[:end], data[end + sep :]
    head = head_bytes.decode("utf-8", "surrogateescape")
    if "\r" in head:
        head = head.replace("\r\n", "\n")
    if "\n " in head or "\n\t" in head:
        head = _FOLD_RE.sub(" ", head)  # header folding: CRLF + whitespace is one space
    lines = head.split("\n")
    if not lines[0].strip():
        raise MalformedMessage("empty message")
    if len(lines) > limits.max_headers + 1:
        raise MalformedMessage("too many headers")

    errors: list[str] = []
    status = 400
    start = lines[0]
    if len(start) > limits.max_line:
        raise MalformedMessage("start line too long")
    is_response = start.startswith("SIP/")

    headers = Headers()
    items = headers._items
    names = _NAMES
    # One C-level pass pulls (name, value) out of every line that has a colon.
    pairs = _HEADER_RE.findall(head)
    if len(pairs) != len(lines) - 1:
        errors.append("bad header line")
    max_line = limits.max_line
    for name, value in pairs:
        if len(value) > max_line:
            raise MalformedMessage("header line too long")
        entry = names.get(name)
        if entry is None:
            entry = _name_entry(name)
            if entry is None:
                errors.append(f"bad header name {name[:40]!r}")
                continue
        items.append((entry[0], entry[1], value.strip()))

    keys = [key for key, _, _ in items]
    present = set(keys)
    for key in _SINGLETONS:
        if keys.count(key) > 1:
            errors.append(f"repeated {key} header")
    if is_response:
        parts = start.split(" ", 2)
        if (
            len(parts) < 2
            or parts[0] != SIP_VERSION
            or len(parts[1]) != 3
            or not is_digits(parts[1])
            or not 100 <= int(parts[1]) <= 699
        ):
            raise MalformedMessage("bad status line")
        message: Request | Response = Response(
            int(parts[1]), parts[2] if len(parts) > 2 else "", headers
        )
        if not errors and not all(k in present for k in _REQUIRED):
            errors.append("missing mandatory header")
        if errors:
            raise MalformedMessage(errors[0])
    else:
        parts = start.split(" ")
        method = parts[0]
        uri: URI | None = None
        if len(parts) != 3 or not is_token(method):
            errors.insert(0, "bad request line")
        elif parts[2] != SIP_VERSION:
            if parts[2].upper().startswith("SIP/"):
                errors.insert(0, "version not supported")
                status = 505
            else:
                errors.insert(0, "bad request line")
        else:
            try:
                uri = parse_uri(parts[1])
            except SipSyntaxError:
                errors.insert(0, "bad Request-URI")
        if not all(k in present for k in _REQUIRED):
            # Without these a response cannot even be addressed: drop.
            raise MalformedMessage(errors[0] if errors else "missing mandatory header")
        request = Request(
            method if is_token(method) else "INVALID", uri or URI("sip", host="invalid"), headers
        )
        message = request
        if errors:
            raise _answerable(errors[0], request, status)

    try:
        _validate(message)
    except SipSyntaxError as exc:
        if isinstance(message, Request):
            raise _answerable(str(exc), message) from exc
        raise MalformedMessage(str(exc)) from exc

    lengths = {v for k, _, v in items if k == "content-length"}
    if lengths:
        if len(lengths) > 1:
            _fail(message, "conflicting Content-Length")
        text = lengths.pop()
        if not is_digits(text) or len(text) > 9:
            _fail(message, "bad Content-Length")
        length = int(text)
        if length > len(body):
            _fail(message, "body shorter than Content-Length")
        body = body[:length]
    elif stream:
        _fail(message, "missing Content-Length on a stream transport")
    message.body = body
    return message


def _validate(message: Request | Response) -> None:
    """Parse the headers every layer relies on, so later access cannot fail."""
    cseq = message.cseq
    message.top_via  # noqa: B018 - parsing is the validation
    message.from_  # noqa: B018
    message.to  # noqa: B018
    if not message.call_id:
        raise SipSyntaxError("empty Call-ID")
    if isinstance(message, Request) and cseq.method != message.method:
        raise SipSyntaxError("CSeq method does not match request method")


def _answerable(reason: str, request: Request, status: int = 400) -> MalformedMessage:
    # Required headers are present (checked by the caller); they are copied back raw, so a
    # response is possible even when one of them is the malformed part (RFC 4475 expects it).
    return MalformedMessage(reason, request, status)


def _fail(message: Request | Response, reason: str) -> None:
    if isinstance(message, Request):
        raise _answerable(reason, message)
    raise MalformedMessage(reason)


def make_response(
    request: Request,
    status: int,
    reason: str = "",
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """Build a response copying Via/From/To/Call-ID/CSeq (§8.2.6); add ``to_tag`` if none."""
    out = Headers()
    src = request.headers._items
    for key, name, value in src:
        if key == "via":
            out._items.append((key, name, value))
    for key in ("from", "to", "call-id", "cseq"):
        for k, name, value in src:
            if k == key:
                if key == "to" and to_tag is not None and status > 100:
                    try:
                        has_tag = parse_name_addr(value).tag is not None
                    except SipSyntaxError:
                        has_tag = True
                    if not has_tag:
                        value = f"{value};tag={to_tag}"
                out._items.append((k, name, value))
                break
    if status == 100:
        timestamp = request.headers.get("Timestamp")
        if timestamp is not None:
            out.add("Timestamp", timestamp)
    for name, value in headers or ():
        out.add(name, value)
    return Response(status, reason, out, body)


def make_request(
    method: str,
    uri: URI,
    *,
    via: str,
    from_: NameAddr,
    to: NameAddr,
    call_id: str,
    cseq: int,
    contact: str | None = None,
    max_forwards: int = 70,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Request:
    """A new out-of-dialog request (§8.1.1); ``via`` is the full top Via value with branch."""
    h = Headers()
    h.add("Via", via)
    h.add("Max-Forwards", str(max_forwards))
    h.add("From", str(from_))
    h.add("To", str(to))
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        h.add("Contact", contact)
    for name, value in headers or ():
        h.add(name, value)
    return Request(method, uri, h, body)


class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages using Content-Length (RFC 3261 §18.3).

    ``feed`` returns parsed messages and MalformedMessage items in order. After a framing
    error (missing/bad Content-Length, oversized head) ``broken`` is set: the caller should
    answer what it can and close the connection, since message boundaries are lost.
    """

    _CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\S*)[ \t]*\r?$", re.I | re.M)

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        self._limits = limits
        self.broken = False
        self.messages = 0  # framed so far (a connection that never completes one is suspect)

    def feed(self, data: bytes) -> list[Request | Response | MalformedMessage]:
        """Add received bytes; return every message completed by them."""
        out: list[Request | Response | MalformedMessage] = []
        if self.broken:
            return out
        self._buf += data
        buf = self._buf
        while True:
            # CRLF keep-alives (RFC 5626) between messages are skipped.
            skip = 0
            while skip < len(buf) and buf[skip] in (13, 10):
                skip += 1
            if skip:
                del buf[:skip]
            if not buf:
                return out
            end, sep = _find_head_end(buf)
            if end < 0:
                if len(buf) > self._limits.max_message:
                    self._break(out, "message head too large", bytes(buf))
                return out
            head = bytes(buf[:end])
            lengths = self._CL_RE.findall(head)
            if not lengths:
                self._break(out, "missing Content-Length on a stream transport", head)
                return out
            text = lengths[0]
            if not text.isdigit() or len(text) > 9 or any(x != text for x in lengths):
                self._break(out, "bad Content-Length", head)
                return out
            total = end + sep + int(text)
            if total > self._limits.max_message:
                self._break(out, "message too large", head)
                return out
            if len(buf) < total:
                return out
            frame = bytes(buf[:total])
            del buf[:total]
            self.messages += 1
            try:
                out.append(parse_message(frame, self._limits, stream=True))
            except MalformedMessage as exc:
                out.append(exc)

    def _break(
        self, out: list[Request | Response | MalformedMessage], reason: str, head: bytes
    ) -> None:
        self.broken = True
        self._buf.clear()
        request: Request | None = None
        try:
            parsed = parse_message(head[: self._limits.max_message])
        except MalformedMessage as exc:
            request = exc.request
        else:
            request = parsed if isinstance(parsed, Request) else None
        error = MalformedMessage(reason) if request is None else _answerable(reason, request)
        out.append(error)


class IdGenerator:
    """Makes branches, tags and Call-IDs from an injectable random-bytes source."""

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random_bytes

    def branch(self) -> str:
        """A new RFC 3261 branch (magic cookie + 64 random bits)."""
        return MAGIC_COOKIE + self._random(8).hex()

    def tag(self) -> str:
        """A new From/To tag (48 random bits)."""
        return self._random(6).hex()

    def call_id(self, host: str | None = None) -> str:
        """A new Call-ID, optionally ``@host``."""
        value = self._random(12).hex()
        return f"{value}@{host}" if host else value

    def token(self, nbytes: int = 8) -> str:
        """Random hex (cnonces and the like)."""
        return self._random(nbytes).hex()


def make_cancel(request: Request) -> Request:
    """CANCEL for ``request`` (§9.1): same Request-URI, top Via, From, To, Call-ID, Route."""
    headers = Headers()
    headers.add("Via", request.headers.get_all("Via")[0])
    for name in ("Max-Forwards", "From", "To", "Call-ID"):
        value = request.headers.get(name)
        if value is not None:
            headers.add(name, value)
    headers.add("CSeq", f"{request.cseq.seq} CANCEL")
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    return Request("CANCEL", request.uri, headers)


def make_non2xx_ack(request: Request, response: Response) -> Request:
    """Hop-by-hop ACK for a non-2xx final response (§17.1.1.3): same branch as the INVITE."""
    headers = Headers()
    headers.add("Via", request.headers.get_all("Via")[0])
    headers.add("Max-Forwards", "70")
    for name in ("From", "Call-ID"):
        headers.add(name, request._required(name))
    headers.add("To", response._required("To"))
    headers.add("CSeq", f"{request.cseq.seq} ACK")
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    return Request("ACK", request.uri, headers)
