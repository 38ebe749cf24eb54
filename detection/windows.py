"""Per-sensor rolling event-time windows kept as rings of buckets (numpy arrays, never re-scanned).

A window of length W with B buckets has buckets of width w = W / B; evaluated at
event time E it holds every accepted reading whose bucket ``t // w`` lies in
``(E // w - B, E // w]``, so it spans between (B-1)/B x W and W before E.

The per-reading work is done by the compiled kernels ``window_add`` and
``window_eval`` (numba), called row by row from the rule and health kernels on
a batch sorted by sensor and time; the state stays in the arrays of
:class:`BucketWindow`, indexed by a dense slot per sensor.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["AGG_CODE", "BucketWindow", "bucket_count", "window_add", "window_eval"]

_HOUR_NS = 3_600_000_000_000
_NONE = np.iinfo(np.int32).min  # empty slot; bucket ids are stored as int32 relative to a base
_NONE64 = np.iinfo(np.int64).min

#: Aggregate codes used by the kernels.
AGG_CODE: dict[str, int] = {"mean": 0, "max": 1, "min": 2, "band": 3, "rate_per_hour": 4}
_MEAN, _MAX, _MIN, _BAND, _RATE = range(5)

#: Per-bucket float64 accumulators each aggregate needs (besides the int32 bucket id and float32 count).
_FIELDS: dict[str, tuple[str, ...]] = {
    "mean": ("sum",),
    "max": ("max",),
    "min": ("min",),
    "band": ("sum", "min", "max"),
    "rate_per_hour": ("sx", "sy", "sxx", "sxy"),
}
_COUNTED = ("mean", "band", "rate_per_hour")
_FILL = {"sum": 0.0, "max": -np.inf, "min": np.inf, "sx": 0.0, "sy": 0.0, "sxx": 0.0, "sxy": 0.0}


def bucket_count(aggregate: str) -> int:
    """How many buckets a window of this aggregate keeps (memory vs. edge precision)."""
    return {"rate_per_hour": 10, "band": 12}.get(aggregate, 24)


class BucketWindow:
    """Ring of B buckets per slot for one aggregate ("mean", "max", "min", "band", "rate_per_hour").

    ``ids[i, k]`` is the bucket number held in ring position k of slot i (relative to ``base``),
    ``cnt`` its reading count (aggregates that need one), ``acc[i, k, f]`` its accumulators
    (``_FIELDS``). "mean" also keeps running totals of the window (``tot`` = count, sum at
    bucket ``cur_be``), so a reading costs O(1) instead of a scan of all buckets.
    """

    def __init__(self, aggregate: str, window_ns: int, capacity: int = 0) -> None:
        self.aggregate = aggregate
        self.code = AGG_CODE[aggregate]
        self.buckets = bucket_count(aggregate)
        self.width = max(1, -(-window_ns // self.buckets))
        self.fields = _FIELDS[aggregate]
        self.fill = np.array([_FILL[f] for f in self.fields])
        self.capacity = 0
        self.base: int | None = None  # bucket number stored as 0 (set by the first reading)
        B = self.buckets
        self.ids = np.empty((0, B), np.int32)
        self.cnt = np.empty((0, B if aggregate in _COUNTED else 0), np.float32)
        self.acc = np.empty((0, B, len(self.fields)), np.float64)
        self.running = aggregate == "mean"
        self.tot = np.empty((0, 2 if self.running else 0), np.float64)
        self.cur_be = np.empty(0, np.int64)
        self.grow(capacity)

    def grow(self, n: int) -> None:
        """Make room for slots 0..n-1."""
        if n <= self.capacity:
            return
        new = max(n, 2 * self.capacity, 64)

        def ext(a: np.ndarray, fill) -> np.ndarray:
            out = np.empty((new, *a.shape[1:]), a.dtype)
            out[: a.shape[0]] = a
            out[a.shape[0]:] = fill
            return out

        self.ids = ext(self.ids, _NONE)
        self.cnt = ext(self.cnt, 0.0)
        self.acc = ext(self.acc, self.fill)
        self.tot = ext(self.tot, 0.0)
        self.cur_be = ext(self.cur_be, _NONE64) if self.running else np.empty(0, np.int64)
        self.capacity = new

    def reset(self, rows: np.ndarray) -> None:
        """Forget the windows of the given slots."""
        self.ids[rows] = _NONE
        self.cnt[rows] = 0.0
        self.acc[rows] = self.fill
        self.tot[rows] = 0.0
        if self.running:
            self.cur_be[rows] = _NONE64

    def nbytes(self, used: int | None = None) -> int:
        """Bytes of state (of the first ``used`` slots if given)."""
        total = self.ids.nbytes + self.cnt.nbytes + self.acc.nbytes + self.tot.nbytes + self.cur_be.nbytes
        if used is None or self.capacity == 0:
            return int(total)
        return int(total * used / self.capacity)

    def ensure_base(self, min_time: int) -> None:
        """Fix the bucket numbering from the first reading (room for readings older than it)."""
        if self.base is None:
            self.base = int(min_time // self.width) - 2**28

    def args(self) -> tuple:
        """The window's parameters and arrays in the order the kernels take them."""
        return (self.code, self.buckets, self.width, self.base or 0, self.ids, self.cnt, self.acc, self.tot,
                self.cur_be)


@njit(cache=True, error_model="numpy")
def _max(a: float, b: float) -> float:
    """np.maximum for scalars (NaN wins)."""
    if a != a or b != b:
        return np.nan
    return a if a >= b else b


@njit(cache=True, error_model="numpy")
def _min(a: float, b: float) -> float:
    """np.minimum for scalars (NaN wins)."""
    if a != a or b != b:
        return np.nan
    return a if a <= b else b


@njit(cache=True, error_model="numpy")
def _advance(B, base, ids, cnt, acc, tot, cur_be, i, be):
    """Move slot i's running totals to eval bucket ``be``, subtracting the buckets that left the window."""
    cur = cur_be[i]
    if cur == _NONE64 or be - cur >= B:
        tot[i, 0] = 0.0
        tot[i, 1] = 0.0
        cur_be[i] = be
    elif be > cur:
        for j in range(1, be - cur + 1):
            gone = cur - B + j
            k = (gone + base) % B
            if ids[i, k] == gone:
                tot[i, 0] -= cnt[i, k]
                tot[i, 1] -= acc[i, k, 0]
        cur_be[i] = be


@njit(cache=True, error_model="numpy")
def window_add(code, B, w, base, ids, cnt, acc, tot, cur_be, i, t, v, add, eval_time):
    """Add reading (t, v) to slot i where ``add`` (unless its ring position holds a newer bucket).

    Returns the running mean at ``eval_time`` for "mean", NaN otherwise (use ``window_eval``).
    """
    b_abs = t // w
    b = b_abs - base
    be = eval_time // w - base
    if code == _MEAN:
        _advance(B, base, ids, cnt, acc, tot, cur_be, i, be)
    k = b_abs % B
    held = np.int64(ids[i, k])
    take = add and b >= held
    if take:
        if b > held:
            ids[i, k] = b
            if code == _MEAN:
                acc[i, k, 0] = 0.0
            elif code == _MAX:
                acc[i, k, 0] = -np.inf
            elif code == _MIN:
                acc[i, k, 0] = np.inf
            elif code == _BAND:
                acc[i, k, 0] = 0.0
                acc[i, k, 1] = np.inf
                acc[i, k, 2] = -np.inf
            else:
                for f in range(4):
                    acc[i, k, f] = 0.0
            if cnt.shape[1]:
                cnt[i, k] = 0.0
        if code == _MEAN:
            cnt[i, k] += 1.0
            acc[i, k, 0] += v
        elif code == _MAX:
            acc[i, k, 0] = _max(acc[i, k, 0], v)
        elif code == _MIN:
            acc[i, k, 0] = _min(acc[i, k, 0], v)
        elif code == _BAND:
            cnt[i, k] += 1.0
            acc[i, k, 0] += v
            acc[i, k, 1] = _min(acc[i, k, 1], v)
            acc[i, k, 2] = _max(acc[i, k, 2], v)
        else:
            x = (t - b_abs * w) / _HOUR_NS  # hours since the bucket's start
            cnt[i, k] += 1.0
            acc[i, k, 0] += x
            acc[i, k, 1] += v
            acc[i, k, 2] += x * x
            acc[i, k, 3] += x * v
    if code == _MEAN:
        if take and b > be - B:
            tot[i, 0] += 1.0
            tot[i, 1] += v
        return tot[i, 1] / tot[i, 0]
    return np.nan


@njit(cache=True, error_model="numpy")
def window_eval(code, B, w, base, ids, cnt, acc, i, eval_time):
    """Slot i's aggregate at ``eval_time`` (a scan of its buckets): (aggregate, count, mean).

    An empty window gives NaN (no decision); "band" gives the spread max - min.
    """
    be = eval_time // w - base
    lo = be - B
    n = 0.0
    s = 0.0
    any_valid = False
    if _MAX <= code <= _BAND:  # max, min, band
        hi = -np.inf
        low = np.inf
        for k in range(B):
            bid = np.int64(ids[i, k])
            if bid > lo and bid <= be:
                any_valid = True
                if code == _MAX:
                    hi = _max(hi, acc[i, k, 0])
                elif code == _MIN:
                    low = _min(low, acc[i, k, 0])
                else:
                    n += cnt[i, k]
                    s += acc[i, k, 0]
                    low = _min(low, acc[i, k, 1])
                    hi = _max(hi, acc[i, k, 2])
        if code == _MAX:
            return (hi if any_valid else np.nan), n, np.nan
        if code == _MIN:
            return (low if any_valid else np.nan), n, np.nan
        return hi - low, n, s / n
    if code == _MEAN:
        for k in range(B):
            bid = np.int64(ids[i, k])
            if bid > lo and bid <= be:
                n += cnt[i, k]
                s += acc[i, k, 0]
        return s / n, n, s / n
    # rate_per_hour: shift each bucket's x (hours since its start) to hours since the eval bucket's start
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    sxy = 0.0
    scale = w / _HOUR_NS
    for k in range(B):
        bid = np.int64(ids[i, k])
        if bid > lo and bid <= be:
            off = (bid - be) * scale
            nb = np.float64(cnt[i, k])
            sx_b = acc[i, k, 0]
            sy_b = acc[i, k, 1]
            n += nb
            sy += sy_b
            sx += sx_b + nb * off
            sxx += acc[i, k, 2] + 2.0 * off * sx_b + nb * off * off
            sxy += acc[i, k, 3] + off * sy_b
    den = n * sxx - sx * sx
    slope = (n * sxy - sx * sy) / den
    if n >= 2 and den > 1e-12 * max(n * sxx, 1e-300):
        return slope, n, np.nan
    return np.nan, n, np.nan
