"""District roll-up: per-(sensor, rule) levels to per-(district, hazard, quantity) levels with a quorum.

A district's level for a quantity is the highest level that enough of its sensors agree on: at least
``min_sensors`` of them at (or above) it, or at least ``min_fraction`` of the district's sensors of that
quantity (two at least), or one trusted registry sensor (official station, gauge) when configured.
One faulty citizen sensor therefore cannot raise a district alarm. Sensor-health levels (hazard
"sensor") are not gated: one faulty sensor puts its district's (district, "sensor", kind) at level 1.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from detection.events import DetectionBatch, RuleInfo
from geodata.config import QuorumConfig
from geodata.districts import DistrictLayer
from geodata.errors import GeodataError
from geodata.levels import DistrictLevel
from geodata.mapping import SensorDistricts
from ingest.quantities import HAZARD_OF, QUANTITIES

__all__ = ["Rollup"]


class Rollup:
    """Keeps every (sensor, rule) level and emits district levels when they change.

    ``rules[k]`` describes rule index ``k`` of ``DetectionBatch.rule``. Rules on one (hazard, quantity)
    share one level scale; a sensor's level on it is the max over those rules.
    """

    def __init__(self, layer: DistrictLayer, districts: SensorDistricts, rules: list[RuleInfo],
                 quorum: QuorumConfig) -> None:
        self.layer = layer
        self.districts = districts
        self.rules = list(rules)
        self.quorum = quorum
        self.scales: list[tuple[str, str]] = []  # (hazard, quantity)
        scale_of: dict[tuple[str, str], int] = {}
        self._scale_of_rule = np.empty(len(rules), dtype=np.int64)
        for k, r in enumerate(rules):
            key = (r.hazard, r.quantity)
            if key not in scale_of:
                scale_of[key] = len(self.scales)
                self.scales.append(key)
            self._scale_of_rule[k] = scale_of[key]
        self._rules_of_scale = [np.flatnonzero(self._scale_of_rule == s) for s in range(len(self.scales))]
        self._gated = [h != "sensor" for h, _ in self.scales]
        # quantity code -> scale of (its hazard, quantity), -1 when no rule watches it
        self._scale_of_quantity = np.array([scale_of.get((HAZARD_OF[q], q), -1) for q in QUANTITIES])
        cap = max(len(districts.sensors), 64)
        n_rules = max(len(rules), 1)
        self._level = np.zeros((cap, n_rules), dtype=np.int8)
        self._value = np.zeros((cap, n_rules))
        self._threshold = np.zeros((cap, n_rules))
        self._time = np.zeros((cap, n_rules), dtype=np.int64)
        self._seen = np.zeros((cap, max(len(self.scales), 1)), dtype=bool)
        self._state: dict[tuple[int, int], DistrictLevel] = {}
        self._version = -1

    def _grow(self, n: int) -> None:
        cap = self._level.shape[0]
        if n <= cap:
            return
        new = max(n, 2 * cap)
        for name in ("_level", "_value", "_threshold", "_time", "_seen"):
            a = getattr(self, name)
            b = np.zeros((new, a.shape[1]), dtype=a.dtype)
            b[:cap] = a
            setattr(self, name, b)

    def observe(self, sensor: np.ndarray, quantity: np.ndarray) -> None:
        """Note which sensors measure which quantities (the denominator of ``min_fraction``).

        Feed it the readings (``ReadingBatch.sensor``, ``.quantity``); without it a sensor counts for
        a quantity once it had an event on it.
        """
        sensor = np.asarray(sensor, dtype=np.int64)
        self._grow(int(sensor.max()) + 1 if sensor.size else 0)
        scale = self._scale_of_quantity[np.asarray(quantity, dtype=np.int64)]
        ok = scale >= 0
        self._seen[sensor[ok], scale[ok]] = True

    def apply(self, events: DetectionBatch) -> list[DistrictLevel]:
        """Take level transitions; the district levels that changed (level 0 = back to normal).

        A batch may hold several transitions of one (sensor, rule), e.g. a gauge
        flapping during a catch-up: they are applied in event-time order, one per
        round, so no district change is lost and the result does not depend on
        where poll batches happen to be cut.
        """
        if len(events) < 2:
            return self._apply_round(events)
        events = events.take(np.argsort(events.time, kind="stable"))
        flat = events.sensor.astype(np.int64) * len(self.rules) + events.rule.astype(np.int64)
        order = np.argsort(flat, kind="stable")
        sorted_flat = flat[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_flat)) + 1]
        rank = np.empty(len(flat), dtype=np.int64)
        rank[order] = np.arange(len(flat)) - np.repeat(starts, np.diff(np.r_[starts, len(flat)]))
        if rank.max() == 0:
            return self._apply_round(events)
        changed: list[DistrictLevel] = []
        for r in range(int(rank.max()) + 1):
            changed.extend(self._apply_round(events.take(rank == r)))
        return changed

    def _apply_round(self, events: DetectionBatch) -> list[DistrictLevel]:
        self.districts.update()
        self._grow(len(self.districts.sensors))
        keys: set[tuple[int, int]] = set()
        if len(events):
            rule = events.rule.astype(np.int64)
            if rule.min() < 0 or rule.max() >= len(self.rules):
                raise GeodataError(f"event rule index outside the {len(self.rules)} rules given to Rollup")
            sensor = events.sensor.astype(np.int64)
            self._grow(int(sensor.max()) + 1)
            # the last transition of each (sensor, rule) in the batch wins
            flat = sensor * len(self.rules) + rule
            _, last_rev = np.unique(flat[::-1], return_index=True)
            last = len(flat) - 1 - last_rev
            s, r = sensor[last], rule[last]
            self._level[s, r] = events.level[last]
            self._value[s, r] = events.value[last]
            self._threshold[s, r] = events.threshold[last]
            self._time[s, r] = events.time[last]
            scale = self._scale_of_rule[r]
            self._seen[s, scale] = True
            row, d = self.districts.pairs_of(s)
            n_scales = len(self.scales)
            keys.update(divmod(k, n_scales) for k in np.unique(d.astype(np.int64) * n_scales + scale[row]).tolist())
        if self.districts.version != self._version:  # sensors were (re)mapped: recheck every key
            self._version = self.districts.version
            keys.update((d, sc) for d in range(len(self.layer)) for sc in range(len(self.scales)))
        return self._recompute(keys)

    def reset_sensors(self, mask: np.ndarray) -> list[DistrictLevel]:
        """Forget the levels of some sensors (boolean mask or indices, e.g. a revoked partition).

        Returns the district levels that changed as a result; callers may drop them when another
        process now owns those sensors.
        """
        mask = np.asarray(mask)
        idx = np.flatnonzero(mask) if mask.dtype == bool else mask.astype(np.int64)
        idx = idx[idx < self._level.shape[0]]
        self._level[idx] = 0
        districts = self.districts.districts_of(idx).tolist()
        return self._recompute({(d, sc) for d in districts for sc in range(len(self.scales))})

    def current(self) -> list[DistrictLevel]:
        """Every (district, hazard, quantity) at level >= 1 (to reconcile alert state after a restart)."""
        return [dl for _, dl in sorted(self._state.items()) if dl.level >= 1]

    def _recompute(self, keys: set[tuple[int, int]]) -> list[DistrictLevel]:
        districts_of_scale: dict[int, list[int]] = {}
        for d, sc in keys:
            districts_of_scale.setdefault(sc, []).append(d)
        fresh: dict[tuple[int, int], DistrictLevel | None] = {}
        for sc, ds in districts_of_scale.items():
            fresh.update(zip(((d, sc) for d in ds), self._evaluate(np.array(ds, dtype=np.int64), sc), strict=True))
        changed = []
        for key in sorted(keys):
            new = fresh[key]
            old = self._state.get(key)
            if new is None:
                continue
            if (old.level if old else 0) != new.level:
                changed.append(new)
            self._state[key] = new
        return changed

    def _evaluate(self, ds: np.ndarray, sc: int) -> list[DistrictLevel | None]:
        """The levels of some districts on one scale (None where no sensor of it ever had an event).

        The quorum is decided for all districts at once, one pass per candidate level; only the
        description of each result (contributing sensors, the reading shown) is built per district.
        """
        rules = self._rules_of_scale[sc]
        pos, sens = self.districts.sensors_of_many(ds)  # each district's sensors, sorted, concatenated
        sens = sens.astype(np.int64)
        n = ds.size
        counts = np.bincount(pos, minlength=n)
        starts = np.cumsum(counts) - counts
        lv = self._level[sens[:, None], rules[None, :]]
        times = self._time[sens[:, None], rules[None, :]]
        per_sensor = lv.max(axis=1) if sens.size else np.zeros(0, np.int8)
        has_event = np.bincount(pos, weights=(times > 0).any(axis=1), minlength=n) > 0
        level = np.zeros(n, dtype=np.int64)
        top = int(per_sensor.max()) if per_sensor.size else 0
        if top > 0 and not self._gated[sc]:
            np.maximum.at(level, pos, per_sensor)
        elif top > 0:
            q = self.quorum
            total = np.bincount(pos, weights=self._seen[sens, sc], minlength=n)
            trusted = self.districts.trusted[sens] if q.trusted_count_alone else np.zeros(sens.size, bool)
            # the highest level enough sensors agree on (a level no sensor has is never chosen: the sensors
            # at or above it are those at or above the next present level, which is tried first)
            for cand in range(top, 0, -1):
                at = per_sensor >= cand
                n_at = np.bincount(pos[at], minlength=n)
                alone = np.bincount(pos[at & trusted], minlength=n) > 0
                ok = (n_at >= 1) & (alone | (n_at >= q.min_sensors) | ((n_at >= 2) & (n_at >= q.min_fraction * total)))
                level[(level == 0) & ok] = cand
        out: list[DistrictLevel | None] = []
        hazard, quantity = self.scales[sc]
        for k, d in enumerate(ds.tolist()):
            old = self._state.get((d, sc))
            if not has_event[k]:  # no sensor left with an event on this scale
                out.append(None if old is None else replace(old, level=0, sensors=(), level_name=(
                    self.rules[int(rules[0])].level_names[0])))
                continue
            a, b = int(starts[k]), int(starts[k] + counts[k])
            s_k, lv_k, t_k, ps_k = sens[a:b], lv[a:b], times[a:b], per_sensor[a:b]
            lvl = int(level[k])
            if lvl > 0:
                contrib = np.flatnonzero(ps_k >= lvl)
                best = contrib[np.lexsort((self._value[s_k[contrib], rules[lv_k[contrib].argmax(axis=1)]],
                                           ps_k[contrib]))[-1]]
                ids = tuple(self.districts.sensors.ids(s_k[contrib]))
                rk = int(rules[int(lv_k[best].argmax())])
            else:
                best = int(np.argmax(t_k)) // rules.size  # the latest event decides what "back to normal" shows
                ids = ()
                rk = int(rules[int(np.argmax(t_k[best]))])
            info = self.rules[rk]
            s = int(s_k[best])
            out.append(DistrictLevel(
                district=self.layer.ids[d], district_name=self.layer.names[d], hazard=hazard, quantity=quantity,
                rule=info.name, level=lvl,
                level_name=info.level_names[lvl] if lvl < len(info.level_names) else str(lvl),
                value=float(self._value[s, rk]), threshold=float(self._threshold[s, rk]),
                sensors=ids, time_ns=int(t_k.max()), approximate=self.layer.approximate))
        return out


    # -- scale-out (district topic) additions --
    def apply_latest(self, events: DetectionBatch) -> list[DistrictLevel]:
        """Like :meth:`apply`, but ignores transitions older (event time) than the stored one of their
        (sensor, rule): records re-published after a crash or a warm-up change nothing."""
        if len(events):
            self._grow(int(events.sensor.max()) + 1)
            stored = self._time[events.sensor.astype(np.int64), events.rule.astype(np.int64)]
            events = events.take(np.flatnonzero(events.time >= stored))
        return self.apply(events) if len(events) else []

    def forget_districts(self, districts: np.ndarray) -> None:
        """Drop the kept levels of some districts (indices), e.g. when another process owns them now."""
        drop = set(np.asarray(districts, dtype=np.int64).tolist())
        for key in [k for k in self._state if k[0] in drop]:
            del self._state[key]
