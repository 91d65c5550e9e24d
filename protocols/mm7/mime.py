"""The MIME side of MM7: a SOAP envelope and the message content in `multipart/related`
(SOAP 1.1 with attachments), built and read with the standard library's `email` package."""

from __future__ import annotations

import base64
import codecs
import io
import secrets
from dataclasses import dataclass
from email import errors as email_errors
from email import policy
from email.generator import BytesGenerator
from email.message import EmailMessage, Message
from email.parser import BytesParser

from protocols.mm7.messages import Part

_POLICY = policy.HTTP
# Reading uses compat32: plain string headers, several times faster than the structured
# header registry on multi-part bodies, and the same defects are recorded.
_READ_POLICY = policy.compat32
SOAP_CID = "mm7-soap"
CONTENT_CID = "mm7-content"
# Structural defects that make a multipart body unreadable as sent.
_FATAL_DEFECTS = (
    email_errors.NoBoundaryInMultipartDefect,
    email_errors.StartBoundaryNotFoundDefect,
    email_errors.CloseBoundaryNotFoundDefect,
    email_errors.MultipartInvariantViolationDefect,
    email_errors.InvalidBase64PaddingDefect,
    email_errors.InvalidBase64CharactersDefect,
    email_errors.InvalidBase64LengthDefect,
)
_MAX_DEPTH = 4


class MimeProblem(Exception):
    """The body is not a readable MM7 HTTP body (internal to the codec: decode() never raises)."""


@dataclass(frozen=True, slots=True)
class Unpacked:
    """A body taken apart: the SOAP envelope bytes and the other parts by Content-ID."""

    soap: bytes
    parts: dict[str, Message]


def _boundary() -> str:
    return "=_mm7_" + secrets.token_hex(12)


def _leaf(part: Part, text_cte: str) -> EmailMessage:
    msg = EmailMessage(policy=_POLICY)
    ctype = part.content_type
    if part.charset:
        ctype += f'; charset="{part.charset}"'
    msg["Content-Type"] = ctype
    msg["Content-ID"] = f"<{part.content_id}>"
    if part.location:
        msg["Content-Location"] = part.location
    if part.content_type.startswith("text/") or part.content_type == "application/smil":
        if text_cte == "base64":
            msg["Content-Transfer-Encoding"] = "base64"
            msg.set_payload(base64.encodebytes(part.data).decode("ascii"))
        else:
            msg["Content-Transfer-Encoding"] = "8bit"
            msg.set_payload(part.data.decode("ascii", "surrogateescape"))
    else:
        msg["Content-Transfer-Encoding"] = "base64"
        msg.set_payload(base64.encodebytes(part.data).decode("ascii"))
    return msg


def _flatten(msg: EmailMessage) -> bytes:
    buf = io.BytesIO()
    BytesGenerator(buf, policy=_POLICY).flatten(msg)
    return buf.getvalue()


def pack(soap: bytes, content: tuple[Part, ...], *, smil_first: bool,
         text_cte: str = "8bit", boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) of a SOAP envelope with the message content attached.

    The content is one `multipart/related` part (`multipart/mixed` without SMIL) whose
    Content-ID the envelope's `<Content href="cid:mm7-content"/>` names.
    """
    outer_boundary = boundary or _boundary()
    inner = EmailMessage(policy=_POLICY)
    inner_type = (f'multipart/related; type="application/smil"; start="<{content[0].content_id}>"'
                  if smil_first else "multipart/mixed")
    inner["Content-Type"] = f'{inner_type}; boundary="{_boundary()}"'
    inner["Content-ID"] = f"<{CONTENT_CID}>"
    inner.set_payload([_leaf(p, text_cte) for p in content])
    envelope = EmailMessage(policy=_POLICY)
    envelope["Content-Type"] = 'text/xml; charset="utf-8"'
    envelope["Content-ID"] = f"<{SOAP_CID}>"
    envelope["Content-Transfer-Encoding"] = "8bit"
    envelope.set_payload(soap.decode("ascii", "surrogateescape"))
    outer = EmailMessage(policy=_POLICY)
    ctype = (f'multipart/related; boundary="{outer_boundary}"; type="text/xml"; '
             f'start="<{SOAP_CID}>"')
    outer["Content-Type"] = ctype
    outer.set_payload([envelope, inner])
    raw = _flatten(outer)
    _headers, _, body = raw.partition(b"\r\n\r\n")
    return ctype, body


def _parse(content_type: str, body: bytes) -> Message:
    header = content_type.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")
    return BytesParser(policy=_READ_POLICY).parsebytes(b"Content-Type: " + header + b"\r\n\r\n" + body)


def _check(msg: Message) -> None:
    for d in msg.defects:
        if isinstance(d, _FATAL_DEFECTS):
            raise MimeProblem(f"malformed MIME body: {type(d).__name__}")


def _cid(msg: Message) -> str | None:
    raw = msg.get("Content-ID")
    if raw is None:
        return None
    return str(raw).strip().strip("<>").strip() or None


def payload_bytes(msg: Message) -> bytes:
    """A leaf part's bytes after its Content-Transfer-Encoding (bad base64 refused)."""
    cte = str(msg.get("Content-Transfer-Encoding", "binary")).strip().lower()
    if cte not in ("7bit", "8bit", "binary", "base64", "quoted-printable"):
        raise MimeProblem(f"unknown Content-Transfer-Encoding {cte!r}")
    data = msg.get_payload(decode=True)
    _check(msg)
    if not isinstance(data, bytes):
        raise MimeProblem("a leaf part has no body")
    return data


def unpack(content_type: str, body: bytes) -> Unpacked:
    """Find the SOAP envelope of a text/xml or multipart/related body; raise MimeProblem."""
    msg = _parse(content_type, body)
    ctype = msg.get_content_type()
    if ctype in ("text/xml", "application/soap+xml"):
        return Unpacked(body, {})
    if ctype != "multipart/related":
        raise MimeProblem(f"an MM7 body is text/xml or multipart/related, not {ctype}")
    _check(msg)
    parts = msg.get_payload()
    if not isinstance(parts, list) or not parts:
        raise MimeProblem("multipart/related without parts")
    start = msg.get_param("start")
    start_cid = str(start).strip().strip("<>") if isinstance(start, str) else None
    by_cid: dict[str, Message] = {}
    soap: Message | None = None
    for i, part in enumerate(parts):
        if not isinstance(part, Message):
            raise MimeProblem("malformed part")
        _check(part)
        cid = _cid(part)
        if (start_cid is not None and cid == start_cid) or (start_cid is None and i == 0):
            soap = part
        elif cid is not None:
            by_cid[cid] = part
    if soap is None:
        raise MimeProblem("the start part named by the Content-Type is missing")
    if soap.get_content_type() not in ("text/xml", "application/soap+xml"):
        raise MimeProblem("the SOAP part is not text/xml")
    return Unpacked(payload_bytes(soap), by_cid)


def _leaves(msg: Message, depth: int, out: list[Part]) -> None:
    if depth > _MAX_DEPTH:
        raise MimeProblem("content nested too deeply")
    _check(msg)
    if msg.is_multipart():
        children = msg.get_payload()
        if not isinstance(children, list):
            raise MimeProblem("malformed multipart content")
        for child in children:
            if not isinstance(child, Message):
                raise MimeProblem("malformed part")
            _leaves(child, depth + 1, out)
        return
    ctype = msg.get_content_type()
    data = payload_bytes(msg)
    charset_raw = msg.get_param("charset")
    charset = str(charset_raw) if isinstance(charset_raw, str) else None
    if ctype.startswith("text/") or ctype == "application/smil":
        name = charset or "us-ascii"
        try:
            codecs.lookup(name)
            data.decode(name)
        except LookupError:
            raise MimeProblem(f"unknown charset {name!r}") from None
        except UnicodeDecodeError:
            raise MimeProblem(f"a {ctype} part is not valid {name}") from None
    location = msg.get("Content-Location")
    out.append(Part(ctype, data, _cid(msg) or f"part{len(out) + 1}", charset,
                    None if location is None else str(location)))


def content_parts(unpacked: Unpacked, href: str) -> tuple[Part, ...]:
    """The parts a `<Content href="cid:...">` names (a multipart's leaves, in order)."""
    if not href.startswith("cid:"):
        raise MimeProblem(f"Content href {href!r} is not a cid: reference")
    target = unpacked.parts.get(href[4:].strip("<>"))
    if target is None:
        raise MimeProblem(f"no part has Content-ID {href[4:]!r}")
    out: list[Part] = []
    _leaves(target, 0, out)
    return tuple(out)
