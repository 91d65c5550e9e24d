"""Thin asyncio adapter: POST an MM7 request to an MMSC over aiohttp, decode the answer."""

from __future__ import annotations

import base64

import aiohttp

from protocols.mm7 import codec
from protocols.mm7.messages import CancelReq, Decoded, DecodeError, ReplaceReq, SubmitReq
from protocols.mm7.versions import SchemaVersion


def basic_auth(username: str, password: str) -> str:
    """An HTTP basic Authorization header value (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class Mm7ClientError(Exception):
    """The request got no usable MM7 answer. `in_doubt`: the MMSC may have acted on it."""

    code = "mm7_client_error"

    def __init__(self, detail: str, *, in_doubt: bool, http_status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.in_doubt = in_doubt
        self.http_status = http_status


class Mm7Unreachable(Mm7ClientError):
    """No connection could be made: nothing was sent."""

    code = "mm7_unreachable"


class Mm7Timeout(Mm7ClientError):
    """No answer in time, or the connection broke after the request went out."""

    code = "mm7_timeout"


class Mm7HttpError(Mm7ClientError):
    """An HTTP error status without a SOAP answer (503/429: throttled; 401: credentials)."""

    code = "mm7_http_error"


class Mm7BadAnswer(Mm7ClientError):
    """The MMSC answered something that is not a valid MM7 response."""

    code = "mm7_bad_answer"


class Mm7Client:
    """One carrier's MMSC endpoint: schema version, credentials, extra headers, timeout."""

    def __init__(self, url: str, *, schema: SchemaVersion, mm7_version: str | None = None,
                 username: str | None = None, password: str | None = None,
                 timeout: float = 30.0, http_headers: dict[str, str] | None = None,
                 soap_headers: dict[str, str] | None = None, text_cte: str = "8bit",
                 connections: int = 10) -> None:
        self.url = url
        self.schema = schema
        self.mm7_version = mm7_version
        self.authorization = basic_auth(username, password or "") if username else None
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.http_headers = dict(http_headers or {})
        self.soap_headers = dict(soap_headers or {})
        self.text_cte = text_cte
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections))
        return self._session

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: SubmitReq | CancelReq | ReplaceReq) -> Decoded:
        """POST the request; the decoded answer (a response, an RSErrorRsp or a Fault)."""
        encoded = codec.encode(request, self.schema, self.mm7_version,
                               soap_headers=self.soap_headers, text_cte=self.text_cte)
        headers = {**encoded.headers, **self.http_headers}
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        try:
            async with self._http().post(self.url, data=encoded.body, headers=headers,
                                         timeout=self.timeout) as resp:
                body = await resp.read()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except aiohttp.ClientConnectorError as exc:
            raise Mm7Unreachable(str(exc) or type(exc).__name__, in_doubt=False) from None
        except TimeoutError:
            raise Mm7Timeout("no answer in time", in_doubt=True) from None
        except aiohttp.ClientError as exc:  # reset or closed after the request went out
            raise Mm7Timeout(str(exc) or type(exc).__name__, in_doubt=True) from None
        decoded = codec.decode(ctype, body) if body else None
        if isinstance(decoded, Decoded):
            return decoded
        if status >= 400:
            raise Mm7HttpError(f"HTTP {status}", in_doubt=status == 504, http_status=status)
        why = decoded.detail if isinstance(decoded, DecodeError) else "empty body"
        raise Mm7BadAnswer(f"HTTP {status}: {why}", in_doubt=True, http_status=status)
