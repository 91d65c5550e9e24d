"""Control API routes of the calls capability: extensions and call records (DESIGN.md §9)."""

from __future__ import annotations

import uuid
from datetime import datetime

from aiohttp import web

from config.sip import SipConfig
from handlers.api.context import CTX
from handlers.api.framework import (
    JsonSchema,
    Param,
    Route,
    RouteTable,
    json_response,
    principal,
    query_bool,
    query_choice,
    query_int,
    read_json,
)
from handlers.calls import cdr, registrations
from handlers.calls import extensions as ext_db
from handlers.errors import DomainError
from handlers.pagination import decode_cursor, encode_cursor

TAG = "calls"


def _sip(request: web.Request) -> SipConfig:
    found = getattr(request.app[CTX].config, "sip", None)
    return found if isinstance(found, SipConfig) else SipConfig()


def _path_extension(request: web.Request) -> str:
    raw = request.match_info["extension"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 4:
        raise DomainError("not_found", "no such extension", status=404)
    return raw


def _as_bool(raw: object, name: str) -> bool:
    if not isinstance(raw, bool):
        raise DomainError("invalid_parameter", f"{name} must be true or false", field=name)
    return raw


async def create_extension(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_json(request)
    sip = _sip(request)
    extension = ext_db.check_extension(body.get("extension"))
    password = ext_db.check_password(body.get("password"))
    name = ext_db.check_name(body.get("name"))
    caller_id = ext_db.check_number(body.get("caller_id"), "caller_id")
    rid = ext_db.check_number(body.get("rid"), "rid")
    use_rid = _as_bool(body.get("use_rid", False), "use_rid")
    async with request.app[CTX].pool.acquire() as conn, conn.transaction():
        domain = await ext_db.ensure_domain(conn, who.tenant_id, sip.domain_suffix)
        ext = await ext_db.create(conn, who.tenant_id, extension=extension, password=password,
                                  realm=sip.realm, name=name, caller_id=caller_id, rid=rid,
                                  use_rid=use_rid)
    return json_response(ext.public(domain), 201)


async def list_extensions(request: web.Request) -> web.Response:
    who = principal(request)
    limit = query_int(request, "limit", 100, 1, 1000)
    cursor = decode_cursor(request.query.get("cursor"), 1)
    sip = _sip(request)
    async with request.app[CTX].pool.acquire() as conn:
        domain = await ext_db.ensure_domain(conn, who.tenant_id, sip.domain_suffix)
        found = await ext_db.list_all(conn, who.tenant_id, after=cursor[0] if cursor else None,
                                      limit=limit + 1)
    more = len(found) > limit
    items = found[:limit]
    nxt = encode_cursor([items[-1].extension]) if more and items else None
    return json_response({"items": [e.public(domain) for e in items], "next_cursor": nxt})


async def get_extension(request: web.Request) -> web.Response:
    who = principal(request)
    number = _path_extension(request)
    async with request.app[CTX].pool.acquire() as conn:
        ext = await ext_db.get(conn, who.tenant_id, number)
        if ext is None:
            raise DomainError("not_found", "no such extension", status=404)
        domain = await ext_db.ensure_domain(conn, who.tenant_id, _sip(request).domain_suffix)
        contacts = await registrations.contacts(conn, who.tenant_id, number)
    return json_response({**ext.public(domain), "contacts": [c.public() for c in contacts]})


async def update_extension(request: web.Request) -> web.Response:
    who = principal(request)
    number = _path_extension(request)
    body = await read_json(request)
    sip = _sip(request)
    changes: dict[str, object] = {}
    if "password" in body:
        md5, sha = ext_db.ha1_pair(number, sip.realm, ext_db.check_password(body["password"]))
        changes.update(ha1_md5=md5, ha1_sha256=sha, realm=sip.realm)
    if "name" in body:
        changes["name"] = ext_db.check_name(body["name"])
    for key in ("caller_id", "rid"):
        if key in body:
            changes[key] = ext_db.check_number(body[key], key)
    if "use_rid" in body:
        changes["use_rid"] = _as_bool(body["use_rid"], "use_rid")
    async with request.app[CTX].pool.acquire() as conn:
        if changes:
            ext = await ext_db.update(conn, who.tenant_id, number, changes=changes)
        else:
            ext = await ext_db.get(conn, who.tenant_id, number)
        if ext is None:
            raise DomainError("not_found", "no such extension", status=404)
        domain = await ext_db.ensure_domain(conn, who.tenant_id, sip.domain_suffix)
    return json_response(ext.public(domain))


async def delete_extension(request: web.Request) -> web.Response:
    who = principal(request)
    number = _path_extension(request)
    async with request.app[CTX].pool.acquire() as conn:
        if not await ext_db.delete(conn, who.tenant_id, number):
            raise DomainError("not_found", "no such extension", status=404)
    return web.Response(status=204)


def _query_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise DomainError("invalid_parameter", f"{name} must be an RFC 3339 time", field=name,
                          status=400) from None
    if value.tzinfo is None:
        raise DomainError("invalid_parameter", f"{name} needs a time zone offset", field=name,
                          status=400)
    return value


async def list_cdrs(request: web.Request) -> web.Response:
    who = principal(request)
    limit = query_int(request, "limit", 50, 1, 1000)
    cursor = decode_cursor(request.query.get("cursor"), 2)
    after: tuple[datetime, uuid.UUID] | None = None
    if cursor is not None:
        try:
            after = (datetime.fromisoformat(cursor[0]), uuid.UUID(cursor[1]))
        except ValueError:
            raise DomainError("invalid_cursor", "cursor is not one this list gave",
                              field="cursor", status=400) from None
    classes = ("", *[c.value for c in cdr.CallClass])
    directions = ("", *[d.value for d in cdr.Direction])
    call_class = query_choice(request, "class", classes, "") or None
    direction = query_choice(request, "direction", directions, "") or None
    number = ext_db.check_number(request.query.get("number"), "number")
    extension = request.query.get("extension") or None
    async with request.app[CTX].pool.acquire() as conn:
        found = await cdr.list_records(
            conn, who.tenant_id, since=_query_time(request, "since"),
            until=_query_time(request, "until"), call_class=call_class, direction=direction,
            extension=extension, number=number,
            include_internal=query_bool(request, "internal", True), after=after,
            limit=limit + 1)
    items = found[:limit]
    nxt = (encode_cursor([items[-1].started_at.isoformat(), str(items[-1].id)])
           if len(found) > limit and items else None)
    return json_response({"items": [r.public() for r in items], "next_cursor": nxt})


EXTENSION_SCHEMA: JsonSchema = {
    "type": "object",
    "properties": {
        "extension": {"type": "string", "pattern": "^[0-9]{1,4}$"},
        "name": {"type": "string"},
        "sip_domain": {"type": "string", "description": "the domain the phone registers in"},
        "username": {"type": "string", "description": "digest user name (the extension)"},
        "caller_id": {"type": ["string", "null"], "description": "own number"},
        "rid": {"type": ["string", "null"], "description": "representative number (RID)"},
        "use_rid": {"type": "boolean", "description": "present the RID on outgoing calls"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
_EXT_BODY: JsonSchema = {
    "type": "object",
    "properties": {
        "extension": {"type": "string", "pattern": "^[0-9]{1,4}$"},
        "password": {"type": "string", "minLength": 8, "maxLength": 128, "writeOnly": True},
        "name": {"type": "string", "maxLength": 100},
        "caller_id": {"type": "string"},
        "rid": {"type": "string"},
        "use_rid": {"type": "boolean"},
    },
}
CDR_SCHEMA: JsonSchema = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "class": {"type": "string", "enum": [c.value for c in cdr.CallClass]},
        "direction": {"type": "string", "enum": [d.value for d in cdr.Direction]},
        "internal": {"type": "boolean"},
        "caller": {"type": "string"}, "callee": {"type": "string"},
        "did": {"type": ["string", "null"]}, "extension": {"type": ["string", "null"]},
        "peer_extension": {"type": ["string", "null"]}, "trunk": {"type": ["string", "null"]},
        "started_at": {"type": "string", "format": "date-time"},
        "ringing_at": {"type": ["string", "null"], "format": "date-time"},
        "answered_at": {"type": ["string", "null"], "format": "date-time"},
        "ended_at": {"type": "string", "format": "date-time"},
        "talk_seconds": {"type": "number"},
        "final_status": {"type": "integer"},
        "hangup_by": {"type": "string", "enum": [h.value for h in cdr.HangupBy]},
        "end_reason": {"type": "string", "enum": [r.value for r in cdr.EndReason]},
        "sip_call_id": {"type": "string"},
    },
}


CONTACT_SCHEMA: JsonSchema = {
    "type": "object",
    "properties": {
        "uri": {"type": "string", "description": "the Contact URI the phone registered"},
        "transport": {"type": "string", "enum": ["UDP", "TCP", "TLS"]},
        "address": {"type": "string", "description": "host:port calls are sent to"},
        "user_agent": {"type": "string"},
        "expires_at": {"type": "string", "format": "date-time"},
    },
}
_WITH_CONTACTS: JsonSchema = {**EXTENSION_SCHEMA, "properties": {
    **EXTENSION_SCHEMA["properties"],
    "contacts": {"type": "array", "items": CONTACT_SCHEMA}}}


def _page(item: JsonSchema) -> JsonSchema:
    return {"type": "object", "properties": {
        "items": {"type": "array", "items": item},
        "next_cursor": {"type": ["string", "null"]}}}


_LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000})
_CURSOR = Param("cursor", "query", {"type": "string"})


def add_routes(table: RouteTable) -> None:
    """Mount and document the extension and call-record routes."""
    table.add(Route("POST", "/v1/extensions", create_extension, "Create an extension", TAG,
                    body={**_EXT_BODY, "required": ["extension", "password"]},
                    responses={201: EXTENSION_SCHEMA}))
    table.add(Route("GET", "/v1/extensions", list_extensions, "List extensions", TAG,
                    params=(_LIMIT, _CURSOR), responses={200: _page(EXTENSION_SCHEMA)}))
    table.add(Route("GET", "/v1/extensions/{extension}", get_extension,
                    "Get an extension and its registered contacts", TAG,
                    responses={200: _WITH_CONTACTS}))
    table.add(Route("PATCH", "/v1/extensions/{extension}", update_extension,
                    "Change an extension's password, name or caller ID", TAG,
                    body=_EXT_BODY, responses={200: EXTENSION_SCHEMA}))
    table.add(Route("DELETE", "/v1/extensions/{extension}", delete_extension,
                    "Delete an extension", TAG, responses={204: None}))
    table.add(Route(
        "GET", "/v1/cdrs", list_cdrs, "List call records, newest first", TAG,
        params=(
            Param("since", "query", {"type": "string", "format": "date-time"}),
            Param("until", "query", {"type": "string", "format": "date-time"}),
            Param("class", "query", {"type": "string", "enum": [c.value for c in cdr.CallClass]}),
            Param("direction", "query",
                  {"type": "string", "enum": [d.value for d in cdr.Direction]}),
            Param("extension", "query", {"type": "string"}),
            Param("number", "query", {"type": "string"}, "caller or callee number"),
            Param("internal", "query", {"type": "boolean"},
                  "false excludes internal (extension to extension) calls"),
            _LIMIT, _CURSOR),
        responses={200: _page(CDR_SCHEMA)}))
