"""Token bucket and reconnect back-off, on a fake clock."""

from __future__ import annotations

import random

import pytest

from protocols.smpp.throttle import Backoff, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    assert bucket.wait_time() == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


def test_bucket_does_not_save_more_than_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=3, clock=clock)
    clock.now += 3600
    assert sum(bucket.try_acquire() for _ in range(10)) == 3


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter_below() -> None:
    backoff = Backoff(initial=1, maximum=8, multiplier=2, jitter=0.5, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling * 0.5 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_backoff_without_jitter_is_exact_and_survives_many_attempts() -> None:
    backoff = Backoff(initial=0.5, maximum=30, jitter=0)
    assert [backoff.next_delay() for _ in range(3)] == [0.5, 1.0, 2.0]
    for _ in range(5000):
        backoff.next_delay()
    assert backoff.next_delay() == 30
