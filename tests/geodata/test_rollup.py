import math
from dataclasses import replace

import numpy as np
import pytest

from detection.events import DetectionBatch, RuleInfo, hazard_code, kind_code
from geodata.config import QuorumConfig
from geodata.levels import DistrictLevel
from geodata.mapping import SensorDistricts
from geodata.registry import SensorRegistry
from geodata.rollup import Rollup
from ingest.quantities import quantity_code
from ingest.sensor_index import SensorIndex

RULES = [
    RuleInfo("pm10-high", "pm10", "air", "threshold", ("normal", "elevated", "high")),
    RuleInfo("pm10-rise", "pm10", "air", "rate", ("normal", "rising")),
    RuleInfo("neckar-stage", "water_level", "flood", "threshold", ("normal", "pre-warning", "alarm")),
    RuleInfo("stuck", "stuck", "sensor", "stuck", ("ok", "stuck")),
]
MITTE = (48.7796, 9.1800)
T0 = 1_700_000_000 * 10**9


def _events(rows):
    """rows: (sensor index, rule index, level, value)."""
    cols = {k: [] for k in ("sensor", "quantity", "rule", "kind", "hazard", "level", "prev_level", "value",
                            "threshold", "time")}
    for i, (s, r, level, value) in enumerate(rows):
        info = RULES[r]
        cols["sensor"].append(s)
        cols["quantity"].append(quantity_code(info.quantity) if info.hazard != "sensor" else 0)
        cols["rule"].append(r)
        cols["kind"].append(kind_code(info.kind))
        cols["hazard"].append(hazard_code(info.hazard))
        cols["level"].append(level)
        cols["prev_level"].append(0)
        cols["value"].append(value)
        cols["threshold"].append(50.0 * level)
        cols["time"].append(T0 + i)
    return DetectionBatch.from_columns(**cols)


def _setup(demo_layer, n_citizens, quorum, mapper):
    sensors = SensorIndex()
    for i in range(n_citizens):
        sensors.add(f"c{i}", MITTE[0] + 1e-4 * i, MITTE[1])
    sd = SensorDistricts(demo_layer, SensorRegistry.shipped(), sensors, mapper)
    return sensors, Rollup(demo_layer, sd, RULES, quorum)


# (citizen sensors in Mitte, levels of the first ones on pm10-high, quorum, expected Mitte level)
QUORUM_CASES = [
    (10, [2], QuorumConfig(min_sensors=3, min_fraction=0.5), 0),  # one faulty citizen: nothing
    (10, [2, 2], QuorumConfig(min_sensors=3, min_fraction=0.5), 0),  # 2 of 10: neither rule
    (10, [2, 2, 2], QuorumConfig(min_sensors=3, min_fraction=0.5), 2),  # min_sensors
    (10, [2, 1, 1], QuorumConfig(min_sensors=3, min_fraction=0.5), 1),  # three agree on >= 1 only
    (4, [2, 2], QuorumConfig(min_sensors=3, min_fraction=0.5), 2),  # 2 of 4 = min_fraction
    (4, [2, 1], QuorumConfig(min_sensors=3, min_fraction=0.5), 1),  # 2 of 4 agree on >= 1
    (1, [2], QuorumConfig(min_sensors=3, min_fraction=0.5), 0),  # a lone citizen never decides alone
    (1, [2], QuorumConfig(min_sensors=1, min_fraction=0.5), 2),  # unless min_sensors = 1
    (10, [1, 1, 1, 1, 1, 2], QuorumConfig(min_sensors=10, min_fraction=0.6), 1),  # 6 of 10 on >= 1
    (10, [1, 1, 1, 1, 2], QuorumConfig(min_sensors=10, min_fraction=0.6), 0),  # 5 of 10 < 0.6
]


@pytest.mark.parametrize(("n", "levels", "quorum", "expected"), QUORUM_CASES)
def test_quorum(demo_layer, demo_mapper, n, levels, quorum, expected):
    sensors, rollup = _setup(demo_layer, n, quorum, demo_mapper)
    citizens = sensors.lookup([f"c{i}" for i in range(n)])
    rollup.observe(citizens, np.full(n, quantity_code("pm10")))  # the denominator of min_fraction
    changes = rollup.apply(_events([(sensors.get(f"c{i}"), 0, lv, 40.0 + 10 * lv + i)
                                    for i, lv in enumerate(levels)]))
    mitte = [c for c in changes if c.district == "mitte" and c.quantity == "pm10"]
    if expected == 0:
        assert mitte == [] and rollup.current() == []
        return
    (dl,) = mitte
    assert dl.level == expected and dl.hazard == "air" and dl.approximate
    assert dl.level_name == RULES[0].level_names[expected]
    contributing = {f"c{i}" for i, lv in enumerate(levels) if lv >= expected}
    assert set(dl.sensors) == contributing
    # the reading shown is the one the quorum agrees on: the k-th highest of the contributors' (k the sensors
    # it needs), not the worst (a faulty sensor's)
    need = min(quorum.min_sensors, max(2, math.ceil(quorum.min_fraction * n)))
    shown = sorted((lv, 40.0 + 10 * lv + i) for i, lv in enumerate(levels) if lv >= expected)
    assert dl.value == shown[max(len(shown) - need, 0)][1]
    assert rollup.current() == [dl]


def test_trusted_station_counts_alone_and_levels_fall(demo_layer, demo_mapper):
    sensors, rollup = _setup(demo_layer, 10, QuorumConfig(), demo_mapper)
    station = sensors.get("lubw-300")  # official, in Mitte
    (dl,) = rollup.apply(_events([(station, 0, 1, 60.0)]))
    assert (dl.district, dl.level, dl.sensors) == ("mitte", 1, ("lubw-300",))
    (now,) = rollup.apply(_events([(station, 0, 1, 70.0)]))  # same level, a new reading: shown, same level
    assert (now.level, now.value, now.sensors) == (1, 70.0, ("lubw-300",))
    assert rollup.apply(_events([(station, 0, 1, 70.0)])) == []  # nothing new: nothing emitted
    (back,) = rollup.apply(_events([(station, 0, 0, 30.0)]))
    assert (back.level, back.level_name, back.sensors) == (0, "normal", ())
    assert rollup.current() == []
    _, strict = _setup(demo_layer, 10, QuorumConfig(trusted_count_alone=False), demo_mapper)
    assert strict.apply(_events([(station, 0, 1, 60.0)])) == []


def test_the_reading_shown_is_the_one_the_quorum_agrees_on(demo_layer, demo_mapper):
    """A citizen sensor stuck near 190 (not flagged yet) beside three that agree on the level: the district
    alert shows what three sensors (the quorum) reach, 55, not 190; a trusted station's own reading counts."""
    sensors, rollup = _setup(demo_layer, 10, QuorumConfig(min_sensors=3, min_fraction=0.5), demo_mapper)
    c = [sensors.get(f"c{i}") for i in range(4)]
    rollup.observe(sensors.lookup([f"c{i}" for i in range(10)]), np.full(10, quantity_code("pm10")))
    (dl,) = rollup.apply(_events([(c[0], 0, 1, 52.0), (c[1], 0, 1, 190.0), (c[2], 0, 1, 58.0), (c[3], 0, 1, 55.0)]))
    assert (dl.district, dl.level, dl.value, len(dl.sensors)) == ("mitte", 1, 55.0, 4)
    sensors, rollup = _setup(demo_layer, 10, QuorumConfig(min_sensors=3, min_fraction=0.5), demo_mapper)
    station = sensors.get("lubw-300")  # official, in Mitte
    rollup.observe(sensors.lookup([f"c{i}" for i in range(10)]), np.full(10, quantity_code("pm10")))
    (dl,) = rollup.apply(_events([(sensors.get("c0"), 0, 1, 52.0), (sensors.get("c1"), 0, 1, 190.0),
                                  (sensors.get("c2"), 0, 1, 55.0), (station, 0, 1, 60.0)]))
    assert (dl.level, dl.value) == (1, 60.0)


def test_rules_on_one_quantity_share_a_scale(demo_layer, demo_mapper):
    sensors, rollup = _setup(demo_layer, 3, QuorumConfig(min_sensors=2), demo_mapper)
    c0, c1 = sensors.get("c0"), sensors.get("c1")
    (dl,) = rollup.apply(_events([(c0, 0, 1, 60.0), (c1, 1, 1, 5.0)]))  # different rules, same scale
    assert dl.level == 1 and set(dl.sensors) == {"c0", "c1"}
    # the last transition of a (sensor, rule) in a batch wins: c0 ends at 0, so only c1 is left
    (dl,) = rollup.apply(_events([(c0, 0, 2, 90.0), (c0, 0, 0, 10.0)]))
    assert dl.level == 0 and rollup.current() == []


def test_gauge_raises_every_riverside_district(demo_layer, demo_mapper):
    sensors, rollup = _setup(demo_layer, 0, QuorumConfig(), demo_mapper)
    changes = rollup.apply(_events([(sensors.get("pegel-plochingen"), 2, 2, 480.0)]))
    assert sorted(c.district for c in changes) == sorted(
        ["obertuerkheim", "hedelfingen", "untertuerkheim", "wangen", "ost", "bad-cannstatt", "muenster",
         "muehlhausen"])
    assert {(c.hazard, c.quantity, c.rule, c.level_name, c.value) for c in changes} == {
        ("flood", "water_level", "neckar-stage", "alarm", 480.0)}


def test_sensor_health_is_not_gated_and_reset_clears(demo_layer, demo_mapper):
    sensors, rollup = _setup(demo_layer, 10, QuorumConfig(), demo_mapper)
    c3 = sensors.get("c3")
    (dl,) = rollup.apply(_events([(c3, 3, 1, 0.0)]))
    assert (dl.district, dl.hazard, dl.quantity, dl.level, dl.sensors) == ("mitte", "sensor", "stuck", 1, ("c3",))
    mask = np.zeros(len(sensors), dtype=bool)
    mask[c3] = True
    (cleared,) = rollup.reset_sensors(mask)
    assert cleared.level == 0 and rollup.current() == []


def test_moving_a_sensor_moves_its_contribution(demo_layer, demo_mapper):
    sensors, rollup = _setup(demo_layer, 1, QuorumConfig(), demo_mapper)
    c0 = sensors.get("c0")
    (dl,) = rollup.apply(_events([(c0, 3, 1, 0.0)]))
    assert dl.district == "mitte"
    sensors.set_positions(np.array([c0]), np.array([48.8067]), np.array([9.2217]))  # to Bad Cannstatt
    changes = rollup.apply(DetectionBatch.empty())
    assert sorted((c.district, c.level) for c in changes) == [("bad-cannstatt", 1), ("mitte", 0)]


class _PlainRollup(Rollup):
    """Reference: re-evaluates every (district, scale) after each round, one district at a time in plain code."""

    def _apply_round(self, events):
        self._version = -1  # forces the "sensors were remapped" path: all keys
        return super()._apply_round(events)

    def _evaluate(self, ds, sc):
        return [self._evaluate_one(int(d), sc) for d in ds]

    def _evaluate_one(self, d, sc):
        sens = self.districts.sensors_of(d).astype(np.int64)
        rules = self._rules_of_scale[sc]
        old = self._state.get((d, sc))
        lv = self._level[np.ix_(sens, rules)]
        times = self._time[np.ix_(sens, rules)]
        if not (times > 0).any():
            return None if old is None else replace(old, level=0, sensors=(),
                                                    level_name=self.rules[int(rules[0])].level_names[0])
        per_sensor = lv.max(axis=1)
        level = 0
        q = self.quorum
        total = int(self._seen[sens, sc].sum())
        trusted = self.districts.trusted[sens] if q.trusted_count_alone else np.zeros(sens.size, bool)
        if per_sensor.max() > 0:
            if not self._gated[sc]:
                level = int(per_sensor.max())
            else:
                for cand in sorted(set(per_sensor[per_sensor > 0].tolist()), reverse=True):
                    at = per_sensor >= cand
                    n_at = int(at.sum())
                    if ((trusted & at).any() or n_at >= q.min_sensors
                            or (n_at >= 2 and n_at >= q.min_fraction * total)):
                        level = cand
                        break
        if level > 0:
            contrib = np.flatnonzero(per_sensor >= level)
            ranked = contrib[np.lexsort((self._value[sens[contrib], rules[lv[contrib].argmax(axis=1)]],
                                         per_sensor[contrib]))]  # by level, then value: the worst last
            best = ranked[-1]
            if self._gated[sc]:  # the reading the quorum agrees on: k-th from the top, or a trusted one's
                need = min(q.min_sensors, max(2, math.ceil(q.min_fraction * total)))
                top_trusted = [i for i in range(ranked.size) if trusted[ranked[i]]]
                best = ranked[max([ranked.size - need, 0, *top_trusted])]
            ids = tuple(self.districts.sensors.ids(sens[contrib]))
        else:
            best = int(np.argmax(times)) // rules.size
            ids = ()
        rk = int(rules[int(lv[best].argmax())]) if level > 0 else int(rules[int(np.argmax(times[best]))])
        info = self.rules[rk]
        hazard, quantity = self.scales[sc]
        s = int(sens[best])
        return DistrictLevel(
            district=self.layer.ids[d], district_name=self.layer.names[d], hazard=hazard, quantity=quantity,
            rule=info.name, level=level,
            level_name=info.level_names[level] if level < len(info.level_names) else str(level),
            value=float(self._value[s, rk]), threshold=float(self._threshold[s, rk]),
            sensors=ids, time_ns=int(times.max()), approximate=self.layer.approximate)


def _random_events(rng, sensors, n):
    cols = {k: [] for k in ("sensor", "quantity", "rule", "kind", "hazard", "level", "prev_level", "value",
                            "threshold", "time")}
    for _ in range(n):
        r = int(rng.integers(0, len(RULES)))
        info = RULES[r]
        cols["sensor"].append(int(rng.choice(sensors)))
        cols["quantity"].append(quantity_code(info.quantity) if info.hazard != "sensor" else 0)
        cols["rule"].append(r)
        cols["kind"].append(kind_code(info.kind))
        cols["hazard"].append(hazard_code(info.hazard))
        cols["level"].append(int(rng.integers(0, len(info.level_names))))
        cols["prev_level"].append(0)
        cols["value"].append(float(rng.integers(0, 200)))
        cols["threshold"].append(50.0)
        cols["time"].append(T0 + int(rng.integers(1, 50)))
    return DetectionBatch.from_columns(**cols)


QUORUMS = [QuorumConfig(min_sensors=2, min_fraction=0.3), QuorumConfig(min_sensors=1),
           QuorumConfig(min_sensors=4, min_fraction=0.9, trusted_count_alone=False), QuorumConfig()]


@pytest.mark.parametrize("seed", range(8))
def test_vectorised_rollup_equals_plain_reference(demo_layer, demo_mapper, seed):
    """Touched keys only and the all-districts quorum pass give what a plain per-district loop gives."""
    rng = np.random.default_rng(seed)
    quorum = QUORUMS[seed % len(QUORUMS)]
    sensors, fast = _setup(demo_layer, 12, quorum, demo_mapper)
    lon, lat = rng.uniform(9.1, 9.25, 30), rng.uniform(48.72, 48.83, 30)
    idx = sensors.lookup([f"r{i}" for i in range(30)])
    sensors.set_positions(idx, lat, lon)
    ref = _PlainRollup(demo_layer, SensorDistricts(demo_layer, SensorRegistry.shipped(), sensors, demo_mapper),
                       RULES, quorum)
    pool = np.concatenate([idx, sensors.lookup([f"c{i}" for i in range(12)]),
                           [sensors.get("pegel-plochingen"), sensors.get("pegel-plochingen")]])
    seen = np.unique(rng.choice(pool, 20))
    for r in (fast, ref):
        r.observe(seen, np.full(seen.size, quantity_code("pm10")))
    for step in range(15):
        events = _random_events(rng, pool, int(rng.integers(1, 40)))
        assert fast.apply(events) == ref.apply(events), step
        if step == 9:  # a revoked partition: forget some sensors
            drop = rng.choice(pool, 5)
            assert fast.reset_sensors(drop) == ref.reset_sensors(drop)
    assert fast.current() == ref.current() and fast.current()
