"""connect_with_backoff: retry policy without real sleeps or sockets."""

from __future__ import annotations

import random

import pytest

from protocols.smpp.client import BindError, connect_with_backoff
from protocols.smpp.throttle import Backoff


class FlakyConnect:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "bound"


async def test_retries_with_growing_delays_and_resets_after_success() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    backoff = Backoff(initial=1, maximum=60, jitter=0, rng=random.Random(0))
    connect = FlakyConnect([ConnectionRefusedError(), BindError("refused", 0x0E), OSError()])
    assert await connect_with_backoff(connect, backoff, sleep=sleep) == "bound"
    assert slept == [1, 2, 4]
    assert backoff.attempts == 0


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    async def sleep(seconds: float) -> None:
        pass

    connect = FlakyConnect([OSError("a"), OSError("b"), OSError("c")])
    with pytest.raises(OSError, match="b"):
        await connect_with_backoff(connect, Backoff(), sleep=sleep, max_attempts=2)
    assert connect.calls == 2


async def test_errors_outside_retry_on_propagate_at_once() -> None:
    connect = FlakyConnect([ValueError("bad config")])
    with pytest.raises(ValueError):
        await connect_with_backoff(connect, Backoff())
    assert connect.calls == 1
