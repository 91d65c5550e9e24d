"""rtpengine's NG control protocol framing: a cookie, a space, then one bencoded dictionary,
in a UDP datagram each way (`offer`, `answer`, `delete`, `query`, `ping`...). The reply
repeats the cookie. Only the bencode subset NG uses: byte strings, integers, lists and
dictionaries (keys sorted on output)."""

from __future__ import annotations

from typing import Any


class BencodeError(ValueError):
    """Not valid bencode."""


def bencode(value: Any) -> bytes:
    """Encode str/bytes/int/list/dict (str as UTF-8)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise BencodeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        out.append(b"%d:" % len(raw) + raw)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        keys = {(k.encode() if isinstance(k, str) else k): v for k, v in value.items()}
        for key in sorted(keys):
            _encode(key, out)
            _encode(keys[key], out)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one value (byte strings stay bytes; dictionary keys become str)."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError("trailing bytes after the value")
    return value


def _decode(data: bytes, i: int, depth: int) -> tuple[Any, int]:
    if depth > 64:
        raise BencodeError("nested too deeply")
    if i >= len(data):
        raise BencodeError("truncated")
    c = data[i:i + 1]
    if c == b"i":
        end = data.find(b"e", i)
        if end < 0:
            raise BencodeError("unterminated integer")
        text = data[i + 1:end]
        if not text or text.lstrip(b"-") == b"" or not text.lstrip(b"-").isdigit():
            raise BencodeError("bad integer")
        return int(text), end + 1
    if c.isdigit():
        colon = data.find(b":", i)
        if colon < 0 or not data[i:colon].isdigit():
            raise BencodeError("bad string length")
        start = colon + 1
        end = start + int(data[i:colon])
        if end > len(data):
            raise BencodeError("string beyond the data")
        return data[start:end], end
    if c == b"l":
        items = []
        i += 1
        while data[i:i + 1] != b"e":
            item, i = _decode(data, i, depth + 1)
            items.append(item)
        return items, i + 1
    if c == b"d":
        result: dict[str, Any] = {}
        i += 1
        while data[i:i + 1] != b"e":
            key, i = _decode(data, i, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError("dictionary key is not a string")
            result[key.decode(errors="replace")], i = _decode(data, i, depth + 1)
        return result, i + 1
    raise BencodeError(f"unexpected byte {c!r}")


def ng_request(cookie: str, message: dict[str, Any]) -> bytes:
    """One NG datagram."""
    return cookie.encode() + b" " + bencode(message)


def ng_reply(data: bytes) -> tuple[str, dict[str, Any]]:
    """(cookie, dictionary) of an NG reply."""
    cookie, sep, body = data.partition(b" ")
    if not sep:
        raise BencodeError("no cookie")
    value = bdecode(body)
    if not isinstance(value, dict):
        raise BencodeError("NG reply is not a dictionary")
    return cookie.decode(errors="replace"), value
