"""The call engine's presence cache: who takes calls, as the API last told it (the database
refresh is tested in tests/integration/test_agents.py)."""

from __future__ import annotations

import uuid

from handlers.calls.presence import Presence, PresenceCache

A, B = uuid.uuid4(), uuid.uuid4()


def test_an_agent_the_cache_never_heard_of_takes_calls() -> None:
    cache = PresenceCache()
    assert cache.accepts_calls(A, "1001")
    assert cache.presence(A, "1001") is Presence.ONLINE


def test_offline_and_dnd_agents_take_no_calls_until_online_again() -> None:
    cache = PresenceCache()
    cache.update(A, "1001", Presence.OFFLINE)
    cache.update(A, "1002", Presence.DND)
    assert not cache.accepts_calls(A, "1001") and not cache.accepts_calls(A, "1002")
    assert (cache.presence(A, "1001"), cache.presence(A, "1002")) == (Presence.OFFLINE,
                                                                      Presence.DND)
    cache.update(A, "1001", Presence.ONLINE)
    assert cache.accepts_calls(A, "1001")
    assert len(cache) == 1  # online agents are not held


def test_the_same_extension_in_another_tenant_is_another_agent() -> None:
    cache = PresenceCache()
    cache.update(A, "1001", Presence.DND)
    assert cache.accepts_calls(B, "1001")
