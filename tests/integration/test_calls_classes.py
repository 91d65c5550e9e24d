"""How finished calls are classified (seed 003's 통화 유형) and how call events fan out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from handlers.calls.cdr import CallClass, Direction, classify
from handlers.calls.events import CallEvent, EventBus


@pytest.mark.parametrize(("direction", "answered", "status", "gave_up", "expected"), [
    (Direction.OUTGOING, True, 200, False, CallClass.OUTGOING),
    (Direction.OUTGOING, False, 486, False, CallClass.OUTGOING_FAILED),
    (Direction.OUTGOING, False, 403, False, CallClass.OUTGOING_FAILED),
    (Direction.OUTGOING, False, 487, True, CallClass.OUTGOING_FAILED),
    (Direction.INCOMING, True, 200, False, CallClass.INCOMING),
    (Direction.INCOMING, False, 480, False, CallClass.MISSED),
    (Direction.INCOMING, False, 603, False, CallClass.MISSED),
    (Direction.INCOMING, False, 486, False, CallClass.BUSY_MISSED),
    (Direction.INCOMING, False, 600, False, CallClass.BUSY_MISSED),
    (Direction.INCOMING, False, 487, True, CallClass.ENDED_BEFORE_ANSWER),
    (Direction.INTERNAL, True, 200, False, CallClass.INCOMING),
    (Direction.INTERNAL, False, 486, False, CallClass.BUSY_MISSED),
])
def test_each_finished_call_gets_the_class_the_portals_report(
        direction: Direction, answered: bool, status: int, gave_up: bool,
        expected: CallClass) -> None:
    assert classify(direction, answered=answered, final_status=status,
                    caller_gave_up=gave_up) is expected


def test_a_tenant_subscriber_sees_only_its_own_calls() -> None:
    bus = EventBus()
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    sub = bus.subscribe(mine)
    everything = bus.subscribe()
    for tenant in (mine, theirs):
        bus.publish(CallEvent("call.ringing", uuid.uuid4(), tenant, datetime.now(UTC)))
    assert sub.queue.qsize() == 1 and everything.queue.qsize() == 2


def test_a_slow_subscriber_loses_the_oldest_events_and_never_blocks() -> None:
    bus = EventBus()
    sub = bus.subscribe(size=2)
    tenant = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(3)]
    for call_id in ids:
        bus.publish(CallEvent("call.ended", call_id, tenant, datetime.now(UTC)))
    assert sub.dropped == 1
    assert [sub.queue.get_nowait().call_id for _ in range(2)] == ids[1:]
    sub.close()
    bus.publish(CallEvent("call.ended", uuid.uuid4(), tenant, datetime.now(UTC)))
    assert sub.queue.empty()
