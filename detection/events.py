"""Detection events: the columnar value detection hands to geodata and alerting.

An event is emitted only when a (sensor, rule) level changes, so consumers that
need current levels keep them from the transitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HAZARDS", "KINDS", "DetectionBatch", "RuleInfo", "hazard_code", "kind_code"]

#: Event kinds in code order.
KINDS: tuple[str, ...] = ("threshold", "rate", "anomaly", "stale", "stuck", "range")
#: Hazards in code order; sensor-health kinds (stale, stuck, range) have hazard "sensor".
HAZARDS: tuple[str, ...] = ("flood", "air", "sensor")

_KIND = {k: i for i, k in enumerate(KINDS)}
_HAZARD = {h: i for i, h in enumerate(HAZARDS)}


def kind_code(kind: str) -> int:
    return _KIND[kind]


def hazard_code(hazard: str) -> int:
    return _HAZARD[hazard]


_FIELDS = ("sensor", "quantity", "rule", "kind", "hazard", "level", "prev_level", "value", "threshold", "time")
_DTYPES = (np.int32, np.uint8, np.int16, np.uint8, np.uint8, np.int8, np.int8, np.float64, np.float64, np.int64)


@dataclass(frozen=True, slots=True)
class DetectionBatch:
    """One level transition per row (or, as ``DetectionResult.values``, one value refresh: ``level ==
    prev_level``, the current aggregate of a firing rule).

    ``rule`` indexes the engine's ``rule_names`` (which also names the health
    and anomaly pseudo-rules); ``threshold`` is the level boundary crossed
    (the clear level when falling); ``time`` is the event time in ns (UTC).
    """

    sensor: np.ndarray  # int32 dense sensor index
    quantity: np.ndarray  # uint8 quantity code
    rule: np.ndarray  # int16
    kind: np.ndarray  # uint8 code into KINDS
    hazard: np.ndarray  # uint8 code into HAZARDS
    level: np.ndarray  # int8, 0 = normal
    prev_level: np.ndarray  # int8
    value: np.ndarray  # float64, the aggregate that decided
    threshold: np.ndarray  # float64
    time: np.ndarray  # int64 ns

    def __len__(self) -> int:
        return int(self.sensor.shape[0])

    @classmethod
    def empty(cls) -> DetectionBatch:
        return cls(*(np.empty(0, dt) for dt in _DTYPES))

    @classmethod
    def from_columns(cls, **cols) -> DetectionBatch:
        return cls(*(np.asarray(cols[f], dtype=dt) for f, dt in zip(_FIELDS, _DTYPES, strict=True)))

    def take(self, rows: np.ndarray) -> DetectionBatch:
        return DetectionBatch(*(getattr(self, f)[rows] for f in _FIELDS))

    @staticmethod
    def concat(batches: list[DetectionBatch]) -> DetectionBatch:
        batches = [b for b in batches if len(b)]
        if not batches:
            return DetectionBatch.empty()
        if len(batches) == 1:
            return batches[0]
        return DetectionBatch(*(np.concatenate([getattr(b, f) for b in batches]) for f in _FIELDS))


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What later stages need to know of a rule (or of a health/anomaly pseudo-rule).

    Rules on the same quantity share one level scale (level k of any of them is
    equally severe), so a roll-up may take the worst level across them.
    """

    name: str
    quantity: str  # canonical quantity; for health pseudo-rules the health kind ("stale", "stuck", "range")
    hazard: str  # "flood" | "air" | "sensor"
    kind: str  # one of KINDS
    level_names: tuple[str, ...]  # index 0 is the normal level, index k names level k
