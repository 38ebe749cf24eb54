"""District roll-up: per-(sensor, rule) levels to per-(district, hazard, quantity) levels with a quorum.

A district's level for a quantity is the highest level that enough of its sensors agree on: at least
``min_sensors`` of them at (or above) it, or at least ``min_fraction`` of the district's sensors of that
quantity (two at least), or one trusted registry sensor (official station, gauge) when configured.
One faulty citizen sensor therefore cannot raise a district alarm, nor set the reading an alert shows:
that is the value the quorum agrees on, the k-th highest of the contributing sensors' (by level, then
value), k being the number of sensors the quorum needs, or a trusted sensor's own when it counts alone.
Sensor-health levels (hazard "sensor") are not gated: one faulty sensor puts its district's (district,
"sensor", kind) at level 1, and the reading shown is the worst.
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
        """Take level transitions (and value refreshes); the district levels that changed (level 0 = back to
        normal), or that kept a level >= 1 but show another reading or other sensors now.

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
        by_round = events.take(np.argsort(rank, kind="stable"))  # round r: the rows of rank r, in time order
        bounds = np.cumsum(np.bincount(rank)).tolist()
        changed: list[DistrictLevel] = []
        for a, b in zip([0, *bounds[:-1]], bounds, strict=True):
            changed.extend(self._apply_round(by_round.take(slice(a, b))))
        return changed

    def _apply_round(self, events: DetectionBatch) -> list[DistrictLevel]:
        """Apply one round: at most one transition per (sensor, rule), as :meth:`apply` hands them over."""
        self.districts.update()
        self._grow(len(self.districts.sensors))
        keys: set[tuple[int, int]] = set()
        if len(events):
            rule = events.rule.astype(np.int64)
            if rule.min() < 0 or rule.max() >= len(self.rules):
                raise GeodataError(f"event rule index outside the {len(self.rules)} rules given to Rollup")
            sensor = events.sensor.astype(np.int64)
            self._grow(int(sensor.max()) + 1)
            self._level[sensor, rule] = events.level
            self._value[sensor, rule] = events.value
            self._threshold[sensor, rule] = events.threshold
            self._time[sensor, rule] = events.time
            scale = self._scale_of_rule[rule]
            self._seen[sensor, scale] = True
            row, d = self.districts.pairs_of(sensor)
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
            if (old.level if old else 0) != new.level or (new.level >= 1 and _shows_other(old, new)):
                changed.append(new)
            self._state[key] = new
        return changed

    def _evaluate(self, ds: np.ndarray, sc: int) -> list[DistrictLevel | None]:
        """The levels of some districts on one scale (None where no sensor of it ever had an event).

        The quorum is decided for all districts at once, one pass per candidate level, and so is the
        description of each result (contributing sensors, the reading shown).
        """
        rules = self._rules_of_scale[sc]
        pos, sens = self.districts.sensors_of_many(ds)  # each district's sensors, sorted, concatenated
        sens = sens.astype(np.int64)
        n = ds.size
        counts = np.bincount(pos, minlength=n)
        starts = np.cumsum(counts) - counts
        if rules.size == 1:  # one rule on the scale (the usual case): plain columns
            lv = self._level[sens, int(rules[0])][:, None]
            times = self._time[sens, int(rules[0])][:, None]
            per_sensor = lv[:, 0]
            has_event = np.bincount(pos, weights=times[:, 0] > 0, minlength=n) > 0
        else:
            lv = self._level[sens[:, None], rules[None, :]]
            times = self._time[sens[:, None], rules[None, :]]
            per_sensor = lv.max(axis=1) if sens.size else np.zeros(0, np.int8)
            has_event = np.bincount(pos, weights=(times > 0).any(axis=1), minlength=n) > 0
        level = np.zeros(n, dtype=np.int64)
        top = int(per_sensor.max()) if per_sensor.size else 0
        agree = np.ones(n, dtype=np.int64)  # per district: how many sensors the quorum needs (1: not gated)
        trusted = np.zeros(sens.size, bool)
        if top > 0 and not self._gated[sc]:
            np.maximum.at(level, pos, per_sensor)
        elif top > 0:
            q = self.quorum
            total = np.bincount(pos, weights=self._seen[sens, sc], minlength=n)
            agree = np.minimum(q.min_sensors, np.maximum(2, np.ceil(q.min_fraction * total))).astype(np.int64)
            if q.trusted_count_alone:
                trusted = self.districts.trusted[sens]
            # the highest level enough sensors agree on (a level no sensor has is never chosen: the sensors
            # at or above it are those at or above the next present level, which is tried first)
            for cand in range(top, 0, -1):
                at = per_sensor >= cand
                n_at = np.bincount(pos[at], minlength=n)
                alone = np.bincount(pos[at & trusted], minlength=n) > 0
                ok = (n_at >= 1) & (alone | (n_at >= q.min_sensors) | ((n_at >= 2) & (n_at >= q.min_fraction * total)))
                level[(level == 0) & ok] = cand
        d_list = ds.tolist()
        levels = level.tolist()
        out: list[DistrictLevel | None] = [None] * n
        hazard, quantity = self.scales[sc]
        for k in np.flatnonzero(~has_event).tolist():  # no sensor left with an event on this scale
            old = self._state.get((d_list[k], sc))
            if old is not None:
                out[k] = replace(old, level=0, sensors=(), level_name=self.rules[int(rules[0])].level_names[0])
        if not has_event.any():
            return out
        # -- descriptions of the districts with an event, vectorised over their concatenated sensors --
        row_tmax = times.max(axis=1)
        nonempty = np.flatnonzero(counts > 0)
        seg_tmax = np.zeros(n, dtype=np.int64)
        seg_tmax[nonempty] = np.maximum.reduceat(row_tmax, starts[nonempty])
        # level > 0: the contributing sensors (at or above it), ranked by level, then value (then as a stable
        # lexsort); the reading shown is the quorum's: the k-th from the top (k = agree), or the top trusted
        # contributor's when that ranks higher
        contrib = np.flatnonzero((has_event & (level > 0))[pos] & (per_sensor >= level[pos]))
        rk_row = rules[lv[contrib].argmax(axis=1)]
        o = np.lexsort((self._value[sens[contrib], rk_row], per_sensor[contrib], pos[contrib]))
        n_contrib = np.bincount(pos[contrib], minlength=n)
        id_end = np.cumsum(n_contrib)  # o holds each district's contributors in turn, best last
        best = np.zeros(n, dtype=np.int64)  # per district: the row (in sens) of the reading shown, and its rule
        best_rule = np.zeros(n, dtype=np.int64)
        up = np.flatnonzero(n_contrib)
        shown = id_end[up] - np.minimum(agree[up], n_contrib[up])
        if trusted.any():
            ranked = np.where(trusted[contrib[o]], np.arange(o.size), -1)
            shown = np.maximum(shown, np.maximum.reduceat(ranked, (id_end - n_contrib)[up]))
        best[up] = contrib[o[shown]]
        best_rule[up] = rk_row[o[shown]]
        # level 0: the latest event decides what "back to normal" shows (the first row, then rule, at the max)
        latest = np.flatnonzero((has_event & (level == 0))[pos] & (row_tmax == seg_tmax[pos]))
        down, first = np.unique(pos[latest], return_index=True)
        best[down] = latest[first]
        best_rule[down] = rules[(times[latest[first]] == seg_tmax[down][:, None]).argmax(axis=1)]
        ids = self.districts.sensors.ids(sens[contrib])
        id_start = (id_end - n_contrib).tolist()
        n_contrib = n_contrib.tolist()
        best_s = sens[best[has_event]]
        rk_sel = best_rule[has_event]
        values = self._value[best_s, rk_sel].tolist()
        thresholds = self._threshold[best_s, rk_sel].tolist()
        t_max = seg_tmax.tolist()
        layer_ids, names, approx, infos = self.layer.ids, self.layer.names, self.layer.approximate, self.rules
        for k, rk, v, th in zip(np.flatnonzero(has_event).tolist(), rk_sel.tolist(), values, thresholds, strict=True):
            info = infos[rk]
            lvl = levels[k]
            d = d_list[k]
            out[k] = DistrictLevel(
                district=layer_ids[d], district_name=names[d], hazard=hazard, quantity=quantity,
                rule=info.name, level=lvl,
                level_name=info.level_names[lvl] if lvl < len(info.level_names) else str(lvl),
                value=v, threshold=th,
                sensors=tuple(ids[id_start[k]:id_start[k] + n_contrib[k]]),
                time_ns=t_max[k], approximate=approx)
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


def _shows_other(old: DistrictLevel, new: DistrictLevel) -> bool:
    """Whether a district at an unchanged level shows another reading (NaN equal to NaN) or other sensors."""
    same_value = old.value == new.value or (old.value != old.value and new.value != new.value)
    return not same_value or old.threshold != new.threshold or old.sensors != new.sensors or old.rule != new.rule
