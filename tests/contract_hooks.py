"""Schemathesis checks of the contract run (schemathesis.toml loads them: `hooks`).

schemathesis.toml accepts 422 as an answer to schema-valid data, because business rules
answer it. This check takes back what that loosening would hide: a schema-valid request must
never be refused with a code of kind `request` (handlers.errors.Kind), which would mean the
published document allows what the route refuses for its form.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

from handlers.errors import CODES, Kind


@schemathesis.check
def refused_for_form_though_schema_valid(ctx: Any, response: Any, case: Any) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return None
    if response.status_code in (401, 404, 405):  # credentials, existence, method: not form
        return None
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        return None
    entry = CODES.get(code) if isinstance(code, str) else None
    if entry is not None and entry.kind is Kind.REQUEST:
        raise AssertionError(f"schema-valid request refused with `{code}` ({entry.meaning})")
    return None


@schemathesis.check
def problem_code_is_declared_for_the_operation(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every code an operation answers is listed under it (x-error-codes of that status)."""
    if response.status_code < 400 or case.method.upper() != case.operation.method.upper():
        return None  # an undeclared method is unsupported_method's business
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        return None  # not one of our problems (e.g. aiohttp refusing a NUL in a header)
    if not isinstance(code, str):
        return None
    responses = case.operation.definition.raw.get("responses", {})
    declared = responses.get(str(response.status_code), {}).get("x-error-codes", [])
    if code not in declared:
        raise AssertionError(f"{case.method} {case.path} answered {response.status_code} "
                             f"`{code}`, not among its declared codes {declared}")
    return None


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    """GET /v1/events streams until the client leaves: a valid `max_seconds` (or none) becomes
    one second, so each fuzzed request ends; an invalid one is left for the route to refuse."""
    if case.operation.path != "/v1/events":
        return
    query = case.query if isinstance(case.query, dict) else {}
    given = query.get("max_seconds")
    try:
        valid = given is None or 1 <= int(str(given)) <= 86_400
    except ValueError:
        valid = False
    if valid:
        case.query = {**query, "max_seconds": 1}
