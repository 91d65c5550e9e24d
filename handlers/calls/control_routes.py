"""Control API routes of live calls: the tenant's calls in progress, and the commands an
agent's CRM gives them (hang up, abuse block — seed 002 §13-1⑦, §14)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from handlers import numbers, tenants
from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import Body, Page, Params, TimeUuidPage, Uuid
from handlers.api.scopes import Scope
from handlers.calls import extensions as ext_db
from handlers.calls.call import (
    AbuseBlock,
    Call,
    CallState,
    Command,
    CommandRefused,
    CompleteTransfer,
    Hangup,
    Hold,
    Originate,
    Pickup,
    Transfer,
)
from handlers.calls.cdr import Direction
from handlers.calls.engine import CallEngine
from handlers.calls.media import Side
from handlers.calls.service import CallDriver
from handlers.errors import DomainError
from handlers.pagination import split_time_cursor, time_cursor

TAG = "calls"
CallStateName = Literal["routing", "ringing", "answered", "ivr", "blocking", "transferring"]


class LiveCall(BaseModel):
    """A call in progress."""

    id: uuid.UUID = Field(description="the call's id (its call record will carry the same)")
    direction: Literal["incoming", "outgoing", "internal"]
    state: CallStateName = Field(description="routing, ringing, answered (by an agent), ivr "
                                             "(the callback IVR has it), blocking (the abuse "
                                             "warning is playing), transferring (the caller "
                                             "hears music while `transferring_to` rings)")
    caller: str
    callee: str
    did: str | None
    extension: str | None = Field(description="the agent's extension, once known")
    started_at: datetime
    answered_at: datetime | None
    held: list[Literal["a", "b"]] = Field(description="sides on hold, hearing music")
    ivr_trigger: Literal["closed", "no_agent", "no_answer"] | None = Field(
        description="why the callback IVR took the call")
    transferring_to: str | None = Field(description="the extension a transfer rings now")
    transfers: list[str] = Field(description="extensions the call was transferred from, in "
                                             "order")


class CallPath(Params):
    call_id: Uuid


class OriginateIn(Body):
    extension: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,4}$")] = Field(
        description="the agent's extension: rung first")
    to: Annotated[str, StringConstraints(pattern=r"^[0-9][0-9-]{6,18}$")] = Field(
        description="the customer's number, called once the agent answers",
        examples=["010-1234-5678"])
    caller_id: Annotated[str, StringConstraints(pattern=r"^[0-9][0-9-]{6,18}$")] | None = \
        Field(None, description="the number presented to the customer; default: the agent's "
                                "RID (use_rid) or caller ID, else the tenant's default_rid. "
                                "Must be a registered sender number.")


class PickupIn(Body):
    extension: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,4}$")] = Field(
        description="the extension taking the call")


class TransferIn(Body):
    to: Annotated[str, StringConstraints(pattern=r"^[0-9][0-9-]{0,18}$")] | None = Field(
        None, description="blind transfer: the extension (1-4 digits) or the outside number "
                          "(through the trunk, presenting the DID the caller dialled) to "
                          "transfer the caller to", examples=["1002", "010-1234-5678"])
    consult_call_id: Uuid | None = Field(
        None, description="attended transfer: the agent's answered call to another "
                          "extension (its consultation); the caller is joined with that "
                          "extension")


class HoldQuery(Params):
    side: Literal["a", "b"] | None = Field(
        None, description="the side to hold: a (the caller), b (the called side); default: "
                          "the customer (the caller of an incoming call, the called number "
                          "of an outgoing one)")


def _state(call: Call) -> CallStateName:
    if call.transferring is not None:
        return "transferring"
    if call.blocking:
        return "blocking"
    if call.ivr is not None:
        return "ivr"
    return "ringing" if call.state is CallState.RINGING else \
        "answered" if call.state is CallState.ANSWERED else "routing"


def _view(engine: CallEngine, call: Call) -> LiveCall:
    return LiveCall.model_validate({
        "id": call.id, "direction": call.direction.value, "state": _state(call),
        "caller": call.caller, "callee": call.callee, "did": call.did,
        "extension": call.extension, "started_at": engine.wall(call.started),
        "answered_at": None if call.answered is None or call.ivr is not None
        else engine.wall(call.answered),
        "held": sorted(side.value for side in call.held), "ivr_trigger": call.ivr_trigger,
        "transferring_to": call.transferring, "transfers": list(call.transfers)})


def _driver(request: web.Request) -> CallDriver:
    driver = request.app[CTX].calls
    if driver is None:
        raise DomainError("calls_unavailable", "SIP is not running on this instance")
    return driver


def _call(driver: CallDriver, tenant: uuid.UUID, call_id: uuid.UUID) -> Call:
    call = driver.engine.calls.get(call_id)
    if call is None or call.tenant_id != tenant:  # another tenant's call does not exist here
        raise DomainError("call_not_found", "no such call in progress")
    return call


async def list_calls(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, TimeUuidPage)
    driver = _driver(request)
    engine = driver.engine
    views = [_view(engine, c) for c in engine.live(who.tenant_id)]
    if q.cursor is not None:
        at, key = split_time_cursor(q.cursor)
        views = [v for v in views if (v.started_at, v.id.hex) > (at, key)]
    items = views[:q.limit]
    nxt = (time_cursor(items[-1].started_at, items[-1].id.hex)
           if len(views) > q.limit and items else None)
    return respond(Page[LiveCall](items=items, next_cursor=nxt))


async def get_call(request: web.Request) -> web.Response:
    who = principal(request)
    driver = _driver(request)
    call = _call(driver, who.tenant_id, arg(request, CallPath).call_id)
    return respond(_view(driver.engine, call))


def _command(request: web.Request, make: type[AbuseBlock] | type[Hangup] | None = None, *,
             held: bool = False, transfer: bool = False, pickup: bool = False,
             ) -> web.Response:
    who = principal(request)
    driver = _driver(request)
    call = _call(driver, who.tenant_id, arg(request, CallPath).call_id)
    command: Command
    if transfer:
        body = arg(request, TransferIn)
        if body.to is not None and body.consult_call_id is None:
            to = body.to.replace("-", "")
            if len(to) > 4:
                try:
                    to = numbers.normalise(to)
                except numbers.NumberError as exc:
                    raise DomainError("invalid_number", str(exc), field="to") from None
            command = Transfer(call.id, to)
        elif body.consult_call_id is not None and body.to is None:
            command = CompleteTransfer(call.id, body.consult_call_id)
        else:
            raise DomainError("transfer_target_missing", "give either `to` (blind) or "
                              "`consult_call_id` (attended)", field="to")
    elif pickup:
        command = Pickup(call.id, arg(request, PickupIn).extension)
    elif make is None:
        chosen = arg(request, HoldQuery).side
        side = Side(chosen) if chosen else \
            Side.B if call.direction is Direction.OUTGOING else Side.A
        command = Hold(call.id, side, held)
    else:
        command = make(call.id)
    try:
        driver.command(command)
    except CommandRefused as exc:
        raise DomainError(exc.code, exc.detail) from None
    return respond(_view(driver.engine, call), 202)


async def originate(request: web.Request) -> web.Response:
    who = principal(request)
    driver = _driver(request)
    body = arg(request, OriginateIn)
    ctx = request.app[CTX]
    to = body.to.replace("-", "")
    async with ctx.pool.acquire() as conn:
        agent = await ext_db.get(conn, who.tenant_id, body.extension)
        if agent is None:
            raise DomainError("not_found", f"no extension {body.extension}", field="extension")
        presented = body.caller_id.replace("-", "") if body.caller_id else \
            agent.presented_number or (await tenants.get_settings(conn, who.tenant_id)).default_rid
    if not presented or not ctx.index.may_send(who.tenant_id, presented):
        raise DomainError("sender_not_registered", "the number presented to the customer must "
                          "be a registered sender number (the agent's RID or caller ID, or "
                          "the tenant's default_rid)", field="caller_id")
    try:
        call = driver.originate(Originate(uuid.uuid4(), who.tenant_id, body.extension, to,
                                          presented))
    except CommandRefused as exc:
        raise DomainError(exc.code, exc.detail) from None
    return respond(_view(driver.engine, call), 202)


async def abuse_block(request: web.Request) -> web.Response:
    return _command(request, AbuseBlock)


async def hang_up(request: web.Request) -> web.Response:
    return _command(request, Hangup)


async def hold(request: web.Request) -> web.Response:
    return _command(request, held=True)


async def unhold(request: web.Request) -> web.Response:
    return _command(request, held=False)


async def transfer(request: web.Request) -> web.Response:
    return _command(request, transfer=True)


async def pickup(request: web.Request) -> web.Response:
    return _command(request, pickup=True)


def add_routes(t: RouteTable) -> None:
    """Declare the live-call routes."""
    t.add(Route("GET", "/v1/calls", list_calls, "Calls in progress, oldest first", TAG,
                query=TimeUuidPage, responses={200: Page[LiveCall]},
                errors=("calls_unavailable",), scope=Scope.READ))
    t.add(Route("POST", "/v1/calls", originate, "Click-to-call: the agent, then the customer",
                TAG, body=OriginateIn, responses={202: LiveCall},
                errors=("not_found", "sender_not_registered", "agent_unavailable", "no_trunk",
                        "media_not_anchored", "calls_unavailable"),
                scope=Scope.SEND,
                description="Seed 002 §5, §19-6: every registered phone of `extension` rings "
                            "(30 s) showing `to`; when the agent answers, `to` is called "
                            "through the trunk presenting `caller_id` (registry-checked). The "
                            "call is `outgoing`; `call.ringing` (with `click_to_call`) when the "
                            "customer's phone rings, `call.answered` when they answer."))
    t.add(Route("GET", "/v1/calls/{call_id}", get_call, "A call in progress", TAG,
                path_params=CallPath, responses={200: LiveCall},
                errors=("call_not_found", "calls_unavailable"), scope=Scope.READ))
    t.add(Route("POST", "/v1/calls/{call_id}/abuse-block", abuse_block,
                "Block an abusive caller: warning, then hang up", TAG, path_params=CallPath,
                responses={202: LiveCall},
                errors=("call_not_found", "call_not_answered", "not_a_customer_call",
                        "media_not_anchored", "calls_unavailable"),
                scope=Scope.SEND,
                description="The agent's phone is hung up at once; the customer hears the "
                            "tenant's `abuse_warning` prompt to its end, then the call ends "
                            "(its record says `abuse_blocked`). Saying it again while the "
                            "warning plays changes nothing."))
    for path, handler, summary in (("hold", hold, "Put a side on hold (it hears music)"),
                                   ("unhold", unhold, "Take a side off hold")):
        t.add(Route("POST", f"/v1/calls/{{call_id}}/{path}", handler, summary, TAG,
                    path_params=CallPath, query=HoldQuery, responses={202: LiveCall},
                    errors=("call_not_found", "call_not_answered", "call_busy",
                            "media_not_anchored", "calls_unavailable"),
                    scope=Scope.SEND,
                    description="The side is re-INVITEd (a=sendonly to hold, sendrecv to "
                                "resume); while held it hears the tenant's `hold_music` and "
                                "the other side hears nothing from it. The recording goes on. "
                                "Each change is a `call.held` event. Saying what already is "
                                "changes nothing."))
    t.add(Route("POST", "/v1/calls/{call_id}/transfer", transfer,
                "Transfer the caller to another extension (blind)", TAG, path_params=CallPath,
                body=TransferIn, responses={202: LiveCall},
                errors=("transfer_target_missing", "invalid_number", "sender_not_registered",
                        "no_trunk", "call_not_found", "call_not_answered", "call_busy",
                        "transfer_target_unavailable", "not_a_consultation",
                        "media_not_anchored", "calls_unavailable"),
                scope=Scope.SEND,
                description="돌려주기. Blind (`to`): the agent's phone is hung up at once; the "
                            "caller hears hold music while every registered phone of `to` "
                            "rings (30 s); the first to answer takes the call "
                            "(`call.transferred`); nobody answering ends the call "
                            "(`transfer_failed`). Attended (`consult_call_id`): the agent put "
                            "the caller on hold and called a colleague; the colleague's phone "
                            "is re-INVITEd into this call, the agent leaves both calls and the "
                            "caller is taken off hold. Either way the recording stays one "
                            "file. Incoming calls only."))
    t.add(Route("POST", "/v1/calls/{call_id}/pickup", pickup,
                "Pick up a call ringing elsewhere (당겨받기)", TAG, path_params=CallPath,
                body=PickupIn, responses={202: LiveCall},
                errors=("call_not_found", "call_not_ringing", "agent_unavailable",
                        "calls_unavailable"),
                scope=Scope.SEND,
                description="The call stops ringing where it rang (those phones get CANCEL) "
                            "and rings every registered phone of `extension` for the rest of "
                            "its ring time; answered there, it is that agent's call. Incoming "
                            "and internal calls that are still ringing only."))
    t.add(Route("POST", "/v1/calls/{call_id}/hangup", hang_up, "End a call now", TAG,
                path_params=CallPath, responses={202: LiveCall},
                errors=("call_not_found", "calls_unavailable"), scope=Scope.SEND,
                description="An answered call is hung up on both sides; a ringing one is "
                            "refused to the caller (its record says `command`)."))
