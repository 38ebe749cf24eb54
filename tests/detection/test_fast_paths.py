"""Guards of the detection kernels' shortcuts: each must give exactly what the plain computation gives.

The anomaly kernel skips the likelihood maths while a series warms up (its score is 0 then) and uses a
table of seasonal learning rates; the rule matcher
skips regular expressions for ids and "prefix*" globs; the time-driven check skips its scan of all
sensors while none can be stale yet; a batch of many new sensors sizes the rule arena once. Here a
straightforward per-reading transcription of the detector (every step computed, nothing skipped) is
compared bit for bit with the kernel across the warm-up boundary, the matcher with the regular
expression, and a skipping engine with one forced to scan.
"""

from __future__ import annotations

import fnmatch
import math
import re

import numpy as np
import pytest

from detection.anomaly import AnomalyDetector
from detection.anomaly_config import AnomalyConfig
from detection.config import DetectionConfig, HealthConfig, RuleConfig, load_default_rules
from detection.engine import DetectionEngine
from detection.events import kind_code
from detection.rules import CompiledRule, T
from ingest.batch import ReadingBatch
from ingest.sensor_index import SensorIndex
from stadtwacht.durations import parse_duration

MIN = 60_000_000_000
_SIGMA_PER_MAD = math.sqrt(math.pi / 2.0)
_BS_A, _BS_B = 0.339, 5.510
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _nmax(a: float, b: float) -> float:
    return math.nan if a != a or b != b else (a if a >= b else b)


def _nmin(a: float, b: float) -> float:
    return math.nan if a != a or b != b else (a if a <= b else b)


def _tails(zs: list[float]) -> float:
    """Summed -log10 normal tails (Borjesson-Sundberg) of the z-scores, with one logarithm of the product."""
    quad, prod = 0.0, 1.0
    for z in zs:
        z = _nmax(z, 0.0)
        quad += 0.5 * z * z + _LOG_SQRT_2PI
        prod *= (1.0 - _BS_A) * z + _BS_A * math.sqrt(z * z + _BS_B)
    return (quad + math.log(prod)) / math.log(10.0)


def plain_scores(cfg: AnomalyConfig, time: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Scores of one series, every quantity computed for every reading (no shortcut of any kind)."""
    alpha = [1.0 - 0.5 ** (1.0 / h) for h in (cfg.baseline_half_life, cfg.level_half_life, cfg.surprise_half_life,
                                               cfg.recent_half_life, cfg.repeat_penalty_half_life)]
    a_base, a_fast, a_surp, a_recent, a_bar = alpha
    fast_sd = math.sqrt(a_fast / (2.0 - a_fast))
    learn_from = float(max(cfg.warm_up // 2, 1))
    period, bins = parse_duration(cfg.seasonal_period), cfg.seasonal_bins
    cnt = mu_s = dev = prev_s = ddev = fast_s = sdev = vmin_s = vmax_s = hold_s = t0_s = bar_s = 0.0
    rm, rv, ra_s = [0.0] * 3, [0.0] * 3, [0.0] * 3
    season, visits_of = [0.0] * max(bins, 1), [0.0] * max(bins, 1)
    out = []
    for t, x in zip(time.tolist(), value.tolist(), strict=True):
        b = (t % period) * bins // period if bins > 0 else 0
        first = cnt == 0
        mu, prev = (x, x) if first else (mu_s, prev_s)
        vmin, vmax = (x, x) if first else (vmin_s, vmax_s)
        span = vmax - vmin
        floor = 1e-3 * span + 1e-9 * abs(mu) + 1e-12
        scale = _nmax(dev * _SIGMA_PER_MAD, floor)
        dscale = _nmax(ddev * _SIGMA_PER_MAD, floor)
        dev_plain = x - mu
        resid, rscale = dev_plain, scale
        t0, per_visit, visits, seasoned, off, sscale = 0.0, 1.0, 0.0, False, 0.0, 0.0
        if bins > 0:
            t0 = float(t) if first else t0_s
            cycles = (t - t0) / period
            per_visit = _nmax(cnt / _nmax(cycles * bins, 1.0), 1.0)
            visits = visits_of[b]
            seasoned = cycles >= 3.0 and visits / per_visit >= 2.0
            off = season[b]
            sscale = _nmax(sdev * _SIGMA_PER_MAD, floor)
            if seasoned and sdev < dev:
                resid, rscale = dev_plain - off, sscale
        step = x - prev
        fast = fast_s + a_fast * (resid - fast_s)
        zs = (abs(resid) / rscale, abs(step) / dscale, abs(fast) / (rscale * fast_sd))
        raw = [0.0 if first else math.log(1.0 + _nmin(z, 1e3)) for z in zs]
        ra, zk = [0.0] * 3, [0.0] * 3
        for k in range(3):
            ra[k] = ra_s[k] + a_recent * (raw[k] - ra_s[k])
            spread = math.sqrt(rv[k] + cfg.surprise_floor ** 2)
            zk[k] = (ra[k] - rm[k]) / spread
            if k == 0 and cfg.instant_spike_weight > 0:
                zk[k] = _nmax(zk[k], cfg.instant_spike_weight * (raw[k] - rm[k]) / spread)
        l_sum = _tails(zk)
        surprise = _nmax(l_sum - 3 * math.log10(2.0) - bar_s, 0.0)
        score = surprise / (surprise + 5.0)
        hold = hold_s
        if hold > 0:
            score = cfg.hold_damping * score
        if cfg.range_tolerance > 0 and span > 0:
            tol = (cfg.hold_range_tolerance if hold > 0 else cfg.range_tolerance) * span
            if x > vmax + tol or x < vmin - tol:
                score = 1.0
        if not cnt >= cfg.warm_up:
            score = 0.0
        detected = score >= cfg.threshold
        if cfg.hold_off > 0:
            hold = float(cfg.hold_off) if detected else _nmax(hold - 1.0, 0.0)
        if cnt >= cfg.warm_up:
            bar_s = (1.0 - a_bar) * bar_s + (cfg.repeat_penalty if detected else 0.0)
        out.append(score)
        a = 1.0 if first else _nmax(a_base, 1.0 / (cnt + 1.0))
        limit = math.inf if cnt < 30.0 else 4.0 * scale
        clipped = _nmin(_nmax(dev_plain, -limit), limit)
        dlimit = math.inf if cnt < 30.0 else 4.0 * dscale
        dev_old, sdev_old = dev, sdev
        mu_s = mu + a * clipped
        dev = dev_old + a * (abs(clipped) - dev_old)
        prev_s = x
        ddev = 0.0 if first else ddev + a * (_nmin(abs(step), dlimit) - ddev)
        fast_s = 0.0 if first else fast
        vmin_s, vmax_s, hold_s = _nmin(vmin, x), _nmax(vmax, x), hold
        n_s = cnt - learn_from
        a_s = 0.0 if n_s < 0 else _nmax(a_surp, 1.0 / _nmax(n_s + 1.0, 1.0))
        for k in range(3):
            d = raw[k] - rm[k]
            rm[k] = rm[k] + a_s * d
            rv[k] = (1.0 - a_s) * (rv[k] + a_s * d * d)
            ra_s[k] = raw[k] if first else ra[k]
        cnt += 1.0
        if bins > 0:
            slimit = math.inf if cnt - 1.0 < 30.0 else 4.0 * sscale
            sclip = _nmin(_nmax(dev_plain - off, -slimit), slimit)
            a_b = _nmax(1.0 - 0.5 ** (1.0 / (cfg.seasonal_half_life * per_visit)), 1.0 / (visits + 1.0))
            season[b] = off + a_b * _nmin(_nmax(dev_plain - off, -limit), limit)
            visits_of[b] = visits + 1.0
            t0_s = t0
            sdev = sdev_old + a * (abs(sclip) - sdev_old) if seasoned else dev
    return np.array(out)


def _series(n: int, seed: int, step_min: int) -> tuple[np.ndarray, np.ndarray]:
    """A daily wave with noise, a spike, a level step and a flat stretch (every detector gets surprised)."""
    rng = np.random.default_rng(seed)
    time = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * step_min * MIN
    day = (time % (1440 * MIN)) / (1440 * MIN)
    value = 50.0 + 10.0 * np.sin(2 * np.pi * day) + rng.standard_normal(n)
    value[n // 3] += 60.0
    value[n // 2:] += 15.0
    value[2 * n // 3: 2 * n // 3 + 20] = value[2 * n // 3]
    return time, value


CONFIGS = {
    "default": AnomalyConfig(),
    "short warm-up": AnomalyConfig(warm_up=7, hold_off=5, seasonal_period="2h", seasonal_bins=6),
    "odd warm-up, damping": AnomalyConfig(warm_up=41, hold_damping=0.5, instant_spike_weight=0.0),
    "no warm-up, no seasons": AnomalyConfig(warm_up=0, seasonal_bins=0, range_tolerance=0.0),
    "one reading of warm-up": AnomalyConfig(warm_up=1, repeat_penalty=0.0),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_kernel_scores_equal_the_plain_computation_across_the_warm_up(name):
    cfg = CONFIGS[name]
    series = [_series(900, seed=1, step_min=5), _series(700, seed=2, step_min=1), _series(500, seed=3, step_min=61)]
    expected = [plain_scores(cfg, t, v) for t, v in series]
    det = AnomalyDetector(cfg, capacity=1)
    sensor = np.repeat(np.arange(len(series), dtype=np.int32), [t.size for t, _ in series])
    time = np.concatenate([t for t, _ in series])
    value = np.concatenate([v for _, v in series])
    order = np.lexsort((sensor, time))  # interleaved in time, as a poll delivers them
    got = np.empty(time.size)
    for part in np.array_split(order, 7):  # several batches, so state carries over between kernel calls
        got[part] = det.update(sensor[part], np.zeros(part.size, np.uint8), time[part], value[part])
    for k, want in enumerate(expected):
        np.testing.assert_array_equal(got[sensor == k], want)
    warmed = np.concatenate([w[cfg.warm_up:] for w in expected])
    assert (warmed > 0).any() and (warmed >= cfg.threshold).any(), "the series must exercise the scoring maths"
    assert all((w[: cfg.warm_up] == 0).all() for w in expected)


SELECTIONS = [["pegel-*"], ["*"], ["a"], ["a", "pegel-*"], ["x*", "y*", "z1"], [""], ["p.e*"], ["a?b"], ["[ab]*"],
              ["pe\nl*"], ["pegel-*", "a?b"]]
NAMES = ["pegel-1", "pegel-", "pegel", "a", "ab", "aab", "axb", "", "x", "xy", "y\n", "z1", "z12", "p.e", "pXe",
         "pe\nl", "pe\nlx", "Pegel-1", "a\n", "ba"]


@pytest.mark.parametrize("sensors", SELECTIONS, ids=str)
def test_rule_selection_matches_what_the_glob_expression_matches(sensors):
    rule = RuleConfig(name="r", quantity="water_level", levels=[1.0], sensors=sensors)
    compiled = CompiledRule(rule, np.zeros(len(T), np.int64))
    pattern = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in sensors))
    expected = np.array([pattern.match(s) is not None for s in NAMES])
    np.testing.assert_array_equal(compiled.matches(NAMES), expected)


def test_rules_sharing_a_selection_each_match_its_sensors():
    index = SensorIndex(8)
    for name in ["pegel-1", "luft-1", "pegel-2", "x"]:
        index.add(name)
    rules = [RuleConfig(name=f"r{k}", quantity="water_level", levels=[1.0], sensors=s)
             for k, s in enumerate([["pegel-*"], ["*"], ["pegel-*"], ["x", "pegel-2"]])]
    engine = DetectionEngine(rules, DetectionConfig(), index)
    engine._sync()
    matched = engine.slot_of[:4] != -2
    np.testing.assert_array_equal(matched.T, [[1, 0, 1, 0], [1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 1, 1]])


def _stale_stream(seed: int, n: int = 400):
    """Batches of readings from sensors with their own intervals, some falling silent for a while."""
    rng = np.random.default_rng(seed)
    t0 = 1_700_000_000_000_000_000
    q_of = np.arange(n) % 7
    interval = rng.integers(1, 30, n) * MIN
    silent_from = t0 + rng.integers(0, 400, n) * MIN
    silent_to = silent_from + rng.integers(0, 200, n) * MIN
    t = t0
    for _ in range(160):
        rows = [(s, q_of[s], t + int(rng.integers(0, 3 * MIN)), float(abs(rng.normal(100, 80))))
                for s in rng.choice(n, n // 2, replace=False).tolist() if rng.random() < 3 * MIN / interval[s]]
        rows = [r for r in rows if not silent_from[r[0]] <= r[2] < silent_to[r[0]]]
        cols = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
        batch = ReadingBatch.from_columns(np.array(cols[0], np.int32), np.array(cols[1], np.uint8),
                                          np.array(cols[2], np.int64), np.array(cols[3], np.float64))
        ticks = [t + 3 * MIN + int(k) * MIN for k in rng.integers(-5, 40, int(rng.integers(0, 3)))]
        yield batch.sorted_by_time(), ticks, rng.random(n) < 0.05 if rng.random() < 0.03 else None
        t += 3 * MIN


@pytest.mark.parametrize("stale_min, event_rows", [("15m", 256), ("2m", 2)])
def test_skipping_the_stale_scan_never_hides_a_sensor_turning_stale(stale_min, event_rows):
    """An engine that skips the scan of all sensors until one can be stale, against one that always scans."""
    config = DetectionConfig(health=HealthConfig(stale_min=stale_min, stale_factor=2.0))
    engines = []
    for _ in range(2):
        index = SensorIndex(400)
        for k in range(400):
            index.add(("pegel-" if k % 7 == 0 else "s-") + str(k))
        engines.append(DetectionEngine(load_default_rules(), config, index, event_rows=event_rows))
    skipping, scanning = engines
    n_stale = 0
    for batch, ticks, reset in _stale_stream(seed=len(stale_min)):
        got, want = (engine.process(batch).events for engine in engines)
        assert _rows(got) == _rows(want)
        for now in ticks:
            scanning.health.stale_due[0] = np.iinfo(np.int64).min  # forces the full scan
            want = scanning.tick(now)
            got = skipping.tick(now)
            assert _rows(got) == _rows(want)
            n_stale += int((want.kind == kind_code("stale")).sum())
        if reset is not None:
            for engine in engines:
                engine.reset(reset)
    assert n_stale > 50, "the stream must make sensors stale"


def _rows(events) -> list[tuple]:
    """The events as tuples, floats as their bits (so that NaN equals NaN)."""
    cols = [getattr(events, c).tolist() for c in ("sensor", "quantity", "rule", "kind", "level", "prev_level", "time")]
    cols += [getattr(events, c).view(np.int64).tolist() for c in ("value", "threshold")]
    return list(zip(*cols, strict=True))


def test_a_batch_of_many_new_sensors_rebuilds_the_rule_arena_once():
    n = 20_000
    index = SensorIndex(n)
    for k in range(n):
        index.add(f"s-{k}")
    engine = DetectionEngine(load_default_rules(), DetectionConfig(), index)
    rebuilds = []
    rebuild = engine._rebuild_arena
    engine._rebuild_arena = lambda caps: (rebuilds.append(caps.copy()), rebuild(caps))
    sensor = np.arange(n, dtype=np.int32)
    batch = ReadingBatch.from_columns(sensor, (sensor % 7).astype(np.uint8),
                                      np.full(n, 1_700_000_000_000_000_000, np.int64), np.full(n, 10.0))
    engine.process(batch)
    assert len(rebuilds) == 1
    assert all(r.n_slots <= r.row[T.CAPACITY] for r in engine.rules)
