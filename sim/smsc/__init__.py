"""SMSC simulator: an SMPP 3.4 server for tests, the demo and benchmarks."""

from sim.smsc.config import MessageIdFormat, SmscConfig, parse_outcomes
from sim.smsc.server import AcceptedSubmit, SmscSimulator

__all__ = ["AcceptedSubmit", "MessageIdFormat", "SmscConfig", "SmscSimulator", "parse_outcomes"]
