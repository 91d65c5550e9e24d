"""Settings of the SMSC simulator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from protocols.smpp.constants import CommandStatus

# Receipt outcomes the simulator can produce; NONE means the SMSC never sends a receipt.
OUTCOMES = ("DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "NONE")


class MessageIdFormat(Enum):
    """How the SMSC writes its message ids."""

    HEX = "hex"
    DECIMAL = "decimal"


@dataclass(frozen=True, slots=True, kw_only=True)
class SmscConfig:
    """What the simulated SMSC accepts and how it misbehaves; times in milliseconds.

    ``accounts`` maps system_id to password; empty accepts any credentials.
    """

    host: str = "127.0.0.1"
    port: int = 0
    accounts: Mapping[str, str] = field(default_factory=dict)
    system_id: str = "TELGATESIM"
    latency_ms: float = 0.0
    tps: float | None = None
    tps_burst: float | None = None
    window: int | None = None
    error_rate: float = 0.0
    error_status: int = CommandStatus.ESME_RSYSERR
    disconnect_after_submits: int | None = None
    receipt_delay_ms: float = 0.0
    outcomes: Mapping[str, float] = field(default_factory=lambda: {"DELIVRD": 1.0})
    message_id_format: MessageIdFormat = MessageIdFormat.HEX
    receipt_id_other_format: bool = False
    seed: int | None = None
    # The first message id handed out is this + 1 (default: random in 0x10000001-0x7fffffff).
    first_message_id: int | None = None
    record_submits: bool = True
    # Append every accepted submit_sm to this JSON-lines file (what the phones "received"),
    # so a person trying the demo can read a text, e.g. a verification code, as a phone would.
    received_log: Path | None = None

    def __post_init__(self) -> None:
        unknown = set(self.outcomes) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"unknown receipt outcomes: {sorted(unknown)}")
        if not self.outcomes or sum(self.outcomes.values()) <= 0:
            raise ValueError("outcomes need a positive total weight")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")


def parse_outcomes(text: str) -> dict[str, float]:
    """``DELIVRD=0.9,UNDELIV=0.1`` as a weight mapping."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, weight = part.partition("=")
        name = name.strip().upper()
        if name not in OUTCOMES:
            raise ValueError(f"unknown outcome {name!r}; expected one of {', '.join(OUTCOMES)}")
        weights[name] = float(weight) if weight.strip() else 1.0
    return weights
