"""Received (MO) messages: the list the portals show, newest first, with keyword opt-outs
marked (DESIGN.md §9 `GET /v1/inbound-messages`). Rows are written by the SMPP receiver."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field

from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import Limit, Page, Params, PhoneText, TimeDigitsCursor
from handlers.api.scopes import Scope
from handlers.calls.extensions import check_number
from handlers.messages.history import parse_time
from handlers.messages.history_routes import TimeOrDay
from handlers.pagination import split_time_cursor, time_cursor


class InboundQuery(Params):
    since: TimeOrDay | None = Field(None, description="RFC 3339 time or date (YYYY-MM-DD, "
                                                      "from the start of that Korean day)")
    until: TimeOrDay | None = Field(None, description="RFC 3339 time or date (to the end of "
                                                      "that Korean day)")
    number: PhoneText | None = Field(None, description="the sender's or the receiving number")
    opt_out: bool | None = Field(None, description="true: only the messages that opted the "
                                                   "sender out; false: only the others")
    limit: Limit = 50
    cursor: TimeDigitsCursor | None = None


class InboundMessage(BaseModel):
    id: int
    received_at: datetime
    source: str = Field(description="who sent it")
    destination: str = Field(description="the tenant's number it was sent to")
    text: str
    opt_out: bool = Field(description="an opt-out keyword to the 080 number: the sender was "
                                      "put on the opt-out list")
    carrier: str


async def list_page(conn: asyncpg.Connection, tenant_id: Any, *, since: datetime | None,
                    until: datetime | None, number: str | None, opt_out: bool | None,
                    after: tuple[datetime, int] | None, limit: int) -> list[InboundMessage]:
    """The tenant's received messages, newest first, after the (received_at, id) position."""
    rows = await conn.fetch(
        "SELECT id, received_at, source, destination, text, opt_out, carrier FROM mo_messages "
        "WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR received_at >= $2) "
        "AND ($3::timestamptz IS NULL OR received_at < $3) "
        "AND ($4::text IS NULL OR source = $4 OR destination = $4) "
        "AND ($5::boolean IS NULL OR opt_out = $5) "
        "AND ($6::timestamptz IS NULL OR (received_at, id) < ($6, $7::bigint)) "
        "ORDER BY received_at DESC, id DESC LIMIT $8",
        tenant_id, since, until, number, opt_out, after[0] if after else None,
        after[1] if after else None, limit)
    return [InboundMessage.model_validate(dict(r)) for r in rows]


async def list_inbound(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, InboundQuery)
    after = None
    if q.cursor is not None:
        at, key = split_time_cursor(q.cursor)
        after = (at, min(int(key), 2**63 - 1))
    since = parse_time(q.since.isoformat(), "since", end_of_day=False) if q.since else None
    until = parse_time(q.until.isoformat(), "until", end_of_day=True) if q.until else None
    async with request.app[CTX].pool.acquire() as conn:
        found = await list_page(conn, who.tenant_id, since=since, until=until,
                                number=check_number(q.number, "number"), opt_out=q.opt_out,
                                after=after, limit=q.limit + 1)
    items = found[:q.limit]
    nxt = (time_cursor(items[-1].received_at, str(items[-1].id))
           if len(found) > q.limit and items else None)
    return respond(Page[InboundMessage](items=items, next_cursor=nxt))


def add_routes(t: RouteTable) -> None:
    """Declare the received-messages route."""
    t.add(Route("GET", "/v1/inbound-messages", list_inbound,
                "Received (MO) messages, newest first", "messages", query=InboundQuery,
                responses={200: Page[InboundMessage]},
                errors=("invalid_time", "invalid_number"), scope=Scope.READ))
