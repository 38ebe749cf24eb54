"""Rollup's fast paths (rounds sliced once, vectorised descriptions) give exactly what the plain code gave.

``_ReferenceRollup`` is ``geodata/rollup.py``'s ``Rollup`` as it was before the fast paths (commit a6c7e42),
copied verbatim but for the reading a district shows, which since became the quorum's (written plainly here,
district by district). Random streams drive it and the current ``Rollup`` side by side: every returned list,
``current()`` and the kept ``_state`` (values and order) must be equal after every step.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detection.events import DetectionBatch, RuleInfo, hazard_code, kind_code
from geodata.config import QuorumConfig
from geodata.districts import DistrictLayer
from geodata.errors import GeodataError
from geodata.levels import DistrictLevel
from geodata.mapping import SensorDistricts
from geodata.registry import SensorRegistry
from geodata.rollup import Rollup
from ingest.quantities import HAZARD_OF, QUANTITIES, quantity_code
from ingest.sensor_index import SensorIndex

# -- the reference: verbatim copy of the pre-fast-path Rollup (only the class name and docstring differ, and the
# value refreshes' reporting rule in _recompute) --


class _ReferenceRollup:
    """Rollup before the fast paths (commit a6c7e42; the reading shown is the quorum's since): the reference.

    Keeps every (sensor, rule) level and emits district levels when they change.

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
            # (since value refreshes: also a district at an unchanged level >= 1 that shows another reading)
            if (old.level if old else 0) != new.level:
                changed.append(new)
            elif new.level >= 1:
                same_value = old.value == new.value or (math.isnan(old.value) and math.isnan(new.value))
                if not (same_value and (old.threshold, old.sensors, old.rule) == (new.threshold, new.sensors,
                                                                                  new.rule)):
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
                ranked = contrib[np.lexsort((self._value[s_k[contrib], rules[lv_k[contrib].argmax(axis=1)]],
                                             ps_k[contrib]))]  # worst last
                best = ranked[-1]
                if self._gated[sc]:  # the k-th from the top, k the sensors the quorum needs, or a trusted one's
                    q = self.quorum
                    need = min(q.min_sensors, max(2, math.ceil(q.min_fraction * float(self._seen[s_k, sc].sum()))))
                    at = max(ranked.size - need, 0)
                    for i in range(ranked.size):
                        if q.trusted_count_alone and self.districts.trusted[s_k[ranked[i]]]:
                            at = max(at, i)
                    best = ranked[at]
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


# -- random streams --

RULES = [
    RuleInfo("pm10-high", "pm10", "air", "threshold", ("normal", "elevated", "high")),
    RuleInfo("pm10-rise", "pm10", "air", "rate", ("normal", "rising")),  # level 2, 3: no name (str(level))
    RuleInfo("neckar-stage", "water_level", "flood", "threshold", ("normal", "pre-warning", "alarm")),
    RuleInfo("stuck", "stuck", "sensor", "stuck", ("ok", "stuck")),
    RuleInfo("range", "range", "sensor", "range", ("ok", "out of range")),
]
QUORUMS = [QuorumConfig(), QuorumConfig(min_sensors=2, min_fraction=0.3), QuorumConfig(min_sensors=1),
           QuorumConfig(min_sensors=4, min_fraction=0.9, trusted_count_alone=False),
           QuorumConfig(min_sensors=3, min_fraction=0.25)]
BBOX = (9.05, 48.69, 9.32, 48.88)  # a little wider than the demo layer: some sensors are outside
T0 = 1_700_000_000 * 10**9


class _Pair:
    """The reference and the current roll-up over one mapping, driven by the same calls."""

    def __init__(self, demo_layer, demo_mapper, quorum, n_citizens, rng):
        self.rng = rng
        self.sensors = SensorIndex()
        self.mapping = SensorDistricts(demo_layer, SensorRegistry.shipped(), self.sensors, demo_mapper)
        self.add_sensors(n_citizens)
        self.ref = _ReferenceRollup(demo_layer, self.mapping, RULES, quorum)
        self.fast = Rollup(demo_layer, self.mapping, RULES, quorum)
        self.calls = 0

    def add_sensors(self, n):
        rng = self.rng
        for _ in range(n):
            i = len(self.sensors)
            if rng.random() < 0.05:
                self.sensors.add(f"c{i}")  # no position: in no district
            else:
                self.sensors.add(f"c{i}", rng.uniform(BBOX[1], BBOX[3]), rng.uniform(BBOX[0], BBOX[2]))

    def same(self, what, a, b):
        self.calls += 1
        assert a == b, what
        assert self.fast.current() == self.ref.current(), what
        assert list(self.fast._state.items()) == list(self.ref._state.items()), what

    def call(self, name, *args):
        want = getattr(self.ref, name)(*args)
        got = getattr(self.fast, name)(*args)
        self.same(name, got, want)
        return got


def _events(rng, n_sensors, n, keys=None, repeat=0.5, zero_times=False, top=4):
    """n transitions; with ``repeat`` the share drawn from a few hot (sensor, rule) keys (several per batch)."""
    hot = [(int(rng.integers(0, n_sensors)), int(rng.integers(0, len(RULES)))) for _ in range(keys or 4)]
    cols = {k: [] for k in ("sensor", "quantity", "rule", "kind", "hazard", "level", "prev_level", "value",
                            "threshold", "time")}
    for _ in range(n):
        if rng.random() < repeat:
            s, r = hot[int(rng.integers(0, len(hot)))]
        else:
            s, r = int(rng.integers(0, n_sensors)), int(rng.integers(0, len(RULES)))
        info = RULES[r]
        cols["sensor"].append(s)
        cols["quantity"].append(quantity_code(info.quantity) if info.hazard != "sensor" else 0)
        cols["rule"].append(r)
        cols["kind"].append(kind_code(info.kind))
        cols["hazard"].append(hazard_code(info.hazard))
        cols["level"].append(int(rng.integers(0, top)))
        cols["prev_level"].append(0)
        cols["value"].append(float(rng.integers(0, 6)))  # few values: ties in "the worst reading"
        cols["threshold"].append(float(rng.integers(0, 100)))
        lo = -3 if zero_times else 1
        cols["time"].append(T0 * (lo > 0) + int(rng.integers(lo, 12)))  # few times: ties in event order
    return DetectionBatch.from_columns(**cols)


def _drive(pair, steps, zero_times=False):
    rng = pair.rng
    for _ in range(steps):
        n = len(pair.sensors)
        op = rng.random()
        if op < 0.55:
            pair.call("apply", _events(rng, n, int(rng.integers(0, 60)), int(rng.integers(1, 8)),
                                       rng.random(), zero_times))
        elif op < 0.65:
            pair.call("apply_latest", _events(rng, n, int(rng.integers(0, 40)), zero_times=zero_times))
        elif op < 0.72:
            drop = rng.integers(0, n, int(rng.integers(1, 12)))
            pair.call("reset_sensors", drop if rng.random() < 0.5 else np.isin(np.arange(n), drop))
        elif op < 0.77:
            drop = rng.integers(0, 23, int(rng.integers(1, 6)))
            pair.call("forget_districts", drop)
        elif op < 0.85:  # readings: the min_fraction denominators
            s = rng.integers(0, n, 30)
            q = rng.choice([quantity_code("pm10"), quantity_code("water_level")], 30)
            pair.ref.observe(s, q)
            pair.fast.observe(s, q)
        elif op < 0.92:  # sensors moved: the mapping's version changes, every key is rechecked
            idx = rng.integers(0, n, int(rng.integers(1, 6)))
            pair.sensors.set_positions(idx, rng.uniform(BBOX[1], BBOX[3], idx.size),
                                       rng.uniform(BBOX[0], BBOX[2], idx.size))
        else:  # new sensors
            pair.add_sensors(int(rng.integers(1, 10)))
        pair.same("current", pair.fast.current(), pair.ref.current())


@pytest.mark.parametrize("seed", range(12))
def test_random_streams_equal_the_reference(demo_layer, demo_mapper, seed):
    rng = np.random.default_rng(seed)
    pair = _Pair(demo_layer, demo_mapper, QUORUMS[seed % len(QUORUMS)], int(rng.integers(5, 80)), rng)
    _drive(pair, 60)
    assert pair.calls > 60 and pair.ref.current()  # the stream did raise some district


@pytest.mark.parametrize("seed", range(4))
def test_event_times_at_or_before_zero_equal_the_reference(demo_layer, demo_mapper, seed):
    """Times <= 0 leave "had an event" unset (descriptions from the kept state): still equal."""
    rng = np.random.default_rng(100 + seed)
    pair = _Pair(demo_layer, demo_mapper, QUORUMS[seed % len(QUORUMS)], 40, rng)
    _drive(pair, 40, zero_times=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), quorum=st.sampled_from(QUORUMS), n_citizens=st.integers(0, 120),
       batches=st.lists(st.tuples(st.integers(0, 150), st.integers(1, 10), st.floats(0, 1)), min_size=1,
                        max_size=8))
def test_batches_with_repeated_transitions_equal_the_reference(demo_layer, demo_mapper, seed, quorum, n_citizens,
                                                               batches):
    rng = np.random.default_rng(seed)
    pair = _Pair(demo_layer, demo_mapper, quorum, n_citizens, rng)
    n = len(pair.sensors)
    pair.ref.observe(np.arange(n), np.full(n, quantity_code("pm10")))
    pair.fast.observe(np.arange(n), np.full(n, quantity_code("pm10")))
    for size, hot, repeat in batches:
        pair.call("apply", _events(rng, n, size, hot, repeat))


def test_invalid_rule_raises_in_the_same_round(demo_layer, demo_mapper):
    """A bad rule index in a later round raises after the earlier rounds were applied, as before."""
    rng = np.random.default_rng(7)
    pair = _Pair(demo_layer, demo_mapper, QuorumConfig(min_sensors=1), 30, rng)
    events = _events(rng, len(pair.sensors), 20, 2, 1.0)
    bad = DetectionBatch.concat([events, events.take(np.array([0]))])
    bad = replace(bad, rule=np.r_[bad.rule[:-1], len(RULES)].astype(np.int16),
                  time=np.r_[bad.time[:-1], bad.time.max() + 1])
    for r in (pair.ref, pair.fast):
        with pytest.raises(GeodataError):
            r.apply(bad)
    pair.same("after the error", pair.fast.current(), pair.ref.current())
    pair.call("apply", _events(rng, len(pair.sensors), 30, 3, 0.7))


def test_e2e_like_stream_equals_the_reference(demo_layer, demo_mapper):
    """Many sensors, one gated quantity flapping across a 24 h mean: many rounds per batch, few changes."""
    rng = np.random.default_rng(3)
    pair = _Pair(demo_layer, demo_mapper, QuorumConfig(), 400, rng)
    n = len(pair.sensors)
    pair.ref.observe(np.arange(n), np.full(n, quantity_code("pm10")))
    pair.fast.observe(np.arange(n), np.full(n, quantity_code("pm10")))
    changes = 0
    for b in range(8):
        s = rng.integers(0, n, 600)
        order = np.argsort(rng.random(s.size))
        cols = {"sensor": s, "quantity": np.full(s.size, quantity_code("pm10")), "rule": np.zeros(s.size),
                "kind": np.full(s.size, kind_code("threshold")), "hazard": np.full(s.size, hazard_code("air")),
                "level": rng.integers(0, 3, s.size), "prev_level": np.zeros(s.size),
                "value": rng.integers(40, 70, s.size).astype(float), "threshold": np.full(s.size, 50.0),
                "time": T0 + b * 10**12 + order * 10**9}
        changes += len(pair.call("apply", DetectionBatch.from_columns(**cols)))
    assert changes > 0
