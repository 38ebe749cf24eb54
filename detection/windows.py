"""Per-sensor rolling event-time windows kept as rings of buckets inside packed state records.

A window of length W with B buckets has buckets of width w = W / B; evaluated at
event time E it holds every accepted reading whose bucket ``t // w`` lies in
``(E // w - B, E // w]``, so it spans between (B-1)/B x W and W before E.

A window lives in a record of an int64 state arena (read as float64 through a view of
the same memory): bucket k occupies ``bucket_words(aggregate)`` words from ``w0 + k *
BW``: one int64 word packing the bucket number (relative to ``base``, high 32 bits) and
its reading count (low 32 bits), then the float64 accumulators of the aggregate. So a
reading touches one or two cache lines of its sensor's record, never a scan of arrays.
The compiled kernels ``window_add`` and ``window_eval`` are called row by row from the
fused detection kernel on a batch sorted by sensor and time.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["AGG_CODE", "EMPTY_BUCKET", "NONE64", "bucket_count", "bucket_fill", "bucket_words", "window_add",
           "window_eval"]

_HOUR_NS = 3_600_000_000_000
_NONE = np.iinfo(np.int32).min  # empty bucket number
#: "No bucket yet" for the running-total position of mean windows.
NONE64 = np.iinfo(np.int64).min
#: The packed word of an empty bucket (bucket number _NONE, count 0).
EMPTY_BUCKET = _NONE << 32
_COUNT = 0xFFFFFFFF

#: Aggregate codes used by the kernels.
AGG_CODE: dict[str, int] = {"mean": 0, "max": 1, "min": 2, "band": 3, "rate_per_hour": 4}
_MEAN, _MAX, _MIN, _BAND, _RATE = range(5)

#: Float64 accumulators per bucket (after the packed id/count word), with their empty values.
_FILL: dict[str, tuple[float, ...]] = {
    "mean": (0.0,),  # sum
    "max": (-np.inf,),
    "min": (np.inf,),
    "band": (0.0, np.inf, -np.inf),  # sum, min, max
    "rate_per_hour": (0.0, 0.0, 0.0, 0.0),  # sx, sy, sxx, sxy (x in hours since the bucket's start)
}


def bucket_count(aggregate: str) -> int:
    """How many buckets a window of this aggregate keeps (memory vs. edge precision)."""
    return {"rate_per_hour": 10, "band": 12}.get(aggregate, 24)


def bucket_words(aggregate: str) -> int:
    """Words (8 bytes) one bucket takes in a state record: the id/count word plus the accumulators."""
    return 1 + len(_FILL[aggregate])


def bucket_fill(aggregate: str) -> np.ndarray:
    """The int64 words of one empty bucket (accumulators bit-cast from float64)."""
    out = np.empty(bucket_words(aggregate), np.int64)
    out[0] = EMPTY_BUCKET
    out[1:].view(np.float64)[:] = _FILL[aggregate]
    return out


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _max(a: float, b: float) -> float:
    """np.maximum for scalars (NaN wins)."""
    if a != a or b != b:
        return np.nan
    return a if a >= b else b


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _min(a: float, b: float) -> float:
    """np.minimum for scalars (NaN wins)."""
    if a != a or b != b:
        return np.nan
    return a if a <= b else b


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _advance(a, f, w0, B, BW, base, p_cur, p_cnt, p_sum, be):
    """Move the running totals (count, sum) to eval bucket ``be``, subtracting the buckets that left."""
    cur = a[p_cur]
    if cur == NONE64 or be - cur >= B:
        f[p_cnt] = 0.0
        f[p_sum] = 0.0
        a[p_cur] = be
    elif be > cur:
        for j in range(1, be - cur + 1):
            gone = cur - B + j
            o = w0 + ((gone + base) % B) * BW
            word = a[o]
            if (word >> 32) == gone:
                f[p_cnt] -= np.float64(word & _COUNT)
                f[p_sum] -= f[o + 1]
        a[p_cur] = be


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def window_add(a, f, w0, code, B, BW, w, base, p_cur, p_cnt, p_sum, t, v, add, eval_time):
    """Add reading (t, v) to the window at word ``w0`` where ``add`` (unless its ring position is newer).

    ``a``/``f`` are the int64 arena and its float64 view; for "mean", ``p_cur``/``p_cnt``/``p_sum``
    locate the running totals (eval bucket, count, sum) and the running mean at ``eval_time`` is
    returned (O(1) per reading); other aggregates return NaN (use ``window_eval``).
    """
    b_abs = t // w
    b = b_abs - base
    be = eval_time // w - base
    if code == _MEAN:
        _advance(a, f, w0, B, BW, base, p_cur, p_cnt, p_sum, be)
    o = w0 + (b_abs % B) * BW
    held = a[o] >> 32
    take = add and b >= held
    if take:
        if b > held:
            a[o] = b << 32
            if code == _MEAN:
                f[o + 1] = 0.0
            elif code == _MAX:
                f[o + 1] = -np.inf
            elif code == _MIN:
                f[o + 1] = np.inf
            elif code == _BAND:
                f[o + 1] = 0.0
                f[o + 2] = np.inf
                f[o + 3] = -np.inf
            else:
                f[o + 1] = 0.0
                f[o + 2] = 0.0
                f[o + 3] = 0.0
                f[o + 4] = 0.0
        a[o] += 1
        if code == _MEAN:
            f[o + 1] += v
        elif code == _MAX:
            f[o + 1] = _max(f[o + 1], v)
        elif code == _MIN:
            f[o + 1] = _min(f[o + 1], v)
        elif code == _BAND:
            f[o + 1] += v
            f[o + 2] = _min(f[o + 2], v)
            f[o + 3] = _max(f[o + 3], v)
        else:
            x = (t - b_abs * w) / _HOUR_NS  # hours since the bucket's start
            f[o + 1] += x
            f[o + 2] += v
            f[o + 3] += x * x
            f[o + 4] += x * v
    if code == _MEAN:
        if take and b > be - B:
            f[p_cnt] += 1.0
            f[p_sum] += v
        return f[p_sum] / f[p_cnt]
    return np.nan


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def window_eval(a, f, w0, code, B, BW, w, base, eval_time):
    """The window's aggregate at ``eval_time`` (a scan of its buckets): (aggregate, count, mean).

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
            o = w0 + k * BW
            word = a[o]
            bid = word >> 32
            if bid > lo and bid <= be:
                any_valid = True
                if code == _MAX:
                    hi = _max(hi, f[o + 1])
                elif code == _MIN:
                    low = _min(low, f[o + 1])
                else:
                    n += np.float64(word & _COUNT)
                    s += f[o + 1]
                    low = _min(low, f[o + 2])
                    hi = _max(hi, f[o + 3])
        if code == _MAX:
            return (hi if any_valid else np.nan), n, np.nan
        if code == _MIN:
            return (low if any_valid else np.nan), n, np.nan
        return hi - low, n, s / n
    if code == _MEAN:
        for k in range(B):
            o = w0 + k * BW
            word = a[o]
            bid = word >> 32
            if bid > lo and bid <= be:
                n += np.float64(word & _COUNT)
                s += f[o + 1]
        return s / n, n, s / n
    # rate_per_hour: shift each bucket's x (hours since its start) to hours since the eval bucket's start
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    sxy = 0.0
    scale = w / _HOUR_NS
    for k in range(B):
        o = w0 + k * BW
        word = a[o]
        bid = word >> 32
        if bid > lo and bid <= be:
            off = (bid - be) * scale
            nb = np.float64(word & _COUNT)
            sx_b = f[o + 1]
            sy_b = f[o + 2]
            n += nb
            sy += sy_b
            sx += sx_b + nb * off
            sxx += f[o + 3] + 2.0 * off * sx_b + nb * off * off
            sxy += f[o + 4] + off * sy_b
    den = n * sxx - sx * sx
    slope = (n * sxy - sx * sy) / den
    if n >= 2 and den > 1e-12 * max(n * sxx, 1e-300):
        return slope, n, np.nan
    return np.nan, n, np.nan
