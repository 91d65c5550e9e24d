"""Control API routes of webhooks: `/v1/webhooks` CRUD, secret rotation and a test event.

Every query is scoped by the principal's tenant: another tenant's webhook is not found (404).
The signing secret is shown once, when it is made (create and rotate), never listed.
"""

from __future__ import annotations

import functools
import secrets
import uuid
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web
from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
)

from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import Body, Page, Params, TimeUuidPage, Uuid
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.pagination import split_time_cursor, time_cursor
from handlers.webhooks.targets import TargetPolicy, check_url

# Event types a webhook may subscribe to; an empty list subscribes to all of them.
EVENT_TYPES: tuple[str, ...] = (
    "message.accepted",
    "message.canceled",
    "message.recipient.delivered",
    "message.recipient.failed",
    "message.recipient.expired",
    "verification.approved",
    "verification.failed",
    "webhook.test",
)
MAX_WEBHOOKS_PER_TENANT = 20
MAX_URL_LENGTH = 2000
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret (256 bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def parse_url(raw: object) -> str:
    """An absolute http(s) URL with a host, else 422 on `url`."""
    if not isinstance(raw, str) or not raw.strip():
        raise DomainError("invalid_url", "url must be an http or https URL", field="url")
    url = raw.strip()
    if len(url) > MAX_URL_LENGTH:
        raise DomainError("invalid_url", f"url is longer than {MAX_URL_LENGTH} characters",
                          field="url")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise DomainError("invalid_url", "url must be an absolute http or https URL",
                          field="url")
    if parts.username or parts.password:
        raise DomainError("invalid_url", "put no credentials in the url; verify the signature",
                          field="url")
    return url


@functools.lru_cache(maxsize=8)
def _policy(networks: tuple[str, ...]) -> TargetPolicy:
    return TargetPolicy.of(networks)


async def checked_url(request: web.Request, raw: object) -> str:
    """A well-formed URL whose host telgate may call (`forbidden_target` otherwise)."""
    url = parse_url(raw)
    allowed = tuple(request.app[CTX].config.webhooks.allow_networks)
    await check_url(url, _policy(allowed))
    return url


def parse_events(raw: object) -> list[str]:
    """The subscribed event types (empty: all), each known, duplicates dropped."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DomainError("invalid_field", "events must be a list of event types",
                          field="events")
    out: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str) or item not in EVENT_TYPES:
            raise DomainError("invalid_field", f"unknown event type {item!r}; known: "
                              f"{', '.join(EVENT_TYPES)}", field=f"events[{i}]")
        if item not in out:
            out.append(item)
    return out


EventType = Literal["message.accepted", "message.canceled", "message.recipient.delivered",
                    "message.recipient.failed", "message.recipient.expired",
                    "verification.approved", "verification.failed", "webhook.test"]
Url = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH,
                                       pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^ \t\r\n/?#@]+[^ \t\r\n]*$")]


class WebhookIn(Body):
    url: Url = Field(examples=["https://portal.example/hooks"])
    events: list[EventType] = Field(default_factory=list, max_length=len(EVENT_TYPES),
                                    description="event types; empty: every event")


class WebhookPatch(Body):
    url: Url | None = None
    events: list[EventType] | None = Field(None, max_length=len(EVENT_TYPES))


class WebhookPath(Params):
    id: Uuid


class Deliveries(BaseModel):
    pending: int
    abandoned: int
    last_delivered_at: datetime | None
    last_error: str | None


class WebhookOut(BaseModel):
    id: Uuid
    url: str
    events: list[EventType] = Field(description="subscribed event types; empty: every event")
    created_at: datetime
    secret: str | None = Field(None, description="signing secret; only in the create and "
                                                 "rotate answers")
    deliveries: Deliveries | None = Field(None, description="the delivery backlog (GET of one "
                                                            "webhook)")

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """The secret and the backlog appear only in the answers that carry them."""
        data: dict[str, object] = handler(self)
        for name in ("secret", "deliveries"):
            if data.get(name) is None:
                data.pop(name, None)
        return data


class Queued(BaseModel):
    event_id: Uuid


def _view(r: asyncpg.Record, secret: str | None = None) -> WebhookOut:
    return WebhookOut(id=r["id"], url=r["url"], events=list(r["events"]),
                      created_at=r["created_at"], secret=secret, deliveries=None)


async def create_webhook(request: web.Request) -> web.Response:
    who = principal(request)
    body = arg(request, WebhookIn)
    url = await checked_url(request, body.url)
    events = parse_events(list(body.events))
    secret = new_secret()
    async with request.app[CTX].pool.acquire() as conn, conn.transaction():
        # Serialise creations of one tenant so that the limit holds under concurrency.
        await conn.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", who.tenant_id)
        count = await conn.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1",
                                    who.tenant_id)
        if count >= MAX_WEBHOOKS_PER_TENANT:
            raise DomainError("too_many_webhooks",
                              f"at most {MAX_WEBHOOKS_PER_TENANT} webhooks per account")
        row = await conn.fetchrow(
            """INSERT INTO webhooks (tenant_id, url, secret, events) VALUES ($1, $2, $3, $4)
               RETURNING id, url, events, created_at""",
            who.tenant_id, url, secret, events)
    assert row is not None
    return respond(_view(row, secret), 201)


async def list_webhooks(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, TimeUuidPage)
    at, key = split_time_cursor(q.cursor) if q.cursor else (None, None)
    async with request.app[CTX].pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, url, events, created_at FROM webhooks WHERE tenant_id = $1 "
            "AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid)) "
            "ORDER BY created_at, id LIMIT $4",
            who.tenant_id, at, uuid.UUID(key) if key else None, q.limit + 1)
    nxt = None
    if len(rows) > q.limit:
        rows = rows[:q.limit]
        nxt = time_cursor(rows[-1]["created_at"], rows[-1]["id"].hex)
    return respond(Page[WebhookOut](items=[_view(r) for r in rows], next_cursor=nxt))


async def _fetch(conn: asyncpg.Connection, tenant_id: uuid.UUID,
                 webhook_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT id, url, events, created_at FROM webhooks WHERE tenant_id = $1 AND id = $2",
        tenant_id, webhook_id)
    if row is None:
        raise DomainError("not_found", "no such webhook")
    return row


async def get_webhook(request: web.Request) -> web.Response:
    who = principal(request)
    webhook_id = arg(request, WebhookPath).id
    async with request.app[CTX].pool.acquire() as conn:
        row = await _fetch(conn, who.tenant_id, webhook_id)
        stats = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE delivered_at IS NULL
                                         AND next_attempt_at <> 'infinity') AS pending,
                      count(*) FILTER (WHERE next_attempt_at = 'infinity'
                                         AND delivered_at IS NULL) AS abandoned,
                      max(delivered_at) AS last_delivered_at
               FROM webhook_outbox WHERE webhook_id = $1""", webhook_id)
        last_error = await conn.fetchval(
            """SELECT last_error FROM webhook_outbox
               WHERE webhook_id = $1 AND last_error IS NOT NULL
               ORDER BY id DESC LIMIT 1""", webhook_id)
    out = _view(row)
    assert stats is not None
    out.deliveries = Deliveries(pending=stats["pending"], abandoned=stats["abandoned"],
                                last_delivered_at=stats["last_delivered_at"],
                                last_error=last_error)
    return respond(out)


async def update_webhook(request: web.Request) -> web.Response:
    who = principal(request)
    webhook_id = arg(request, WebhookPath).id
    body = arg(request, WebhookPatch)
    url = await checked_url(request, body.url) if body.url is not None else None
    events = parse_events(list(body.events)) if body.events is not None else None
    async with request.app[CTX].pool.acquire() as conn:
        await _fetch(conn, who.tenant_id, webhook_id)
        row = await conn.fetchrow(
            """UPDATE webhooks SET url = coalesce($3, url), events = coalesce($4, events)
               WHERE tenant_id = $1 AND id = $2
               RETURNING id, url, events, created_at""",
            who.tenant_id, webhook_id, url, events)
    if row is None:
        raise DomainError("not_found", "no such webhook")
    return respond(_view(row))


async def delete_webhook(request: web.Request) -> web.Response:
    who = principal(request)
    webhook_id = arg(request, WebhookPath).id
    async with request.app[CTX].pool.acquire() as conn:
        status = await conn.execute("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2",
                                    who.tenant_id, webhook_id)
    if status.endswith(" 0"):
        raise DomainError("not_found", "no such webhook")
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    who = principal(request)
    webhook_id = arg(request, WebhookPath).id
    secret = new_secret()
    async with request.app[CTX].pool.acquire() as conn:
        row = await conn.fetchrow(
            """UPDATE webhooks SET secret = $3 WHERE tenant_id = $1 AND id = $2
               RETURNING id, url, events, created_at""", who.tenant_id, webhook_id, secret)
    if row is None:
        raise DomainError("not_found", "no such webhook")
    return respond(_view(row, secret))


async def send_test(request: web.Request) -> web.Response:
    who = principal(request)
    webhook_id = arg(request, WebhookPath).id
    async with request.app[CTX].pool.acquire() as conn:
        await _fetch(conn, who.tenant_id, webhook_id)
        event_id = await conn.fetchval(
            """INSERT INTO webhook_outbox (tenant_id, webhook_id, event_type, payload)
               VALUES ($1, $2, 'webhook.test', $3) RETURNING event_id""",
            who.tenant_id, webhook_id, {"webhook_id": str(webhook_id)})
    return respond(Queued(event_id=event_id), 202)


# -- declarations ------------------------------------------------------------------------------


def add_routes(t: RouteTable) -> None:
    """Declare the webhook routes."""
    tag = "webhooks"
    t.add(Route("POST", "/v1/webhooks", create_webhook,
                "Register a webhook (the answer shows its signing secret once)", tag,
                body=WebhookIn, responses={201: WebhookOut},
                errors=("invalid_url", "forbidden_target", "too_many_webhooks"),
                scope=Scope.MANAGE))
    t.add(Route("GET", "/v1/webhooks", list_webhooks, "List webhooks, oldest first", tag,
                query=TimeUuidPage, responses={200: Page[WebhookOut]},
                scope=Scope.READ))
    t.add(Route("GET", "/v1/webhooks/{id}", get_webhook,
                "A webhook with its delivery backlog", tag, path_params=WebhookPath,
                responses={200: WebhookOut},
                scope=Scope.READ))
    t.add(Route("PATCH", "/v1/webhooks/{id}", update_webhook, "Change url or events", tag,
                path_params=WebhookPath, body=WebhookPatch, responses={200: WebhookOut},
                errors=("invalid_url", "forbidden_target"),
                scope=Scope.MANAGE))
    t.add(Route("DELETE", "/v1/webhooks/{id}", delete_webhook,
                "Delete a webhook (undelivered events are dropped)", tag,
                path_params=WebhookPath, responses={204: None},
                scope=Scope.MANAGE))
    t.add(Route("POST", "/v1/webhooks/{id}/rotate-secret", rotate_secret,
                "Replace the signing secret (the answer shows the new one once)", tag,
                path_params=WebhookPath, responses={200: WebhookOut},
                scope=Scope.MANAGE))
    t.add(Route("POST", "/v1/webhooks/{id}/test", send_test,
                "Queue a webhook.test event to this webhook", tag, path_params=WebhookPath,
                responses={202: Queued},
                scope=Scope.MANAGE))
