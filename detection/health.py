"""Sensor health: stale (silent too long), stuck (values within a narrow band) and range (saturated or impossible).

A sensor with any of these flags is *faulty*: the engine suppresses its hazard levels.
Stuck is judged on the sensor's first-seen quantity (an SDS011's PM10), so that sibling
quantities of one device do not mix in one band; range is tracked per quantity.
"""

from __future__ import annotations

import numpy as np

from detection.config import HealthConfig
from detection.rules import NEVER
from detection.windows import BucketWindow
from ingest.quantities import PHYSICAL_MAX, PHYSICAL_MIN, QUANTITIES, QUANTITY_CODE
from stadtwacht.durations import parse_duration

__all__ = ["HEALTH_KINDS", "HealthChanges", "HealthTracker"]

#: Health kinds in the order of the engine's pseudo-rules.
HEALTH_KINDS: tuple[str, ...] = ("stale", "stuck", "range")
_NO_QUANTITY = 255


class HealthChanges:
    """Flag transitions of one step: per kind, the changed rows (positions into the step's sensors)."""

    __slots__ = ("rows", "threshold", "value")

    def __init__(self) -> None:
        self.rows: dict[str, np.ndarray] = {}
        self.value: dict[str, np.ndarray] = {}
        self.threshold: dict[str, np.ndarray] = {}


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

        def ext(a: np.ndarray, fill) -> np.ndarray:
            out = np.full((new, *a.shape[1:]), fill, a.dtype)
            out[: a.shape[0]] = a
            return out

        self.newest = ext(self.newest, NEVER)
        self.first_seen = ext(self.first_seen, NEVER)
        self.primary = ext(self.primary, _NO_QUANTITY)
        self.prev_primary = ext(self.prev_primary, NEVER)
        self.interval = ext(self.interval, np.nan)
        self.range_bits = ext(self.range_bits, 0)
        self.flags = ext(self.flags, False)
        self.band_be = ext(self.band_be, NEVER)
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
        self.band.reset(sensor_mask)

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

    def observe(self, sensor: np.ndarray, quantity: np.ndarray, time: np.ndarray, value: np.ndarray,
                bad: np.ndarray, now: np.ndarray) -> HealthChanges:
        """One accepted reading per (unique) sensor; ``now`` is each sensor's newest time including it."""
        cfg = self.cfg
        ch = HealthChanges()
        old = self.flags[sensor]
        silence = (now - self.newest[sensor]).astype(np.float64)
        self.newest[sensor] = now
        first = self.first_seen[sensor] == NEVER
        self.first_seen[sensor[first]] = time[first]
        unset = self.primary[sensor] == _NO_QUANTITY
        self.primary[sensor[unset]] = quantity[unset]
        prim = quantity == self.primary[sensor]
        # usual interval: moving average of in-order gaps between primary readings
        prev = self.prev_primary[sensor]
        gap = prim & (prev != NEVER) & (time > prev)
        dt = (time - prev).astype(np.float64)
        iv = self.interval[sensor]
        iv = np.where(gap, np.where(np.isnan(iv), dt, iv + cfg.interval_alpha * (dt - iv)), iv)
        self.interval[sensor] = iv
        self.prev_primary[sensor] = np.where(prim, np.maximum(prev, time), prev)
        # range: one bit per quantity
        bit = (np.uint8(1) << quantity.astype(np.uint8)).astype(np.uint8)
        bits = np.where(bad, self.range_bits[sensor] | bit, self.range_bits[sensor] & ~bit).astype(np.uint8)
        self.range_bits[sensor] = bits
        # stuck: band of the primary quantity over stuck_for, judged once per band bucket (at its first reading)
        self.band.update(sensor, time, value, now, prim & ~bad, evaluate=False)
        be = now // self.band.width
        due = be > self.band_be[sensor]
        stuck = old[:, 1].copy()
        spread = np.full(len(sensor), np.nan)
        allowed = np.full(len(sensor), np.nan)
        if due.any():
            sd, nd = sensor[due], now[due]
            spread[due] = self.band.evaluate(sd, nd)
            n, mean = self.band.last_n, self.band.last_mean
            allowed[due] = cfg.stuck_abs_tolerance + self.rel_tol[self.primary[sd].astype(np.intp)] * np.abs(mean)
            enough = n >= cfg.stuck_min_readings
            turns = enough & (nd - self.first_seen[sd] >= self.stuck_for) & (spread[due] <= allowed[due])
            stays = enough & (spread[due] <= cfg.stuck_clear_factor * allowed[due])  # hysteresis
            stuck[due] = np.where(old[due, 1], stays, turns)
            self.band_be[sd] = be[due]
        new = np.empty((len(sensor), 3), bool)
        new[:, 0] = False
        new[:, 1] = stuck
        new[:, 2] = bits != 0
        self.flags[sensor] = new
        qi = quantity.astype(np.intp)
        bound = np.where(value >= self.saturation[qi], self.saturation[qi],
                         np.where(value < PHYSICAL_MIN[qi], PHYSICAL_MIN[qi], PHYSICAL_MAX[qi]))
        for j, kind, val, thr in ((0, "stale", silence, self._stale_limit(sensor)),
                                  (1, "stuck", spread, allowed), (2, "range", value, bound)):
            rows = np.flatnonzero(old[:, j] != new[:, j])
            if rows.size:
                ch.rows[kind] = rows
                ch.value[kind] = val[rows] / (1e9 if kind == "stale" else 1.0)
                ch.threshold[kind] = thr[rows] / (1e9 if kind == "stale" else 1.0)
        return ch

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
