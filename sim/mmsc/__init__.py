"""MMSC simulator: an MM7 server for tests, the demo and benchmarks."""

from sim.mmsc.config import FAULTS, MmscConfig, parse_outcomes
from sim.mmsc.server import MmscSimulator, ReceivedMms

__all__ = ["FAULTS", "MmscConfig", "MmscSimulator", "ReceivedMms", "parse_outcomes"]
