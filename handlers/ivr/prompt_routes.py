"""Control API routes of IVR prompts (DESIGN.md §9 `PUT /v1/prompts/{name}`): the fixed set of
prompts, each the tenant's own recording or the shipped Korean default; upload, listen, revert.

File work and conversion run off the event loop (`asyncio.to_thread`); every change is audited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal, TypeVar

import structlog
from aiohttp import web
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema

from handlers import audit
from handlers.api.context import CTX
from handlers.api.framework import File, Raw, Route, RouteTable, arg, principal, raw_body, respond
from handlers.api.models import Page, Params
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.ivr.prompts import MAX_SECONDS, MAX_UPLOAD_BYTES, MIN_SECONDS, PROMPTS, PromptInfo, PromptStore
from handlers.outage import describe

log = structlog.get_logger("telgate.prompts")

TAG = "prompts"
WAV = "audio/wav"
# What browsers and tools send for WAV; the first is the registered type.
WAV_TYPES = (WAV, "audio/x-wav", "audio/wave", "audio/vnd.wave")
T = TypeVar("T")


def _prompt_name(raw: str) -> str:
    if raw not in PROMPTS:
        raise ValueError("no such prompt")
    return raw


PromptName = Annotated[str, AfterValidator(_prompt_name),
                       WithJsonSchema({"type": "string", "enum": list(PROMPTS)})]


class PromptPath(Params):
    name: PromptName


class PromptOut(BaseModel):
    """A prompt as the tenant's callers hear it."""

    name: str
    description: str = Field(description="what the prompt says (the default's Korean text)")
    loops: bool = Field(description="played again and again until stopped (hold music)")
    source: Literal["default", "tenant"] = Field(
        description="tenant: the tenant's upload; default: the shipped Korean prompt")
    duration_seconds: float
    updated_at: datetime | None = Field(description="when the tenant uploaded it; null for "
                                                    "the default")


def _out(p: PromptInfo) -> PromptOut:
    return PromptOut(name=p.name, description=p.description, loops=p.loops, source=p.source,
                     duration_seconds=round(p.duration, 3), updated_at=p.updated_at)


def _store(request: web.Request) -> PromptStore:
    store = request.app[CTX].prompts
    if store is None:
        raise DomainError("prompts_unavailable", "prompts are not set up on this instance",
                          retry_after=30)
    return store


async def _files(action: str, name: str, work: Callable[[], T]) -> T:
    """Run a store call off the event loop; a storage fault is a 500 with its code."""
    try:
        return await asyncio.to_thread(work)
    except OSError as exc:
        log.error("prompt_storage_failed", action=action, prompt=name, error=describe(exc))
        raise DomainError("prompt_storage_error", "the prompt's files cannot be "
                          f"{'written' if action in ('put', 'delete') else 'read'}",
                          status=500) from None


async def list_prompts(request: web.Request) -> web.Response:
    who, store = principal(request), _store(request)
    found = await _files("list", "", lambda: store.list(who.tenant_id))
    return respond(Page[PromptOut](items=[_out(p) for p in found], next_cursor=None))


async def get_prompt(request: web.Request) -> web.Response:
    who, store = principal(request), _store(request)
    name = arg(request, PromptPath).name
    return respond(_out(await _files("info", name, lambda: store.info(who.tenant_id, name))))


async def get_audio(request: web.Request) -> web.Response:
    who, store = principal(request), _store(request)
    name = arg(request, PromptPath).name
    wav = await _files("audio", name, lambda: store.wav(who.tenant_id, name))
    return web.Response(body=wav, content_type=WAV, headers={
        "Content-Disposition": f'inline; filename="{name}.wav"',
        "Cache-Control": "private, no-cache"})


async def put_prompt(request: web.Request) -> web.Response:
    who, store = principal(request), _store(request)
    name = arg(request, PromptPath).name
    wav = raw_body(request)
    info, created = await _files("put", name, lambda: store.put(who.tenant_id, name, wav))
    async with request.app[CTX].pool.acquire() as conn:
        await audit.record(conn, who.tenant_id, who.actor, "prompt.upload", name, {
            "created": created, "bytes": len(wav), "seconds": round(info.duration, 3)})
    return respond(_out(info), 201 if created else 200)


async def delete_prompt(request: web.Request) -> web.Response:
    who, store = principal(request), _store(request)
    name = arg(request, PromptPath).name
    had = await _files("delete", name, lambda: store.delete(who.tenant_id, name))
    async with request.app[CTX].pool.acquire() as conn:
        await audit.record(conn, who.tenant_id, who.actor, "prompt.delete", name,
                           {"had_own": had})
    return web.Response(status=204)


_NAMES = ", ".join(f"`{n}`" for n in PROMPTS)
_FORMATS = (f"Any common WAV: integer PCM 8/16/24/32-bit, IEEE float, G.711 A-law/μ-law, plain "
            f"or WAVE_FORMAT_EXTENSIBLE, mono or stereo (mixed down), 8-48 kHz; at most "
            f"{MAX_UPLOAD_BYTES} bytes and {MAX_SECONDS:g} s, at least {MIN_SECONDS:g} s. It "
            f"is converted once to 8 kHz G.711 (what callers hear).")


def add_routes(t: RouteTable) -> None:
    """Declare the prompt routes."""
    t.add(Route("GET", "/v1/prompts", list_prompts,
                "Every prompt as the tenant's callers hear it (one page, the whole set)", TAG,
                responses={200: Page[PromptOut]}, errors=("prompts_unavailable",
                                                          "prompt_storage_error"),
                scope=Scope.READ, description=f"The prompts are {_NAMES}."))
    t.add(Route("GET", "/v1/prompts/{name}", get_prompt, "A prompt's metadata", TAG,
                path_params=PromptPath, responses={200: PromptOut},
                errors=("prompts_unavailable", "prompt_storage_error"), scope=Scope.READ))
    t.add(Route("GET", "/v1/prompts/{name}/audio", get_audio,
                "Listen to a prompt as the tenant's callers hear it", TAG,
                path_params=PromptPath,
                responses={200: File((WAV,), "8 kHz 16-bit mono PCM WAV")},
                errors=("prompts_unavailable", "prompt_storage_error"), scope=Scope.READ))
    t.add(Route("PUT", "/v1/prompts/{name}", put_prompt,
                "Upload the tenant's own recording of a prompt", TAG, path_params=PromptPath,
                body=Raw(WAV_TYPES, MAX_UPLOAD_BYTES, "the WAV file, as the body"),
                responses={200: PromptOut, 201: PromptOut},
                errors=("prompts_unavailable", "invalid_audio", "prompt_too_long",
                        "prompt_too_short", "prompt_storage_error"),
                scope=Scope.MANAGE,
                description=_FORMATS + " 201 for the tenant's first upload of the prompt, 200 "
                                       "when it replaces one. Audited."))
    t.add(Route("DELETE", "/v1/prompts/{name}", delete_prompt,
                "Go back to the default prompt", TAG, path_params=PromptPath,
                responses={204: None}, errors=("prompts_unavailable", "prompt_storage_error"),
                scope=Scope.MANAGE, description="Also 204 when the tenant had no upload. "
                                                "Audited."))
