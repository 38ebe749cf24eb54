"""Per-sensor state arrays that grow by rows as new sensors (or slots) appear."""

from __future__ import annotations

import numpy as np

__all__ = ["grown"]


def grown(a: np.ndarray, rows: int, fill: object) -> np.ndarray:
    """``a`` with ``rows`` rows: existing rows kept, new rows set to ``fill`` (any trailing shape)."""
    out = np.full((rows, *a.shape[1:]), fill, a.dtype)
    out[: a.shape[0]] = a
    return out
