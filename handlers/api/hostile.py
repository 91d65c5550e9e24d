"""Hostile input: values PostgreSQL cannot store or that cost unbounded work are refused (4xx)
with the field at fault, before any handler sees them — in JSON bodies (`check_json`, called by
`read_json`) and in path and query parameters (`hostile_guard`); a text that still reaches
PostgreSQL with a character it refuses answers 422, not 500."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from handlers.errors import DomainError

# The framework imports this module (read_json), so its Handler alias cannot be imported here.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_DEPTH = 32  # our deepest request (to[].vars.{name}) is 4 levels; 32 leaves room
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_json(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH, NUL characters and lone surrogates (in keys too).

    Walks iteratively: the document may be as deep as the parser allowed.
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= MAX_DEPTH:
            raise DomainError("json_too_deep", f"JSON nests deeper than {MAX_DEPTH} levels",
                              field=path or None, status=400)
        if isinstance(item, dict):
            for key, child in item.items():
                where = f"{path}.{key}" if path else str(key)
                _check_text(str(key), where)
                stack.append((child, where, depth + 1))
        else:
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise DomainError("forbidden_character", "text may not contain NUL (U+0000)",
                          field=path or None, status=422)
    if _SURROGATE.search(text):
        raise DomainError("forbidden_character",
                          "text may not contain lone surrogates (U+D800..U+DFFF)",
                          field=path or None, status=422)


@web.middleware
async def hostile_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Inside the framework's middleware: NUL/surrogates in the path or query are a 422 naming
    the parameter; PostgreSQL's own refusal of a character (other inputs) is the same 422."""
    for name, value in request.match_info.items():
        _check_text(value, name)
    for name, value in request.query.items():
        _check_text(name, name)
        _check_text(value, name)
    try:
        return await handler(request)
    except (asyncpg.exceptions.CharacterNotInRepertoireError,
            asyncpg.exceptions.UntranslatableCharacterError):
        raise DomainError("forbidden_character",
                          "the request holds a character that cannot be stored (NUL?)",
                          status=422) from None
