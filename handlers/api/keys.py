"""Routes about the caller's own tenant and its API keys."""

from __future__ import annotations

from aiohttp import web

from handlers import tenants
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


def key_json(key: tenants.ApiKey) -> dict[str, object]:
    """The public view of a key."""
    return {
        "id": str(key.id),
        "prefix": key.prefix,
        "sp_id": key.sp_id,
        "label": key.label,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


async def whoami(request: web.Request) -> web.Response:
    """The tenant (and SP ID) the presented key acts as."""
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        tenant = await tenants.find_tenant(conn, str(who.tenant_id))
    return json_response({"tenant_id": str(tenant.id), "tenant_name": tenant.name,
                          "sp_id": who.sp_id, "key_prefix": who.key_prefix})


async def list_keys(request: web.Request) -> web.Response:
    """The tenant's keys."""
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        keys = await tenants.list_keys(conn, who.tenant_id)
    return json_response({"items": [key_json(k) for k in keys], "next_cursor": None})


async def get_key(request: web.Request) -> web.Response:
    """One of the tenant's keys (another tenant's answers 404)."""
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        key = await tenants.get_key(conn, who.tenant_id, path_uuid(request, "key_id"))
    return json_response(key_json(key))


async def relabel_key(request: web.Request) -> web.Response:
    """Change the human label of one of the tenant's keys."""
    who = principal(request)
    body = await read_json(request)
    label = body.get("label")
    if not isinstance(label, str) or len(label) > 200:
        raise DomainError("invalid_label", "label must be a string of at most 200 characters",
                          field="label")
    async with request.app[CTX].pool.acquire() as conn:
        key = await tenants.relabel_key(conn, who.tenant_id, path_uuid(request, "key_id"),
                                        label, actor=who.actor)
    return json_response(key_json(key))


async def revoke_key(request: web.Request) -> web.Response:
    """Revoke one of the tenant's keys."""
    who = principal(request)
    key_id = path_uuid(request, "key_id")
    async with request.app[CTX].pool.acquire() as conn:
        await tenants.revoke_key(conn, who.tenant_id, key_id, actor=who.actor)
    request.app[CTX].forget_key(key_id)
    return web.Response(status=204)


KEY_SCHEMA: JsonSchema = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "prefix": {"type": "string"},
        "sp_id": {"type": ["string", "null"]},
        "label": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "revoked_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def add_routes(table: RouteTable) -> None:
    """Declare the tenant and key routes."""
    table.add(Route("GET", "/v1/tenant", whoami, "The caller's tenant", "tenant",
                    responses={200: {"type": "object"}}))
    table.add(Route("GET", "/v1/api-keys", list_keys, "List the tenant's API keys", "tenant",
                    responses={200: {"type": "object", "properties": {
                        "items": {"type": "array", "items": KEY_SCHEMA},
                        "next_cursor": {"type": ["string", "null"]}}}}))
    table.add(Route("GET", "/v1/api-keys/{key_id}", get_key, "One API key", "tenant",
                    responses={200: KEY_SCHEMA}))
    table.add(Route("PATCH", "/v1/api-keys/{key_id}", relabel_key, "Relabel an API key",
                    "tenant", body={"type": "object", "required": ["label"],
                                    "properties": {"label": {"type": "string", "maxLength": 200}}},
                    responses={200: KEY_SCHEMA}))
    table.add(Route("DELETE", "/v1/api-keys/{key_id}", revoke_key, "Revoke an API key",
                    "tenant", responses={204: None}))
