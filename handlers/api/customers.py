"""Control API routes of the customer directory (seed 002 §13-2): the names call events show."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from handlers import customers as customer_db
from handlers.api.context import CTX
from handlers.api.framework import Route, RouteTable, arg, principal, respond
from handlers.api.models import (
    DIGITS_PATTERN,
    Body,
    DigitsCursor,
    Limit,
    Page,
    Params,
    PhoneText,
)
from handlers.api.scopes import Scope
from handlers.errors import DomainError

TAG = "customers"

# Codes a customer's number can be refused with (handlers.numbers, handlers.registry.optouts).
_NUMBER_CODES = ("empty", "not_digits", "international", "too_short", "too_long")


class CustomerIn(Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=customer_db.NAME_MAX)] = \
        Field(description="the customer's name as the portal shows it (1-100 characters)",
              examples=["홍길동"])


class CustomerOut(BaseModel):
    number: str = Field(description="canonical national digits")
    name: str
    updated_at: datetime


class CustomerPath(Params):
    number: PhoneText = Field(description="the customer's number, separators allowed "
                                          "(`010-1234-5678`)")


class CustomerQuery(Params):
    name: Annotated[str, StringConstraints(max_length=customer_db.NAME_MAX)] = Field(
        "", description="only names starting with this")
    number: Annotated[str, StringConstraints(pattern=DIGITS_PATTERN)] = Field(
        "", description="only numbers starting with these digits (separators ignored)")
    limit: Limit = 50
    cursor: DigitsCursor | None = None


def _out(c: customer_db.Customer) -> CustomerOut:
    return CustomerOut(number=c.number, name=c.name, updated_at=c.updated_at)


def _number(request: web.Request) -> str:
    return customer_db.canonical_customer(arg(request, CustomerPath).number)


async def put_customer(request: web.Request) -> web.Response:
    who = principal(request)
    number = _number(request)
    name = customer_db.check_name(arg(request, CustomerIn).name)
    async with request.app[CTX].pool.acquire() as conn:
        customer, created = await customer_db.put(conn, who.tenant_id, number, name)
    return respond(_out(customer), 201 if created else 200)


async def get_customer(request: web.Request) -> web.Response:
    who = principal(request)
    number = _number(request)
    async with request.app[CTX].pool.acquire() as conn:
        customer = await customer_db.get(conn, who.tenant_id, number)
    if customer is None:
        raise DomainError("not_found", "no such customer")
    return respond(_out(customer))


async def list_customers(request: web.Request) -> web.Response:
    who = principal(request)
    q = arg(request, CustomerQuery)
    async with request.app[CTX].pool.acquire() as conn:
        found = await customer_db.list_page(
            conn, who.tenant_id, name_prefix=q.name.strip(),
            number_prefix=re.sub(r"[^0-9]", "", q.number), after=q.cursor, limit=q.limit + 1)
    items = found[:q.limit]
    nxt = items[-1].number if len(found) > q.limit and items else None
    return respond(Page[CustomerOut](items=[_out(c) for c in items], next_cursor=nxt))


async def delete_customer(request: web.Request) -> web.Response:
    who = principal(request)
    number = _number(request)
    async with request.app[CTX].pool.acquire() as conn:
        if not await customer_db.delete(conn, who.tenant_id, number):
            raise DomainError("not_found", "no such customer")
    return web.Response(status=204)


def add_routes(t: RouteTable) -> None:
    """Declare the customer directory's routes."""
    t.add(Route("GET", "/v1/customers", list_customers, "Customers, by number", TAG,
                query=CustomerQuery, responses={200: Page[CustomerOut]}, scope=Scope.READ))
    t.add(Route("PUT", "/v1/customers/{number}", put_customer,
                "Name a customer's number (create or replace)", TAG, path_params=CustomerPath,
                body=CustomerIn, responses={201: CustomerOut, 200: CustomerOut},
                errors=("invalid_name", *_NUMBER_CODES), scope=Scope.MANAGE,
                description="Call events (`call.ringing`, `call.answered`, `call.ended`) "
                            "written from now on carry the name as `customer_name` when this "
                            "number is the caller of an incoming call or the callee of an "
                            "outgoing one. 201 when the number was new, 200 when replaced."))
    t.add(Route("GET", "/v1/customers/{number}", get_customer, "One customer", TAG,
                path_params=CustomerPath, responses={200: CustomerOut}, errors=_NUMBER_CODES,
                scope=Scope.READ))
    t.add(Route("DELETE", "/v1/customers/{number}", delete_customer,
                "Forget a customer's name", TAG, path_params=CustomerPath,
                responses={204: None}, errors=_NUMBER_CODES, scope=Scope.MANAGE))
