"""Which errors mean the database is away, and how loops pace their retries."""

from __future__ import annotations

import asyncpg
import pytest

from handlers.outage import Backoff, DatabaseHealth, is_outage


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "refused"),
    FileNotFoundError(2, "no socket"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.TooManyConnectionsError("too many clients"),
    asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed"),
    asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is "
                                           "in progress"),
])
def test_connection_losses_and_restarts_are_outages(exc: BaseException) -> None:
    assert is_outage(exc)


@pytest.mark.parametrize("exc", [
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
    asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence"),
    asyncpg.InterfaceError("the server expects 2 arguments, 1 was passed"),
    ValueError("ours"),
])
def test_mistakes_and_refusals_are_not_outages(exc: BaseException) -> None:
    assert not is_outage(exc)


def test_an_outage_wrapped_in_another_error_is_still_one() -> None:
    try:
        try:
            raise ConnectionResetError(104, "reset")
        except ConnectionResetError as inner:
            raise RuntimeError("store failed") from inner
    except RuntimeError as outer:
        assert is_outage(outer)


def test_backoff_grows_to_its_cap_and_starts_over_after_success() -> None:
    b = Backoff(base=0.1, cap=5.0, rand=lambda: 1.0)  # no jitter
    delays = [b.next() for _ in range(10)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert max(delays) == 5.0 and delays[-1] == 5.0
    b.reset()
    assert b.next() == 0.1


def test_health_says_since_when_and_why_the_database_is_away() -> None:
    now = [100.0]
    health = DatabaseHealth(clock=lambda: now[0])
    assert health.detail() == "reachable" and health.down_for() == 0
    health.failed(ConnectionRefusedError(111, "Connection refused"))
    now[0] = 112.0
    health.failed(asyncpg.CannotConnectNowError("the database system is starting up"))
    health.supervisor_state = "restarting (attempt 2)"
    assert health.down_for() == 12.0
    assert health.detail() == ("unreachable for 12 s (CannotConnectNowError: the database system "
                               "is starting up); embedded server: restarting (attempt 2)")
    health.ok()
    assert not health.is_down and health.detail() == "reachable"
