"""Compiled threshold rules and their per-sensor level state machine (hysteresis, `for`, keep_firing_for).

A rule keeps state only for the sensors it applies to that have sent its quantity: each such
sensor gets a dense *slot* (``slot_of[sensor]``), so a rule on NO2 does not hold windows for
water gauges. A batch (sorted by sensor, then event time) goes through ``rule_rows``, a
compiled per-row loop that is exactly the per-reading semantics.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from detection.arrays import grown
from detection.config import RuleConfig
from detection.windows import BucketWindow, window_add, window_eval
from ingest.quantities import quantity_code
from stadtwacht.durations import parse_duration

__all__ = ["NEVER", "CompiledRule", "rule_rows"]

#: "No time yet" in int64 ns state arrays (far enough from the minimum that adding durations is safe).
NEVER = -(2**62)

_EACH, _LAST, _WINDOW = range(3)  # how the aggregate is formed: each reading, newest value, bucket window


class CompiledRule:
    """One rule as arrays: level boundaries, per-level durations, the window, and per-slot level state.

    Per level k (column k-1) and slot: ``raw`` is the hysteresis state of
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
        self.mode = _EACH
        if self.window_ns > 0:
            if cfg.aggregate == "last":
                self.mode = _LAST
            else:
                self.mode = _WINDOW
                self.window = BucketWindow(cfg.aggregate, self.window_ns)
        self._dummy_window = BucketWindow("mean", 1)  # typed stand-in for rules without a window
        self.n_levels = len(cfg.levels)
        self.pattern = cfg.sensor_pattern()
        # per sensor (dense sensor index)
        self.sensor_mask = np.zeros(0, bool)  # which sensors the rule applies to
        self.slot_of = np.zeros(0, np.int32)  # the sensor's state slot, -1: none yet
        self.matched_upto = 0  # sensors [0, matched_upto) have been matched against the patterns
        # per slot
        self.n_slots = 0
        self.capacity = 0
        k = self.n_levels
        self.sensor_of = np.zeros(0, np.int32)
        self.raw = np.zeros((0, k), bool)
        self.since = np.zeros((0, k), np.int64)
        self.last_fire = np.zeros((0, k), np.int64)
        self.level = np.zeros(0, np.int8)
        self.last_t = np.zeros(0, np.int64)  # for aggregate "last": time of the value held
        self.last_v = np.zeros(0, np.float64)
        self.last_agg = np.zeros(0, np.float64)  # the aggregate last evaluated (reported by time-driven events)
        self.grow(capacity)

    def grow(self, n: int) -> None:
        """Make room for slots 0..n-1."""
        if n <= self.capacity:
            return
        new = max(n, 2 * self.capacity, 64)


        self.sensor_of = grown(self.sensor_of, new, -1)
        self.raw = grown(self.raw, new, False)
        self.since = grown(self.since, new, NEVER)
        self.last_fire = grown(self.last_fire, new, NEVER)
        self.level = grown(self.level, new, 0)
        if self.mode == _LAST:
            self.last_t = grown(self.last_t, new, NEVER)
            self.last_v = grown(self.last_v, new, np.nan)
        self.last_agg = grown(self.last_agg, new, np.nan)
        if self.window is not None:
            self.window.grow(new)
        self.capacity = new

    def match_new_sensors(self, names: list[str]) -> None:
        """Resolve the rule's sensor patterns for sensors added to the index since the last call."""
        n = len(names)
        if n <= self.matched_upto:
            return
        if n > self.sensor_mask.size:
            size = max(n, 2 * self.sensor_mask.size, 64)
            mask = np.zeros(size, bool)
            mask[: self.sensor_mask.size] = self.sensor_mask
            slot = np.full(size, -1, np.int32)
            slot[: self.slot_of.size] = self.slot_of
            self.sensor_mask, self.slot_of = mask, slot
        sel = self.cfg.sensors
        if sel == "*" or sel == ["*"]:
            self.sensor_mask[self.matched_upto: n] = True
        else:
            match = self.pattern.match
            self.sensor_mask[self.matched_upto: n] = [match(s) is not None for s in names[self.matched_upto: n]]
        self.matched_upto = n

    def assign_slots(self, sensor: np.ndarray, quantity: np.ndarray) -> None:
        """Give a state slot to each matching sensor that sends the rule's quantity for the first time."""
        mine = quantity == self.quantity
        cand = sensor[mine]
        cand = cand[self.sensor_mask[cand] & (self.slot_of[cand] < 0)]
        if cand.size == 0:
            return
        new = np.unique(cand)
        lo = self.n_slots
        self.grow(lo + new.size)
        self.slot_of[new] = np.arange(lo, lo + new.size, dtype=np.int32)
        self.sensor_of[lo: lo + new.size] = new
        self.n_slots = lo + new.size

    def reset(self, sensor_mask: np.ndarray) -> None:
        """Forget the state of the selected sensors (their slots stay theirs, cleared)."""
        m = np.zeros(self.slot_of.size, bool)
        k = min(m.size, sensor_mask.size)
        m[:k] = sensor_mask[:k]
        rows = self.slot_of[m & (self.slot_of >= 0)]
        self.raw[rows] = False
        self.since[rows] = NEVER
        self.last_fire[rows] = NEVER
        self.level[rows] = 0
        if self.mode == _LAST:
            self.last_t[rows] = NEVER
            self.last_v[rows] = np.nan
        self.last_agg[rows] = np.nan
        if self.window is not None:
            self.window.reset(rows)

    def nbytes(self) -> int:
        """Bytes of state: the per-sensor slot map plus the per-slot state actually in use."""
        return int(self.sensor_mask.nbytes + self.slot_of.nbytes + self.n_slots * self.slot_nbytes())

    def slot_nbytes(self) -> int:
        """Bytes of state one sensor slot holds."""
        per = (self.sensor_of.itemsize + self.raw.itemsize * self.n_levels + self.since.itemsize * self.n_levels
               + self.last_fire.itemsize * self.n_levels + self.level.itemsize + self.last_agg.itemsize)
        if self.mode == _LAST:
            per += self.last_t.itemsize + self.last_v.itemsize
        if self.window is not None and self.window.capacity:
            per += self.window.nbytes() / self.window.capacity
        return int(per)

    def process(self, s, q, t, v, now, bad, faulty) -> tuple[np.ndarray, ...]:
        """Run the rule over a batch sorted by (sensor, time); its events as (row, level, prev, value, threshold)."""
        self.assign_slots(s, q)
        win = self.window if self.window is not None else self._dummy_window
        if self.window is not None and s.size:
            win.ensure_base(int(t.min()))
        n = s.size
        ev_row = np.empty(n, np.int64)
        ev_level = np.empty(n, np.int8)
        ev_prev = np.empty(n, np.int8)
        ev_value = np.empty(n, np.float64)
        ev_thr = np.empty(n, np.float64)
        count = rule_rows(s, q, t, v, now, bad, faulty, self.slot_of, self.quantity, self.mode, *win.args(),
                          self.last_t, self.last_v, self.raw, self.since, self.last_fire, self.level,
                          self.last_agg, self.levels, self.clear, self.for_ns, self.keep_ns,
                          ev_row, ev_level, ev_prev, ev_value, ev_thr)
        return ev_row[:count], ev_level[:count], ev_prev[:count], ev_value[:count], ev_thr[:count]

    def firing_level(self, slot: np.ndarray, now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The level each slot is at by time ``now`` (records firing); also per-level output mask."""
        raw = self.raw[slot]
        fired = raw & (now[:, None] - self.since[slot] >= self.for_ns[None, :])
        last_fire = np.where(fired, now[:, None], self.last_fire[slot])
        self.last_fire[slot] = last_fire
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


@njit(cache=True, error_model="numpy")
def rule_rows(s, q, t, v, now, bad, faulty, slot_of, quantity, mode,
              code, B, w, base, ids, cnt, acc, tot, cur_be,
              last_t, last_v, raw, since, last_fire, level, last_agg, levels, clear, for_ns, keep_ns,
              ev_row, ev_level, ev_prev, ev_value, ev_thr):
    """One rule over rows sorted by (sensor, time): suppression, aggregate, hysteresis, `for`, keep; events out.

    Per row: a faulty sensor (health after this row) drops a held level to 0; a row of the rule's
    quantity updates the aggregate, the hysteresis per level and the firing level (0 while faulty).
    At most one event per row (a suppressed level cannot change again in the same row).
    """
    n_ev = 0
    K = levels.size
    for j in range(s.size):
        i = slot_of[s[j]]
        if i < 0:
            continue
        tn = now[j]
        if faulty[j] and level[i] > 0:
            ev_row[n_ev] = j
            ev_level[n_ev] = 0
            ev_prev[n_ev] = level[i]
            ev_value[n_ev] = last_agg[i]
            ev_thr[n_ev] = np.nan
            n_ev += 1
            level[i] = 0
        if q[j] != quantity:
            continue
        add = not bad[j]
        if mode == _EACH:
            agg = v[j] if add else np.nan
        elif mode == _LAST:
            if add and t[j] >= last_t[i]:
                last_t[i] = t[j]
                last_v[i] = v[j]
            agg = last_v[i]
        else:
            agg = window_add(code, B, w, base, ids, cnt, acc, tot, cur_be, i, t[j], v[j], add, tn)
            if code != 0:
                agg = window_eval(code, B, w, base, ids, cnt, acc, i, tn)[0]
        # hysteresis per level (NaN: no change)
        for k in range(K):
            was = raw[i, k]
            if agg >= levels[k]:
                raw[i, k] = True
            elif agg < clear[k]:
                raw[i, k] = False
            if raw[i, k] and not was:
                since[i, k] = tn
        if agg == agg:
            last_agg[i] = agg
        # firing level: `for` held, or still within keep_firing_for of the last firing
        lv = 0
        for k in range(K):
            fired = raw[i, k] and tn - since[i, k] >= for_ns[k]
            if fired:
                last_fire[i, k] = tn
            if fired or (keep_ns > 0 and tn < last_fire[i, k] + keep_ns):
                lv = k + 1
        if faulty[j]:
            lv = 0
        prev = level[i]
        if lv != prev:
            ev_row[n_ev] = j
            ev_level[n_ev] = lv
            ev_prev[n_ev] = prev
            ev_value[n_ev] = agg
            if lv > prev:
                ev_thr[n_ev] = levels[min(max(lv - 1, 0), K - 1)]
            else:
                ev_thr[n_ev] = clear[min(max(prev - 1, 0), K - 1)]
            n_ev += 1
            level[i] = lv
    return n_ev
