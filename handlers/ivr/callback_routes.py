"""Control API routes of the callback list (DESIGN.md §9, seed 002 §15 콜백): search it by period,
status, customer number and DID; complete one entry, or every open entry of a customer."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from handlers import audit, numbers
from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import Body, Day, Limit, Page, Params, PhoneText, Timestamp, TimeUuidCursor, Uuid
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.ivr import callbacks
from handlers.messages import history as h
from handlers.pagination import split_time_cursor, time_cursor

TAG = "callbacks"
DEFAULT_PERIOD_DAYS = 366  # "the last year", a leap day included (seed 002 §15-1 ③)

TimeOrDay = Annotated[Timestamp | Day, Field(union_mode="left_to_right")]


class CallbackPath(Params):
    id: Uuid


class CallbackQuery(Params):
    since: TimeOrDay | None = Field(None, description="created at or after: RFC 3339 time or "
                                                      "date (YYYY-MM-DD, Korean day); default: "
                                                      "a year before until")
    until: TimeOrDay | None = Field(None, description="created before: RFC 3339 time or date "
                                                      "(inclusive Korean day); default: now. "
                                                      "At most 366 days after since")
    status: Literal["open", "done", "all"] = Field(
        "open", description="open: not completed yet (default); done; all")
    number: PhoneText | None = Field(None, description="the customer's number to call back "
                                                       "(any common form)")
    did: PhoneText | None = Field(None, description="the DID the customer called")
    limit: Limit = 50
    cursor: TimeUuidCursor | None = None


class CompleteNumber(Body):
    number: PhoneText = Field(description="the customer's number: every open entry with it is "
                                          "completed", examples=["010-1234-5678"])


class CallbackOut(BaseModel):
    """A caller who asked to be called back."""

    id: uuid.UUID
    call_id: uuid.UUID | None = Field(description="the call (its call record has this id)")
    did: str | None = Field(description="the DID called, digits")
    caller: str = Field(description="the caller ID as received (digits, or e.g. anonymous)")
    number: str = Field(description="the number to call back, digits")
    trigger: Literal["closed", "no_agent", "no_answer"] = Field(
        description="closed: outside business hours; no_agent: no agent could take the call; "
                    "no_answer: nobody answered in time")
    status: Literal["open", "done"]
    created_at: datetime
    completed_at: datetime | None
    completed_by: str | None = Field(description="who completed it (`key:<prefix>`)")


class Completed(BaseModel):
    completed: int = Field(description="how many open entries were completed")


def _out(c: callbacks.Callback) -> CallbackOut:
    return CallbackOut(id=c.id, call_id=c.call_id, did=c.did, caller=c.caller,
                       number=c.number, trigger=c.trigger.value, status=c.status,
                       created_at=c.created_at, completed_at=c.completed_at,
                       completed_by=c.completed_by)


def _text(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


async def list_callbacks(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, CallbackQuery)
    try:
        period = h.parse_period(_text(q.since), _text(q.until), datetime.now(UTC),
                                default_days=DEFAULT_PERIOD_DAYS)
    except OverflowError:
        raise DomainError("invalid_time", "the period reaches outside the years 1-9999",
                          field="since" if q.since is not None else "until") from None
    number = h.parse_number(q.number, "number")
    did = h.parse_number(q.did, "did")
    after: tuple[datetime, uuid.UUID] | None = None
    if q.cursor is not None:
        at, key = split_time_cursor(q.cursor)
        after = (at, uuid.UUID(key))
    async with request.app[CTX].pool.acquire() as conn:
        found = await callbacks.search(conn, who.tenant_id, since=period.since,
                                       until=period.until, status=q.status, number=number,
                                       did=did, after=after, limit=q.limit + 1)
    items = found[:q.limit]
    nxt = (time_cursor(items[-1].created_at, items[-1].id.hex)
           if len(found) > q.limit and items else None)
    return respond(Page[CallbackOut](items=[_out(c) for c in items], next_cursor=nxt))


async def get_callback(request: web.Request) -> web.Response:
    who = principal(request)
    async with request.app[CTX].pool.acquire() as conn:
        found = await callbacks.get(conn, who.tenant_id, arg(request, CallbackPath).id)
    return respond(_out(found))


async def complete_callback(request: web.Request) -> web.Response:
    who = principal(request)
    cid = arg(request, CallbackPath).id
    async with request.app[CTX].pool.acquire() as conn, conn.transaction():
        found, changed = await callbacks.complete(conn, who.tenant_id, cid, by=who.actor)
        await audit.record(conn, who.tenant_id, who.actor, "callback.complete", str(cid), {
            "number": numbers.mask(found.number), "already_done": not changed})
    return respond(_out(found))


async def complete_number(request: web.Request) -> web.Response:
    who = principal(request)
    number = h.parse_number(arg(request, CompleteNumber).number, "number")
    assert number is not None  # the pattern needs a digit
    async with request.app[CTX].pool.acquire() as conn, conn.transaction():
        done = await callbacks.complete_number(conn, who.tenant_id, number, by=who.actor)
        # The trail is kept for good: it names the customer as the portals show numbers.
        await audit.record(conn, who.tenant_id, who.actor, "callback.complete_number", "",
                           {"number": numbers.mask(number), "completed": done})
    return respond(Completed(completed=done))


# -- declarations --------------------------------------------------------------------------------

_NUMBER_CODES = ("empty", "not_digits", "international", "too_short", "too_long")
_WORK = ("Completing is agents' daily work, like sending a customer a message: scope `send` "
         "(a CRM's agent-facing key), not the configuration rights of `manage`. Audited.")


def add_routes(t: RouteTable) -> None:
    """Declare the callback list routes."""
    t.add(Route("GET", "/v1/callbacks", list_callbacks,
                "Search the callback list by period, status, customer and DID, newest first",
                TAG, query=CallbackQuery, responses={200: Page[CallbackOut]},
                errors=("invalid_time", "invalid_period", "period_too_long", *_NUMBER_CODES),
                scope=Scope.READ,
                description="Without a period: the open entries of the last year (366 days "
                            "up to now), as the portals' 기간무시 search shows them."))
    t.add(Route("GET", "/v1/callbacks/{id}", get_callback, "One callback entry", TAG,
                path_params=CallbackPath, responses={200: CallbackOut},
                errors=("callback_not_found",), scope=Scope.READ))
    t.add(Route("POST", "/v1/callbacks/{id}/complete", complete_callback,
                "Mark a callback entry done", TAG, path_params=CallbackPath,
                responses={200: CallbackOut}, errors=("callback_not_found",), scope=Scope.SEND,
                description="Idempotent: an entry already done keeps who completed it and "
                            "when. " + _WORK))
    t.add(Route("POST", "/v1/callbacks/complete", complete_number,
                "Mark every open callback entry of a customer done", TAG,
                body=CompleteNumber, responses={200: Completed}, errors=_NUMBER_CODES,
                scope=Scope.SEND,
                description="The portals' 콜백완료 for one customer (seed 002 §15-2): answers "
                            "how many entries were open (0 when none). " + _WORK))
