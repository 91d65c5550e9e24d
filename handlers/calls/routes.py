"""Control API routes of the calls capability: extensions and call records (DESIGN.md §9)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from config.sip import SipConfig
from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import (
    Body,
    Limit,
    Page,
    Params,
    PhoneText,
    TimeUuidCursor,
)
from handlers.api.scopes import Scope
from handlers.calls import cdr, registrations, search
from handlers.calls import extensions as ext_db
from handlers.calls.presence import Presence
from handlers.calls.stats_routes import CallSearchQuery, call_filter
from handlers.errors import DomainError
from handlers.pagination import split_time_cursor, time_cursor

TAG = "calls"

ExtensionNumber = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,4}$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
ExtName = Annotated[str, StringConstraints(max_length=100)]
CallClass = cdr.CallClass
Direction = cdr.Direction
HangupBy = cdr.HangupBy
EndReason = cdr.EndReason


class ExtensionIn(Body):
    extension: ExtensionNumber
    password: Password = Field(json_schema_extra={"writeOnly": True})
    name: ExtName | None = None
    caller_id: PhoneText | None = Field(None, description="own number")
    rid: PhoneText | None = Field(None, description="representative number (RID)")
    use_rid: bool = Field(False, description="present the RID on outgoing calls")


class ExtensionPatch(Body):
    password: Password | None = Field(None, json_schema_extra={"writeOnly": True})
    name: ExtName | None = None
    caller_id: PhoneText | None = None
    rid: PhoneText | None = None
    use_rid: bool | None = None


class ContactOut(BaseModel):
    """Where a registered phone is reached (one per REGISTER binding)."""

    uri: str = Field(description="the Contact URI the phone registered")
    transport: str = Field(description="UDP, TCP or TLS")
    address: str = Field(description="host:port calls are sent to")
    user_agent: str
    expires_at: datetime


class ExtensionOut(BaseModel):
    # Fields the call engine adds to the view pass through until they are declared here.
    model_config = ConfigDict(extra="allow")

    extension: str
    name: str
    sip_domain: str = Field(description="the domain the phone registers in")
    username: str = Field(description="digest user name (the extension)")
    caller_id: str | None = Field(description="own number")
    rid: str | None = Field(description="representative number (RID)")
    use_rid: bool = Field(description="present the RID on outgoing calls")
    created_at: datetime
    updated_at: datetime
    contacts: list[ContactOut] | None = Field(
        None, description="the phone's registered contacts (GET of one extension)")


class ExtensionPath(Params):
    extension: ExtensionNumber


class ExtensionPage(Params):
    limit: Limit = 50
    cursor: ExtensionNumber | None = Field(None, description="the `next_cursor` of the "
                                                             "previous page")


class CdrQuery(CallSearchQuery):
    extension: ExtensionNumber | None = Field(None, description="the extension on either "
                                                                "side of the call")
    limit: Limit = 50
    cursor: TimeUuidCursor | None = None


class CdrOut(BaseModel):
    id: uuid.UUID
    call_class: CallClass = Field(alias="class")
    direction: Direction
    internal: bool
    caller: str
    callee: str
    did: str | None
    extension: str | None
    peer_extension: str | None
    trunk: str | None
    started_at: datetime
    ringing_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime
    talk_seconds: float
    final_status: int
    hangup_by: HangupBy
    end_reason: EndReason = Field(description="why the call ended (normal, no_answer, busy, "
                                              "session_expired, max_duration, peer_lost, "
                                              "rtp_timeout, media_lost, ...)")
    sip_call_id: str
    transfers: list[str] = Field(description="the extensions the call went through by "
                                             "transfers, in order, the last one answering "
                                             "(empty: never transferred)")


def _sip(request: web.Request) -> SipConfig:
    found = getattr(request.app[CTX].config, "sip", None)
    return found if isinstance(found, SipConfig) else SipConfig()


_EXT_CODES = ("invalid_extension", "invalid_password", "invalid_number", "invalid_name")


async def create_extension(request: web.Request) -> web.Response:
    who = principal(request)
    body = arg(request, ExtensionIn)
    sip = _sip(request)
    extension = ext_db.check_extension(body.extension)
    password = ext_db.check_password(body.password)
    name = ext_db.check_name(body.name)
    caller_id = ext_db.check_number(body.caller_id, "caller_id")
    rid = ext_db.check_number(body.rid, "rid")
    async with request.app[CTX].pool.acquire() as conn, conn.transaction():
        domain = await ext_db.ensure_domain(conn, who.tenant_id, sip.domain_suffix)
        ext = await ext_db.create(conn, who.tenant_id, extension=extension, password=password,
                                  realm=sip.realm, name=name, caller_id=caller_id, rid=rid,
                                  use_rid=body.use_rid)
    return respond(ExtensionOut.model_validate(ext.public(domain)), 201)


async def list_extensions(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, ExtensionPage)
    sip = _sip(request)
    async with request.app[CTX].pool.acquire() as conn:
        domain = await ext_db.ensure_domain(conn, who.tenant_id, sip.domain_suffix)
        found = await ext_db.list_all(conn, who.tenant_id, after=q.cursor, limit=q.limit + 1)
    more = len(found) > q.limit
    items = found[:q.limit]
    nxt = items[-1].extension if more and items else None
    return respond(Page[ExtensionOut](
        items=[ExtensionOut.model_validate(e.public(domain)) for e in items], next_cursor=nxt))


async def get_extension(request: web.Request) -> web.Response:
    who = principal(request)
    number = arg(request, ExtensionPath).extension
    async with request.app[CTX].pool.acquire() as conn:
        ext = await ext_db.get(conn, who.tenant_id, number)
        if ext is None:
            raise DomainError("not_found", "no such extension")
        domain = await ext_db.ensure_domain(conn, who.tenant_id, _sip(request).domain_suffix)
        contacts = await registrations.contacts(conn, who.tenant_id, number)
    return respond(ExtensionOut.model_validate(
        {**ext.public(domain), "contacts": [c.public() for c in contacts]}))


async def update_extension(request: web.Request) -> web.Response:
    who = principal(request)
    number = arg(request, ExtensionPath).extension
    body = arg(request, ExtensionPatch)
    sent = body.model_fields_set
    sip = _sip(request)
    changes: dict[str, object] = {}
    if "password" in sent:
        md5, sha = ext_db.ha1_pair(number, sip.realm, ext_db.check_password(body.password))
        changes.update(ha1_md5=md5, ha1_sha256=sha, realm=sip.realm)
    if "name" in sent:
        changes["name"] = ext_db.check_name(body.name)
    if "caller_id" in sent:
        changes["caller_id"] = ext_db.check_number(body.caller_id, "caller_id")
    if "rid" in sent:
        changes["rid"] = ext_db.check_number(body.rid, "rid")
    if "use_rid" in sent and body.use_rid is not None:
        changes["use_rid"] = body.use_rid
    async with request.app[CTX].pool.acquire() as conn:
        if changes:
            ext = await ext_db.update(conn, who.tenant_id, number, changes=changes)
        else:
            ext = await ext_db.get(conn, who.tenant_id, number)
        if ext is None:
            raise DomainError("not_found", "no such extension")
        domain = await ext_db.ensure_domain(conn, who.tenant_id, sip.domain_suffix)
    return respond(ExtensionOut.model_validate(ext.public(domain)))


async def delete_extension(request: web.Request) -> web.Response:
    who = principal(request)
    number = arg(request, ExtensionPath).extension
    ctx = request.app[CTX]
    async with ctx.pool.acquire() as conn:
        if not await ext_db.delete(conn, who.tenant_id, number):
            raise DomainError("not_found", "no such extension")
    # Its presence went with the row: an extension made again with this number starts online.
    for listener in ctx.presence_changed:
        listener(who.tenant_id, number, Presence.ONLINE)
    return web.Response(status=204)


async def list_cdrs(request: web.Request) -> web.Response:
    q = arg(request, CdrQuery)
    after: tuple[datetime, uuid.UUID] | None = None
    if q.cursor is not None:
        at, key = split_time_cursor(q.cursor)
        after = (at, uuid.UUID(key))
    f = call_filter(request, q, period=False, extension=q.extension)
    async with request.app[CTX].pool.acquire() as conn:
        found = await search.list_page(conn, f, after=after, limit=q.limit + 1)
    items = found[:q.limit]
    nxt = (time_cursor(items[-1].started_at, items[-1].id.hex)
           if len(found) > q.limit and items else None)
    return respond(Page[CdrOut](items=[CdrOut.model_validate(r.public()) for r in items],
                                next_cursor=nxt))


def add_routes(table: RouteTable) -> None:
    """Mount and document the extension and call-record routes."""
    table.add(Route("POST", "/v1/extensions", create_extension, "Create an extension", TAG,
                    body=ExtensionIn, responses={201: ExtensionOut},
                    errors=(*_EXT_CODES, "extension_exists"),
                    scope=Scope.MANAGE))
    table.add(Route("GET", "/v1/extensions", list_extensions, "List extensions", TAG,
                    query=ExtensionPage, responses={200: Page[ExtensionOut]},
                    scope=Scope.READ))
    table.add(Route("GET", "/v1/extensions/{extension}", get_extension,
                    "Get an extension and its registered contacts", TAG,
                    path_params=ExtensionPath, responses={200: ExtensionOut},
                    scope=Scope.READ))
    table.add(Route("PATCH", "/v1/extensions/{extension}", update_extension,
                    "Change an extension's password, name or caller ID", TAG,
                    path_params=ExtensionPath, body=ExtensionPatch,
                    responses={200: ExtensionOut}, errors=_EXT_CODES,
                    scope=Scope.MANAGE))
    table.add(Route("DELETE", "/v1/extensions/{extension}", delete_extension,
                    "Delete an extension", TAG, path_params=ExtensionPath,
                    responses={204: None},
                    scope=Scope.MANAGE))
    table.add(Route("GET", "/v1/cdrs", list_cdrs, "List call records, newest first", TAG,
                    query=CdrQuery, responses={200: Page[CdrOut]},
                    errors=("invalid_number", "invalid_time"),
                    scope=Scope.READ))
