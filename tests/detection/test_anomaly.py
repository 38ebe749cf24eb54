"""The online anomaly detector: batching exactness, score range, spikes, reset, configuration."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detection.anomaly import AnomalyDetector, rounds
from detection.anomaly_config import AnomalyConfig, validate
from detection.anomaly_score import score_csv, score_series
from tests.detection.anomaly_reference import ReferenceAnomaly

MIN = 60_000_000_000
SMALL = AnomalyConfig(warm_up=5, baseline_half_life=20.0, level_half_life=2.0, surprise_half_life=50.0,
                      seasonal_period="1h", seasonal_bins=4, seasonal_half_life=2.0, hold_off=3)


def reference_scores(config: AnomalyConfig, sensor, quantity, time, value) -> np.ndarray:
    """Per-reading reference: every reading is its own batch, in row order."""
    det = AnomalyDetector(config)
    return np.array([det.update(sensor[i:i + 1], quantity[i:i + 1], time[i:i + 1], value[i:i + 1])[0]
                     for i in range(sensor.size)])


readings = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 6),
              st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)),
    min_size=1, max_size=80)


@settings(max_examples=60, deadline=None)
@given(rows=readings, cut=st.integers(0, 80))
def test_batched_update_agrees_with_per_reading_reference(rows, cut):
    sensor = np.array([r[0] for r in rows], dtype=np.int32)
    quantity = np.array([r[1] for r in rows], dtype=np.uint8)
    value = np.array([r[2] for r in rows])
    time = np.arange(len(rows), dtype=np.int64) * 7 * MIN
    expected = reference_scores(SMALL, sensor, quantity, time, value)
    det = AnomalyDetector(SMALL, capacity=1)  # also exercises growth
    cut = min(cut, len(rows))
    got = np.r_[det.update(sensor[:cut], quantity[:cut], time[:cut], value[:cut]),
                det.update(sensor[cut:], quantity[cut:], time[cut:], value[cut:])]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.all((got >= 0.0) & (got <= 1.0))


def plain_scores(config: AnomalyConfig, sensor, quantity, time, value) -> np.ndarray:
    ref = ReferenceAnomaly(config)
    return np.array([ref.score(int(s), int(q), int(t), float(v))
                     for s, q, t, v in zip(sensor, quantity, time, value, strict=True)])


def _plain_stream(seed: int, n: int, n_series: int, noise: float) -> tuple[np.ndarray, ...]:
    """Several series interleaved under SMALL's 1 h season (4 bins), with gaps, spikes, level steps and
    constant stretches, in time order."""
    rng = np.random.default_rng(seed)
    key = rng.integers(0, n_series, n)
    time = np.cumsum(rng.choice([0, 1, 5, 7, 15, 45], n)).astype(np.int64) * MIN
    season = np.array([0.0, 30.0, 10.0, 60.0])[(time % (60 * MIN)) // (15 * MIN)]
    value = season * (key % 2) + 10.0 * key + noise * rng.standard_normal(n)
    value += np.where(rng.random(n) < 0.03, rng.choice([-1.0, 1.0], n) * rng.uniform(5, 500, n), 0.0)
    value += np.cumsum(np.where(rng.random(n) < 0.01, rng.normal(0.0, 40.0, n), 0.0))
    calm = np.flatnonzero(rng.random(n) < 0.01)
    for c in calm:
        value[c: c + int(rng.integers(5, 60))] = value[c]
    return (key // 2).astype(np.int32), (key % 2).astype(np.uint8), time, np.round(value, int(rng.integers(0, 3)))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 1500), n_series=st.integers(1, 4),
       noise=st.sampled_from([0.0, 0.5, 3.0]), cut=st.floats(0.0, 1.0), seasonal_bins=st.sampled_from([0, 4]),
       hold_off=st.sampled_from([0, 3]))
def test_scores_agree_with_the_plain_python_reference(seed, n, n_series, noise, cut, seasonal_bins, hold_off):
    """Random streams past warm-up and seasoning, with detections, hold-offs and repeat penalties: the
    compiled detector, in two batches, scores each reading as the plain per-reading reference does."""
    cfg = msgspec.structs.replace(SMALL, seasonal_bins=seasonal_bins, hold_off=hold_off, hold_damping=0.5)
    sensor, quantity, time, value = _plain_stream(seed, n, n_series, noise)
    det = AnomalyDetector(cfg, capacity=1)
    k = int(cut * n)
    got = np.r_[det.update(sensor[:k], quantity[:k], time[:k], value[:k]),
                det.update(sensor[k:], quantity[k:], time[k:], value[k:])]
    np.testing.assert_allclose(got, plain_scores(cfg, sensor, quantity, time, value), rtol=1e-9, atol=1e-12)


def test_default_scores_agree_with_the_plain_python_reference_on_long_series():
    """The shipped configuration on three series of a week of 10-min readings with a daily cycle, spikes, a
    level shift and a stuck stretch: every score as the plain reference's, detections among them."""
    n = 7 * 144
    t = np.arange(n, dtype=np.int64) * 10 * MIN
    day = np.sin(2 * np.pi * (t % (1440 * MIN)) / (1440 * MIN))
    cols = []
    for s in range(3):
        v = 50 + 20 * day + np.random.default_rng(s).normal(0.0, 2.0, n)
        v[[500 + s, 700, 800 + 7 * s]] += [40.0, -35.0, 90.0]
        v[850 + s:] += 15.0
        v[600:640] = v[600]
        cols.append((np.full(n, s, np.int32), np.full(n, 2, np.uint8), t, v))
    sensor, quantity, time, value = (np.concatenate(c) for c in zip(*cols, strict=True))
    order = np.argsort(time, kind="stable")
    sensor, quantity, time, value = sensor[order], quantity[order], time[order], value[order]
    got = AnomalyDetector(AnomalyConfig()).update(sensor, quantity, time, value)
    want = plain_scores(AnomalyConfig(), sensor, quantity, time, value)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert (want >= AnomalyConfig().threshold).sum() >= 3


@pytest.mark.parametrize("key", [[], [3], [1, 1, 1], [2, 0, 2, 1, 0, 2], list(range(10))])
def test_rounds_take_one_row_per_key_in_order(key):
    key = np.array(key, dtype=np.int64)
    order, bounds = rounds(key)
    assert sorted(order.tolist()) == list(range(key.size))
    seen: dict[int, int] = {}
    for r in range(bounds.size - 1):
        rows = order[bounds[r]:bounds[r + 1]]
        assert len(set(key[rows].tolist())) == rows.size
        for row in rows.tolist():
            assert seen.get(int(key[row]), -1) < row
            seen[int(key[row])] = row


def _noisy(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.int64) * 5 * MIN
    day = np.sin(2 * np.pi * (t % (1440 * MIN)) / (1440 * MIN))
    return t, 50.0 + 10.0 * day + rng.normal(0.0, 1.0, n)


def test_a_clear_spike_scores_high_and_quiet_data_low():
    t, v = _noisy(3000)
    v[2500] += 40.0
    cfg = AnomalyConfig(range_tolerance=0.0)
    s = score_series(t, v, cfg)
    assert s[2500] >= max(cfg.threshold, 0.5)  # detected on the spike itself
    assert np.quantile(s[1000:2490], 0.99) < 0.3
    assert np.all(s[:300] == 0.0)  # warm-up


def test_a_new_extreme_beyond_the_range_scores_one():
    t, v = _noisy(1000)
    v[900] = 200.0
    assert score_series(t, v, AnomalyConfig(hold_off=0))[900] == 1.0


def test_reset_forgets_only_the_masked_sensors():
    t, v = _noisy(400)
    det = AnomalyDetector(AnomalyConfig(warm_up=50, hold_off=0))
    for sensor in (0, 1):
        det.update(np.full(400, sensor, np.int32), np.zeros(400, np.uint8), t, v)
    det.reset(np.array([True, False]))
    probe = np.array([500.0, 500.0])
    s = det.update(np.array([0, 1], np.int32), np.zeros(2, np.uint8), t[-1:].repeat(2) + MIN, probe)
    assert s[0] == 0.0  # sensor 0 is in warm-up again
    assert s[1] == 1.0
    assert det.nbytes() > 0


def test_state_grows_with_new_sensor_indices():
    det = AnomalyDetector(AnomalyConfig(), capacity=1)
    before = det.nbytes()
    det.update(np.array([1000], np.int32), np.array([6], np.uint8), np.array([0], np.int64), np.array([1.0]))
    assert det.nbytes() > before


def _hourly_pattern(sensor: int, n: int, start_step: int = 0) -> tuple[np.ndarray, ...]:
    """A reading every 5 min of one series whose level follows SMALL's 1 h season (4 bins, all learnt)."""
    step = np.arange(start_step, start_step + n)
    t = step * 5 * MIN
    level = np.array([10.0, 40.0, 20.0, 70.0])[(t % (60 * MIN)) // (15 * MIN)]
    v = level + np.random.default_rng(sensor + start_step).normal(0.0, 1.0, n)
    return np.full(n, sensor, np.int32), np.zeros(n, np.uint8), t.astype(np.int64), v


def _newcomers(count: int, at: int) -> tuple[np.ndarray, ...]:
    return (np.arange(1, count + 1, dtype=np.int32), np.zeros(count, np.uint8), np.full(count, at, np.int64),
            np.ones(count))


def test_learnt_state_survives_growth_and_reset_forgets_it():
    """A series' learnt baseline and seasonal bins move with the state arrays when new series make them grow,
    and a reset forgets them: the scores are those of a detector that never grew / a new detector."""
    grows, roomy = AnomalyDetector(SMALL, capacity=1), AnomalyDetector(SMALL, capacity=4096)
    first = _hourly_pattern(0, 300)
    later = _hourly_pattern(0, 200, start_step=300)
    later[3][[50, 120]] = 70.0  # the level of another bin: out of season
    for det in (grows, roomy):
        det.update(*first)
        det.update(*_newcomers(500, int(first[2][-1])))
    assert grows._state.shape[0] < roomy._state.shape[0]  # it grew (copying), the other did not
    g, r = grows._slot_of[0], roomy._slot_of[0]  # series (sensor 0, quantity 0)
    assert np.array_equal(grows._state[g], roomy._state[r])
    assert np.array_equal(grows._seasonal[:, g], roomy._seasonal[:, r])
    assert np.all(grows._seasonal[:, g, 1] > 0)  # every bin learnt
    scores = grows.update(*later)
    assert np.array_equal(scores, roomy.update(*later))
    assert scores.max() > 0

    grows.reset(np.arange(501) == 0)
    assert not grows._state[g].any() and not grows._seasonal[:, g].any()
    after = _hourly_pattern(0, 200, start_step=600)
    assert np.array_equal(grows.update(*after), AnomalyDetector(SMALL).update(*after))


def test_score_csv_writes_scores_next_to_input(tmp_path: Path):
    src = tmp_path / "series.csv"
    t, v = _noisy(500)
    stamps = np.datetime_as_string(t.astype("datetime64[ns]"), unit="s")
    body = "".join(f"{a.replace('T', ' ')},{b}\n" for a, b in zip(stamps, v, strict=True))
    src.write_text("timestamp,value\n" + body)
    out = score_csv(src)
    assert out == tmp_path / "series.scored.csv"
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score"
    assert len(lines) == 501
    assert lines[1].startswith("2000-01-01 00:00:00,") or lines[1].startswith("1970-01-01 00:00:00,")


def test_default_config_is_valid_and_decodes_from_toml_shape():
    assert validate(AnomalyConfig()) == []
    cfg = msgspec.convert({"threshold": 0.7, "seasonal_bins": 0}, AnomalyConfig)
    assert cfg.threshold == 0.7
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"treshold": 0.7}, AnomalyConfig)


@pytest.mark.parametrize(("change", "key"), [
    ({"threshold": 0.0}, "detection.anomaly.threshold"),
    ({"warm_up": 0}, "detection.anomaly.warm_up"),
    ({"baseline_half_life": -1.0}, "detection.anomaly.baseline_half_life"),
    ({"level_half_life": 500.0}, "detection.anomaly.level_half_life"),
    ({"seasonal_period": "soon"}, "detection.anomaly.seasonal_period"),
    ({"seasonal_bins": -1}, "detection.anomaly.seasonal_bins"),
    ({"range_tolerance": -0.1}, "detection.anomaly.range_tolerance"),
    ({"hold_off": -1}, "detection.anomaly.hold_off"),
    ({"surprise_floor": -0.1}, "detection.anomaly.surprise_floor"),
    ({"instant_spike_weight": -1.0}, "detection.anomaly.instant_spike_weight"),
    ({"hold_damping": 1.5}, "detection.anomaly.hold_damping"),
    ({"hold_range_tolerance": -0.1}, "detection.anomaly.hold_range_tolerance"),
    ({"repeat_penalty": -1.0}, "detection.anomaly.repeat_penalty"),
    ({"repeat_penalty_half_life": 0.0}, "detection.anomaly.repeat_penalty_half_life"),
])
def test_validate_names_the_bad_key(change, key):
    cfg = msgspec.structs.replace(AnomalyConfig(), **change)
    assert key in [k for k, _ in validate(cfg)]


@pytest.mark.parametrize(("hold_off", "second", "third"), [(0, 1.0, 1.0), (5, 0.0, 1.0)])
def test_hold_off_silences_small_new_extremes_right_after_a_detection(hold_off, second, third):
    t, v = _noisy(1000)
    span = v[:900].max() - v[:900].min()
    v[900] = v[:900].max() + 0.5 * span  # a new extreme: detected
    v[901] = v[900] + 0.02 * span  # beyond range_tolerance (1 % of the new range), within hold_range_tolerance (3 %)
    v[902] = v[901] + 0.5 * span  # far beyond it: detected even in hold-off
    cfg = msgspec.structs.replace(AnomalyConfig(), hold_off=hold_off, repeat_penalty=0.0)
    s = score_series(t, v, cfg)
    assert s[900] == 1.0
    assert s[901] == second
    assert s[902] == third


def test_repeat_penalty_raises_the_bar_after_each_detection():
    t, v = _noisy(3000, seed=3)
    for row in (2000, 2200, 2400, 2600):  # four equal level steps up and back, each past the hold-off
        v[row:row + 100] += 8.0
    base = msgspec.structs.replace(AnomalyConfig(), range_tolerance=0.0, hold_off=50, instant_spike_weight=0.0)
    plain = score_series(t, v, msgspec.structs.replace(base, repeat_penalty=0.0))
    penalised = score_series(t, v, msgspec.structs.replace(base, repeat_penalty=3.0))
    first = slice(2000, 2100)
    assert penalised[first].max() == pytest.approx(plain[first].max())  # no detection before: no penalty
    assert plain[2000:].max() >= base.threshold
    later = slice(2200, 3000)
    assert penalised[later].max() < plain[later].max()
