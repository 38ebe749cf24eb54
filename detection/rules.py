"""Compiled threshold rules and their per-sensor level state machine (hysteresis, `for`, keep_firing_for)."""

from __future__ import annotations

import numpy as np

from detection.config import RuleConfig
from detection.windows import BucketWindow
from ingest.quantities import quantity_code
from stadtwacht.durations import parse_duration

__all__ = ["NEVER", "CompiledRule"]

#: "No time yet" in int64 ns state arrays (far enough from the minimum that adding durations is safe).
NEVER = -(2**62)


class CompiledRule:
    """One rule as arrays: level boundaries, per-level durations, the window, and per-sensor level state.

    Per level k (column k-1) and sensor: ``raw`` is the hysteresis state of
    "aggregate >= level", ``since`` when it last turned on, ``last_fire`` when
    the level last fired; ``level`` is the level last emitted.
    """

    def __init__(self, cfg: RuleConfig, capacity: int = 0) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.quantity = quantity_code(cfg.quantity)
        self.kind = "rate" if cfg.aggregate == "rate_per_hour" else "threshold"
        self.hazard = cfg.hazard_name()
        self.levels = np.asarray(cfg.levels, np.float64)
        self.clear = np.asarray(cfg.clear_levels(), np.float64)
        self.for_ns = np.asarray(cfg.for_ns(), np.int64)
        self.keep_ns = parse_duration(cfg.keep_firing_for)
        self.window_ns = parse_duration(cfg.window)
        self.window: BucketWindow | None = None
        if self.window_ns > 0 and cfg.aggregate != "last":
            self.window = BucketWindow(cfg.aggregate, self.window_ns)
        self.n_levels = len(cfg.levels)
        self.capacity = 0
        self.sensor_mask = np.zeros(0, bool)  # which sensors the rule applies to
        self.matched_upto = 0  # sensors [0, matched_upto) have been matched against the patterns
        self.pattern = cfg.sensor_pattern()
        k = self.n_levels
        self.raw = np.zeros((0, k), bool)
        self.since = np.zeros((0, k), np.int64)
        self.last_fire = np.zeros((0, k), np.int64)
        self.level = np.zeros(0, np.int8)
        self.last_t = np.zeros(0, np.int64)  # for aggregate "last": time of the value held
        self.last_v = np.zeros(0, np.float64)
        self.last_agg = np.zeros(0, np.float64)  # the aggregate last evaluated (reported by time-driven events)
        self.grow(capacity)

    def grow(self, n: int) -> None:
        if n <= self.capacity:
            return
        new = max(n, 2 * self.capacity, 64)

        def ext(a: np.ndarray, fill) -> np.ndarray:
            out = np.full((new, *a.shape[1:]), fill, a.dtype)
            out[: a.shape[0]] = a
            return out

        self.sensor_mask = ext(self.sensor_mask, False)
        self.raw = ext(self.raw, False)
        self.since = ext(self.since, NEVER)
        self.last_fire = ext(self.last_fire, NEVER)
        self.level = ext(self.level, 0)
        self.last_t = ext(self.last_t, NEVER)
        self.last_v = ext(self.last_v, np.nan)
        self.last_agg = ext(self.last_agg, np.nan)
        if self.window is not None:
            self.window.grow(new)
        self.capacity = new

    def match_new_sensors(self, names: list[str]) -> None:
        """Resolve the rule's sensor patterns for sensors added to the index since the last call."""
        n = len(names)
        if n <= self.matched_upto:
            return
        self.grow(n)
        sel = self.cfg.sensors
        if sel == "*" or sel == ["*"]:
            self.sensor_mask[self.matched_upto: n] = True
        else:
            match = self.pattern.match
            self.sensor_mask[self.matched_upto: n] = [match(s) is not None for s in names[self.matched_upto: n]]
        self.matched_upto = n

    def reset(self, sensor_mask: np.ndarray) -> None:
        rows = np.flatnonzero(sensor_mask[: self.capacity])
        self.raw[rows] = False
        self.since[rows] = NEVER
        self.last_fire[rows] = NEVER
        self.level[rows] = 0
        self.last_t[rows] = NEVER
        self.last_v[rows] = np.nan
        self.last_agg[rows] = np.nan
        if self.window is not None:
            self.window.reset(sensor_mask)

    def nbytes(self) -> int:
        own = sum(a.nbytes for a in (self.sensor_mask, self.raw, self.since, self.last_fire, self.level,
                                     self.last_agg))
        if self.window is not None:
            own += self.window.nbytes()
        elif self.cfg.aggregate == "last" and self.window_ns > 0:
            own += self.last_t.nbytes + self.last_v.nbytes
        return int(own)

    def aggregate(self, sensor: np.ndarray, time: np.ndarray, value: np.ndarray, eval_time: np.ndarray,
                  add: np.ndarray) -> np.ndarray:
        """Add one reading per (unique) sensor where ``add``; the aggregate at ``eval_time``."""
        if self.window is not None:
            return self.window.update(sensor, time, value, eval_time, add)
        if self.cfg.aggregate == "last" and self.window_ns > 0:
            newer = add & (time >= self.last_t[sensor])
            self.last_t[sensor[newer]] = time[newer]
            self.last_v[sensor[newer]] = value[newer]
            return self.last_v[sensor]
        return np.where(add, value, np.nan)  # "0s": each reading on its own

    def observe(self, sensor: np.ndarray, agg: np.ndarray, now: np.ndarray) -> None:
        """Update hysteresis and pending state from an aggregate (NaN: no change)."""
        raw = self.raw[sensor]
        on = agg[:, None] >= self.levels[None, :]
        off = agg[:, None] < self.clear[None, :]
        new_raw = np.where(on, True, np.where(off, False, raw))
        rising = new_raw & ~raw
        since = self.since[sensor]
        since[rising] = np.broadcast_to(now[:, None], since.shape)[rising]
        self.raw[sensor] = new_raw
        self.since[sensor] = since

    def firing_level(self, sensor: np.ndarray, now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The level each sensor is at by time ``now`` (records firing); also per-level output mask."""
        raw = self.raw[sensor]
        fired = raw & (now[:, None] - self.since[sensor] >= self.for_ns[None, :])
        last_fire = np.where(fired, now[:, None], self.last_fire[sensor])
        self.last_fire[sensor] = last_fire
        out = fired
        if self.keep_ns > 0:
            out = fired | (now[:, None] < last_fire + self.keep_ns)
        k = np.arange(1, self.n_levels + 1, dtype=np.int8)
        level = np.where(out, k[None, :], 0).max(axis=1).astype(np.int8)
        return level, out

    def boundary(self, prev: np.ndarray, new: np.ndarray) -> np.ndarray:
        """The boundary crossed: level new's bound rising, the clear bound of level prev falling."""
        up = self.levels[np.clip(new - 1, 0, self.n_levels - 1)]
        down = self.clear[np.clip(prev - 1, 0, self.n_levels - 1)]
        return np.where(new > prev, up, down)
