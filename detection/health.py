"""Sensor health: stale (silent too long), stuck (values within a narrow band) and range (saturated or impossible).

A sensor with any of these flags is *faulty*: the engine suppresses its hazard levels.
Stuck is judged on the sensor's first-seen quantity (an SDS011's PM10), so that sibling
quantities of one device do not mix in one band; range is tracked per quantity.

State per sensor (dense sensor index): the fields a time-driven stale check scans
(``newest``, ``interval``, ``flags``, ``primary``) as plain arrays, the rest as one packed
record of int64 words (``H_*``, then the band window's buckets) read row by row by
``health_row`` inside the engine's fused kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from detection.arrays import grown
from detection.config import HealthConfig
from detection.rules import NEVER
from detection.windows import AGG_CODE, bucket_count, bucket_fill, bucket_words, window_add, window_eval
from ingest.quantities import QUANTITIES, QUANTITY_CODE
from stadtwacht.durations import parse_duration

__all__ = ["HEALTH_KINDS", "H_BAND_BE", "RANGE", "RECORD_HEAD", "STALE", "STUCK", "HealthTracker", "health_row",
           "stale_after", "stale_limit"]

#: Health kinds in the order of the engine's pseudo-rules.
HEALTH_KINDS: tuple[str, ...] = ("stale", "stuck", "range")
#: Bits of ``HealthTracker.flags``.
STALE, STUCK, RANGE = 1, 2, 4
_NO_QUANTITY = 255
H_FIRST, H_PREV_PRIMARY, H_BAND_BE, H_RANGE_BITS = range(4)  # columns of ``HealthTracker.head``
_HEAD = 0
#: Words of a health record before its band window.
RECORD_HEAD = _HEAD
_BAND = AGG_CODE["band"]


class HealthTracker:
    """Per-sensor health state in arrays and packed records indexed by the dense sensor index."""

    def __init__(self, cfg: HealthConfig) -> None:
        self.cfg = cfg
        self.stale_min = parse_duration(cfg.stale_min)
        self.stuck_for = parse_duration(cfg.stuck_for)
        self.rel_tol = np.zeros(len(QUANTITIES) + 1)
        for q, tol in cfg.stuck_rel_tolerance.items():
            self.rel_tol[QUANTITY_CODE[q]] = tol
        self.saturation = np.full(len(QUANTITIES), np.inf)
        for q, sat in cfg.saturation.items():
            self.saturation[QUANTITY_CODE[q]] = sat
        self.buckets = bucket_count("band")
        self.bucket_words = bucket_words("band")
        self.width = max(1, -(-self.stuck_for // self.buckets))
        self.base: int | None = None  # band bucket number stored as 0 (set by the first reading)
        self.stride = _HEAD + self.buckets * self.bucket_words
        self.template = np.tile(bucket_fill("band"), self.buckets)
        self.head_template = np.array([NEVER, NEVER, NEVER, 0], np.int64)
        self.capacity = 0
        self.newest = np.zeros(0, np.int64)  # newest accepted event time
        self.interval = np.zeros(0, np.float64)  # learned usual interval in ns (NaN: unknown)
        self.flags = np.zeros(0, np.uint8)  # STALE | STUCK | RANGE
        self.primary = np.zeros(0, np.uint8)  # first-seen quantity
        self.head = np.zeros((0, 4), np.int64)  # H_* per sensor
        self.records = np.zeros(0, np.int64)  # capacity x stride words: the band windows
        # [0]: no sensor can turn stale before this event time (a lower bound; the time-driven check skips
        # its scan of all sensors until then), [1]: scratch of that check
        self.stale_due = np.full(2, np.iinfo(np.int64).max, np.int64)

    def grow(self, n: int) -> None:
        if n <= self.capacity:
            return
        new = max(n, 2 * self.capacity, 64)
        self.newest = grown(self.newest, new, NEVER)
        self.interval = grown(self.interval, new, np.nan)
        self.flags = grown(self.flags, new, 0)
        self.primary = grown(self.primary, new, _NO_QUANTITY)
        self.head = grown(self.head, new, 0)
        self.head[self.capacity:] = self.head_template
        records = np.empty((new, self.stride), np.int64)  # written once: old records, then empty ones
        records[: self.capacity] = self.records.reshape(-1, self.stride)
        records[self.capacity:] = self.template
        self.records = records.reshape(-1)
        self.capacity = new

    def reset(self, sensor_mask: np.ndarray) -> None:
        rows = np.flatnonzero(sensor_mask[: self.capacity])
        self.newest[rows] = NEVER
        self.interval[rows] = np.nan
        self.flags[rows] = 0
        self.primary[rows] = _NO_QUANTITY
        self.head[rows] = self.head_template
        self.records.reshape(-1, self.stride)[rows] = self.template

    def nbytes(self) -> int:
        arrays = (self.newest, self.interval, self.flags, self.primary, self.head, self.records)
        return int(sum(a.nbytes for a in arrays))

    def faulty(self, sensor: np.ndarray) -> np.ndarray:
        return self.flags[sensor] != 0

    def ensure_base(self, min_time: int) -> None:
        """Fix the band's bucket numbering from the first reading (room for readings older than it)."""
        if self.base is None:
            self.base = int(min_time // self.width) - 2**28

    def params(self) -> tuple:
        """The scalars the row kernel takes, in its order."""
        cfg = self.cfg
        return (self.stride, self.buckets, self.bucket_words, self.width, self.base or 0,
                float(cfg.interval_alpha), float(cfg.stuck_abs_tolerance), float(cfg.stuck_clear_factor),
                float(cfg.stuck_min_readings), self.stuck_for, self.stale_min, float(cfg.stale_factor))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def stale_limit(interval, stale_min, stale_factor):
    """How long a sensor with this learned interval may be silent (ns, float)."""
    if interval != interval:
        return np.float64(stale_min)
    return max(stale_factor * interval, np.float64(stale_min))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def stale_after(lim):
    """Whole ns of silence that surely do not reach ``stale_limit`` ``lim`` (a margin for float rounding).

    ``silence > lim`` compares the int64 silence converted to float64 (off by at most 2**10 ns below 2**63):
    a silence below ``int(lim) - 2**20`` is never above ``lim``. A NaN or huge limit never makes a sensor stale.
    """
    if not lim < 2.0**61:
        return np.int64(2**61)
    if lim < -(2.0**61):  # (a misconfigured negative limit: no skipping)
        return np.int64(-(2**61))
    return np.int64(lim) - np.int64(2**20)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def health_row(i, q, t, v, bad, tn, newest, interval, flags, primary, hd, a, f, rel_tol, params):
    """Health after one row of sensor ``i`` (``tn`` its clock including the row).

    Returns (old flags, new flags, silence ns, spread, allowed band); updates the state.
    """
    (stride, B, BW, w, base, alpha, abs_tol, clear_factor, min_readings, stuck_for, _stale_min,
     _stale_factor) = params
    h = i * stride
    old = flags[i]
    silence = np.float64(tn - newest[i])
    newest[i] = tn
    if hd[i, H_FIRST] == NEVER:
        hd[i, H_FIRST] = t
    if primary[i] == _NO_QUANTITY:
        primary[i] = q
    prim = q == primary[i]
    # usual interval: moving average of in-order gaps between primary readings
    if prim:
        prev = hd[i, H_PREV_PRIMARY]
        if prev != NEVER and t > prev:
            dt = np.float64(t - prev)
            iv = interval[i]
            interval[i] = dt if iv != iv else iv + alpha * (dt - iv)
        hd[i, H_PREV_PRIMARY] = max(prev, t)
    # range: one bit per quantity
    bit = np.int64(1) << np.int64(q)
    if bad:
        hd[i, H_RANGE_BITS] |= bit
    else:
        hd[i, H_RANGE_BITS] &= ~bit
    in_range = hd[i, H_RANGE_BITS] != 0
    # stuck: band of the primary quantity over stuck_for, judged once per band bucket (at its first reading)
    w0 = h + _HEAD
    window_add(a, f, w0, _BAND, B, BW, w, base, 0, 0, 0, t, v, prim and not bad, tn)
    be = tn // w
    stuck = (old & STUCK) != 0
    spread = np.nan
    allowed = np.nan
    if be > hd[i, H_BAND_BE]:
        spread, nb, mean = window_eval(a, f, w0, _BAND, B, BW, w, base, tn)
        allowed = abs_tol + rel_tol[primary[i]] * abs(mean)
        enough = nb >= min_readings
        if stuck:
            stuck = enough and spread <= clear_factor * allowed
        else:
            stuck = enough and tn - hd[i, H_FIRST] >= stuck_for and spread <= allowed
        hd[i, H_BAND_BE] = be
    new = (STUCK if stuck else 0) | (RANGE if in_range else 0)
    flags[i] = new
    return old, new, silence, spread, allowed
