import numpy as np
import pytest

from detection.events import DetectionBatch, RuleInfo, hazard_code, kind_code
from geodata.config import QuorumConfig
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
    worst = max(i for i, lv in enumerate(levels) if lv == max(levels))
    assert dl.value == 40.0 + 10 * max(levels) + worst
    assert rollup.current() == [dl]


def test_trusted_station_counts_alone_and_levels_fall(demo_layer, demo_mapper):
    sensors, rollup = _setup(demo_layer, 10, QuorumConfig(), demo_mapper)
    station = sensors.get("lubw-300")  # official, in Mitte
    (dl,) = rollup.apply(_events([(station, 0, 1, 60.0)]))
    assert (dl.district, dl.level, dl.sensors) == ("mitte", 1, ("lubw-300",))
    assert rollup.apply(_events([(station, 0, 1, 70.0)])) == []  # same level: nothing emitted
    (back,) = rollup.apply(_events([(station, 0, 0, 30.0)]))
    assert (back.level, back.level_name, back.sensors) == (0, "normal", ())
    assert rollup.current() == []
    _, strict = _setup(demo_layer, 10, QuorumConfig(trusted_count_alone=False), demo_mapper)
    assert strict.apply(_events([(station, 0, 1, 60.0)])) == []


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
