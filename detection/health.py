"""Sensor health: stale (silent too long), stuck (values within a narrow band) and range (saturated or impossible).

A sensor with any of these flags is *faulty*: the engine suppresses its hazard levels.
Stuck is judged on the sensor's first-seen quantity (an SDS011's PM10), so that sibling
quantities of one device do not mix in one band; range is tracked per quantity.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from detection.arrays import grown
from detection.config import HealthConfig
from detection.rules import NEVER
from detection.windows import BucketWindow, window_add, window_eval
from ingest.quantities import PHYSICAL_MAX, PHYSICAL_MIN, QUANTITIES, QUANTITY_CODE
from stadtwacht.durations import parse_duration

__all__ = ["HEALTH_KINDS", "HealthTracker"]

#: Health kinds in the order of the engine's pseudo-rules.
HEALTH_KINDS: tuple[str, ...] = ("stale", "stuck", "range")
_NO_QUANTITY = 255


class HealthTracker:
    """Per-sensor health state in arrays indexed by the dense sensor index."""

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
        self.capacity = 0
        self.band = BucketWindow("band", self.stuck_for)
        z = np.zeros(0)
        self.newest = z.astype(np.int64)  # newest accepted event time
        self.first_seen = z.astype(np.int64)
        self.primary = z.astype(np.uint8)
        self.prev_primary = z.astype(np.int64)  # newest time of a primary-quantity reading
        self.interval = z.astype(np.float64)  # learned usual interval in ns (NaN: unknown)
        self.range_bits = z.astype(np.uint8)  # bit q set: quantity q's last reading was out of range
        self.flags = np.zeros((0, 3), bool)  # stale, stuck, range
        self.band_be = z.astype(np.int64)  # band bucket of the last stuck judgement

    def grow(self, n: int) -> None:
        if n <= self.capacity:
            return
        new = max(n, 2 * self.capacity, 64)


        self.newest = grown(self.newest, new, NEVER)
        self.first_seen = grown(self.first_seen, new, NEVER)
        self.primary = grown(self.primary, new, _NO_QUANTITY)
        self.prev_primary = grown(self.prev_primary, new, NEVER)
        self.interval = grown(self.interval, new, np.nan)
        self.range_bits = grown(self.range_bits, new, 0)
        self.flags = grown(self.flags, new, False)
        self.band_be = grown(self.band_be, new, NEVER)
        self.band.grow(new)
        self.capacity = new

    def reset(self, sensor_mask: np.ndarray) -> None:
        rows = np.flatnonzero(sensor_mask[: self.capacity])
        self.newest[rows] = NEVER
        self.first_seen[rows] = NEVER
        self.primary[rows] = _NO_QUANTITY
        self.prev_primary[rows] = NEVER
        self.interval[rows] = np.nan
        self.range_bits[rows] = 0
        self.flags[rows] = False
        self.band_be[rows] = NEVER
        self.band.reset(rows)

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.newest, self.first_seen, self.primary, self.prev_primary,
                                          self.interval, self.range_bits, self.flags, self.band_be))
                   + self.band.nbytes())

    def faulty(self, sensor: np.ndarray) -> np.ndarray:
        return self.flags[sensor].any(axis=1)

    def out_of_range(self, quantity: np.ndarray, value: np.ndarray) -> np.ndarray:
        """Rows whose value is physically impossible or at the sensor's saturation value."""
        q = quantity.astype(np.intp)
        return (value < PHYSICAL_MIN[q]) | (value > PHYSICAL_MAX[q]) | (value >= self.saturation[q])

    def observe(self, s: np.ndarray, q: np.ndarray, t: np.ndarray, v: np.ndarray, bad: np.ndarray,
                now: np.ndarray) -> tuple[np.ndarray, ...]:
        """Accepted rows sorted by (sensor, time); ``now`` is each row's sensor clock including it.

        Returns the per-row faulty flag after the row and the flag transitions as
        (row, kind index, new flag, value, threshold), stale values in seconds.
        """
        cfg = self.cfg
        if s.size:
            self.band.ensure_base(int(t.min()))
        n = s.size
        faulty = np.empty(n, bool)
        ev_row = np.empty(3 * n, np.int64)
        ev_kind = np.empty(3 * n, np.int8)
        ev_flag = np.empty(3 * n, np.int8)
        ev_value = np.empty(3 * n, np.float64)
        ev_thr = np.empty(3 * n, np.float64)
        count = _health_rows(
            s, q, t, v, bad, now, self.newest, self.first_seen, self.primary, self.prev_primary, self.interval,
            self.range_bits, self.flags, self.band_be, *self.band.args(), self.rel_tol, self.saturation,
            PHYSICAL_MIN, PHYSICAL_MAX, float(cfg.interval_alpha), float(cfg.stuck_abs_tolerance),
            float(cfg.stuck_clear_factor), float(cfg.stuck_min_readings), self.stuck_for, self.stale_min,
            float(cfg.stale_factor), faulty, ev_row, ev_kind, ev_flag, ev_value, ev_thr)
        return faulty, ev_row[:count], ev_kind[:count], ev_flag[:count], ev_value[:count], ev_thr[:count]

    def _stale_limit(self, sensor: np.ndarray) -> np.ndarray:
        iv = self.interval[sensor]
        lim = np.where(np.isnan(iv), self.stale_min, self.cfg.stale_factor * iv)
        return np.maximum(lim, self.stale_min)

    def stale_at(self, now: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sensors turning stale by ``now`` (flag set): (sensors, silence s, limit s)."""
        cand = np.flatnonzero((self.newest != NEVER) & ~self.flags[:, 0])
        lim = self._stale_limit(cand)
        silence = now - self.newest[cand]
        hit = silence > lim
        s = cand[hit]
        self.flags[s, 0] = True
        return s, silence[hit] / 1e9, lim[hit] / 1e9


@njit(cache=True, error_model="numpy")
def _health_rows(s, q, t, v, bad, now, newest, first_seen, primary, prev_primary, interval, range_bits, flags,
                 band_be, code, B, w, base, ids, cnt, acc, tot, cur_be, rel_tol, saturation, pmin, pmax,
                 alpha, abs_tol, clear_factor, min_readings, stuck_for, stale_min, stale_factor,
                 faulty, ev_row, ev_kind, ev_flag, ev_value, ev_thr):
    """Health of each row in order (rows sorted by sensor, then time); writes the flag transitions."""
    n_ev = 0
    for j in range(s.size):
        i = s[j]
        qj = q[j]
        tj = t[j]
        vj = v[j]
        tn = now[j]
        old0 = flags[i, 0]
        old1 = flags[i, 1]
        old2 = flags[i, 2]
        silence = np.float64(tn - newest[i])
        newest[i] = tn
        if first_seen[i] == NEVER:
            first_seen[i] = tj
        if primary[i] == _NO_QUANTITY:
            primary[i] = qj
        prim = qj == primary[i]
        # usual interval: moving average of in-order gaps between primary readings
        prev = prev_primary[i]
        if prim:
            if prev != NEVER and tj > prev:
                dt = np.float64(tj - prev)
                iv = interval[i]
                interval[i] = dt if iv != iv else iv + alpha * (dt - iv)
            prev_primary[i] = max(prev, tj)
        # range: one bit per quantity
        bit = np.uint8(1) << np.uint8(qj)
        if bad[j]:
            range_bits[i] = range_bits[i] | bit
        else:
            range_bits[i] = range_bits[i] & ~bit
        in_range = range_bits[i] != 0
        # stuck: band of the primary quantity over stuck_for, judged once per band bucket (at its first reading)
        window_add(code, B, w, base, ids, cnt, acc, tot, cur_be, i, tj, vj, prim and not bad[j], tn)
        be = tn // w
        stuck = old1
        spread = np.nan
        allowed = np.nan
        if be > band_be[i]:
            spread, nb, mean = window_eval(code, B, w, base, ids, cnt, acc, i, tn)
            allowed = abs_tol + rel_tol[primary[i]] * abs(mean)
            enough = nb >= min_readings
            if old1:
                stuck = enough and spread <= clear_factor * allowed
            else:
                stuck = enough and tn - first_seen[i] >= stuck_for and spread <= allowed
            band_be[i] = be
        flags[i, 0] = False
        flags[i, 1] = stuck
        flags[i, 2] = in_range
        faulty[j] = stuck or in_range
        if old0:
            iv = interval[i]
            lim = stale_min if iv != iv else max(stale_factor * iv, stale_min)
            ev_row[n_ev] = j
            ev_kind[n_ev] = 0
            ev_flag[n_ev] = 0
            ev_value[n_ev] = silence / 1e9
            ev_thr[n_ev] = lim / 1e9
            n_ev += 1
        if old1 != stuck:
            ev_row[n_ev] = j
            ev_kind[n_ev] = 1
            ev_flag[n_ev] = 1 if stuck else 0
            ev_value[n_ev] = spread
            ev_thr[n_ev] = allowed
            n_ev += 1
        if old2 != in_range:
            ev_row[n_ev] = j
            ev_kind[n_ev] = 2
            ev_flag[n_ev] = 1 if in_range else 0
            ev_value[n_ev] = vj
            if vj >= saturation[qj]:
                ev_thr[n_ev] = saturation[qj]
            elif vj < pmin[qj]:
                ev_thr[n_ev] = pmin[qj]
            else:
                ev_thr[n_ev] = pmax[qj]
            n_ev += 1
    return n_ev
