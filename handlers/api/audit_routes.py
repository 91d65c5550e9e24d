"""`GET /v1/audit` for a tenant's administrators, and `record_access`, the one call a route
that hands out personal data (recordings) makes to leave its trace."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from handlers import audit
from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import CURSOR_DOC, Limit, Page, Params, Timestamp, Uuid
from handlers.api.scopes import Scope
from handlers.errors import DomainError

TAG = "audit"


class AuditQuery(Params):
    """Filters of the audit trail; newest entries first."""

    since: Timestamp | None = Field(None, description="entries at or after this time")
    until: Timestamp | None = Field(None, description="entries before this time")
    actor: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="an actor (`key:tgk_AbCd1234`, `cli:root`) or a key id")
    action: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="an action (`api_key.create`), or a prefix ending in `.` "
                          "(`api_key.`)")
    limit: Limit = 50
    cursor: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$"), CURSOR_DOC] | None = None


class AuditEntry(BaseModel):
    """Who did what, when, from where."""

    id: int
    at: datetime
    actor: str = Field(description="`key:<prefix>` for an API key, `cli:<user>` for the "
                                   "operator's command line, `system`")
    key_id: Uuid | None
    key_label: str | None = Field(description="the key's label when it acted")
    address: str | None = Field(description="the client's IP address")
    action: str
    subject: str
    details: dict[str, object]


async def list_audit(request: web.Request) -> web.Response:
    """The tenant's audit trail, newest first."""
    who = principal(request)
    q = arg(request, AuditQuery)
    if q.since is not None and q.until is not None and q.until <= q.since:
        raise DomainError("invalid_period", "until must be after since", field="until")
    async with request.app[CTX].pool.acquire() as conn:
        found = await audit.entries(conn, who.tenant_id, since=q.since, until=q.until,
                                    actor=q.actor, action=q.action,
                                    before_id=int(q.cursor) if q.cursor else None,
                                    limit=q.limit + 1)
    page = found[:q.limit]
    nxt = str(page[-1].id) if len(found) > q.limit and page else None
    return respond(Page[AuditEntry](
        items=[AuditEntry(id=e.id, at=e.at, actor=e.actor, key_id=e.key_id,
                          key_label=e.key_label, address=e.address, action=e.action,
                          subject=e.subject, details=e.details) for e in page],
        next_cursor=nxt))


async def record_access(request: web.Request, action: str, subject: str,
                        details: dict[str, object] | None = None) -> None:
    """Record that the calling key looked at or took personal data (`recording.download`,
    `recording.playback`): who, when, from which address. Call before sending the data."""
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        await audit.record(conn, who.tenant_id, who.actor, action, subject, details)


def add_routes(t: RouteTable) -> None:
    """Declare the audit route."""
    t.add(Route("GET", "/v1/audit", list_audit, "The tenant's audit trail, newest first", TAG,
                query=AuditQuery, responses={200: Page[AuditEntry]}, scope=Scope.ADMIN,
                errors=("invalid_period",),
                description="Every change made through the API or the operator's CLI, and "
                            "every download or playback of a recording."))
