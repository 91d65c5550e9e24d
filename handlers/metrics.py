"""Prometheus metrics of one daemon, in a registry of its own (several apps can share a process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

T = TypeVar("T")


class Metrics:
    """The metrics every capability reports to; capabilities add theirs on `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "telgate_http_requests_total", "Control API requests",
            ["method", "route", "status"], registry=self.registry,
        )
        self.http_seconds = Histogram(
            "telgate_http_request_seconds", "Control API request latency",
            ["method", "route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.ready = Gauge(
            "telgate_ready", "1 when every readiness check passes", registry=self.registry
        )
        self.loop_lag = Histogram(
            "telgate_event_loop_lag_seconds",
            "How late a 100 ms timer fires: time the event loop could not serve anything",
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.gc_pause = Histogram(
            "telgate_gc_pause_seconds", "Cyclic garbage collector passes", ["generation"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
        )
        # Metric groups of capabilities, created once per registry (see `group`).
        self._groups: dict[str, object] = {}

    def group(self, name: str, factory: Callable[[CollectorRegistry], T]) -> T:
        """A capability's metrics, registered once even if the capability restarts."""
        if name not in self._groups:
            self._groups[name] = factory(self.registry)
        return self._groups[name]  # type: ignore[return-value]
