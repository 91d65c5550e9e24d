"""Routes about the caller's own tenant: who it is, its settings, SP IDs and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from handlers import tenants
from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import CURSOR_DOC, Body, Limit, Page, Params, TimeUuidPage, Uuid
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.pagination import split_time_cursor, time_cursor

TAG = "tenant"
ScopeName = Literal["read", "send", "manage", "admin"]


class WhoAmI(BaseModel):
    """The tenant (and SP ID) the presented key acts as."""

    tenant_id: Uuid
    tenant_name: str
    sp_id: str | None
    key_prefix: str


class KeyOut(BaseModel):
    """The public view of an API key (never its secret)."""

    id: Uuid
    prefix: str
    sp_id: str | None
    label: str
    scope: ScopeName = Field(description="read < send < manage < admin; a key holds its "
                                         "scope and every lower one")
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    """A new key: the secret is in this answer only (it is stored hashed)."""

    key: str = Field(description="the secret to send as `Authorization: Bearer …`; shown "
                                 "once")


class KeyCreate(Body):
    scope: ScopeName = Field(description="what the key may do: read (look), send (plus "
                                         "messages), manage (plus numbers, opt-outs, "
                                         "templates, webhooks, extensions), admin (plus keys, "
                                         "settings, SP IDs, audit)")
    label: Annotated[str, StringConstraints(max_length=200)] = ""
    sp_id: Annotated[str, StringConstraints(pattern=tenants.SP_ID_PATTERN)] | None = Field(
        None, description="narrow the key to one existing SP ID")


class KeyPath(Params):
    key_id: Uuid


class Relabel(Body):
    label: Annotated[str, StringConstraints(max_length=200)]


def key_out(key: tenants.ApiKey) -> KeyOut:
    """The public view of a key."""
    return KeyOut(id=key.id, prefix=key.prefix, sp_id=key.sp_id, label=key.label,
                  scope=key.scope.value, created_at=key.created_at, revoked_at=key.revoked_at)


async def create_key(request: web.Request) -> web.Response:
    """A new key of the tenant with the scope asked for; the secret is shown once."""
    who = principal(request)
    body = arg(request, KeyCreate)
    sp_id = body.sp_id if body.sp_id is not None else who.sp_id
    if who.sp_id is not None and sp_id != who.sp_id:
        raise DomainError("not_found", "no such SP ID", field="sp_id")
    async with request.app[CTX].pool.acquire() as conn:
        if sp_id is not None and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM sp_ids WHERE tenant_id = $1 AND sp_id = $2)",
                who.tenant_id, sp_id):
            raise DomainError("not_found", "no such SP ID", field="sp_id")
        secret, key = await tenants.create_key(conn, who.tenant_id, sp_id=sp_id,
                                               label=body.label, actor=who.actor,
                                               scope=Scope(body.scope))
    out = key_out(key)
    return respond(KeyCreated(**out.model_dump(), key=secret), 201)


async def whoami(request: web.Request) -> web.Response:
    """The tenant (and SP ID) the presented key acts as."""
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        tenant = await tenants.find_tenant(conn, str(who.tenant_id))
    return respond(WhoAmI(tenant_id=tenant.id, tenant_name=tenant.name, sp_id=who.sp_id,
                          key_prefix=who.key_prefix))


async def get_settings(request: web.Request) -> web.Response:
    """The tenant's settings, defaults filled in."""
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        return respond(await tenants.get_settings(conn, who.tenant_id))


async def patch_settings(request: web.Request) -> web.Response:
    """Change some settings; the others keep their values."""
    who = principal(request)
    patch = arg(request, tenants.SettingsPatch)
    ctx = request.app[CTX]
    async with ctx.pool.acquire() as conn:
        settings = await tenants.update_settings(conn, who.tenant_id, patch, actor=who.actor)
    for listener in ctx.settings_changed:
        listener(who.tenant_id)
    return respond(settings)


async def list_keys(request: web.Request) -> web.Response:
    """The tenant's keys, newest first."""
    who = principal(request)
    q = arg(request, TimeUuidPage)
    before = None
    if q.cursor:
        at, key = split_time_cursor(q.cursor)
        before = (at, uuid.UUID(key))
    async with request.app[CTX].pool.acquire() as conn:
        keys = await tenants.list_keys(conn, who.tenant_id, before=before, limit=q.limit + 1)
    page = keys[:q.limit]
    nxt = (time_cursor(page[-1].created_at, page[-1].id.hex)
           if len(keys) > q.limit and page else None)
    return respond(Page[KeyOut](items=[key_out(k) for k in page], next_cursor=nxt))


async def get_key(request: web.Request) -> web.Response:
    """One of the tenant's keys (another tenant's answers 404)."""
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        key = await tenants.get_key(conn, who.tenant_id, arg(request, KeyPath).key_id)
    return respond(key_out(key))


async def relabel_key(request: web.Request) -> web.Response:
    """Change the human label of one of the tenant's keys."""
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        key = await tenants.relabel_key(conn, who.tenant_id, arg(request, KeyPath).key_id,
                                        arg(request, Relabel).label, actor=who.actor)
    return respond(key_out(key))


async def revoke_key(request: web.Request) -> web.Response:
    """Revoke one of the tenant's keys."""
    who = principal(request)
    key_id = arg(request, KeyPath).key_id
    async with request.app[CTX].pool.acquire() as conn:
        await tenants.revoke_key(conn, who.tenant_id, key_id, actor=who.actor)
    request.app[CTX].forget_key(key_id)
    return web.Response(status=204)


# -- SP IDs --------------------------------------------------------------------------------------

SpIdText = Annotated[str, StringConstraints(pattern=tenants.SP_ID_PATTERN)]
SpName = Annotated[str, StringConstraints(max_length=100)]


class SpIdOut(BaseModel):
    """An SP ID (sending sub-account) with its display name."""

    sp_id: str
    name: str = Field(description="display name, e.g. the company's name")
    created_at: datetime


class SpIdCreate(Body):
    sp_id: SpIdText
    name: SpName = ""


class SpIdRename(Body):
    name: SpName


class SpIdPath(Params):
    sp_id: SpIdText


class SpIdPage(Params):
    limit: Limit = 50
    cursor: Annotated[SpIdText, CURSOR_DOC] | None = None


def _sp_out(s: tenants.SpId) -> SpIdOut:
    return SpIdOut(sp_id=s.sp_id, name=s.name, created_at=s.created_at)


def _visible(request: web.Request, sp_id: str) -> None:
    """A key narrowed to one SP ID sees that SP ID only."""
    who = principal(request)
    if who.sp_id is not None and who.sp_id != sp_id:
        raise DomainError("not_found", "no such SP ID")


async def list_sp_ids(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, SpIdPage)
    async with request.app[CTX].pool.acquire() as conn:
        found = await tenants.list_sp_ids(conn, who.tenant_id, after=q.cursor,
                                          limit=q.limit + 1)
    if who.sp_id is not None:
        found = [s for s in found if s.sp_id == who.sp_id]
    page = found[:q.limit]
    nxt = page[-1].sp_id if len(found) > q.limit and page else None
    return respond(Page[SpIdOut](items=[_sp_out(s) for s in page], next_cursor=nxt))


async def create_sp_id(request: web.Request) -> web.Response:
    who = principal(request)
    body = arg(request, SpIdCreate)
    _visible(request, body.sp_id)
    async with request.app[CTX].pool.acquire() as conn:
        sp = await tenants.create_sp_id(conn, who.tenant_id, body.sp_id, body.name,
                                        actor=who.actor)
    return respond(_sp_out(sp), 201)


async def rename_sp_id(request: web.Request) -> web.Response:
    who = principal(request)
    sp_id = arg(request, SpIdPath).sp_id
    _visible(request, sp_id)
    async with request.app[CTX].pool.acquire() as conn:
        sp = await tenants.rename_sp_id(conn, who.tenant_id, sp_id,
                                        arg(request, SpIdRename).name, actor=who.actor)
    return respond(_sp_out(sp))


def add_routes(table: RouteTable) -> None:
    """Declare the tenant, settings, SP ID and key routes."""
    t = table.add
    t(Route("GET", "/v1/tenant", whoami, "The caller's tenant", TAG, responses={200: WhoAmI},
            scope=Scope.READ))
    t(Route("GET", "/v1/tenant/settings", get_settings, "The tenant's settings", TAG,
            responses={200: tenants.TenantSettings},
            scope=Scope.READ))
    t(Route("PATCH", "/v1/tenant/settings", patch_settings,
            "Change settings (left out: unchanged; null: cleared)", TAG,
            body=tenants.SettingsPatch, responses={200: tenants.TenantSettings},
            errors=("invalid_setting", "optout_number_taken", "sender_not_registered"),
            description="Setting `optout_number` alone also sets `ad_optout_line` to "
                        "`무료거부 080-…`; every change is in the audit trail.",
            scope=Scope.ADMIN))
    t(Route("GET", "/v1/sp-ids", list_sp_ids, "SP IDs under the tenant", TAG,
            query=SpIdPage, responses={200: Page[SpIdOut]},
            scope=Scope.READ))
    t(Route("POST", "/v1/sp-ids", create_sp_id, "Add an SP ID with its display name", TAG,
            body=SpIdCreate, responses={201: SpIdOut},
            errors=("sp_id_exists", "sp_id_taken", "not_found"),
            scope=Scope.ADMIN))
    t(Route("PATCH", "/v1/sp-ids/{sp_id}", rename_sp_id, "Rename an SP ID", TAG,
            path_params=SpIdPath, body=SpIdRename, responses={200: SpIdOut},
            scope=Scope.ADMIN))
    t(Route("GET", "/v1/api-keys", list_keys, "List the tenant's API keys", TAG,
            query=TimeUuidPage, responses={200: Page[KeyOut]},
            scope=Scope.ADMIN))
    t(Route("POST", "/v1/api-keys", create_key, "Create an API key with a scope", TAG,
            body=KeyCreate, responses={201: KeyCreated}, scope=Scope.ADMIN,
            errors=("not_found",),
            description="The answer shows the secret once; keep it in the portal's "
                        "configuration."))
    t(Route("GET", "/v1/api-keys/{key_id}", get_key, "One API key", TAG,
            path_params=KeyPath, responses={200: KeyOut},
            scope=Scope.ADMIN))
    t(Route("PATCH", "/v1/api-keys/{key_id}", relabel_key, "Relabel an API key", TAG,
            path_params=KeyPath, body=Relabel, responses={200: KeyOut},
            scope=Scope.ADMIN))
    t(Route("DELETE", "/v1/api-keys/{key_id}", revoke_key, "Revoke an API key", TAG,
            path_params=KeyPath, responses={204: None},
            scope=Scope.ADMIN))
