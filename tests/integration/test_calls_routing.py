"""Routing policy as tables: DIDs, ring groups, trunk choice, caller ID, failure answers."""

from __future__ import annotations

import uuid

import pytest

from config.sip import DidConfig, TrunkConfig
from handlers.calls import routing
from handlers.calls.cdr import Direction
from handlers.calls.routing import Refusal, Target
from protocols.sip.transaction import Peer
from protocols.sip.uri import URI

ACME = uuid.UUID(int=1)
OTHER = uuid.UUID(int=2)


def target(ext: str, n: int = 0) -> Target:
    return Target(ext, URI("sip", user=ext, host=f"192.0.2.{n}"), Peer("UDP", f"192.0.2.{n}", 5060))


REGISTERED = {"1001": [target("1001", 1), target("1001", 11)], "1002": [target("1002", 2)]}


def contacts(ext: str) -> list[Target]:
    return REGISTERED.get(ext, [])


@pytest.mark.parametrize(("dialled", "tenants", "expected"), [
    ("0212345678", {"acme": ACME}, "routed"),
    ("0299999999", {"acme": ACME}, Refusal(404)),
    (None, {"acme": ACME}, Refusal(404)),
    ("0212345678", {}, "resolve tenant"),
])
def test_a_did_routes_to_its_tenant_or_is_refused(dialled: str | None,
                                                   tenants: dict[str, uuid.UUID],
                                                   expected: object) -> None:
    did = DidConfig(number="0212345678", tenant="acme", extensions=["1001"])
    got = routing.route_did({did.number: did}, tenants, dialled)
    if expected == "routed":
        assert got == (did, ACME)
    elif expected == "resolve tenant":
        assert got == did
    else:
        assert got == expected


@pytest.mark.parametrize(("strategy", "extensions", "stages", "stage_seconds"), [
    ("simultaneous", ["1001", "1002"], [["1001", "1001", "1002"]], None),
    ("sequential", ["1001", "1002"], [["1001", "1001"], ["1002"]], 15.0),
    ("sequential", ["1003", "1002"], [["1002"]], 15.0),  # unregistered 1003 is skipped
    ("simultaneous", ["1003"], [], None),
])
def test_ring_groups_ring_at_once_or_in_turn(strategy: str, extensions: list[str],
                                             stages: list[list[str]],
                                             stage_seconds: float | None) -> None:
    did = DidConfig(number="0212345678", tenant="acme", extensions=extensions,
                    strategy=strategy, ring_seconds=15.0, no_answer_seconds=45.0)  # type: ignore[arg-type]
    plan = routing.did_plan(did, contacts)
    assert [[t.extension for t in stage] for stage in plan.stages] == stages
    assert plan.stage_seconds == stage_seconds and plan.no_answer_seconds == 45.0


TRUNKS = [TrunkConfig(name="kt", host="192.0.2.50"), TrunkConfig(name="lg", host="192.0.2.51"),
          TrunkConfig(name="acme-only", host="192.0.2.52", tenant="acme"),
          TrunkConfig(name="inbound-only", addresses=["192.0.2.53"])]


@pytest.mark.parametrize(("tenant", "down", "chosen"), [
    (ACME, set(), "kt"),
    (ACME, {"kt"}, "lg"),
    (ACME, {"kt", "lg"}, "acme-only"),
    (OTHER, {"kt", "lg"}, "kt"),  # nothing answers: try the first anyway
])
def test_outgoing_calls_leave_by_a_trunk_answering_its_keepalives(
        tenant: uuid.UUID, down: set[str], chosen: str) -> None:
    trunk = routing.choose_trunk(TRUNKS, {"acme": ACME}, tenant, down)
    assert trunk is not None and trunk.name == chosen


def test_no_trunk_with_a_host_means_no_outgoing_calls() -> None:
    assert routing.choose_trunk(TRUNKS[3:], {}, ACME, set()) is None


def test_trunk_monitor_reports_changes_only() -> None:
    monitor = routing.TrunkMonitor()
    assert monitor.timed_out("kt") and not monitor.timed_out("kt")
    assert monitor.down == {"kt"}
    assert monitor.answered("kt") and not monitor.answered("kt")
    assert monitor.down == set()


@pytest.mark.parametrize(("presented", "expected"), [
    ("0215550000", "0215550000"),
    ("0215559999", Refusal(403, "Caller ID Not Registered")),
    (None, Refusal(403, "Caller ID Not Registered")),
])
def test_only_registered_caller_ids_go_out(presented: str | None, expected: object) -> None:
    assert routing.caller_id(presented, lambda n: n == "0215550000") == expected


@pytest.mark.parametrize(("direction", "statuses", "timed_out", "status"), [
    (Direction.INCOMING, [], False, 480),
    (Direction.INCOMING, [486], False, 486),
    (Direction.INCOMING, [480, 600], False, 486),
    (Direction.INCOMING, [603], False, 603),
    (Direction.INCOMING, [486], True, 480),
    (Direction.INCOMING, [408], False, 480),
    (Direction.OUTGOING, [404], False, 404),
    (Direction.OUTGOING, [486], False, 486),
    (Direction.OUTGOING, [], True, 480),
    (Direction.INTERNAL, [486], False, 486),
])
def test_the_caller_hears_what_the_attempts_add_up_to(direction: Direction, statuses: list[int],
                                                      timed_out: bool, status: int) -> None:
    assert routing.failure_status(direction, statuses, timed_out=timed_out) == status


@pytest.mark.parametrize(("user", "digits", "internal"), [
    ("1001", "1001", True),
    ("+82212345678", "0212345678", False),
    ("01012345678", "01012345678", False),
    ("alice", None, False),
])
def test_dialled_numbers_are_extensions_or_canonical_numbers(user: str, digits: str | None,
                                                             internal: bool) -> None:
    assert routing.dialled_digits(user) == digits
    assert routing.is_internal(digits or "") is internal
