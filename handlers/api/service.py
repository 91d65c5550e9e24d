"""Service routes: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from handlers.api.context import CTX
from handlers.api.framework import File, Route, RouteTable, json_response, respond

_CHECK_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return respond(Liveness(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    """Every readiness check passes (database reachable, carrier binds up ...); 503 otherwise."""
    ctx = request.app[CTX]
    results: dict[str, Check] = {}
    for name, check in ctx.readiness.items():
        try:
            ok, detail = await asyncio.wait_for(check(), _CHECK_TIMEOUT)
        except TimeoutError:
            ok, detail = False, f"no answer within {_CHECK_TIMEOUT:g} s"
        except Exception as exc:  # a failing check is a fact to report, not a crash
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        results[name] = Check(ok=ok, detail=detail)
    ready = not ctx.draining and all(r.ok for r in results.values())
    if ctx.draining:
        results["draining"] = Check(ok=False, detail="shutting down")
    ctx.metrics.ready.set(1 if ready else 0)
    return respond(Readiness(status="ready" if ready else "not_ready", checks=results),
                   200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = generate_latest(request.app[CTX].metrics.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of every route."""
    ctx = request.app[CTX]
    return json_response(ctx.routes.openapi(ctx.version))


class Liveness(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class Check(BaseModel):
    """One readiness check's verdict."""

    ok: bool
    detail: str


class Readiness(BaseModel):
    """Every readiness check, and whether they all pass."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document."""

    openapi: str = Field(examples=["3.1.0"])
    paths: dict[str, Any]


def add_routes(table: RouteTable) -> None:
    """Declare the service routes."""
    table.add(Route("GET", "/healthz", healthz, "Liveness", "service", auth=False,
                    responses={200: Liveness}))
    table.add(Route("GET", "/readyz", readyz, "Readiness", "service", auth=False,
                    responses={200: Readiness, 503: Readiness}))
    table.add(Route("GET", "/metrics", metrics, "Prometheus metrics", "service", auth=False,
                    responses={200: File((CONTENT_TYPE_LATEST.split(";")[0],),
                                         "Prometheus text exposition")}))
    table.add(Route("GET", "/v1/openapi.json", openapi, "This document", "service", auth=False,
                    responses={200: OpenApiDocument}))
