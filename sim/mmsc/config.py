"""Settings of the MMSC simulator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocols.mm7.status import MMStatus

# Report outcomes the simulator can produce; NONE means the MMSC never sends a report.
OUTCOMES = (*(s.value for s in MMStatus), "NONE")
# Faults it can inject into a SubmitReq's answer.
FAULTS = ("http500", "timeout", "soap_fault", "throttle", "disconnect")


@dataclass(frozen=True, slots=True, kw_only=True)
class MmscConfig:
    """What the simulated MMSC accepts and how it misbehaves; times in milliseconds.

    ``accounts`` maps HTTP basic user names to passwords (empty: no authentication);
    ``vasp_ids`` lists the VASPIDs accepted (empty: any). Fault rates are fractions of
    SubmitReq; ``throttle_tps`` answers 4006 past that rate. ``record_messages`` False (the
    demo) keeps no message in memory once its report is scheduled.
    """

    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/mm7"
    accounts: Mapping[str, str] = field(default_factory=dict)
    vasp_ids: frozenset[str] = frozenset()
    relay_server_id: str = "telgate-mmsc-sim"
    max_message_bytes: int = 1_048_576
    max_image_bytes: int = 300 * 1024
    max_images: int = 3
    content_types: frozenset[str] = frozenset({"image/jpeg", "text/plain", "application/smil"})
    latency_ms: float = 0.0
    report_url: str | None = None
    report_username: str = ""
    report_password: str = ""
    report_delay_ms: float = 0.0
    report_retries: int = 5
    outcomes: Mapping[str, float] = field(default_factory=lambda: {"Retrieved": 1.0})
    http500_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_ms: float = 60_000.0
    soap_fault_rate: float = 0.0
    throttle_tps: float | None = None
    seed: int | None = None
    record_messages: bool = True  # keep accepted messages (tests; cancel/replace need them)

    def __post_init__(self) -> None:
        unknown = set(self.outcomes) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"unknown report outcomes: {sorted(unknown)}")
        if not self.outcomes or sum(self.outcomes.values()) <= 0:
            raise ValueError("outcomes need a positive total weight")
        for name in ("http500_rate", "timeout_rate", "soap_fault_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")


def parse_outcomes(text: str) -> dict[str, float]:
    """``Retrieved=0.9,Rejected=0.1`` as a weight mapping."""
    weights: dict[str, float] = {}
    by_lower = {o.lower(): o for o in OUTCOMES}
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, weight = part.partition("=")
        found = by_lower.get(name.strip().lower())
        if found is None:
            raise ValueError(f"unknown outcome {name!r}; expected one of {', '.join(OUTCOMES)}")
        weights[found] = float(weight) if weight.strip() else 1.0
    return weights
