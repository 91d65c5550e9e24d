"""Client-side flow helpers: a TPS token bucket and a reconnect back-off policy."""

from __future__ import annotations

import random
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; the clock is injected."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now
        return self._tokens

    def try_acquire(self, n: float = 1) -> bool:
        """Take ``n`` tokens if they are there; never waits."""
        if self._refill() >= n:
            self._tokens -= n
            return True
        return False

    def wait_time(self, n: float = 1) -> float:
        """Seconds until ``n`` tokens will be there (0 when they are now); takes nothing."""
        missing = n - self._refill()
        return 0.0 if missing <= 0 else missing / self.rate


class Backoff:
    """Exponential back-off with jitter for reconnects; ``reset()`` after a good connection.

    The delay is drawn uniformly from [(1 - jitter) * d, d] with d = initial * multiplier**n,
    capped at ``maximum``, so many gateways restarting together do not reconnect in step.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= jitter <= 1 or initial <= 0 or multiplier < 1:
            raise ValueError("need initial > 0, multiplier >= 1, 0 <= jitter <= 1")
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** min(self.attempts, 64))
        self.attempts += 1
        return ceiling * (1 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """Start again from ``initial`` (call once a bind has succeeded)."""
        self.attempts = 0
