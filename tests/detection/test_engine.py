"""Table-driven unit tests of the engine: aggregates, hysteresis, `for`, keep_firing_for, lateness, health."""

from __future__ import annotations

import numpy as np
import pytest

from detection.anomaly_config import AnomalyConfig
from detection.config import DetectionConfig, HealthConfig, RuleConfig, load_default_rules
from detection.engine import DetectionEngine
from detection.events import KINDS
from ingest.batch import ReadingBatch
from ingest.quantities import quantity_code
from ingest.sensor_index import SensorIndex

MIN = 60_000_000_000
HOUR = 60 * MIN
NO_ANOMALY = DetectionConfig(anomaly=AnomalyConfig(enabled=False))


def _engine(rules, config=NO_ANOMALY, names=("s1",)):
    index = SensorIndex()
    for n in names:
        index.add(n)
    return DetectionEngine(rules, config, index), index


def _feed(engine, quantity, minutes, values, sensor=0):
    """One batch; returns [(minute, level)] of rule 0 and the result."""
    n = len(values)
    res = engine.process(ReadingBatch.from_columns(
        [sensor] * n, [quantity_code(quantity)] * n, [int(m * MIN) for m in minutes], values))
    ev = res.events.take(res.events.rule == 0)
    return [(int(t // MIN), int(lv)) for t, lv in zip(ev.time, ev.level, strict=True)], res


def _rule(**kw):
    base = dict(name="r", quantity="no2", level_names=[f"l{i}" for i in range(len(kw["levels"]))])
    return RuleConfig(**{**base, **kw})


@pytest.mark.parametrize(("aggregate", "window", "minutes", "values", "want"), [
    # each reading on its own
    ("mean", "0s", [0, 1, 2], [250, 100, 210], [(0, 1), (1, 0), (2, 1)]),
    # 1-h mean (24 buckets of 2.5 min): 100, 300 -> 200 at minute 10; the 100 at 0 leaves the window at 60
    ("mean", "1h", [0, 10, 30, 61], [100, 300, 200, 50], [(10, 1), (61, 0)]),
    ("max", "1h", [0, 10, 30, 71], [300, 100, 100, 100], [(0, 1), (71, 0)]),
    ("min", "30m", [0, 10, 20, 40], [300, 100, 250, 260], [(0, 1), (10, 0), (40, 1)]),
    ("last", "1h", [0, 10, 20], [300, 100, 200], [(0, 1), (10, 0), (20, 1)]),
])
def test_aggregates(aggregate, window, minutes, values, want):
    engine, _ = _engine([_rule(levels=[200.0], window=window, aggregate=aggregate)])
    got, _ = _feed(engine, "no2", minutes, values)
    assert got == want


def test_rate_of_rise_slope_per_hour():
    """Least-squares slope over the window: +6 cm per 10 min = 36 cm/h fires, a level stretch clears."""
    rule = _rule(quantity="water_level", levels=[30.0], window="1h", aggregate="rate_per_hour")
    engine, _ = _engine([rule])
    got, res = _feed(engine, "water_level", [0, 10, 20, 30, 40], [100, 106, 112, 118, 124])
    assert got == [(10, 1)]
    assert res.events.value[0] == pytest.approx(36.0)
    assert KINDS[res.events.kind[0]] == "rate"
    got, _ = _feed(engine, "water_level", [50, 60, 70, 80, 90, 100, 110], [124] * 7)
    assert got and got[-1][1] == 0


@pytest.mark.parametrize(("values", "want_levels"), [
    # Esslingen (gauge Kirchentellinsfurt) example: alarm at 500 rising, lifted only at 450 falling
    ([300, 340, 410, 490, 505, 470, 455, 449, 300], [1, 2, 3, 4, 2, 0]),
    ([505, 451, 450, 449], [4, 2]),  # 450 exactly still holds the alarm (clears when < 450)
    ([330, 329.9, 330], [1, 0, 1]),  # exactly at a level is active
])
def test_esslingen_hysteresis(values, want_levels):
    rule = next(r for r in load_default_rules() if r.name == "neckar-pegel-beispiel")
    engine, _ = _engine([rule], names=("pegel-kirchentellinsfurt",))
    got, res = _feed(engine, "water_level", range(len(values)), values)
    assert [lv for _, lv in got] == want_levels
    if 4 in want_levels:
        i = want_levels.index(4) + 1
        assert res.events.threshold[i] == 450.0  # falling: the clear level crossed


def test_flood_rules_only_apply_to_gauges():
    rule = next(r for r in load_default_rules() if r.name == "neckar-pegel-beispiel")
    engine, _ = _engine([rule], names=("pegel-plochingen", "boje-1"))
    got, _ = _feed(engine, "water_level", [0], [600], sensor=1)
    assert got == []
    got, _ = _feed(engine, "water_level", [0], [600], sensor=0)
    assert got == [(0, 4)]


def test_no2_alert_needs_three_hours_while_limit_fires_at_once():
    """One rule, `for` per level: 200 fires at once, 400 only after holding 3 h (39. BImSchV)."""
    rule = next(r for r in load_default_rules() if r.name == "no2-1h")
    engine, _ = _engine([rule])
    got, _ = _feed(engine, "no2", range(0, 180, 10), [450] * 18)
    assert got == [(0, 1)]
    got, _ = _feed(engine, "no2", [180], [450])
    assert got == [(180, 2)]


def test_for_matures_on_tick_and_keep_firing_for_expires_on_tick():
    rule = _rule(levels=[200.0], for_="30m", keep_firing_for="20m")
    engine, _ = _engine([rule], DetectionConfig(health=HealthConfig(stale_min="1d"),
                                                anomaly=AnomalyConfig(enabled=False)))
    assert _feed(engine, "no2", [0], [250])[0] == []
    ev = engine.tick(29 * MIN)
    assert len(ev.take(ev.rule == 0)) == 0
    ev = engine.tick(30 * MIN)
    assert [(int(t // MIN), int(lv)) for t, lv in zip(ev.time, ev.level, strict=True)] == [(30, 1)]
    assert _feed(engine, "no2", [31], [100])[0] == []  # condition gone, kept firing for 20 min
    ev = engine.tick(50 * MIN)
    assert [(int(t // MIN), int(lv)) for t, lv in zip(ev.time, ev.level, strict=True) if True] == [(50, 0)]


@pytest.mark.parametrize(("minutes", "late"), [
    ([100, 90, 89.99, 105, 95], [False, False, True, False, False]),  # 10 min tolerance against the old newest
])
def test_late_rows_are_masked_and_not_judged(minutes, late):
    engine, _ = _engine([_rule(levels=[200.0])])
    _feed(engine, "no2", [100], [100])
    got, res = _feed(engine, "no2", minutes[1:], [100, 900, 100, 100])
    assert res.late.tolist() == late[1:]
    assert got == []  # the 900 was late


def test_out_of_order_within_tolerance_merges_into_the_window():
    engine, _ = _engine([_rule(levels=[200.0], window="1h", aggregate="mean")])
    _feed(engine, "no2", [30], [150])
    got, res = _feed(engine, "no2", [25], [300])  # older, within tolerance: mean becomes 225 at minute 30
    assert not res.late.any()
    assert got == [(30, 1)]


def test_saturated_sensor_drops_levels_and_is_flagged():
    rule = next(r for r in load_default_rules() if r.name == "pm10-24h")
    engine, _ = _engine([rule])
    got, _ = _feed(engine, "pm10", [0], [80])
    assert got == [(0, 1)]
    got, res = _feed(engine, "pm10", [3], [1999.9])
    assert got == [(3, 0)]
    kinds = [KINDS[k] for k in res.events.kind]
    assert "range" in kinds
    got, res = _feed(engine, "pm10", [6], [80])  # healthy again, the saturated value never entered the mean
    assert got == [(6, 1)] and res.events.value[res.events.rule == 0][0] == 80.0


def test_stale_sensor_is_flagged_on_tick_and_clears_on_reading():
    cfg = DetectionConfig(health=HealthConfig(stale_factor=5.0, stale_min="15m"),
                          anomaly=AnomalyConfig(enabled=False))
    engine, _ = _engine([_rule(quantity="pm10", levels=[50.0])], cfg)
    _feed(engine, "pm10", [0, 5, 10], [60, 60, 60])  # learned interval 5 min -> stale after 25 min
    stale_rule = [i.name for i in engine.rule_info].index("sensor-stale")
    assert len(engine.tick(35 * MIN)) == 0
    ev = engine.tick(36 * MIN)
    assert sorted((int(r), int(lv)) for r, lv in zip(ev.rule, ev.level, strict=True)) == [(0, 0), (stale_rule, 1)]
    _, res = _feed(engine, "pm10", [40], [60])
    assert sorted((int(r), int(lv)) for r, lv in zip(res.events.rule, res.events.level, strict=True)) == [
        (0, 1), (stale_rule, 0)]


def test_rule_info_order_and_sensor_patterns_refresh_for_new_sensors():
    rules = load_default_rules()
    engine, index = _engine(rules)
    info = engine.rule_info
    assert [i.name for i in info[: len(rules)]] == [r.name for r in rules]
    assert [(i.kind, i.hazard, i.quantity) for i in info[len(rules): len(rules) + 3]] == [
        ("stale", "sensor", "stale"), ("stuck", "sensor", "stuck"), ("range", "sensor", "range")]
    assert info[-1].kind == "anomaly"
    index.add("pegel-neu")  # a sensor the engine has not seen
    _, res = _feed(engine, "water_level", [0], [340], sensor=1)
    flood = [i.name for i in info].index("neckar-pegel-beispiel")
    assert res.events.rule.tolist() == [flood] and res.events.level.tolist() == [1]


def _held_levels(times, score, threshold: float, keep_ns: int) -> list[int]:
    """Plain reference of the anomaly level: 1 at a score >= threshold, held by later readings before the last
    such reading's time + keep_ns."""
    level, until, out = 0, 0, []
    for t, s in zip(times.tolist(), score.tolist(), strict=True):
        if s >= threshold:
            level, until = 1, max(until, t + keep_ns)
        else:
            level = 1 if level == 1 and t < until else 0
        out.append(level)
    return out


def _anomalous_series(n: int = 1500):
    rng = np.random.default_rng(3)
    values = 20 + rng.normal(0, 1, n)
    values[900:903] += 40  # a short burst: several detections close together
    values[-20:] += 60
    return (np.zeros(n, np.int32), np.full(n, quantity_code("no2"), np.uint8), np.arange(n) * 2 * MIN, values)


@pytest.mark.parametrize("keep", ["0s", "10m", "1h"])
def test_anomaly_events_follow_the_detector_scores_held_by_keep_firing_for(keep):
    """The engine's anomaly transitions are the detector's threshold crossings, each level held keep_firing_for
    after the last detection (one episode per burst, not one per reading)."""
    from detection.anomaly import AnomalyDetector
    from stadtwacht.durations import parse_duration

    config = DetectionConfig(anomaly=AnomalyConfig(keep_firing_for=keep))
    engine, _ = _engine([], config)
    sensor, qty, times, values = _anomalous_series()
    res = engine.process(ReadingBatch.from_columns(sensor, qty, times, values))
    an = res.events.take(res.events.kind == KINDS.index("anomaly"))
    score = AnomalyDetector(config.anomaly).update(sensor, qty, times, values)
    level = np.array(_held_levels(times, score, config.anomaly.threshold, parse_duration(keep)))
    crossings = np.flatnonzero(np.diff(np.concatenate([[0], level])) != 0)
    assert an.time.tolist() == times[crossings].tolist()
    assert an.level.tolist() == level[crossings].tolist()
    assert an.value.tolist() == score[crossings].tolist()
    assert level[-20:].any() and level[900:910].any()  # both bursts are found
    detections = int((score >= config.anomaly.threshold).sum())
    assert int(an.level.sum()) < detections if keep != "0s" else int(an.level.sum()) >= 2
    assert engine.state_nbytes() > 0


def test_a_held_anomaly_ends_on_the_tick_that_reaches_its_time():
    """No reading after a detection: the level stays until keep_firing_for has passed on the event-time clock,
    then one all-clear at that tick; with "0s" it waits for the next reading as before."""
    from detection.anomaly import AnomalyDetector

    def anomaly(events):
        return events.take(events.kind == KINDS.index("anomaly"))

    for keep, clears in (("1h", True), ("0s", False)):
        config = DetectionConfig(anomaly=AnomalyConfig(keep_firing_for=keep))
        engine, _ = _engine([], config)
        sensor, qty, times, values = _anomalous_series()
        score = AnomalyDetector(config.anomaly).update(sensor, qty, times, values)
        end = int(np.flatnonzero(score >= config.anomaly.threshold)[-1]) + 1  # the series ends on a detection
        sensor, qty, times, values = sensor[:end], qty[:end], times[:end], values[:end]
        last = int(times[-1])
        res = engine.process(ReadingBatch.from_columns(sensor, qty, times, values))
        assert anomaly(res.events).level.tolist()[-1] == 1
        assert len(anomaly(engine.tick(last + 59 * MIN))) == 0
        out = anomaly(engine.tick(last + 61 * MIN))
        if clears:
            assert (out.level.tolist(), out.prev_level.tolist()) == ([0], [1])
            assert out.time.tolist() == [last + 61 * MIN] and out.threshold.tolist() == [0.47]
        else:
            assert len(out) == 0
        assert len(anomaly(engine.tick(last + 4 * HOUR))) == 0


# ---------------------------------------------------------------- value refreshes of firing rules
_MINUTES = list(range(0, 40, 2))
_LEVELS_RISING = [390.0, 420.0, 450.0, 480.0, 510.0, 520.0, 530.0, 540.0, 550.0, 545.0, 560.0, 470.0, 480.0, 490.0,
                  495.0, 300.0, 310.0, 320.0, 600.0, 610.0]


def _refreshes_reference(minutes, values, levels, refresh_min):
    """Plain reference for a "last" rule without hysteresis: per reading, the level; while it fires and no
    transition or refresh reported the value for ``refresh_min`` minutes or more, a refresh (minute, level,
    value)."""
    out, sent, prev = [], None, 0
    for m, v in zip(minutes, values, strict=True):
        lv = sum(v >= b for b in levels)
        if lv != prev:
            sent = m
        elif lv > 0 and m - sent >= refresh_min:
            out.append((m, lv, v))
            sent = m
        prev = lv
    return out


def test_a_firing_rule_reports_its_current_value_every_value_refresh():
    """A gauge at its top level keeps rising: no transition, but its value is reported every 5 min of event time
    (rows with level == prev, the aggregate and the level's threshold), as a plain per-reading reference does."""
    rule = _rule(quantity="water_level", levels=[400.0, 500.0], window="0s", aggregate="last")
    cfg = DetectionConfig(anomaly=AnomalyConfig(enabled=False), value_refresh="5m")
    engine, _ = _engine([rule], cfg)
    got = []
    for m, v in zip(_MINUTES, _LEVELS_RISING, strict=True):
        _, res = _feed(engine, "water_level", [m], [v])
        r = res.values
        assert (r.level == r.prev_level).all() and (r.rule == 0).all()
        assert list(r.threshold) == [[400.0, 500.0][lv - 1] for lv in r.level]
        got += [(int(t // MIN), int(lv), float(x)) for t, lv, x in zip(r.time, r.level, r.value, strict=True)]
    assert got == _refreshes_reference(_MINUTES, _LEVELS_RISING, [400.0, 500.0], 5)
    assert got == [(14, 2, 540.0), (20, 2, 560.0), (28, 1, 495.0)]


@pytest.mark.parametrize(("upto", "want"), [(15, [(28, 1, 495.0)]), (len(_MINUTES), [])])
def test_a_batch_passes_on_only_the_last_value_refresh_of_a_rule_not_one_a_transition_superseded(upto, want):
    """Hours of readings in one batch (a catch-up, an hourly sensor): only the newest refresh of a (sensor, rule)
    goes on, and none when a later transition of it (which carries the value) ends the batch."""
    rule = _rule(quantity="water_level", levels=[400.0, 500.0], window="0s", aggregate="last")
    engine, _ = _engine([rule], DetectionConfig(anomaly=AnomalyConfig(enabled=False), value_refresh="5m"))
    _, res = _feed(engine, "water_level", _MINUTES[:upto], _LEVELS_RISING[:upto])
    r = res.values
    assert [(int(t // MIN), int(lv), float(x)) for t, lv, x in zip(r.time, r.level, r.value, strict=True)] == want


def test_value_refreshes_can_be_turned_off_and_end_with_a_reset():
    rule = _rule(quantity="water_level", levels=[400.0], window="0s", aggregate="last")
    off, _ = _engine([rule], DetectionConfig(anomaly=AnomalyConfig(enabled=False), value_refresh="0s"))
    _, res = _feed(off, "water_level", [0, 10, 20], [450.0, 460.0, 470.0])
    assert len(res.values) == 0
    on, _ = _engine([rule], DetectionConfig(anomaly=AnomalyConfig(enabled=False), value_refresh="5m"))
    _feed(on, "water_level", [0], [450.0])
    on.reset(np.array([True]))  # its partition was revoked: state gone, level 0 again, nothing to refresh
    got, res = _feed(on, "water_level", [10], [460.0])
    assert got == [(10, 1)] and len(res.values) == 0  # a transition again, which reports the value itself
