"""Which capabilities the daemon starts, in order, for a given configuration."""

from __future__ import annotations

from config.schema import Config
from daemon.app import Runtime, Starter, Stopper
from handlers.registry.index import IndexFollower


async def start_registry_index(runtime: Runtime) -> Stopper:
    """Load the sender-number/opt-out index and follow changes made by any instance."""
    follower = IndexFollower(runtime.dsn, runtime.context.index)
    await follower.start()
    runtime.context.readiness["registry_index"] = follower.readiness
    return follower.stop


def starters(config: Config, *, demo: bool) -> list[Starter]:
    """The capability starters for this configuration (each returns its stopper)."""
    found: list[Starter] = [start_registry_index]
    return found
