"""What the control API answers when the fault is not the request's: the database away (503
with Retry-After), a body that never finishes arriving (408), a client that went away.

Two middlewares around the framework's `request_middleware`: `outage_errors` (inside it) turns
these faults into `DomainError`s, which the framework renders as problem+json and counts;
`outage_headers` (outside it) adds `Retry-After` and closes connections whose body was cut.
"""

from __future__ import annotations

import asyncio

import aiohttp
import structlog
from aiohttp import web

from handlers.api.context import CTX
from handlers.api.framework import Handler, problem
from handlers.errors import DomainError
from handlers.outage import describe, is_outage

log = structlog.get_logger("telgate.api")

RETRY_AFTER_SECONDS = 2
CLIENT_CLOSED = 499  # nginx's "client closed request": never sent, but counted apart from 5xx
_FAULT = web.RequestKey("telgate_fault", str)


class BodyTimeout(Exception):
    """The request body did not arrive within api.body_timeout_seconds."""


def _database_unavailable() -> DomainError:
    return DomainError("database_unavailable",
                       "the database is unavailable; retry after the time in Retry-After",
                       status=503)


@web.middleware
async def outage_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Inside the framework's middleware: map outage, body-timeout and abort faults to codes."""
    ctx = request.app[CTX]
    timer: asyncio.TimerHandle | None = None
    content = request.content
    if request.body_exists and not content.is_eof():
        def expire() -> None:
            if not content.is_eof():
                content.set_exception(BodyTimeout())

        timer = asyncio.get_running_loop().call_later(ctx.config.api.body_timeout_seconds, expire)
    try:
        return await handler(request)
    except BodyTimeout:
        request[_FAULT] = "body_timeout"
        raise DomainError(
            "body_timeout",
            f"the body did not arrive within {ctx.config.api.body_timeout_seconds:g} s",
            status=408) from None
    except (ConnectionResetError, aiohttp.ClientPayloadError) as exc:
        if request.transport is not None and not request.transport.is_closing():
            if isinstance(exc, aiohttp.ClientPayloadError):  # bad chunking or compression
                request[_FAULT] = "client_closed"  # close: the stream cannot be trusted
                raise DomainError("malformed_body", f"the body could not be read: {exc}",
                                  status=400) from None
            ctx.db.failed(exc)  # the client is there: the reset came from the database
            request[_FAULT] = "database"
            raise _database_unavailable() from exc
        request[_FAULT] = "client_closed"
        raise DomainError("client_closed_request", "the client closed the connection",
                          status=CLIENT_CLOSED) from None
    except (DomainError, web.HTTPException):
        raise
    except Exception as exc:
        if not is_outage(exc):
            raise
        if not ctx.db.is_down:
            log.error("database_unavailable", error=describe(exc))
        ctx.db.failed(exc)
        request[_FAULT] = "database"
        raise _database_unavailable() from exc
    finally:
        if timer is not None:
            timer.cancel()


async def _database_away(request: web.Request) -> bool:
    ctx = request.app[CTX]
    if ctx.db.is_down:
        return True
    try:
        async with ctx.pool.acquire(timeout=1) as conn:
            await conn.fetchval("SELECT 1", timeout=1)
    except Exception as exc:
        if is_outage(exc) or isinstance(exc, TimeoutError):
            ctx.db.failed(exc)
            return True
        raise
    return False


@web.middleware
async def outage_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside the framework's middleware: Retry-After on 503s, close after a cut body.

    A 500 met while authenticating (before `outage_errors` runs) is re-checked: if the
    database is away it becomes the same 503.
    """
    response = await handler(request)
    fault = request.get(_FAULT)
    if response.status == 500 and fault is None and await _database_away(request):
        fault = "database"
        response = problem(503, "database_unavailable",
                           "the database is unavailable; retry after the time in Retry-After",
                           request_id=response.headers.get("X-Request-Id"))
    if fault == "database":
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    elif fault in ("body_timeout", "client_closed"):
        response.force_close()
    return response
