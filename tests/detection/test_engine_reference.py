"""Property tests: the vectorised engine and the per-reading reference agree on random streams."""

from __future__ import annotations

import msgspec
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detection.anomaly_config import AnomalyConfig
from detection.config import DetectionConfig, HealthConfig, RuleConfig
from detection.engine import DetectionEngine
from detection.rules import T
from ingest.batch import ReadingBatch
from ingest.quantities import quantity_code
from ingest.sensor_index import SensorIndex
from tests.detection.reference import ReferenceDetector

MIN = 60_000_000_000
NAMES = ["pegel-a", "pegel-b", "luft-c", "luft-d"]
WL, PM = quantity_code("water_level"), quantity_code("pm10")

RULES = [
    RuleConfig(name="stage", quantity="water_level", sensors=["pegel-*"], window="0s", aggregate="last",
               levels=[10, 20, 30], clear=[10, 15, 30], for_=["0s", "5m", "0s"], level_names=["a", "b", "c"]),
    RuleConfig(name="pm-mean", quantity="pm10", window="30m", aggregate="mean", levels=[10, 20],
               keep_firing_for="7m", level_names=["a", "b"]),
    RuleConfig(name="pm-max", quantity="pm10", window="20m", aggregate="max", levels=[25], for_="3m",
               level_names=["a"]),
    RuleConfig(name="wl-min", quantity="water_level", window="15m", aggregate="min", levels=[5, 20],
               clear=[4, 16], level_names=["a", "b"]),
    RuleConfig(name="wl-last", quantity="water_level", sensors=["pegel-a", "luft-c"], window="10m",
               aggregate="last", levels=[20], keep_firing_for="4m", level_names=["a"]),
]
CONFIG = DetectionConfig(
    late_tolerance="10m",
    health=HealthConfig(stale_factor=3.0, stale_min="20m", stuck_for="30m", stuck_min_readings=4,
                        stuck_abs_tolerance=0.5, stuck_rel_tolerance={"pm10": 0.1}),
    anomaly=AnomalyConfig(enabled=False),
)
#: anomaly scoring with a short warm-up and season, so that the streams' jumps are detected
ANOMALY = AnomalyConfig(warm_up=3, baseline_half_life=20.0, level_half_life=2.0, surprise_half_life=50.0,
                        seasonal_period="1h", seasonal_bins=4, seasonal_half_life=2.0, hold_off=2)
VALUES = [0, 4, 5, 9, 10, 11, 14, 15, 16, 19, 20, 21, 24, 25, 26, 29, 30, 31, -1, 1999.9, 2500, 9000]

CALM = [19, 20, 21, 21, 20, 2500]  # near-identical values: exercises stuck
#: mostly calm with rare new extremes: the anomaly levels rise, hold and run out (out-of-range rows unscored)
SPIKY = [19.5, 20, 20.5, 21, 19.5, 20, 20.5, 21, 19.5, 20, 20.5, 21, 40, 80, 160, 320, 640, 1280, 2500, -1]


def _steps(values: list[float]):
    row = st.tuples(st.integers(0, 3), st.sampled_from([WL, PM]), st.integers(-30, 10), st.sampled_from(values))
    step = st.one_of(
        st.tuples(st.just("batch"), st.integers(0, 16), st.lists(row, min_size=0, max_size=12)),
        st.tuples(st.just("tick"), st.integers(0, 80), st.just([])),
    )
    return st.lists(step, min_size=1, max_size=25)


def _engine_events(eng: DetectionEngine, events) -> list[tuple]:
    out = [(int(events.time[i]), int(events.sensor[i]), int(events.rule[i]), int(events.level[i]),
            int(events.prev_level[i])) for i in range(len(events))]
    out.sort(key=lambda e: (e[0], e[1], e[2]))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_steps(VALUES))
def test_engine_agrees_with_reference(steps):
    """Values at, just below and above every level and clear level; late rows, gaps, ticks, saturation."""
    _run(steps)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_steps(CALM))
def test_engine_agrees_with_reference_on_calm_streams(steps):
    """Near-identical values, so sensors turn stuck and recover."""
    _run(steps)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_steps(VALUES))
def test_engine_agrees_with_reference_with_many_sensors_and_tiny_buffers(steps):
    """Thousands of idle sensors (few rows for many sensors: the comparison-sort path) and one-row event
    buffers (every batch and tick resumes after growing them)."""
    _run(steps, idle_sensors=5000, event_rows=1)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_steps(SPIKY), st.sampled_from(["0s", "5m"]))
def test_engine_agrees_with_reference_with_anomaly_levels(steps, keep):
    """Anomaly levels of in-range readings (also of faulty sensors), held for keep_firing_for and run out by a
    reading or a tick, beside the rules and health."""
    anomaly = msgspec.structs.replace(ANOMALY, keep_firing_for=keep)
    _run(steps, config=msgspec.structs.replace(CONFIG, anomaly=anomaly))


def _run(steps, idle_sensors: int = 0, event_rows: int = 256, config: DetectionConfig = CONFIG) -> None:
    index = SensorIndex()
    for name in NAMES:
        index.add(name)
    for k in range(idle_sensors):
        index.add(f"idle-{k}")
    eng = DetectionEngine(RULES, config, index, event_rows=event_rows)
    ref = ReferenceDetector(RULES, config, index.names)
    clock = 100 * MIN
    for kind, advance, rows in steps:
        clock += advance * 30_000_000_000  # half minutes
        if kind == "tick":
            got = _engine_events(eng, eng.tick(clock))
            assert got == ref.tick(clock)
            continue
        tuples = [(s, q, clock + off * 30_000_000_000, float(v)) for s, q, off, v in rows]
        batch = ReadingBatch.from_columns([r[0] for r in tuples], [r[1] for r in tuples],
                                          [r[2] for r in tuples], [r[3] for r in tuples])
        res = eng.process(batch)
        late, want = ref.process(tuples)
        assert res.late.tolist() == late
        assert _engine_events(eng, res.events) == want


def test_many_sensors_grow_rule_state_mid_batch():
    """Thousands of sensors appearing over a few batches: rule regions grow (and move) between rows of a batch,
    every sensor's state survives the moves, and a slot taken after a move starts from the empty record (free
    slots are zero until taken); out-of-order rows within the tolerance are merged."""
    rng = np.random.default_rng(11)
    n_sensors, per = 3_300, 5
    names = [("pegel-" if k % 3 else "luft-") + str(k) for k in range(n_sensors)]
    index = SensorIndex()
    for name in names:
        index.add(name)
    eng = DetectionEngine(RULES, CONFIG, index)
    rebuilds = []
    rebuild = eng._rebuild_arena
    eng._rebuild_arena = lambda caps: (rebuilds.append(int(eng.table[:, T.SLOTS].sum())), rebuild(caps))
    ref = ReferenceDetector(RULES, CONFIG, index.names)
    rows = []
    for step in range(per):
        for s in rng.permutation(n_sensors):
            q = WL if s % 3 else PM
            t = 100 * MIN + step * 2 * MIN + int(rng.integers(-3, 3)) * 30_000_000_000
            rows.append((int(s), q, t, float(rng.choice(VALUES))))
    for lo in range(0, len(rows), 700):
        part = rows[lo: lo + 700]
        batch = ReadingBatch.from_columns(*(list(c) for c in zip(*part, strict=True)))
        res = eng.process(batch)
        late, want = ref.process(part)
        assert res.late.tolist() == late
        assert _engine_events(eng, res.events) == want
        clock = max(r[2] for r in part) + 5 * MIN
        assert _engine_events(eng, eng.tick(clock)) == ref.tick(clock)
    assert {r.name: r.n_slots for r in eng.rules}["pm-mean"] == n_sensors // 3
    assert max(rebuilds) > 1024  # a region moved while it held records


def test_reset_forgets_sensor_state():
    """After reset a sensor is new again: no lateness against its old clock, levels start at 0."""
    index = SensorIndex()
    for name in NAMES:
        index.add(name)
    eng = DetectionEngine(RULES, CONFIG, index)
    eng.process(ReadingBatch.from_columns([0], [WL], [100 * MIN], [31.0]))
    mask = np.zeros(len(index), bool)
    mask[0] = True
    eng.reset(mask)
    res = eng.process(ReadingBatch.from_columns([0], [WL], [50 * MIN], [31.0]))
    assert not res.late.any()
    stage = [(int(e), int(p)) for e, p, r in zip(res.events.level, res.events.prev_level, res.events.rule,
                                                 strict=True) if r == 0]
    assert stage == [(3, 0)]  # rises from 0 again, as for a fresh sensor
