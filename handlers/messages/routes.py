"""Control API routes for messages and templates (DESIGN.md §9)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, cast, get_args

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from handlers import audit as audit_trail
from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, accepted_json, arg, principal, respond
from handlers.api.models import (
    DIGITS_PATTERN,
    Body,
    IndexCursor,
    Limit,
    Page,
    Params,
    PhoneText,
    Timestamp,
    TimeUuidCursor,
    TimeUuidPage,
    Uuid,
)
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.messages import accept as acc
from handlers.messages import group
from handlers.messages.wake import DISPATCH_CHANNEL
from handlers.pagination import split_time_cursor, time_cursor
from handlers.registry.routes import NUMBER_CODES
from handlers.tenants import Principal, audit
from handlers.webhooks import emit

# Recipient states as answers show them. The dispatcher's internal `claimed` (taken, not yet
# submitted) is shown as `queued`: to a portal the recipient is still waiting.
State = Literal["queued", "submitted", "delivered", "failed", "expired", "rejected", "canceled"]
STATES: tuple[State, ...] = get_args(State)
FINAL = frozenset({"delivered", "failed", "expired", "rejected", "canceled"})
Status = Literal["scheduled", "queued", "sending", "done", "canceled"]
MessageKind = Literal["sms", "lms", "mms"]


def _shown(state: str) -> State:
    return cast(State, "queued" if state == "claimed" else state)


# -- models ------------------------------------------------------------------------------------

Name = Annotated[str, StringConstraints(max_length=100)]
Base64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]*={0,2}$")]


# A recipient's number: checked row by row against the numbering plan, every bad row reported
# at once (invalid_recipients), so the schema only bounds its length.
RecipientNumber = Annotated[str, StringConstraints(max_length=40)]


class RecipientIn(Body):
    number: RecipientNumber
    name: Name | None = None
    vars: dict[Annotated[str, StringConstraints(max_length=30)],
               Annotated[str, StringConstraints(max_length=200)] | int | float] = Field(
        default_factory=dict, max_length=50, description="values of the text's {변수}")


class _Content(Body):
    text: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, description="may use {고객명}, {오늘날짜} and recipient vars")
    subject: Annotated[str, StringConstraints(max_length=40)] | None = Field(
        None, description="LMS/MMS only, at most 40 bytes")
    type: Literal["auto", "sms", "lms", "mms"] = Field(
        "auto", description="auto: SMS when the text fits the tenant's sms_max_bytes, else LMS "
                            "(MMS with images)")
    images: list[Base64] = Field(default_factory=list, max_length=3,
                                 description="base64 baseline JPEGs (MMS)")
    ad: bool = Field(False, description="an advertisement: (광고) and the opt-out line added")
    night_consent: bool = Field(False, description="recipients agreed to night-time ads")
    send_at: Timestamp | None = Field(None, description="schedule up to 6 months ahead")


class SendBody(_Content):
    sender: PhoneText = Field(alias="from", description="a registered sender number")
    to: list[RecipientNumber | RecipientIn] = Field(min_length=1, max_length=acc.MAX_RECIPIENTS)
    template_id: Uuid | None = None
    test: bool = Field(False, description="a test send to one number (one's own phone): "
                                          "marked in history, left out of statistics")


class ChangeBody(_Content):
    """The fields of a scheduled message to change; the others stay."""

    to: list[RecipientNumber | RecipientIn] | None = Field(None, min_length=1,
                                                     max_length=acc.MAX_RECIPIENTS)


class SendHeaders(Params):
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = \
        Field(None, alias="Idempotency-Key",
              description="same key and body within 24 h: same answer, queued once")


class Accepted(BaseModel):
    """What POST /v1/messages answers (202)."""

    id: Uuid
    type: MessageKind
    status: Literal["scheduled", "queued"]
    recipients: int = Field(description="recipients queued, opted-out ones included")
    rejected: int = Field(description="opted-out recipients, stored as rejected")
    duplicates_removed: int
    send_at: datetime
    bytes: int = Field(description="the longest rendered text, in carrier bytes")


class MessagePath(Params):
    message_id: Uuid


class MessageOut(BaseModel):
    id: Uuid
    type: MessageKind
    status: Status
    sender: str = Field(serialization_alias="from")
    sp_id: str | None
    subject: str | None
    text: str
    ad: bool
    test: bool
    send_at: datetime
    created_at: datetime
    recipients: int
    images: int = Field(description="attached JPEGs (MMS)")
    image_bytes: int = Field(description="their total size in bytes")
    counts: dict[State, int]
    in_doubt: int


class MessageQuery(Params):
    since: Timestamp | None = Field(None, description="default: 30 days ago")
    until: Timestamp | None = Field(None, description="default: 184 days ahead (scheduled)")
    status: Status | None = Field(None, description="scheduled lists the sends waiting for "
                                                    "their send_at")
    type: MessageKind | None = None
    sender: Annotated[str, StringConstraints(pattern=DIGITS_PATTERN)] | None = Field(
        None, alias="from", description="sender number")
    to: Annotated[str, StringConstraints(pattern=DIGITS_PATTERN)] | None = Field(
        None, description="recipient number")
    limit: Limit = 50
    cursor: TimeUuidCursor | None = None


class RecipientQuery(Params):
    state: State | None = None
    limit: Limit = 50
    cursor: IndexCursor | None = None


class RecipientOut(BaseModel):
    index: int
    number: str
    name: str | None
    state: State
    reason: str | None
    smpp_status: int | None
    receipt_stat: str | None
    receipt_err: str | None
    carrier: str | None
    in_doubt: bool
    submitted_at: datetime | None
    done_at: datetime | None


SEND_PATH = "/v1/messages"


def _now() -> datetime:
    return datetime.now(UTC)


async def send(request: web.Request) -> web.Response:
    who = principal(request)
    ctx = request.app[CTX]
    body = accepted_json(request)  # valid per SendBody; accept() applies the rules beyond
    now = _now()
    limiter = ctx.limiter
    key = arg(request, SendHeaders).idempotency_key

    async def charge(conn: asyncpg.Connection, n: int) -> None:
        if limiter is not None:
            await limiter.charge_recipients(conn, who, n, now)

    prepared = None
    if key is None and ctx.sends is not None:
        prepared = await acc.prepare(ctx.pool, who, body, ctx.index, now, policies=ctx.policies)
    if prepared is None or not group.groupable(prepared):
        async with ctx.pool.acquire() as conn:
            status, answer = await acc.accept(conn, who, body, ctx.index, now,
                                              idempotency_key=key, charge=charge,
                                              prepared=prepared, policies=ctx.policies,
                                              wake=ctx.dispatch_wake)
        return respond(Accepted.model_validate(answer), status)
    # A small send: written with the other small sends of this moment, in one statement.
    assert ctx.sends is not None
    entry = audit_trail.pending(who.tenant_id, who.actor, f"{request.method} {SEND_PATH}",
                          request.path, {"status": 202})
    answer = await group.accept_grouped(ctx.sends, who, prepared, now, limiter=limiter,
                                        audit=entry)
    audit_trail.recorded()
    return respond(Accepted.model_validate(answer), 202)


async def _message(conn: asyncpg.Connection, who: Principal, message_id: uuid.UUID,
                   *, lock: bool = False) -> asyncpg.Record:
    """One of the caller's messages (a key narrowed to an SP ID sees that SP's only)."""
    row = await conn.fetchrow(
        "SELECT * FROM messages WHERE tenant_id = $1 AND id = $2"
        " AND ($3::text IS NULL OR sp_id = $3) AND verification_id IS NULL"
        + (" FOR UPDATE" if lock else ""), who.tenant_id, message_id, who.sp_id)
    if row is None:
        raise DomainError("not_found", "no such message")
    return row


def status_of(m: asyncpg.Record, counts: dict[str, int], now: datetime) -> Status:
    """scheduled | queued | sending | done | canceled, from the recipients' states."""
    if m["canceled_at"] is not None:
        return "canceled"
    total = sum(counts.values())
    final = sum(n for s, n in counts.items() if s in FINAL)
    if total and final == total:
        return "done"
    if m["dispatch_started_at"] is None and counts.get("claimed", 0) == 0 and \
            counts.get("submitted", 0) == 0:  # claimed: the raw state, before folding
        return "scheduled" if m["send_at"] > now + timedelta(seconds=1) else "queued"
    return "sending"


async def _message_json(conn: asyncpg.Connection, m: asyncpg.Record) -> MessageOut:
    rows = await conn.fetch(
        "SELECT state, count(*) AS n, count(*) FILTER (WHERE in_doubt) AS doubt "
        "FROM recipients WHERE message_id = $1 GROUP BY state", m["id"])
    counts = {r["state"]: int(r["n"]) for r in rows}
    shown: dict[State, int] = dict.fromkeys(STATES, 0)
    for state, n in counts.items():
        shown[_shown(state)] += n
    return MessageOut(
        id=m["id"], type=m["type"], status=status_of(m, counts, _now()), sender=m["sender"],
        sp_id=m["sp_id"], subject=m["subject"], text=m["text"], ad=m["ad"], test=m["test"],
        send_at=m["send_at"], created_at=m["created_at"], recipients=m["recipient_count"],
        images=m["image_count"], image_bytes=m["image_bytes"], counts=shown,
        in_doubt=sum(int(r["doubt"]) for r in rows))


async def get_message(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        m = await _message(conn, who, arg(request, MessagePath).message_id)
        return respond(await _message_json(conn, m))


# The status of status_of(), in SQL, for the status filter.
_STATUS_SQL = """CASE
    WHEN m.canceled_at IS NOT NULL THEN 'canceled'
    WHEN EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id)
     AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id
                     AND r.state NOT IN ('delivered', 'failed', 'expired', 'rejected',
                                         'canceled')) THEN 'done'
    WHEN m.dispatch_started_at IS NULL
     AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id
                     AND r.state IN ('claimed', 'submitted'))
        THEN CASE WHEN m.send_at > $11::timestamptz + interval '1 second'
                  THEN 'scheduled' ELSE 'queued' END
    ELSE 'sending' END"""


async def list_messages(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, MessageQuery)
    now = _now()
    since = q.since or now - timedelta(days=30)
    until = q.until or now + timedelta(days=184)
    if until - since > timedelta(days=366) + timedelta(days=184):
        raise DomainError("period_too_long", "history covers at most one year", field="since")
    sender = "".join(ch for ch in q.sender or "" if ch.isdigit()) or None
    to = "".join(ch for ch in q.to or "" if ch.isdigit()) or None
    limit = q.limit
    args: list[Any] = [who.tenant_id, since, until, q.type, sender, to, limit + 1, who.sp_id]
    where = ""
    if q.cursor is not None:
        at, key = split_time_cursor(q.cursor)
        where = "AND (m.created_at, m.id) < ($9::timestamptz, $10::uuid)"
        args += [at, uuid.UUID(key)]
    else:
        args += [None, None]
    args += [now, q.status]
    async with request.app[CTX].pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT m.* FROM messages m
                WHERE m.tenant_id = $1 AND m.created_at >= $2 AND m.created_at < $3
                  AND m.verification_id IS NULL
                  AND ($4::text IS NULL OR m.type = $4) AND ($5::text IS NULL OR m.sender = $5)
                  AND ($8::text IS NULL OR m.sp_id = $8)
                  AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM recipients r
                        WHERE r.message_id = m.id AND r.number = $6))
                  AND ($9::timestamptz IS NULL OR $10::uuid IS NOT NULL)
                  AND ($12::text IS NULL OR {_STATUS_SQL} = $12)
                  {where}
                ORDER BY m.created_at DESC, m.id DESC LIMIT $7""", *args)
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = time_cursor(rows[-1]["created_at"], rows[-1]["id"].hex)
        items = [await _message_json(conn, m) for m in rows]
    return respond(Page[MessageOut](items=items, next_cursor=nxt))


async def list_recipients(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, RecipientQuery)
    limit = q.limit
    start = int(q.cursor) if q.cursor else -1
    states = None if q.state is None else (
        ["queued", "claimed"] if q.state == "queued" else [q.state])
    async with request.app[CTX].pool.acquire() as conn:
        m = await _message(conn, who, arg(request, MessagePath).message_id)
        rows = await conn.fetch(
            """SELECT idx, number, name, state, reason, smpp_status, dlr_stat, dlr_err, carrier,
                      in_doubt, submitted_at, done_at
               FROM recipients WHERE message_id = $1 AND idx > $2
                 AND ($3::text[] IS NULL OR state = ANY($3))
               ORDER BY idx LIMIT $4""", m["id"], start, states, limit + 1)
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = str(rows[-1]["idx"])
    items = [RecipientOut(
        index=r["idx"], number=r["number"], name=r["name"], state=_shown(r["state"]),
        reason=r["reason"], smpp_status=r["smpp_status"], receipt_stat=r["dlr_stat"],
        receipt_err=r["dlr_err"], carrier=r["carrier"], in_doubt=r["in_doubt"],
        submitted_at=r["submitted_at"], done_at=r["done_at"]) for r in rows]
    return respond(Page[RecipientOut](items=items, next_cursor=nxt))


async def _lock_unstarted(conn: asyncpg.Connection, who: Principal,
                          message_id: uuid.UUID) -> asyncpg.Record:
    """Lock a message that has not started dispatching; 409 once any recipient was taken.

    The dispatcher claims recipients while holding a share lock on their message, so this
    FOR UPDATE waits for a claim in progress and then sees it.
    """
    m = await _message(conn, who, message_id, lock=True)
    if m["canceled_at"] is not None:
        raise DomainError("message_canceled", "the message was canceled")
    started = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM recipients WHERE message_id = $1 "
        "AND state NOT IN ('queued', 'rejected'))", message_id)
    if started or m["dispatch_started_at"] is not None:
        raise DomainError("dispatch_started",
                          "dispatch has started; the message can no longer be changed")
    return m


async def cancel(request: web.Request) -> web.Response:
    who = principal(request)
    message_id = arg(request, MessagePath).message_id
    async with request.app[CTX].pool.acquire() as conn, conn.transaction():
        locked = await _lock_unstarted(conn, who, message_id)
        await conn.execute(
            "UPDATE recipients SET state = 'canceled', reason = 'canceled', done_at = now() "
            "WHERE message_id = $1 AND state = 'queued'", message_id)
        await conn.execute("UPDATE messages SET canceled_at = now(), updated_at = now() "
                           "WHERE id = $1", message_id)
        await audit(conn, who.tenant_id, who.actor, "message.cancel", str(message_id))
        await emit(conn, who.tenant_id, "message.canceled", {"message_id": str(message_id)},
                   sp_id=locked["sp_id"])
        m = await _message(conn, who, message_id)
        answer = await _message_json(conn, m)
    return respond(answer)


async def change(request: web.Request) -> web.Response:
    """Change a scheduled message: any of text, subject, images, send_at, to, ad ..."""
    who = principal(request)
    ctx = request.app[CTX]
    message_id = arg(request, MessagePath).message_id
    patch = accepted_json(request)  # valid per ChangeBody: only the fields to change
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
        await conn.execute("SELECT pg_notify($1, '')", DISPATCH_CHANNEL)
        m = await _message(conn, who, message_id)
        answer = await _message_json(conn, m)
    return respond(answer)


# -- templates ---------------------------------------------------------------------------------

TemplateName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
TemplateText = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Subject = Annotated[str, StringConstraints(max_length=40)]


class TemplateIn(Body):
    name: TemplateName
    text: TemplateText = Field(description="{변수} placeholders; {{ and }} for braces")
    subject: Subject | None = None


class TemplatePatch(Body):
    name: TemplateName | None = None
    text: TemplateText | None = None
    subject: Subject | None = None


class TemplateOut(BaseModel):
    id: Uuid
    name: str
    text: str
    subject: str | None
    created_at: datetime
    updated_at: datetime


class TemplatePath(Params):
    template_id: Uuid


def _template_out(r: asyncpg.Record) -> TemplateOut:
    return TemplateOut(id=r["id"], name=r["name"], text=r["text"], subject=r["subject"],
                       created_at=r["created_at"], updated_at=r["updated_at"])


def _check_text(text: str | None) -> None:
    if text is not None:
        from handlers.messages.templates import parse_template

        try:
            parse_template(text)
        except ValueError as exc:
            raise DomainError("invalid_template", str(exc), field="text") from None


async def create_template(request: web.Request) -> web.Response:
    who = principal(request)
    body = arg(request, TemplateIn)
    _check_text(body.text)
    async with request.app[CTX].pool.acquire() as conn:
        try:
            row = await conn.fetchrow(
                "INSERT INTO templates (tenant_id, name, text, subject) VALUES ($1, $2, $3, $4) "
                "RETURNING *", who.tenant_id, body.name, body.text, body.subject)
        except asyncpg.UniqueViolationError:
            raise DomainError("template_exists", "a template with this name exists",
                              field="name") from None
    assert row is not None
    return respond(_template_out(row), 201)


async def list_templates(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, TimeUuidPage)
    at, key = split_time_cursor(q.cursor) if q.cursor else (None, None)
    async with request.app[CTX].pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM templates WHERE tenant_id = $1 AND ($2::timestamptz IS NULL "
            "OR (created_at, id) < ($2, $3::uuid)) ORDER BY created_at DESC, id DESC LIMIT $4",
            who.tenant_id, at, uuid.UUID(key) if key else None, q.limit + 1)
    nxt = None
    if len(rows) > q.limit:
        rows = rows[:q.limit]
        nxt = time_cursor(rows[-1]["created_at"], rows[-1]["id"].hex)
    return respond(Page[TemplateOut](items=[_template_out(r) for r in rows], next_cursor=nxt))


async def get_template(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM templates WHERE tenant_id = $1 AND id = $2",
                                  who.tenant_id, arg(request, TemplatePath).template_id)
    if row is None:
        raise DomainError("not_found", "no such template")
    return respond(_template_out(row))


async def update_template(request: web.Request) -> web.Response:
    who = principal(request)
    body = arg(request, TemplatePatch)
    _check_text(body.text)
    fields = body.model_fields_set
    async with request.app[CTX].pool.acquire() as conn:
        try:
            row = await conn.fetchrow(
                """UPDATE templates SET name = coalesce($3, name), text = coalesce($4, text),
                          subject = CASE WHEN $6 THEN $5 ELSE subject END, updated_at = now()
                   WHERE tenant_id = $1 AND id = $2 RETURNING *""",
                who.tenant_id, arg(request, TemplatePath).template_id, body.name, body.text,
                body.subject, "subject" in fields)
        except asyncpg.UniqueViolationError:
            raise DomainError("template_exists", "a template with this name exists",
                              field="name") from None
    if row is None:
        raise DomainError("not_found", "no such template")
    return respond(_template_out(row))


async def delete_template(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        gone = await conn.fetchval(
            "DELETE FROM templates WHERE tenant_id = $1 AND id = $2 RETURNING true",
            who.tenant_id, arg(request, TemplatePath).template_id)
    if not gone:
        raise DomainError("not_found", "no such template")
    return web.Response(status=204)


# -- declarations --------------------------------------------------------------------------------

COMPOSE_CODES = (
    "sender_not_registered", "no_recipients", "too_many_recipients", "invalid_recipients",
    "test_needs_one_recipient", "template_not_found", "invalid_send_at", "send_at_too_far",
    "invalid_images", "no_route", "unencodable_character", "empty_text", "too_long_for_sms",
    "too_long", "subject_not_allowed", "subject_too_long", "image_not_jpeg", "image_too_large",
    "too_many_images", "images_not_allowed", "image_required", "unknown_variable",
    "missing_variable", "ad_optout_missing", "ad_optout_mismatch", "ad_optout_not_last",
    "ad_night_time", *NUMBER_CODES)


def add_routes(t: RouteTable) -> None:
    """Declare the message and template routes."""
    tag = "messages"
    t.add(Route("POST", SEND_PATH, send, "Send or schedule a message", tag,
                headers=SendHeaders, body=SendBody, responses={202: Accepted},
                errors=(*COMPOSE_CODES, "invalid_idempotency_key", "idempotency_conflict"),
                scope=Scope.SEND))
    t.add(Route("GET", "/v1/messages", list_messages, "Message history", tag,
                query=MessageQuery, responses={200: Page[MessageOut]},
                errors=("period_too_long",),
                scope=Scope.READ))
    t.add(Route("GET", "/v1/messages/{message_id}", get_message, "A message and its counts", tag,
                path_params=MessagePath, responses={200: MessageOut},
                scope=Scope.READ))
    t.add(Route("GET", "/v1/messages/{message_id}/recipients", list_recipients,
                "Recipients of a message, by state", tag, path_params=MessagePath,
                query=RecipientQuery, responses={200: Page[RecipientOut]},
                scope=Scope.READ))
    t.add(Route("PATCH", "/v1/messages/{message_id}", change,
                "Change a scheduled message (409 once dispatch started)", tag,
                path_params=MessagePath, body=ChangeBody, responses={200: MessageOut},
                errors=("message_canceled", "dispatch_started", *COMPOSE_CODES),
                scope=Scope.SEND))
    t.add(Route("POST", "/v1/messages/{message_id}/cancel", cancel,
                "Cancel a scheduled message (409 once dispatch started)", tag,
                path_params=MessagePath, responses={200: MessageOut},
                errors=("message_canceled", "dispatch_started"),
                scope=Scope.SEND))
    tag = "templates"
    t.add(Route("POST", "/v1/templates", create_template, "Create a template", tag,
                body=TemplateIn, responses={201: TemplateOut},
                errors=("template_exists", "invalid_template"),
                scope=Scope.MANAGE))
    t.add(Route("GET", "/v1/templates", list_templates, "List templates, newest first", tag,
                query=TimeUuidPage, responses={200: Page[TemplateOut]},
                scope=Scope.READ))
    t.add(Route("GET", "/v1/templates/{template_id}", get_template, "A template", tag,
                path_params=TemplatePath, responses={200: TemplateOut},
                scope=Scope.READ))
    t.add(Route("PATCH", "/v1/templates/{template_id}", update_template, "Change a template",
                tag, path_params=TemplatePath, body=TemplatePatch, responses={200: TemplateOut},
                errors=("template_exists", "invalid_template"),
                scope=Scope.MANAGE))
    t.add(Route("DELETE", "/v1/templates/{template_id}", delete_template, "Delete a template",
                tag, path_params=TemplatePath, responses={204: None},
                scope=Scope.MANAGE))
