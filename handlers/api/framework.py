"""The control API's plumbing: route declarations that mount *and* document, problem+json
errors, authentication, request ids, body limits and request metrics.

A route exists only through `RouteTable.add`, which both mounts it on aiohttp and records its
OpenAPI description, so the published document cannot miss a route.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import BodyPartReader, web

from handlers.api.context import CTX, KEY_CACHE_MAX, KEY_CACHE_SECONDS, PRINCIPAL, AppContext
from handlers.errors import DomainError
from handlers.tenants import Principal, authenticate, hash_key

log = structlog.get_logger("telgate.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JsonSchema = dict[str, Any]

PROBLEM = "application/problem+json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Param:
    """A path or query parameter in the OpenAPI document."""

    name: str
    where: str  # "path" | "query" | "header"
    schema: JsonSchema
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: how it is mounted and how it is documented."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: bool = True
    params: tuple[Param, ...] = ()
    body: JsonSchema | None = None
    body_content_type: str = "application/json"
    responses: Mapping[int, JsonSchema | None] = field(default_factory=dict)
    response_content_type: str = "application/json"


@dataclass(slots=True)
class RouteTable:
    """All routes of the API, mounted on an aiohttp app and rendered as OpenAPI 3.1."""

    routes: list[Route] = field(default_factory=list)

    def add(self, route: Route) -> None:
        if any(r.method == route.method and r.path == route.path for r in self.routes):
            raise ValueError(f"route declared twice: {route.method} {route.path}")
        self.routes.append(route)

    def mount(self, app: web.Application) -> None:
        for r in self.routes:
            app.router.add_route(r.method, r.path, r.handler)

    def is_public(self, method: str, path_template: str) -> bool:
        return any(
            r.method == method and r.path == path_template and not r.auth for r in self.routes
        )

    def openapi(self, version: str) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        for r in self.routes:
            op: dict[str, Any] = {
                "summary": r.summary,
                "tags": [r.tag],
                "operationId": _operation_id(r),
                "responses": {},
            }
            params = list(r.params)
            for name in re.findall(r"{(\w+)}", r.path):
                if not any(p.name == name and p.where == "path" for p in params):
                    params.insert(0, Param(name, "path", {"type": "string"}, required=True))
            if params:
                op["parameters"] = [
                    {
                        "name": p.name,
                        "in": p.where,
                        "required": p.required or p.where == "path",
                        "schema": p.schema,
                        **({"description": p.description} if p.description else {}),
                    }
                    for p in params
                ]
            if r.body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {r.body_content_type: {"schema": r.body}},
                }
            for status, schema in sorted(r.responses.items()):
                entry: dict[str, Any] = {"description": _STATUS_TEXT.get(status, str(status))}
                if schema is not None:
                    entry["content"] = {r.response_content_type: {"schema": schema}}
                op["responses"][str(status)] = entry
            op["responses"]["default"] = {
                "description": "error",
                "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }
            if r.auth:
                op["security"] = [{"bearer": []}]
            else:
                op["security"] = []
            paths.setdefault(r.path, {})[r.method.lower()] = op
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "telgate control API",
                "version": version,
                "description": "Telephony and messaging gateway control API (v1).",
            },
            "servers": [{"url": "/"}],
            "paths": paths,
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                "schemas": {"Problem": PROBLEM_SCHEMA},
            },
        }


PROBLEM_SCHEMA: JsonSchema = {
    "type": "object",
    "required": ["status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string", "description": "stable machine-readable reason"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "the request field at fault"},
        "request_id": {"type": "string"},
    },
}

_STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 404: "Not Found", 409: "Conflict", 413: "Content Too Large",
    415: "Unsupported Media Type", 422: "Unprocessable Content", 503: "Service Unavailable",
}


def _operation_id(r: Route) -> str:
    words = re.sub(r"[{}]", "", r.path).strip("/").replace("-", "_").split("/")
    return r.method.lower() + "_" + "_".join(w for w in words if w)


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    field_name: str | None = None,
    request_id: str | None = None,
    extra: Mapping[str, object] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An RFC 9457 problem response with our stable `code` and the field at fault."""
    body: dict[str, object] = {
        "type": "about:blank",
        "title": _STATUS_TEXT.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if field_name:
        body["field"] = field_name
    if request_id:
        body["request_id"] = request_id
    if extra:
        body.update(extra)
    return web.Response(
        status=status, text=json.dumps(body, ensure_ascii=False), content_type=PROBLEM,
        headers=headers,
    )


def json_response(data: object, status: int = 200) -> web.Response:
    """A JSON answer (UTF-8, Korean kept readable)."""
    return web.Response(
        status=status,
        text=json.dumps(data, ensure_ascii=False, default=str),
        content_type="application/json",
    )


async def read_json(request: web.Request) -> dict[str, Any]:
    """The JSON object body, within the configured size limit (413 beyond, 400 if malformed)."""
    limit = request.app[CTX].config.api.max_body_bytes
    raw = await read_limited(request, limit)
    if request.content_type not in ("application/json", ""):
        raise DomainError(
            "unsupported_media_type", "send the body as application/json", status=415
        )
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DomainError("malformed_json", f"body is not valid JSON: {exc}", status=400) from None
    if not isinstance(data, dict):
        raise DomainError("malformed_json", "body must be a JSON object", status=400)
    return data


async def read_limited(request: web.Request, limit: int) -> bytes:
    """Read the whole body, refusing (413) as soon as it passes `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise DomainError("body_too_large", f"body exceeds {limit} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise DomainError("body_too_large", f"body exceeds {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def principal(request: web.Request) -> Principal:
    """The authenticated principal of a /v1 request."""
    return request[PRINCIPAL]


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, structured access log, metrics and problem+json for every failure."""
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    ctx: AppContext = request.app[CTX]
    started = time.perf_counter()
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    response: web.StreamResponse
    try:
        response = await _authenticate_then(request, handler, template)
    except DomainError as exc:
        response = problem(
            exc.status, exc.code, exc.detail, field_name=exc.field, request_id=request_id,
            extra=exc.extra,
            headers=None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)},
        )
    except web.HTTPRequestEntityTooLarge as exc:
        response = problem(413, "body_too_large", exc.text or "body too large",
                           request_id=request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        response = problem(exc.status, code, exc.reason, request_id=request_id)
    except Exception:
        log.exception("http_unhandled_error", method=request.method, path=request.path)
        response = problem(500, "internal_error", "internal error; see the server log",
                           request_id=request_id)
    response.headers["X-Request-Id"] = request_id
    elapsed = time.perf_counter() - started
    ctx.metrics.http_requests.labels(request.method, template, str(response.status)).inc()
    ctx.metrics.http_seconds.labels(request.method, template).observe(elapsed)
    log.info(
        "http_request", method=request.method, path=request.path, status=response.status,
        ms=round(elapsed * 1000, 2),
    )
    return response


async def _authenticate_then(
    request: web.Request, handler: Handler, template: str
) -> web.StreamResponse:
    ctx: AppContext = request.app[CTX]
    if not request.path.startswith("/v1/") or ctx.routes.is_public(request.method, template):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="telgate"'}
    if scheme.lower() != "bearer" or not key.strip():
        return problem(401, "unauthenticated", "send Authorization: Bearer <api key>",
                       headers=challenge)
    key = key.strip()
    digest = hash_key(key)
    now = time.monotonic()
    cached = ctx.key_cache.get(digest)
    if cached is not None and cached[1] > now:
        who: Principal | None = cached[0]
    else:
        async with ctx.pool.acquire() as conn:
            who = await authenticate(conn, key)
        if who is not None:
            if len(ctx.key_cache) >= KEY_CACHE_MAX:
                ctx.key_cache.clear()
            ctx.key_cache[digest] = (who, now + KEY_CACHE_SECONDS)
    if who is None:
        return problem(401, "invalid_key", "the API key is unknown or revoked",
                       headers=challenge)
    request[PRINCIPAL] = who
    structlog.contextvars.bind_contextvars(tenant=str(who.tenant_id))
    return await handler(request)


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high], else 400 naming it."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DomainError("invalid_parameter", f"{name} must be an integer", field=name,
                          status=400) from None
    if not low <= value <= high:
        raise DomainError("invalid_parameter", f"{name} must be between {low} and {high}",
                          field=name, status=400)
    return value


def path_uuid(request: web.Request, name: str) -> uuid.UUID:
    """A UUID path segment; a malformed one is answered like a missing resource (404)."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise DomainError("not_found", f"no such resource: {name}", status=404) from None


async def read_upload(request: web.Request) -> tuple[bytes, dict[str, str]]:
    """The multipart part `file` (bounded by api.max_upload_bytes) and the other text fields."""
    limit = request.app[CTX].config.api.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise DomainError("too_large", f"upload exceeds {limit} bytes", field="file", status=413)
    if not request.content_type.startswith("multipart/"):
        raise DomainError("unsupported_media_type", "send the file as multipart/form-data",
                          field="file", status=415)
    reader = await request.multipart()
    data: bytes | None = None
    fields: dict[str, str] = {}
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        chunks: list[bytes] = []
        size = 0
        while chunk := await part.read_chunk(65536):
            size += len(chunk)
            if size > limit:
                raise DomainError("too_large", f"upload exceeds {limit} bytes", field="file",
                                  status=413)
            chunks.append(chunk)
        if part.name == "file":
            data = b"".join(chunks)
        elif part.name:
            fields[part.name] = b"".join(chunks).decode("utf-8", errors="replace")
    if data is None:
        raise DomainError("missing_file", "multipart field 'file' is required", field="file",
                          status=400)
    return data, fields


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    """A true/false query parameter, else 400 naming it."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise DomainError("invalid_parameter", f"{name} must be true or false", field=name, status=400)


def query_choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    """A query parameter from a fixed set, else 400 naming it and the choices."""
    raw = request.query.get(name) or default
    if raw not in choices:
        raise DomainError("invalid_parameter", f"{name} must be one of {', '.join(choices)}",
                          field=name, status=400)
    return raw
