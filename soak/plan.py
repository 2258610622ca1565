"""The fault schedule: which fault happens when, scaled to the run's duration.

The run is: a warm-up without faults (the load reaches its steady state), an active part
in which faults follow each other at even intervals (one at a time, so every recovery is
seen on its own), and a settling part without faults at the end (the agent is back and
its telemetry backlog drains before the books are balanced).

A 10-minute cycle holds every kind of fault, card pulls between the others (the most
common event at a kiosk). Longer runs repeat the cycle. Runs too short for it (smoke
runs) use a compact cycle with each fault once; holds are then shortened to fit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

FaultKind = Literal["card_pull", "broker_outage", "pcscd_kill", "pcscd_stop", "agent_kill"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "card_pull",
    "broker_outage",
    "pcscd_kill",
    "pcscd_stop",
    "agent_kill",
)
FULL_CYCLE: tuple[FaultKind, ...] = (
    "card_pull",
    "broker_outage",
    "card_pull",
    "pcscd_kill",
    "card_pull",
    "pcscd_stop",
    "card_pull",
    "agent_kill",
)
COMPACT_CYCLE: tuple[FaultKind, ...] = FAULT_KINDS
CYCLE_S = 600.0
# Below this gap between faults the full cycle does not fit: use the compact one.
MIN_FULL_SLOT_S = 25.0
# A hold may use at most this share of its slot: the rest is recovery time.
HOLD_SHARE = 0.6
WARMUP_MAX_S = 30.0
WARMUP_SHARE = 0.10
SETTLE_MAX_S = 60.0
SETTLE_SHARE = 0.15


@dataclass(frozen=True)
class Holds:
    """How long each fault lasts, nominally (seconds)."""

    card_out_s: float = 3.0  # the card is out of the reader
    broker_outage_s: float = 30.0  # mosquitto is stopped
    pcscd_down_s: float = 2.0  # pcscd is dead before it is started again
    pcscd_stop_s: float = 20.0  # pcscd is SIGSTOPped

    def nominal(self, kind: FaultKind) -> float:
        return {
            "card_pull": self.card_out_s,
            "broker_outage": self.broker_outage_s,
            "pcscd_kill": self.pcscd_down_s,
            "pcscd_stop": self.pcscd_stop_s,
            "agent_kill": 0.0,  # the supervisor restarts it after its own delay
        }[kind]


@dataclass(frozen=True)
class PlannedFault:
    at_s: float  # seconds after the load started
    kind: FaultKind
    hold_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaultPlan:
    duration_s: float
    warmup_s: float
    settle_s: float
    faults: tuple[PlannedFault, ...]

    def count(self, kind: FaultKind) -> int:
        return sum(1 for f in self.faults if f.kind == kind)

    @property
    def kinds(self) -> frozenset[FaultKind]:
        return frozenset(f.kind for f in self.faults)


def plan_faults(
    duration_s: float, holds: Holds | None = None, skip: frozenset[FaultKind] = frozenset()
) -> FaultPlan:
    """Every fault kind (but those in `skip`) at least once, evenly spread over the
    active part of the run."""
    if duration_s <= 0:
        raise ValueError("the duration must be positive")
    holds = holds or Holds()
    warmup = min(WARMUP_MAX_S, WARMUP_SHARE * duration_s)
    settle = min(SETTLE_MAX_S, SETTLE_SHARE * duration_s)
    active = duration_s - warmup - settle
    cycles = max(1, round(duration_s / CYCLE_S))
    full = tuple(k for k in FULL_CYCLE if k not in skip)
    cycle = full
    if not full:
        return FaultPlan(duration_s, warmup, settle, ())
    if active / (len(full) * cycles) < MIN_FULL_SLOT_S:
        cycle = tuple(k for k in COMPACT_CYCLE if k not in skip)
    kinds = cycle * cycles
    slot = active / len(kinds)
    cap = HOLD_SHARE * slot
    faults = tuple(
        PlannedFault(round(warmup + i * slot, 3), kind, round(min(holds.nominal(kind), cap), 3))
        for i, kind in enumerate(kinds)
    )
    return FaultPlan(duration_s, warmup, settle, faults)
