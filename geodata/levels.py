"""District levels: the value geodata's roll-up hands to alerting."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DistrictLevel"]


@dataclass(frozen=True, slots=True)
class DistrictLevel:
    """The current level of one hazard and quantity in one district.

    Emitted by the roll-up when the level changes (``level`` 0 means back to
    normal); ``sensors`` are the ids that put the district at this level,
    ``value``/``threshold`` the reading they agree on (the k-th highest, k the sensors the quorum needs;
    a trusted sensor's own when it counts alone; for sensor health the worst) against the level boundary.
    """

    district: str  # district id, e.g. "bad-cannstatt"
    district_name: str  # e.g. "Bad Cannstatt"
    hazard: str  # "flood" | "air" | "sensor"
    quantity: str  # canonical quantity name (for hazard "sensor": the health kind, e.g. "stuck")
    rule: str  # the rule that decided the level
    level: int
    level_name: str
    value: float
    threshold: float
    sensors: tuple[str, ...]
    time_ns: int  # event time of the change (ns since epoch, UTC)
    approximate: bool = False  # True when the district layer is the built-in approximate one
