"""The send group's load gauge: it decides whether a statement waits a millisecond for more
sends (handlers/messages/group.py), so its figure must follow the real arrival rate."""

from __future__ import annotations

import pytest

from handlers.messages.group import LINGER_FROM_RATE, ArrivalRate


def feed(rate: ArrivalRate, start: float, every: float, seconds: float) -> float:
    t = start
    while t < start + seconds:
        rate.add(t)
        t += every
    return t


@pytest.mark.parametrize("per_second", [100, 500, 1000, 2000])
def test_a_steady_stream_is_measured_at_its_rate(per_second: int) -> None:
    rate = ArrivalRate()
    feed(rate, 10.0, 1 / per_second, 1.0)
    assert rate.rate == pytest.approx(per_second, rel=0.05)


def test_nothing_is_known_before_a_whole_window() -> None:
    rate = ArrivalRate(window=0.1)
    feed(rate, 0.0, 0.001, 0.09)
    assert rate.rate == 0.0


def test_after_a_pause_the_first_send_sees_a_low_rate() -> None:
    rate = ArrivalRate()
    end = feed(rate, 0.0, 0.001, 1.0)
    assert rate.rate >= LINGER_FROM_RATE  # a burst of 1,000/s: statements wait
    rate.add(end + 2.0)  # two quiet seconds later, one send
    assert rate.rate < LINGER_FROM_RATE / 10  # it is written at once


def test_the_rate_follows_a_slowdown_within_two_windows() -> None:
    rate = ArrivalRate(window=0.1)
    end = feed(rate, 0.0, 0.001, 1.0)
    feed(rate, end, 0.004, 0.2 + 0.004)
    assert rate.rate == pytest.approx(250, rel=0.1)
