"""Control API routes for messages and templates (DESIGN.md §9)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from handlers.api.context import CTX
from handlers.api.framework import (
    JsonSchema,
    Param,
    Route,
    RouteTable,
    json_response,
    path_uuid,
    principal,
    query_int,
    read_json,
)
from handlers.errors import DomainError
from handlers.messages import accept as acc
from handlers.pagination import decode_cursor, encode_cursor
from handlers.tenants import Principal, audit
from handlers.webhooks import emit

STATES = ("queued", "claimed", "submitted", "delivered", "failed", "expired", "rejected",
          "canceled")
FINAL = frozenset({"delivered", "failed", "expired", "rejected", "canceled"})


def _now() -> datetime:
    return datetime.now(UTC)


async def send(request: web.Request) -> web.Response:
    who = principal(request)
    ctx = request.app[CTX]
    body = await read_json(request)
    async with ctx.pool.acquire() as conn:
        status, answer = await acc.accept(
            conn, who, body, ctx.index, _now(),
            idempotency_key=request.headers.get("Idempotency-Key"))
    return json_response(answer, status)


async def _message(conn: asyncpg.Connection, who: Principal, message_id: uuid.UUID,
                   *, lock: bool = False) -> asyncpg.Record:
    """One of the caller's messages (a key narrowed to an SP ID sees that SP's only)."""
    row = await conn.fetchrow(
        "SELECT * FROM messages WHERE tenant_id = $1 AND id = $2"
        " AND ($3::text IS NULL OR sp_id = $3)"
        + (" FOR UPDATE" if lock else ""), who.tenant_id, message_id, who.sp_id)
    if row is None:
        raise DomainError("not_found", "no such message", status=404)
    return row


def status_of(m: asyncpg.Record, counts: dict[str, int], now: datetime) -> str:
    """scheduled | queued | sending | done | canceled, from the recipients' states."""
    if m["canceled_at"] is not None:
        return "canceled"
    total = sum(counts.values())
    final = sum(n for s, n in counts.items() if s in FINAL)
    if total and final == total:
        return "done"
    if m["dispatch_started_at"] is None and counts.get("claimed", 0) == 0 and \
            counts.get("submitted", 0) == 0:
        return "scheduled" if m["send_at"] > now + timedelta(seconds=1) else "queued"
    return "sending"


async def _message_json(conn: asyncpg.Connection, m: asyncpg.Record) -> dict[str, Any]:
    rows = await conn.fetch(
        "SELECT state, count(*) AS n, count(*) FILTER (WHERE in_doubt) AS doubt "
        "FROM recipients WHERE message_id = $1 GROUP BY state", m["id"])
    counts = {r["state"]: int(r["n"]) for r in rows}
    return {
        "id": str(m["id"]), "type": m["type"], "status": status_of(m, counts, _now()),
        "from": m["sender"], "sp_id": m["sp_id"], "subject": m["subject"], "text": m["text"],
        "ad": m["ad"], "test": m["test"], "send_at": m["send_at"].isoformat(),
        "created_at": m["created_at"].isoformat(), "recipients": m["recipient_count"],
        "counts": {s: counts.get(s, 0) for s in STATES},
        "in_doubt": sum(int(r["doubt"]) for r in rows),
    }


async def get_message(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        m = await _message(conn, who, path_uuid(request, "message_id"))
        return json_response(await _message_json(conn, m))


async def list_messages(request: web.Request) -> web.Response:
    who = principal(request)
    now = _now()
    since = _time_param(request, "since", now - timedelta(days=30))
    until = _time_param(request, "until", now + timedelta(days=184))
    if until - since > timedelta(days=366) + timedelta(days=184):
        raise DomainError("period_too_long", "history covers at most one year", field="since",
                          status=422)
    kind = request.query.get("type")
    sender = "".join(ch for ch in request.query.get("from", "") if ch.isdigit()) or None
    to = "".join(ch for ch in request.query.get("to", "") if ch.isdigit()) or None
    limit = query_int(request, "limit", 50, 1, 500)
    after = decode_cursor(request.query.get("cursor"), 2)
    args: list[Any] = [who.tenant_id, since, until, kind, sender, to, limit + 1, who.sp_id]
    where = ""
    if after is not None:
        where = "AND (m.created_at, m.id) < ($9::timestamptz, $10::uuid)"
        args += [datetime.fromisoformat(after[0]), uuid.UUID(after[1])]
    async with request.app[CTX].pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT m.* FROM messages m
                WHERE m.tenant_id = $1 AND m.created_at >= $2 AND m.created_at < $3
                  AND ($4::text IS NULL OR m.type = $4) AND ($5::text IS NULL OR m.sender = $5)
                  AND ($8::text IS NULL OR m.sp_id = $8)
                  AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM recipients r
                        WHERE r.message_id = m.id AND r.number = $6))
                  {where}
                ORDER BY m.created_at DESC, m.id DESC LIMIT $7""", *args)
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = encode_cursor([rows[-1]["created_at"].isoformat(), str(rows[-1]["id"])])
        items = [await _message_json(conn, m) for m in rows]
    return json_response({"items": items, "next_cursor": nxt})


def _time_param(request: web.Request, name: str, default: datetime) -> datetime:
    raw = request.query.get(name)
    if not raw:
        return default
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise DomainError("invalid_parameter", f"{name} must be an RFC 3339 time", field=name,
                          status=400) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def list_recipients(request: web.Request) -> web.Response:
    who = principal(request)
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise DomainError("invalid_parameter", f"state must be one of {', '.join(STATES)}",
                          field="state", status=400)
    limit = query_int(request, "limit", 100, 1, 1000)
    after = decode_cursor(request.query.get("cursor"), 1)
    start = int(after[0]) if after else -1
    async with request.app[CTX].pool.acquire() as conn:
        m = await _message(conn, who, path_uuid(request, "message_id"))
        rows = await conn.fetch(
            """SELECT idx, number, name, state, reason, smpp_status, dlr_stat, dlr_err, carrier,
                      in_doubt, submitted_at, done_at
               FROM recipients WHERE message_id = $1 AND idx > $2
                 AND ($3::text IS NULL OR state = $3)
               ORDER BY idx LIMIT $4""", m["id"], start, state, limit + 1)
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = encode_cursor([str(rows[-1]["idx"])])
    items = [{
        "index": r["idx"], "number": r["number"], "name": r["name"], "state": r["state"],
        "reason": r["reason"], "smpp_status": r["smpp_status"], "receipt_stat": r["dlr_stat"],
        "receipt_err": r["dlr_err"], "carrier": r["carrier"], "in_doubt": r["in_doubt"],
        "submitted_at": r["submitted_at"].isoformat() if r["submitted_at"] else None,
        "done_at": r["done_at"].isoformat() if r["done_at"] else None,
    } for r in rows]
    return json_response({"items": items, "next_cursor": nxt})


async def _lock_unstarted(conn: asyncpg.Connection, who: Principal,
                          message_id: uuid.UUID) -> asyncpg.Record:
    """Lock a message that has not started dispatching; 409 once any recipient was taken.

    The dispatcher claims recipients while holding a share lock on their message, so this
    FOR UPDATE waits for a claim in progress and then sees it.
    """
    m = await _message(conn, who, message_id, lock=True)
    if m["canceled_at"] is not None:
        raise DomainError("message_canceled", "the message was canceled", status=409)
    started = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM recipients WHERE message_id = $1 "
        "AND state NOT IN ('queued', 'rejected'))", message_id)
    if started or m["dispatch_started_at"] is not None:
        raise DomainError("dispatch_started",
                          "dispatch has started; the message can no longer be changed",
                          status=409)
    return m


async def cancel(request: web.Request) -> web.Response:
    who = principal(request)
    message_id = path_uuid(request, "message_id")
    async with request.app[CTX].pool.acquire() as conn, conn.transaction():
        await _lock_unstarted(conn, who, message_id)
        await conn.execute(
            "UPDATE recipients SET state = 'canceled', reason = 'canceled', done_at = now() "
            "WHERE message_id = $1 AND state = 'queued'", message_id)
        await conn.execute("UPDATE messages SET canceled_at = now(), updated_at = now() "
                           "WHERE id = $1", message_id)
        await audit(conn, who.tenant_id, who.actor, "message.cancel", str(message_id))
        await emit(conn, who.tenant_id, "message.canceled", {"message_id": str(message_id)})
        m = await _message(conn, who, message_id)
        answer = await _message_json(conn, m)
    return json_response(answer)


async def change(request: web.Request) -> web.Response:
    """Change a scheduled message: any of text, subject, images, send_at, to, ad ..."""
    who = principal(request)
    ctx = request.app[CTX]
    message_id = path_uuid(request, "message_id")
    patch = await read_json(request)
    allowed = {"text", "subject", "images", "send_at", "to", "type", "ad", "night_consent"}
    unknown = sorted(set(patch) - allowed)
    if unknown:
        raise DomainError("unknown_field", f"cannot change {unknown[0]}", field=unknown[0])
    async with ctx.pool.acquire() as conn, conn.transaction():
        m = await _lock_unstarted(conn, who, message_id)
        current = await conn.fetch(
            "SELECT number, name FROM recipients WHERE message_id = $1 ORDER BY idx", message_id)
        body: dict[str, Any] = {
            "from": m["sender"], "text": m["text"], "subject": m["subject"], "type": m["type"],
            "ad": m["ad"], "send_at": m["send_at"].isoformat(),
            "to": [{"number": r["number"], "name": r["name"]} for r in current],
        }
        body.update(patch)
        p = await acc.prepare(conn, who, body, ctx.index, _now(), has_mms_route=False)
        # Rewrite the message under the same id (recipients go with it by cascade).
        await conn.execute("DELETE FROM messages WHERE id = $1", message_id)
        await acc.store(conn, who, p, message_id=message_id)
        await conn.execute("UPDATE messages SET created_at = $2, updated_at = now() "
                           "WHERE id = $1", message_id, m["created_at"])
        await audit(conn, who.tenant_id, who.actor, "message.change", str(message_id),
                    {"fields": sorted(patch)})
        await conn.execute("SELECT pg_notify($1, '')", acc.DISPATCH_CHANNEL)
        m = await _message(conn, who, message_id)
        answer = await _message_json(conn, m)
    return json_response(answer)


# -- templates ---------------------------------------------------------------------------------

def _template_json(r: asyncpg.Record) -> dict[str, Any]:
    return {"id": str(r["id"]), "name": r["name"], "text": r["text"], "subject": r["subject"],
            "created_at": r["created_at"].isoformat(), "updated_at": r["updated_at"].isoformat()}


def _template_fields(body: dict[str, Any], partial: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, required in (("name", True), ("text", True), ("subject", False)):
        if key not in body:
            if required and not partial:
                raise DomainError("missing_field", f"{key} is required", field=key)
            continue
        value = body[key]
        if value is not None and not isinstance(value, str):
            raise DomainError("invalid_field", f"{key} must be a string", field=key)
        if key in ("name", "text") and not value:
            raise DomainError("invalid_field", f"{key} must not be empty", field=key)
        out[key] = value
    if "text" in out:
        from handlers.messages.templates import parse_template

        try:
            parse_template(out["text"])
        except ValueError as exc:
            raise DomainError("invalid_template", str(exc), field="text") from None
    return out


async def create_template(request: web.Request) -> web.Response:
    who = principal(request)
    fields = _template_fields(await read_json(request), partial=False)
    async with request.app[CTX].pool.acquire() as conn:
        try:
            row = await conn.fetchrow(
                "INSERT INTO templates (tenant_id, name, text, subject) VALUES ($1, $2, $3, $4) "
                "RETURNING *", who.tenant_id, fields["name"], fields["text"], fields.get("subject"))
        except asyncpg.UniqueViolationError:
            raise DomainError("template_exists", "a template with this name exists", field="name",
                              status=409) from None
    assert row is not None
    return json_response(_template_json(row), 201)


async def list_templates(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM templates WHERE tenant_id = $1 ORDER BY name",
                                who.tenant_id)
    return json_response({"items": [_template_json(r) for r in rows], "next_cursor": None})


async def get_template(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM templates WHERE tenant_id = $1 AND id = $2",
                                  who.tenant_id, path_uuid(request, "template_id"))
    if row is None:
        raise DomainError("not_found", "no such template", status=404)
    return json_response(_template_json(row))


async def update_template(request: web.Request) -> web.Response:
    who = principal(request)
    fields = _template_fields(await read_json(request), partial=True)
    async with request.app[CTX].pool.acquire() as conn:
        row = await conn.fetchrow(
            """UPDATE templates SET name = coalesce($3, name), text = coalesce($4, text),
                      subject = CASE WHEN $6 THEN $5 ELSE subject END, updated_at = now()
               WHERE tenant_id = $1 AND id = $2 RETURNING *""",
            who.tenant_id, path_uuid(request, "template_id"), fields.get("name"),
            fields.get("text"), fields.get("subject"), "subject" in fields)
    if row is None:
        raise DomainError("not_found", "no such template", status=404)
    return json_response(_template_json(row))


async def delete_template(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        gone = await conn.fetchval(
            "DELETE FROM templates WHERE tenant_id = $1 AND id = $2 RETURNING true",
            who.tenant_id, path_uuid(request, "template_id"))
    if not gone:
        raise DomainError("not_found", "no such template", status=404)
    return web.Response(status=204)


# -- declarations --------------------------------------------------------------------------------

_RECIPIENT: JsonSchema = {"oneOf": [
    {"type": "string", "examples": ["010-1234-5678"]},
    {"type": "object", "required": ["number"], "properties": {
        "number": {"type": "string"}, "name": {"type": "string"},
        "vars": {"type": "object", "additionalProperties": {"type": "string"}}}}]}
_SEND: JsonSchema = {"type": "object", "required": ["from", "to"], "properties": {
    "from": {"type": "string", "description": "a registered sender number"},
    "to": {"type": "array", "maxItems": acc.MAX_RECIPIENTS, "items": _RECIPIENT},
    "text": {"type": "string", "description": "may use {고객명}, {오늘날짜} and recipient vars"},
    "subject": {"type": "string", "description": "LMS/MMS only, at most 40 bytes"},
    "type": {"type": "string", "enum": ["auto", "sms", "lms", "mms"]},
    "images": {"type": "array", "maxItems": 3, "items": {"type": "string",
                                                         "contentEncoding": "base64"}},
    "template_id": {"type": "string", "format": "uuid"},
    "ad": {"type": "boolean"}, "night_consent": {"type": "boolean"},
    "send_at": {"type": "string", "format": "date-time"}, "test": {"type": "boolean"}}}
_MESSAGE: JsonSchema = {"type": "object", "properties": {
    "id": {"type": "string"}, "type": {"type": "string"},
    "status": {"type": "string", "enum": ["scheduled", "queued", "sending", "done", "canceled"]},
    "counts": {"type": "object", "properties": {s: {"type": "integer"} for s in STATES}},
    "in_doubt": {"type": "integer"}}}
_TEMPLATE: JsonSchema = {"type": "object", "required": ["name", "text"], "properties": {
    "name": {"type": "string"}, "text": {"type": "string"}, "subject": {"type": "string"}}}
_PAGE: JsonSchema = {"type": "object", "properties": {
    "items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}}}


def add_routes(t: RouteTable) -> None:
    """Declare the message and template routes."""
    tag = "messages"
    t.add(Route("POST", "/v1/messages", send, "Send or schedule a message", tag,
                params=(Param("Idempotency-Key", "header", {"type": "string", "maxLength": 200},
                              "same key and body within 24 h: same answer, queued once"),),
                body=_SEND, responses={202: {"type": "object"}}))
    t.add(Route("GET", "/v1/messages", list_messages, "Message history", tag,
                params=(Param("since", "query", {"type": "string", "format": "date-time"}),
                        Param("until", "query", {"type": "string", "format": "date-time"}),
                        Param("type", "query", {"type": "string", "enum": ["sms", "lms", "mms"]}),
                        Param("from", "query", {"type": "string"}),
                        Param("to", "query", {"type": "string"}),
                        Param("limit", "query", {"type": "integer"}),
                        Param("cursor", "query", {"type": "string"})),
                responses={200: _PAGE}))
    t.add(Route("GET", "/v1/messages/{message_id}", get_message, "A message and its counts", tag,
                responses={200: _MESSAGE}))
    t.add(Route("GET", "/v1/messages/{message_id}/recipients", list_recipients,
                "Recipients of a message, by state", tag,
                params=(Param("state", "query", {"type": "string", "enum": list(STATES)}),
                        Param("limit", "query", {"type": "integer"}),
                        Param("cursor", "query", {"type": "string"})),
                responses={200: _PAGE}))
    t.add(Route("PATCH", "/v1/messages/{message_id}", change,
                "Change a scheduled message (409 once dispatch started)", tag,
                body={"type": "object"}, responses={200: _MESSAGE}))
    t.add(Route("POST", "/v1/messages/{message_id}/cancel", cancel,
                "Cancel a scheduled message (409 once dispatch started)", tag,
                responses={200: _MESSAGE}))
    tag = "templates"
    t.add(Route("POST", "/v1/templates", create_template, "Create a template", tag,
                body=_TEMPLATE, responses={201: _TEMPLATE}))
    t.add(Route("GET", "/v1/templates", list_templates, "List templates", tag,
                responses={200: _PAGE}))
    t.add(Route("GET", "/v1/templates/{template_id}", get_template, "A template", tag,
                responses={200: _TEMPLATE}))
    t.add(Route("PATCH", "/v1/templates/{template_id}", update_template, "Change a template",
                tag, body={"type": "object"}, responses={200: _TEMPLATE}))
    t.add(Route("DELETE", "/v1/templates/{template_id}", delete_template, "Delete a template",
                tag, responses={204: None}))
