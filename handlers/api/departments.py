"""Control API routes of departments (부서) and their members (DESIGN.md §9)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from handlers import departments as dept_db
from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import Body, Page, Params, TimeUuidPage, Uuid
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.pagination import split_time_cursor, time_cursor
from handlers.tenants import SP_ID_PATTERN

TAG = "departments"

Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
ExtensionNumber = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,4}$")]
SpId = Annotated[str, StringConstraints(pattern=SP_ID_PATTERN)]
_EXTENSIONS = Field(None, max_length=1000,
                    description="the extensions (agents) in the department; given: replaces "
                                "the list, moving each from any other department")
_SP_IDS = Field(None, max_length=1000,
                description="the SP IDs whose messages count for the department; given: "
                            "replaces the list, moving each from any other department")


class DepartmentIn(Body):
    name: Name
    extensions: list[ExtensionNumber] | None = _EXTENSIONS
    sp_ids: list[SpId] | None = _SP_IDS


class DepartmentPatch(Body):
    name: Name | None = None
    extensions: list[ExtensionNumber] | None = _EXTENSIONS
    sp_ids: list[SpId] | None = _SP_IDS


class DepartmentOut(BaseModel):
    id: uuid.UUID
    name: str
    extensions: list[str] = Field(description="its extensions, which are its agents "
                                              "(/v1/agents)")
    sp_ids: list[str]
    created_at: datetime
    updated_at: datetime


class DepartmentPath(Params):
    department_id: Uuid


def _out(d: dept_db.Department) -> DepartmentOut:
    return DepartmentOut(id=d.id, name=d.name, extensions=list(d.extensions),
                         sp_ids=list(d.sp_ids), created_at=d.created_at,
                         updated_at=d.updated_at)


async def list_departments(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, TimeUuidPage)
    after = None
    if q.cursor is not None:
        at, key = split_time_cursor(q.cursor)
        after = (at, uuid.UUID(key))
    async with request.app[CTX].pool.acquire() as conn:
        found = await dept_db.list_page(conn, who.tenant_id, after=after, limit=q.limit + 1)
    items = found[:q.limit]
    nxt = (time_cursor(items[-1].created_at, items[-1].id.hex)
           if len(found) > q.limit and items else None)
    return respond(Page[DepartmentOut](items=[_out(d) for d in items], next_cursor=nxt))


async def create_department(request: web.Request) -> web.Response:
    who = principal(request)
    body = arg(request, DepartmentIn)
    async with request.app[CTX].pool.acquire() as conn:
        d = await dept_db.create(conn, who.tenant_id, dept_db.check_name(body.name),
                                 body.extensions, body.sp_ids)
    return respond(_out(d), 201)


async def get_department(request: web.Request) -> web.Response:
    who = principal(request)
    department_id = arg(request, DepartmentPath).department_id
    async with request.app[CTX].pool.acquire() as conn:
        d = await dept_db.get(conn, who.tenant_id, department_id)
    if d is None:
        raise DomainError("not_found", "no such department")
    return respond(_out(d))


async def update_department(request: web.Request) -> web.Response:
    who = principal(request)
    department_id = arg(request, DepartmentPath).department_id
    body = arg(request, DepartmentPatch)
    name = dept_db.check_name(body.name) if body.name is not None else None
    async with request.app[CTX].pool.acquire() as conn:
        d = await dept_db.update(conn, who.tenant_id, department_id, name=name,
                                 extensions=body.extensions, sp_ids=body.sp_ids)
    if d is None:
        raise DomainError("not_found", "no such department")
    return respond(_out(d))


async def delete_department(request: web.Request) -> web.Response:
    who = principal(request)
    department_id = arg(request, DepartmentPath).department_id
    async with request.app[CTX].pool.acquire() as conn:
        if not await dept_db.delete(conn, who.tenant_id, department_id):
            raise DomainError("not_found", "no such department")
    return web.Response(status=204)


_CODES = ("invalid_name", "department_exists", "unknown_member")


def add_routes(t: RouteTable) -> None:
    """Declare the department routes."""
    t.add(Route("GET", "/v1/departments", list_departments, "Departments, oldest first", TAG,
                query=TimeUuidPage, responses={200: Page[DepartmentOut]}, scope=Scope.READ))
    t.add(Route("POST", "/v1/departments", create_department,
                "Create a department with its extensions and SP IDs", TAG,
                body=DepartmentIn, responses={201: DepartmentOut}, errors=_CODES,
                scope=Scope.MANAGE))
    t.add(Route("GET", "/v1/departments/{department_id}", get_department,
                "A department and its members", TAG, path_params=DepartmentPath,
                responses={200: DepartmentOut}, scope=Scope.READ))
    t.add(Route("PATCH", "/v1/departments/{department_id}", update_department,
                "Rename a department or replace its member lists", TAG,
                path_params=DepartmentPath, body=DepartmentPatch,
                responses={200: DepartmentOut}, errors=_CODES, scope=Scope.MANAGE,
                description="Calls and messages already recorded keep the department they "
                            "were made in; members moved count for their new department "
                            "from now on."))
    t.add(Route("DELETE", "/v1/departments/{department_id}", delete_department,
                "Delete a department (its members are left without one)", TAG,
                path_params=DepartmentPath, responses={204: None}, scope=Scope.MANAGE))
