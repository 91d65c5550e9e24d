"""Control API routes of agents and their presence (DESIGN.md §9: /v1/agents,
PUT /v1/agents/{id}/presence). An agent is an extension: its id is the extension number."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field, Strict

from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import Body, Limit, Page, Params, Uuid
from handlers.api.scopes import Scope
from handlers.calls import presence as presence_db
from handlers.calls.presence import Presence
from handlers.calls.routes import ExtensionNumber
from handlers.errors import DomainError

TAG = "agents"


class AgentOut(BaseModel):
    """An agent: an extension with its name, department, presence and registration state."""

    extension: str = Field(description="the agent's id: its extension number")
    name: str
    department_id: uuid.UUID | None = Field(description="its department (/v1/departments)")
    presence: Presence = Field(description="online takes calls; offline and dnd take none")
    presence_changed_at: datetime = Field(description="when the presence was last set (the "
                                                      "extension's creation until then)")
    registered: bool = Field(description="whether the phone has a live registration")
    contacts: int = Field(description="the phone's unexpired registrations (contacts)")


class PresenceIn(Body):
    # The only enum of a strict body: JSON has no enum type, so its string is the value.
    presence: Annotated[Presence, Strict(False)]


class AgentPath(Params):
    extension: ExtensionNumber


class AgentQuery(Params):
    presence: Presence | None = Field(None, description="only agents with this presence")
    department_id: Uuid | None = Field(None, description="only agents of this department")
    limit: Limit = 50
    cursor: ExtensionNumber | None = Field(None, description="the `next_cursor` of the "
                                                             "previous page")


def _out(agent: presence_db.AgentPresence) -> AgentOut:
    return AgentOut.model_validate(agent.public())


async def list_agents(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, AgentQuery)
    async with request.app[CTX].pool.acquire() as conn:
        found = await presence_db.list_page(conn, who.tenant_id, presence=q.presence,
                                            department_id=q.department_id, after=q.cursor,
                                            limit=q.limit + 1)
    items = found[:q.limit]
    nxt = items[-1].extension if len(found) > q.limit and items else None
    return respond(Page[AgentOut](items=[_out(a) for a in items], next_cursor=nxt))


async def get_agent(request: web.Request) -> web.Response:
    who = principal(request)
    extension = arg(request, AgentPath).extension
    async with request.app[CTX].pool.acquire() as conn:
        agent = await presence_db.get(conn, who.tenant_id, extension)
    if agent is None:
        raise DomainError("not_found", "no such extension")
    return respond(_out(agent))


async def set_presence(request: web.Request) -> web.Response:
    who = principal(request)
    extension = arg(request, AgentPath).extension
    wanted = arg(request, PresenceIn).presence
    ctx = request.app[CTX]
    async with ctx.pool.acquire() as conn:
        agent = await presence_db.set_presence(conn, who.tenant_id, extension, wanted,
                                               actor=who.actor)
    # Also when nothing changed: it brings a cache that missed a change back in step.
    for listener in ctx.presence_changed:
        listener(who.tenant_id, extension, agent.presence)
    return respond(_out(agent))


def add_routes(table: RouteTable) -> None:
    """Mount and document the agent routes."""
    table.add(Route("GET", "/v1/agents", list_agents, "List agents with presence and "
                    "registration state", TAG, query=AgentQuery,
                    responses={200: Page[AgentOut]}, scope=Scope.READ,
                    description="An agent is an extension (its name and department); its id "
                                "is the extension number. In extension order."))
    table.add(Route("GET", "/v1/agents/{extension}", get_agent, "Get an agent", TAG,
                    path_params=AgentPath, responses={200: AgentOut}, scope=Scope.READ))
    table.add(Route("PUT", "/v1/agents/{extension}/presence", set_presence,
                    "Set an agent's presence (online, offline, dnd)", TAG,
                    path_params=AgentPath, body=PresenceIn, responses={200: AgentOut},
                    scope=Scope.SEND,
                    description="Offline and dnd agents are offered no calls. A change emits "
                                "`presence.changed`; setting the presence the agent already "
                                "has changes nothing and emits nothing. Scope `send`: the "
                                "agent's CRM changes it, like it sends messages."))
