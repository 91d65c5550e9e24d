"""Control API routes of verification codes: send, check, resend, cancel and look up.

No answer carries the code or its hash; another tenant's verification is not found (404).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from handlers import audit as audit_trail
from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import Body, Params, PhoneText, Timestamp, Uuid
from handlers.api.scopes import Scope
from handlers.registry.routes import NUMBER_CODES
from handlers.verify.service import MAX_PURPOSE, StartRequest, Verifier

Purpose = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PURPOSE,
                                           pattern=r"^[A-Za-z0-9_.-]+$")]
Code = Annotated[str, StringConstraints(min_length=1, max_length=10, pattern=r"^[0-9]+$")]
Status = Literal["pending", "approved", "failed", "canceled", "expired"]


class VerificationIn(Body):
    to: PhoneText = Field(description="the phone that receives the code", examples=["010-1234-5678"])
    from_: PhoneText = Field(alias="from", description="a registered sender number of the tenant",
                             examples=["02-1234-5678"])
    template: Uuid | None = Field(None, description="a /v1/templates id whose text has {code} "
                                                    "(and may have {minutes})")
    purpose: Purpose = Field("login", description="a new verification of the same number and "
                                                  "purpose supersedes an open one")


class CheckIn(Body):
    code: Code = Field(description="the digits the user typed")


class VerificationPath(Params):
    id: Uuid


class Sent(BaseModel):
    id: Uuid
    status: Literal["pending"]
    to: str = Field(description="the number, canonical (digits only)")
    expires_at: Timestamp
    message_id: Uuid = Field(description="the SMS that carries the code")


class Approved(BaseModel):
    id: Uuid
    status: Literal["approved"]
    approved_at: Timestamp


class Canceled(BaseModel):
    id: Uuid
    status: Literal["canceled"]


class VerificationOut(BaseModel):
    id: Uuid
    to: str
    from_: str = Field(alias="from")
    purpose: str
    status: Status
    reason: str | None = Field(description="why it failed or was canceled: too_many_failures, "
                                           "expired, superseded, canceled")
    sends: int = Field(description="codes sent so far (1 + resends)")
    expires_at: Timestamp
    created_at: Timestamp
    closed_at: Timestamp | None


def _verifier(request: web.Request) -> Verifier:
    ctx = request.app[CTX]
    return Verifier(ctx.config.verification, ctx.index, ctx.policies, ctx.dispatch_wake)


def _now() -> datetime:
    return datetime.now(UTC)


START_PATH = "/v1/verifications"


async def start(request: web.Request) -> web.Response:
    body = arg(request, VerificationIn)
    req = StartRequest(to=body.to, sender=body.from_, template_id=body.template,
                       purpose=body.purpose)
    who = principal(request)
    # the entry the framework would write after the answer, written in the code's statement
    entry = audit_trail.pending(who.tenant_id, who.actor, f"{request.method} {START_PATH}",
                                request.path, {"status": 201})
    async with request.app[CTX].pool.acquire() as conn:
        answer = await _verifier(request).start(conn, who, req, _now(), entry)
    audit_trail.recorded()
    return respond(Sent.model_validate(answer), 201)


async def check(request: web.Request) -> web.Response:
    vid = arg(request, VerificationPath).id
    code = arg(request, CheckIn).code
    async with request.app[CTX].pool.acquire() as conn:
        answer = await _verifier(request).check(conn, principal(request), vid, code, _now())
    return respond(Approved.model_validate(answer))


async def resend(request: web.Request) -> web.Response:
    vid = arg(request, VerificationPath).id
    async with request.app[CTX].pool.acquire() as conn:
        answer = await _verifier(request).resend(conn, principal(request), vid, _now())
    return respond(Sent.model_validate(answer), 201)


async def cancel(request: web.Request) -> web.Response:
    vid = arg(request, VerificationPath).id
    async with request.app[CTX].pool.acquire() as conn:
        answer = await _verifier(request).cancel(conn, principal(request), vid, _now())
    return respond(Canceled.model_validate(answer))


async def get(request: web.Request) -> web.Response:
    vid = arg(request, VerificationPath).id
    async with request.app[CTX].pool.acquire() as conn:
        answer = await _verifier(request).get(conn, principal(request), vid, _now())
    return respond(VerificationOut.model_validate(answer))


# What composing the code's SMS can refuse (the same checks as every message), and the caps.
_SEND_ERRORS = ("sender_not_registered", "opted_out", "invalid_recipients",
                "unencodable_character", "too_long", "unknown_variable", "missing_variable",
                "empty_text", "verification_send_limit", "verification_tenant_limit",
                "verification_locked", *NUMBER_CODES)
_OPEN_ERRORS = ("verification_expired", "verification_closed")


def add_routes(t: RouteTable) -> None:
    """Declare the verification routes."""
    tag = "verifications"
    t.add(Route("POST", START_PATH, start,
                "Send a verification code by SMS (the code is never shown)", tag,
                body=VerificationIn, responses={201: Sent},
                errors=(*_SEND_ERRORS, "template_not_found", "template_without_code",
                        "too_long_for_sms"), scope=Scope.SEND))
    t.add(Route("GET", "/v1/verifications/{id}", get, "A verification's state", tag,
                path_params=VerificationPath, responses={200: VerificationOut},
                scope=Scope.READ))
    t.add(Route("POST", "/v1/verifications/{id}/check", check,
                "Check the code the user typed: approved, or a coded refusal", tag,
                path_params=VerificationPath, body=CheckIn, responses={200: Approved},
                errors=("verification_code_mismatch", "verification_locked", *_OPEN_ERRORS),
                scope=Scope.SEND))
    t.add(Route("POST", "/v1/verifications/{id}/resend", resend,
                "Send a new code; the previous one stops working", tag,
                path_params=VerificationPath, responses={201: Sent},
                errors=(*_SEND_ERRORS, "verification_resend_too_soon", *_OPEN_ERRORS),
                scope=Scope.SEND))
    t.add(Route("POST", "/v1/verifications/{id}/cancel", cancel,
                "Cancel: the code stops working and is withdrawn if not yet sent", tag,
                path_params=VerificationPath, responses={200: Canceled}, errors=_OPEN_ERRORS,
                scope=Scope.SEND))
