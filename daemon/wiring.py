"""Which capabilities the daemon starts, in order, for a given configuration."""

from __future__ import annotations

from config.schema import Config
from daemon.app import Starter


def starters(config: Config, *, demo: bool) -> list[Starter]:
    """The capability starters for this configuration (each returns its stopper)."""
    found: list[Starter] = []
    return found
