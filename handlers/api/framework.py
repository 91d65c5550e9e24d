"""The control API's plumbing: route declarations that mount, validate *and* document,
problem+json errors, authentication, request ids, body limits and request metrics.

A route exists only through `RouteTable.add`: its pydantic models validate the request and are
the OpenAPI 3.1 description, and the codes it declares are listed under it, so the published
document cannot miss a route nor disagree with what the route checks.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import structlog
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from handlers import audit
from handlers.api.client_address import client_address
from handlers.api.context import CTX, KEY_CACHE_MAX, KEY_CACHE_SECONDS, PRINCIPAL, AppContext
from handlers.api.hostile import check_json
from handlers.api.models import Body, Params
from handlers.api.ratelimit import RateLimited
from handlers.api.scopes import Scope
from handlers.errors import DomainError, ErrorCode, lookup
from handlers.tenants import Principal, authenticate, hash_key

log = structlog.get_logger("telgate.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROBLEM = "application/problem+json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class File:
    """A download answer: the media types it comes in (CSV, XLSX ...). `item` is the model of
    one event of a `text/event-stream` (OpenAPI 3.1: its `schema` describes each event)."""

    media_types: tuple[str, ...]
    description: str = ""
    item: type[BaseModel] | None = None


@dataclass(frozen=True, slots=True)
class Upload:
    """A multipart/form-data body: the part `file` plus the text fields of `fields`."""

    description: str
    fields: type[BaseModel] | None = None


@dataclass(frozen=True, slots=True)
class Raw:
    """A body taken as it is sent (an audio file) in one of `media_types`, at most
    `max_bytes`; the handler reads it with `raw_body(request)`."""

    media_types: tuple[str, ...]
    max_bytes: int
    description: str = ""


Answer = type[BaseModel] | File | None


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: how it is mounted, what it takes and answers, which codes it refuses
    with, the key scope it needs and the rate budget it spends besides requests (`imports`,
    `exports`). The handler reads its validated inputs with `arg(request, Model)`."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: bool = True
    path_params: type[Params] | None = None
    query: type[Params] | None = None
    headers: type[Params] | None = None
    body: type[Body] | Upload | Raw | None = None
    responses: Mapping[int, Answer] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    description: str = ""
    scope: Scope | None = None
    budget: Literal["imports", "exports"] | None = None

    def __post_init__(self) -> None:
        for code in self.errors:
            lookup(code)  # an undeclared code fails at start-up, not in a portal
        named = set(re.findall(r"{(\w+)}", self.path))
        declared = set(self.path_params.model_fields) if self.path_params else set()
        if named != declared:
            raise ValueError(f"{self.method} {self.path}: path parameters {sorted(named)} "
                             f"need a path_params model declaring exactly them")
        if not self.responses:
            raise ValueError(f"{self.method} {self.path}: declare at least one answer")

    def codes(self) -> list[ErrorCode]:
        """Every code this operation can answer: its own and those of its inputs."""
        # Any operation: a server fault, the database away, or NUL / a lone surrogate in a
        # path, query or body string (refused before the handler, see handlers/api/hostile.py).
        implied: list[str] = ["internal_error", "database_unavailable", "forbidden_character"]
        if self.auth:
            implied += ["unauthenticated", "invalid_key", "missing_scope", "rate_limited"]
        if self.path_params is not None:
            implied.append("not_found")
        if self.query is not None or self.headers is not None:
            implied.append("invalid_parameter")
        if isinstance(self.body, Upload):
            implied += ["body_too_large", "unsupported_media_type", "missing_file",
                        "malformed_multipart", "invalid_field", "body_timeout", "malformed_body"]
        elif isinstance(self.body, Raw):
            implied += ["body_too_large", "unsupported_media_type", "body_timeout",
                        "malformed_body"]
        elif self.body is not None:
            implied += ["malformed_json", "invalid_field", "body_too_large",
                        "unsupported_media_type", "json_too_deep", "body_timeout",
                        "malformed_body"]
        seen: dict[str, ErrorCode] = {}
        for code in (*implied, *self.errors):
            seen.setdefault(code, lookup(code))
        return sorted(seen.values(), key=lambda e: (e.status, e.code))


_INPUTS = web.RequestKey("telgate_inputs", dict)
_UPLOAD = web.RequestKey("telgate_upload", bytes)
_RAW_BODY = web.RequestKey("telgate_raw_body", dict)
M = TypeVar("M", bound=BaseModel)


def arg(request: web.Request, model: type[M]) -> M:
    """The validated input of this request declared as `model` (path, query, headers or body)."""
    found = request[_INPUTS][model]
    assert isinstance(found, model)
    return found


def accepted_json(request: web.Request) -> dict[str, Any]:
    """The JSON body exactly as sent, once its model accepted it (strict models coerce
    nothing, so it holds the same values; only the fields the client sent)."""
    return request[_RAW_BODY]


def uploaded_file(request: web.Request) -> bytes:
    """The bytes of the multipart part `file` of an Upload route."""
    return request[_UPLOAD]


def raw_body(request: web.Request) -> bytes:
    """The body of a Raw route, as sent."""
    return request[_UPLOAD]


def _field_path(loc: tuple[int | str, ...]) -> str:
    """`("to", 3, "number")` → `to[3].number`; union member tags are left out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _FIELD_NAME.match(part) or part in _UNION_TAGS:
            continue
        else:
            out += f".{part}" if out else part
    return out


_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$|^[A-Z][a-z]*(-[A-Z][a-z]*)+$")
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _invalid(exc: ValidationError, code: str) -> DomainError:
    """The first validation error as a problem naming its field."""
    first = exc.errors(include_url=False)[0]
    where = _field_path(first["loc"])
    return DomainError(code, f"{where}: {first['msg']}" if where else first["msg"],
                       field=where or None)


def _validate(model: type[M], data: object, code: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, code) from None


def _bind(route: Route) -> Handler:
    """The aiohttp handler of a route: validate every declared input, then call it."""

    async def handle(request: web.Request) -> web.StreamResponse:
        inputs: dict[type[BaseModel], BaseModel] = {}
        if route.path_params is not None:
            try:
                inputs[route.path_params] = route.path_params.model_validate(
                    dict(request.match_info))
            except ValidationError:
                # `DELETE /v1/sender-numbers/check` reaches `{number}`, but `check` is no
                # number: that path exists, with other methods.
                offered = request.app[CTX].routes.allowed(request.path)
                if offered and request.method not in offered:
                    raise web.HTTPMethodNotAllowed(request.method, offered) from None
                raise DomainError("not_found", "no such resource") from None
        if route.query is not None:
            inputs[route.query] = _validate(route.query, _query_dict(request),
                                            "invalid_parameter")
        if route.headers is not None:
            names = [f.alias or n for n, f in route.headers.model_fields.items()]
            inputs[route.headers] = _validate(
                route.headers, {n: request.headers[n] for n in names if n in request.headers},
                "invalid_parameter")
        if isinstance(route.body, Upload):
            data, fields = await read_upload(request)
            request[_UPLOAD] = data
            known = set(route.body.fields.model_fields) if route.body.fields else set()
            unknown = sorted(set(fields) - known)
            if unknown:
                raise DomainError("invalid_field", f"no such form field: {unknown[0]!r}",
                                  field=unknown[0] or None)
            if route.body.fields is not None:
                inputs[route.body.fields] = _validate(route.body.fields, fields, "invalid_field")
        elif isinstance(route.body, Raw):
            if request.content_type not in route.body.media_types:
                raise DomainError("unsupported_media_type",
                                  f"send the body as {route.body.media_types[0]}")
            request[_UPLOAD] = await read_limited(request, route.body.max_bytes)
        elif route.body is not None:
            sent = await read_json(request)
            inputs[route.body] = _validate(route.body, sent, "invalid_field")
            request[_RAW_BODY] = sent
        request[_INPUTS] = inputs
        return await route.handler(request)

    return handle


def _match(template: str, path: str) -> dict[str, str] | None:
    """The path parameters of `path` under a route template, or None if it does not fit."""
    want, got = template.strip("/").split("/"), path.strip("/").split("/")
    if len(want) != len(got):
        return None
    values: dict[str, str] = {}
    for w, g in zip(want, got, strict=True):
        if w.startswith("{") and w.endswith("}"):
            values[w[1:-1]] = g
        elif w != g:
            return None
    return values


def _query_dict(request: web.Request) -> dict[str, str]:
    """The query string as one value per name (the last one given wins)."""
    return {k: v for k, v in request.query.items()}


@dataclass(slots=True)
class RouteTable:
    """All routes of the API, mounted on an aiohttp app and rendered as OpenAPI 3.1."""

    routes: list[Route] = field(default_factory=list)
    _document: dict[str, Any] | None = None
    _public: frozenset[tuple[str, str]] | None = field(default=None, init=False, repr=False)

    def add(self, route: Route) -> None:
        if any(r.method == route.method and r.path == route.path for r in self.routes):
            raise ValueError(f"route declared twice: {route.method} {route.path}")
        self.routes.append(route)
        self._document = None
        self._public = None

    def mount(self, app: web.Application) -> None:
        """Mount every route; an authenticated route that declares no scope is refused."""
        unscoped = [f"{r.method} {r.path}" for r in self.routes if r.auth and r.scope is None]
        if unscoped:
            raise ValueError(f"routes without a declared scope cannot be mounted: {unscoped}")
        for r in self.routes:
            if r.method == "GET":
                app.router.add_get(r.path, _bind(r), allow_head=True)
            else:
                app.router.add_route(r.method, r.path, _bind(r))

    def allowed(self, path: str) -> list[str]:
        """The methods the document offers for a concrete path (its `Allow`)."""
        methods: set[str] = set()
        for r in self.routes:
            values = _match(r.path, path)
            if values is None:
                continue
            if r.path_params is not None:
                try:
                    r.path_params.model_validate(values)
                except ValidationError:
                    continue
            methods.add(r.method)
            if r.method == "GET":
                methods.add("HEAD")
        return sorted(methods)

    def find(self, method: str, path_template: str) -> Route | None:
        """The route declared for a method and path template (HEAD is GET's)."""
        method = "GET" if method == "HEAD" else method
        for r in self.routes:
            if r.method == method and r.path == path_template:
                return r
        return None

    def is_public(self, method: str, path_template: str) -> bool:
        """Asked on every request: a set, not a walk over some hundred routes."""
        if self._public is None:
            self._public = frozenset((r.method, r.path) for r in self.routes if not r.auth)
        return ("GET" if method == "HEAD" else method, path_template) in self._public

    def openapi(self, version: str) -> dict[str, Any]:
        """The OpenAPI 3.1 document of every route (rendered once)."""
        if self._document is None or self._document["info"]["version"] != version:
            self._document = _openapi(self.routes, version)
        return self._document


def _openapi(routes: list[Route], version: str) -> dict[str, Any]:
    ref = "#/components/schemas/{model}"
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for r in routes:
        for m in (r.path_params, r.query, r.headers):
            if m is not None:
                wanted.append((m, "validation"))
        if isinstance(r.body, Upload):
            if r.body.fields is not None:
                wanted.append((r.body.fields, "validation"))
        elif r.body is not None and not isinstance(r.body, Raw):
            wanted.append((r.body, "validation"))
        for answer in r.responses.values():
            if isinstance(answer, type):
                wanted.append((answer, "serialization"))
    wanted = list(dict.fromkeys(wanted))
    keys, top = models_json_schema(wanted, ref_template=ref)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))

    def resolve(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        found = keys[(model, mode)]
        name = str(found["$ref"]).rsplit("/", 1)[-1]
        return dict(schemas[name])

    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "tags": [r.tag],
                              "operationId": _operation_id(r)}
        if r.description:
            op["description"] = r.description
        parameters: list[dict[str, Any]] = []
        for model, where in ((r.path_params, "path"), (r.query, "query"),
                             (r.headers, "header")):
            if model is not None:
                parameters += _parameters(resolve(model, "validation"), where)
        if parameters:
            op["parameters"] = parameters
        if isinstance(r.body, Upload):
            props: dict[str, Any] = {"file": {"type": "string", "format": "binary",
                                              "description": r.body.description}}
            required = ["file"]
            if r.body.fields is not None:
                fields = resolve(r.body.fields, "validation")
                props.update(fields.get("properties", {}))
                required += fields.get("required", [])
            op["requestBody"] = {"required": True, "content": {"multipart/form-data": {
                "schema": {"type": "object", "required": required, "properties": props,
                           "additionalProperties": False}}}}
        elif isinstance(r.body, Raw):
            binary = {"schema": {"type": "string", "format": "binary",
                                 "maxLength": r.body.max_bytes}}
            op["requestBody"] = {"required": True, "description": r.body.description,
                                 "content": {t: binary for t in r.body.media_types}}
        elif r.body is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": keys[(r.body, "validation")]}}}
        responses: dict[str, Any] = {}
        for status, answer in sorted(r.responses.items()):
            entry: dict[str, Any] = {"description": _STATUS_TEXT.get(status, str(status))}
            if isinstance(answer, File):
                body = (answer.item.model_json_schema() if answer.item is not None
                        else {"type": "string", "format": "binary"})
                entry["content"] = {t: {"schema": body} for t in answer.media_types}
                if answer.description:
                    entry["description"] = answer.description
            elif answer is not None:
                entry["content"] = {"application/json": {
                    "schema": keys[(answer, "serialization")]}}
            responses[str(status)] = entry
        by_status: dict[int, list[ErrorCode]] = {}
        for e in r.codes():
            by_status.setdefault(e.status, []).append(e)
        problem_ref = {"schema": {"$ref": "#/components/schemas/Problem"}}
        for status, codes in sorted(by_status.items()):
            text = "; ".join(f"`{e.code}`: {e.meaning}" for e in codes)
            entry = responses.setdefault(str(status), {"description": text})
            entry.setdefault("content", {})[PROBLEM] = problem_ref
            entry["x-error-codes"] = [e.code for e in codes]
        responses["default"] = {"description": "any other failure", "content": {
            PROBLEM: problem_ref}}
        op["responses"] = responses
        op["security"] = [{"bearer": []}] if r.auth else []
        if r.scope is not None:
            op["x-scope"] = r.scope.value
            op["description"] = (op.get("description", "") + f"\n\nNeeds a key with scope "
                                 f"`{r.scope.value}` or above.").strip()
        paths.setdefault(r.path, {})[r.method.lower()] = op
    schemas["Problem"] = Problem.model_json_schema(ref_template=ref)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "telgate control API",
            "version": version,
            "description": "Telephony and messaging gateway control API (v1). Every refusal "
                           "is application/problem+json with a stable `code` (docs/errors.md).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    }


def _parameters(schema: dict[str, Any], where: str) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        entry: dict[str, Any] = {"name": name, "in": where,
                                 "required": where == "path" or name in required,
                                 "schema": prop}
        if description:
            entry["description"] = description
        out.append(entry)
    return out


class Problem(BaseModel):
    """An RFC 9457 problem with our stable `code` and the request field at fault."""

    type: str = "about:blank"
    title: str
    status: int
    code: str = Field(description="stable machine-readable reason (docs/errors.md)")
    detail: str
    field: str | None = Field(None, description="the request field at fault")
    request_id: str | None = None


_STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
    206: "Partial Content", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 413: "Content Too Large",
    416: "Range Not Satisfiable", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}


def _operation_id(r: Route) -> str:
    words = re.sub(r"[{}]", "", r.path).strip("/").replace("-", "_").split("/")
    return r.method.lower() + "_" + "_".join(w for w in words if w)


def _problem_headers(exc: DomainError) -> dict[str, str] | None:
    """Retry-After (and a 429's RateLimit headers) of a refusal that says when to come back."""
    if isinstance(exc, RateLimited):
        return exc.headers
    return None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}


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


def respond(answer: BaseModel, status: int = 200) -> web.Response:
    """A JSON answer from its declared response model."""
    return web.Response(
        status=status,
        text=answer.model_dump_json(by_alias=True),
        content_type="application/json",
    )


async def read_json(request: web.Request) -> dict[str, Any]:
    """The JSON object body, within the configured size limit (413 beyond, 400 if malformed)."""
    limit = request.app[CTX].config.api.max_body_bytes
    if request.content_type not in ("application/json", ""):
        raise DomainError("unsupported_media_type", "send the body as application/json")
    raw = await read_limited(request, limit)
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DomainError("malformed_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DomainError("malformed_json", "body must be a JSON object")
    check_json(data)  # depth, NUL and lone surrogates, naming the field
    return data


async def read_limited(request: web.Request, limit: int) -> bytes:
    """Read the whole body, refusing (413) as soon as it passes `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise DomainError("body_too_large", f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise DomainError("body_too_large", f"body exceeds {limit} bytes")
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
            extra=exc.extra, headers=_problem_headers(exc),
        )
    except web.HTTPRequestEntityTooLarge as exc:
        response = problem(413, "body_too_large", exc.text or "body too large",
                           request_id=request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _http_problem(exc, request_id, ctx.routes.allowed(request.path))
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


def _http_problem(exc: web.HTTPException, request_id: str, allowed: list[str]) -> web.Response:
    """aiohttp's own refusals (no route, wrong method) as problems; 405 says what is `Allow`ed
    for this very path (a route whose path parameters it does not fit does not count)."""
    if exc.status == 405 and allowed:
        allow = ", ".join(allowed)
        return problem(405, "method_not_allowed", f"allowed: {allow}",
                       request_id=request_id, headers={"Allow": allow})
    if exc.status in (404, 405):
        return problem(404, "not_found", "no such resource", request_id=request_id)
    log.warning("http_exception", status=exc.status, reason=exc.reason)
    return problem(500, "internal_error", "internal error; see the server log",
                   request_id=request_id)


async def _authenticate_then(
    request: web.Request, handler: Handler, template: str
) -> web.StreamResponse:
    ctx: AppContext = request.app[CTX]
    routing_refusal = request.match_info.http_exception
    if routing_refusal is not None:  # no such path or method: say so before asking for a key
        raise routing_refusal
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
    route = ctx.routes.find(request.method, template)
    if ctx.limiter is not None:
        await ctx.limiter.check_request(who, route.budget if route else None)
    if route is not None and route.scope is not None and not who.scope.covers(route.scope):
        raise DomainError("missing_scope", f"this operation needs a key with scope "
                          f"{route.scope.value!r} (or above); this key's scope is "
                          f"{who.scope.value!r}", extra={"required_scope": route.scope.value})
    acting, token = audit.acting(who.key_id, who.key_label, client_address(request))
    try:
        response = await handler(request)
        if request.method not in ("GET", "HEAD") and response.status < 300 \
                and not acting.recorded:
            # A change its handler did not describe itself still leaves who, what and where.
            async with ctx.pool.acquire() as conn:
                await audit.record(conn, who.tenant_id, who.actor,
                                   f"{request.method} {template}", request.path,
                                   {"status": response.status})
    finally:
        audit.release(token)
    return response


async def read_upload(request: web.Request) -> tuple[bytes, dict[str, str]]:
    """The multipart part `file` (bounded by api.max_upload_bytes) and the other text fields."""
    limit = request.app[CTX].config.api.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise DomainError("body_too_large", f"upload exceeds {limit} bytes", field="file")
    if not request.content_type.startswith("multipart/"):
        raise DomainError("unsupported_media_type", "send the file as multipart/form-data",
                          field="file")
    try:
        return await _read_parts(request, limit)
    except (ValueError, HttpProcessingError) as exc:
        raise DomainError("malformed_multipart", f"not a valid multipart body: {exc}") from None


async def _read_parts(request: web.Request, limit: int) -> tuple[bytes, dict[str, str]]:
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
                raise DomainError("body_too_large", f"upload exceeds {limit} bytes",
                                  field="file")
            chunks.append(chunk)
        if part.name == "file":
            data = b"".join(chunks)
        else:  # a nameless part is an unknown field too
            fields[part.name or ""] = b"".join(chunks).decode("utf-8", errors="replace")
    if data is None:
        raise DomainError("missing_file", "multipart field 'file' is required", field="file")
    return data, fields
