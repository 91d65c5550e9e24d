"""Control API routes of webhooks: `/v1/webhooks` CRUD, secret rotation and a test event.

Every query is scoped by the principal's tenant: another tenant's webhook is not found (404).
The signing secret is shown once, when it is made (create and rotate), never listed.
"""

from __future__ import annotations

import secrets
import uuid
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from handlers.api.context import CTX
from handlers.api.framework import (
    JsonSchema,
    Route,
    RouteTable,
    json_response,
    path_uuid,
    principal,
    read_json,
)
from handlers.errors import DomainError

# Event types a webhook may subscribe to; an empty list subscribes to all of them.
EVENT_TYPES: tuple[str, ...] = (
    "message.accepted",
    "message.recipient.delivered",
    "message.recipient.failed",
    "message.recipient.expired",
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


def parse_events(raw: object) -> list[str]:
    """The subscribed event types (empty: all), each known, duplicates dropped."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DomainError("invalid_events", "events must be a list of event types",
                          field="events")
    out: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str) or item not in EVENT_TYPES:
            raise DomainError("unknown_event", f"unknown event type {item!r}; known: "
                              f"{', '.join(EVENT_TYPES)}", field=f"events[{i}]")
        if item not in out:
            out.append(item)
    return out


def _view(r: asyncpg.Record, secret: str | None = None) -> dict[str, object]:
    out: dict[str, object] = {"id": str(r["id"]), "url": r["url"], "events": list(r["events"]),
                              "created_at": r["created_at"].isoformat()}
    if secret is not None:
        out["secret"] = secret
    return out


async def create_webhook(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_json(request)
    url = parse_url(body.get("url"))
    events = parse_events(body.get("events"))
    secret = new_secret()
    async with request.app[CTX].pool.acquire() as conn, conn.transaction():
        # Serialise creations of one tenant so that the limit holds under concurrency.
        await conn.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", who.tenant_id)
        count = await conn.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1",
                                    who.tenant_id)
        if count >= MAX_WEBHOOKS_PER_TENANT:
            raise DomainError("too_many_webhooks",
                              f"at most {MAX_WEBHOOKS_PER_TENANT} webhooks per account",
                              status=409)
        row = await conn.fetchrow(
            """INSERT INTO webhooks (tenant_id, url, secret, events) VALUES ($1, $2, $3, $4)
               RETURNING id, url, events, created_at""",
            who.tenant_id, url, secret, events)
    assert row is not None
    return json_response(_view(row, secret), 201)


async def list_webhooks(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, url, events, created_at FROM webhooks WHERE tenant_id = $1 "
            "ORDER BY created_at, id", who.tenant_id)
    return json_response({"items": [_view(r) for r in rows], "next_cursor": None})


async def _fetch(conn: asyncpg.Connection, tenant_id: uuid.UUID,
                 webhook_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT id, url, events, created_at FROM webhooks WHERE tenant_id = $1 AND id = $2",
        tenant_id, webhook_id)
    if row is None:
        raise DomainError("not_found", "no such webhook", status=404)
    return row


async def get_webhook(request: web.Request) -> web.Response:
    who = principal(request)
    webhook_id = path_uuid(request, "id")
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
    last = stats["last_delivered_at"]
    out["deliveries"] = {"pending": stats["pending"], "abandoned": stats["abandoned"],
                         "last_delivered_at": last.isoformat() if last else None,
                         "last_error": last_error}
    return json_response(out)


async def update_webhook(request: web.Request) -> web.Response:
    who = principal(request)
    webhook_id = path_uuid(request, "id")
    body = await read_json(request)
    url = parse_url(body["url"]) if "url" in body else None
    events = parse_events(body["events"]) if "events" in body else None
    async with request.app[CTX].pool.acquire() as conn:
        await _fetch(conn, who.tenant_id, webhook_id)
        row = await conn.fetchrow(
            """UPDATE webhooks SET url = coalesce($3, url), events = coalesce($4, events)
               WHERE tenant_id = $1 AND id = $2
               RETURNING id, url, events, created_at""",
            who.tenant_id, webhook_id, url, events)
    if row is None:
        raise DomainError("not_found", "no such webhook", status=404)
    return json_response(_view(row))


async def delete_webhook(request: web.Request) -> web.Response:
    who = principal(request)
    webhook_id = path_uuid(request, "id")
    async with request.app[CTX].pool.acquire() as conn:
        status = await conn.execute("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2",
                                    who.tenant_id, webhook_id)
    if status.endswith(" 0"):
        raise DomainError("not_found", "no such webhook", status=404)
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    who = principal(request)
    webhook_id = path_uuid(request, "id")
    secret = new_secret()
    async with request.app[CTX].pool.acquire() as conn:
        row = await conn.fetchrow(
            """UPDATE webhooks SET secret = $3 WHERE tenant_id = $1 AND id = $2
               RETURNING id, url, events, created_at""", who.tenant_id, webhook_id, secret)
    if row is None:
        raise DomainError("not_found", "no such webhook", status=404)
    return json_response(_view(row, secret))


async def send_test(request: web.Request) -> web.Response:
    who = principal(request)
    webhook_id = path_uuid(request, "id")
    async with request.app[CTX].pool.acquire() as conn:
        await _fetch(conn, who.tenant_id, webhook_id)
        event_id = await conn.fetchval(
            """INSERT INTO webhook_outbox (tenant_id, webhook_id, event_type, payload)
               VALUES ($1, $2, 'webhook.test', $3) RETURNING event_id""",
            who.tenant_id, webhook_id, {"webhook_id": str(webhook_id)})
    return json_response({"event_id": str(event_id)}, 202)


# -- declarations ------------------------------------------------------------------------------

_WEBHOOK: JsonSchema = {"type": "object", "properties": {
    "id": {"type": "string", "format": "uuid"},
    "url": {"type": "string", "format": "uri"},
    "events": {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)},
               "description": "subscribed event types; empty: every event"},
    "created_at": {"type": "string", "format": "date-time"},
    "secret": {"type": "string", "description": "signing secret; only in the create and "
                                                "rotate answers"}}}
_BODY: JsonSchema = {"type": "object", "required": ["url"], "properties": {
    "url": {"type": "string", "format": "uri", "examples": ["https://portal.example/hooks"]},
    "events": {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}}}}
_PATCH: JsonSchema = {"type": "object", "properties": _BODY["properties"]}
_LIST: JsonSchema = {"type": "object", "properties": {
    "items": {"type": "array", "items": _WEBHOOK}, "next_cursor": {"type": ["string", "null"]}}}


def add_routes(t: RouteTable) -> None:
    """Declare the webhook routes."""
    tag = "webhooks"
    t.add(Route("POST", "/v1/webhooks", create_webhook,
                "Register a webhook (the answer shows its signing secret once)", tag,
                body=_BODY, responses={201: _WEBHOOK}))
    t.add(Route("GET", "/v1/webhooks", list_webhooks, "List webhooks", tag,
                responses={200: _LIST}))
    t.add(Route("GET", "/v1/webhooks/{id}", get_webhook,
                "A webhook with its delivery backlog", tag, responses={200: _WEBHOOK}))
    t.add(Route("PATCH", "/v1/webhooks/{id}", update_webhook, "Change url or events", tag,
                body=_PATCH, responses={200: _WEBHOOK}))
    t.add(Route("DELETE", "/v1/webhooks/{id}", delete_webhook,
                "Delete a webhook (undelivered events are dropped)", tag, responses={204: None}))
    t.add(Route("POST", "/v1/webhooks/{id}/rotate-secret", rotate_secret,
                "Replace the signing secret (the answer shows the new one once)", tag,
                responses={200: _WEBHOOK}))
    t.add(Route("POST", "/v1/webhooks/{id}/test", send_test,
                "Queue a webhook.test event to this webhook", tag,
                responses={202: {"type": "object", "properties": {
                    "event_id": {"type": "string", "format": "uuid"}}}}))
