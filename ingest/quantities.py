"""Canonical measured quantities: codes, units, hazards and physical ranges.

Quantities travel through the pipeline as small integer codes (uint8) so that
batches stay columnar; this module is the single table that names them.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "HAZARD_OF",
    "PHYSICAL_MAX",
    "PHYSICAL_MIN",
    "QUANTITIES",
    "QUANTITY_CODE",
    "UNITS",
    "quantity_code",
]

#: Canonical quantity names in code order (the code is the position).
QUANTITIES: tuple[str, ...] = ("water_level", "discharge", "pm10", "pm2_5", "no2", "o3", "so2")

QUANTITY_CODE: dict[str, int] = {name: code for code, name in enumerate(QUANTITIES)}

UNITS: dict[str, str] = {
    "water_level": "cm",  # above gauge zero
    "discharge": "m³/s",
    "pm10": "µg/m³",
    "pm2_5": "µg/m³",
    "no2": "µg/m³",
    "o3": "µg/m³",
    "so2": "µg/m³",
}

#: The hazard a quantity belongs to ("flood" or "air").
HAZARD_OF: dict[str, str] = {
    "water_level": "flood",
    "discharge": "flood",
    "pm10": "air",
    "pm2_5": "air",
    "no2": "air",
    "o3": "air",
    "so2": "air",
}

# Physically possible ranges; a value outside is a broken feed, not a hazard.
# Gauge zero can sit above the river bed, so water levels may be slightly negative.
# PM upper bound leaves room for the SDS011's saturation value 1999.9.
_RANGES: dict[str, tuple[float, float]] = {
    "water_level": (-500.0, 3000.0),
    "discharge": (0.0, 50000.0),
    "pm10": (0.0, 2000.0),
    "pm2_5": (0.0, 2000.0),
    "no2": (0.0, 5000.0),
    "o3": (0.0, 2000.0),
    "so2": (0.0, 10000.0),
}
PHYSICAL_MIN = np.array([_RANGES[q][0] for q in QUANTITIES], dtype=np.float64)
PHYSICAL_MAX = np.array([_RANGES[q][1] for q in QUANTITIES], dtype=np.float64)


def quantity_code(name: str) -> int:
    """The code of a canonical quantity name; ``KeyError`` for an unknown one."""
    return QUANTITY_CODE[name]
