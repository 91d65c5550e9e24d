"""Route declarations: what a route must declare, and the cursors every list publishes."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from handlers import pagination
from handlers.api.framework import Route
from handlers.api.models import Params, Uuid


async def _handler(request: web.Request) -> web.Response:
    return web.Response()


class _Out(BaseModel):
    ok: bool


class _ThingPath(Params):
    thing_id: Uuid


def test_a_path_parameter_needs_a_model_declaring_it() -> None:
    with pytest.raises(ValueError, match="path_params"):
        Route("GET", "/v1/things/{thing_id}", _handler, "x", "t", responses={200: _Out})
    Route("GET", "/v1/things/{thing_id}", _handler, "x", "t", path_params=_ThingPath,
          responses={200: _Out})


def test_a_route_names_only_registered_codes_and_declares_an_answer() -> None:
    with pytest.raises(LookupError):
        Route("GET", "/v1/things", _handler, "x", "t", responses={200: _Out},
              errors=("thing_exploded",))
    with pytest.raises(ValueError, match="answer"):
        Route("GET", "/v1/things", _handler, "x", "t")


def test_a_route_lists_the_codes_its_inputs_imply() -> None:
    r = Route("GET", "/v1/things/{thing_id}", _handler, "x", "t", path_params=_ThingPath,
              responses={200: _Out}, errors=("template_exists",))
    assert {e.code for e in r.codes()} == {"internal_error", "database_unavailable",
                                           "forbidden_character", "unauthenticated",
                                           "invalid_key", "missing_scope", "rate_limited",
                                           "not_found", "template_exists"}


@given(st.from_regex(pagination.TIME_UUID, fullmatch=True))
def test_every_string_a_time_uuid_cursor_pattern_admits_is_a_position(cursor: str) -> None:
    at, key = pagination.split_time_cursor(cursor)
    assert at.tzinfo is not None and uuid.UUID(key)


@given(st.from_regex(pagination.TIME_DIGITS, fullmatch=True))
def test_every_string_a_time_number_cursor_pattern_admits_is_a_position(cursor: str) -> None:
    at, key = pagination.split_time_cursor(cursor)
    assert at.year >= 1970 and key.isdigit()


@given(st.datetimes(min_value=datetime(1970, 1, 1), timezones=st.just(UTC)), st.uuids())
def test_a_cursor_given_is_read_back_as_the_same_position(at: datetime, key: uuid.UUID) -> None:
    cursor = pagination.time_cursor(at, str(key))
    assert re.fullmatch(pagination.TIME_UUID, cursor)
    assert pagination.split_time_cursor(cursor) == (at, key.hex)
