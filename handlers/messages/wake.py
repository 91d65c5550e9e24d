"""How the API tells a dispatcher that recipients were queued.

With a dispatcher in this daemon (in this process, or its child process through a pipe) it is
woken directly once the statement has committed, and the statement sends no NOTIFY. A
PostgreSQL transaction that has sent a NOTIFY holds a database-wide lock from its commit
until its commit record is flushed, so notifying commits queue behind each other: single sends
waited 100-180 ms for it while another transaction's flush was slow (docs/performance.md,
seventh and eighth rounds). Without a local dispatcher (an API-only instance, tests that run
the API alone) the statement notifies `telgate_dispatch` as before, and every instance's
dispatcher wakes. Either way every dispatcher also claims on its own every half second, so
work queued while the local dispatcher is restarting, or whose carriers are bound only by
other instances, is still sent.
"""

from __future__ import annotations

from collections.abc import Callable

DISPATCH_CHANNEL = "telgate_dispatch"  # LISTENed to by every dispatcher


class DispatchWake:
    """The local dispatcher's wake-up, or the NOTIFY channel when there is none."""

    def __init__(self) -> None:
        self._local: Callable[[], None] | None = None

    def attach(self, wake: Callable[[], None]) -> None:
        """A dispatcher runs in this daemon: wake it directly from now on."""
        self._local = wake

    def detach(self) -> None:
        self._local = None

    @property
    def channel(self) -> str | None:
        """The channel a queuing statement notifies: None when the dispatcher is woken
        directly (`committed`)."""
        return None if self._local is not None else DISPATCH_CHANNEL

    def committed(self) -> None:
        """Recipients were committed: wake the local dispatcher (no-op without one, the
        statement notified)."""
        if self._local is not None:
            self._local()
