"""Plain per-reading Python reference of the anomaly scores, for property tests and the detect benchmark.

One dict per (sensor, quantity) series and one per (series, seasonal bin), scalar ``math`` only: it shares
no array, layout or compiled code with ``detection.anomaly``, only the maths its docstring describes
(robust running level and spread, step and level-shift detectors, the surprise of each against its own
running distribution, normal tails, hold-off, repeat penalty, the seen range, a seasonal level per bin).
"""

from __future__ import annotations

import math

from detection.anomaly_config import AnomalyConfig
from stadtwacht.durations import parse_duration

__all__ = ["ReferenceAnomaly"]

SIGMA_PER_MAD = math.sqrt(math.pi / 2.0)  # sigma / mean absolute deviation of a normal distribution
CLIP = 4.0  # deviations beyond this many sigmas are learnt clipped ...
UNCLIPPED = 30.0  # ... once a series has this many readings
RAW_CAP = 1e3  # z-scores are capped here before their logarithm
DETECTORS = 3  # spike, step, level shift
NO_SURPRISE = DETECTORS * math.log10(2.0)  # the summed tails of detectors that are not surprised at all
HALF_SCORE = 5.0  # the surprise that scores 0.5
SEASON_MIN_VISITS = 3.0


def alpha(half_life: float) -> float:
    return 1.0 - 0.5 ** (1.0 / half_life)


def minus_log10_tail(z: float) -> float:
    """-log10 of the normal upper tail Q(z), z >= 0, by the Borjesson-Sundberg approximation."""
    a, b = 0.339, 5.510
    ln_q = -0.5 * z * z - 0.5 * math.log(2.0 * math.pi) - math.log((1.0 - a) * z + a * math.sqrt(z * z + b))
    return -ln_q / math.log(10.0)


def clamp(x: float, limit: float) -> float:
    return min(max(x, -limit), limit)


def new_series() -> dict:
    return {"n": 0, "level": 0.0, "dev": 0.0, "prev": 0.0, "step_dev": 0.0, "fast": 0.0, "season_dev": 0.0,
            "lo": 0.0, "hi": 0.0, "hold": 0.0, "t0": 0.0, "bar": 0.0,
            "mean": [0.0] * DETECTORS, "var": [0.0] * DETECTORS, "recent": [0.0] * DETECTORS}


class ReferenceAnomaly:
    """Scores one reading at a time; ``score`` learns from the reading as the detector's ``update`` does."""

    def __init__(self, config: AnomalyConfig) -> None:
        self.c = config
        self.period = parse_duration(config.seasonal_period)
        # learning rates of the running statistics (per reading of the series)
        self.a_base, self.a_fast = alpha(config.baseline_half_life), alpha(config.level_half_life)
        self.a_surprise, self.a_recent = alpha(config.surprise_half_life), alpha(config.recent_half_life)
        self.a_bar = alpha(config.repeat_penalty_half_life)
        self.fast_sd = math.sqrt(self.a_fast / (2.0 - self.a_fast))  # the short level's std / the reading's
        self.series: dict[tuple[int, int], dict] = {}
        self.bins: dict[tuple[int, int, int], list[float]] = {}  # (sensor, quantity, bin) -> [offset, visits]

    def score(self, sensor: int, quantity: int, t: int, x: float) -> float:
        c = self.c
        first = (sensor, quantity) not in self.series
        st = self.series.setdefault((sensor, quantity), new_series())
        n = st["n"]
        if first:
            st.update(level=x, prev=x, lo=x, hi=x, t0=float(t))
        mu, span = st["level"], st["hi"] - st["lo"]
        floor = 1e-3 * span + 1e-9 * abs(mu) + 1e-12
        scale = max(st["dev"] * SIGMA_PER_MAD, floor)
        step_scale = max(st["step_dev"] * SIGMA_PER_MAD, floor)

        # the spike detector's residual: against the plain level, or the seasonal one where that fits better
        deviation = x - mu
        resid, resid_scale = deviation, scale
        per_visit, seasoned, season = 1.0, False, [0.0, 0.0]
        if c.seasonal_bins > 0:
            cycles = (t - st["t0"]) / self.period
            per_visit = max(n / max(cycles * c.seasonal_bins, 1.0), 1.0)
            season = self.bins.setdefault((sensor, quantity, t % self.period * c.seasonal_bins // self.period),
                                          [0.0, 0.0])
            seasoned = cycles >= SEASON_MIN_VISITS and season[1] / per_visit >= SEASON_MIN_VISITS - 1.0
            if seasoned and st["season_dev"] < st["dev"]:
                resid, resid_scale = deviation - season[0], max(st["season_dev"] * SIGMA_PER_MAD, floor)
        step = x - st["prev"]
        fast = st["fast"] + self.a_fast * (resid - st["fast"])
        zs = (abs(resid) / resid_scale, abs(step) / step_scale, abs(fast) / (resid_scale * self.fast_sd))
        raw = [0.0] * DETECTORS if first else [math.log(1.0 + min(z, RAW_CAP)) for z in zs]
        recent = [r + self.a_recent * (w - r) for r, w in zip(st["recent"], raw, strict=True)]

        score = 0.0
        if n >= c.warm_up:
            tails = 0.0
            for k in range(DETECTORS):
                spread = math.sqrt(st["var"][k] + c.surprise_floor ** 2)
                z = (recent[k] - st["mean"][k]) / spread
                if k == 0 and c.instant_spike_weight > 0:
                    z = max(z, c.instant_spike_weight * (raw[0] - st["mean"][0]) / spread)
                tails += minus_log10_tail(max(z, 0.0))
            surprise = max(tails - NO_SURPRISE - st["bar"], 0.0)
            score = surprise / (surprise + HALF_SCORE)
            if st["hold"] > 0:
                score *= c.hold_damping
            if c.range_tolerance > 0 and span > 0:
                tolerance = (c.hold_range_tolerance if st["hold"] > 0 else c.range_tolerance) * span
                if x > st["hi"] + tolerance or x < st["lo"] - tolerance:
                    score = 1.0
        detected = score >= c.threshold
        if c.hold_off > 0:
            st["hold"] = float(c.hold_off) if detected else max(st["hold"] - 1.0, 0.0)
        if n >= c.warm_up:
            st["bar"] = (1.0 - self.a_bar) * st["bar"] + (c.repeat_penalty if detected else 0.0)

        # learn: level and spreads (outliers clipped once the spread is known), range, surprise distribution
        a = 1.0 if first else max(self.a_base, 1.0 / (n + 1.0))
        limit = math.inf if n < UNCLIPPED else CLIP * scale
        step_limit = math.inf if n < UNCLIPPED else CLIP * step_scale
        season_limit = math.inf if n < UNCLIPPED else CLIP * max(st["season_dev"] * SIGMA_PER_MAD, floor)
        st["n"] = n + 1
        st["level"] = mu + a * clamp(deviation, limit)
        st["dev"] += a * (abs(clamp(deviation, limit)) - st["dev"])
        st["prev"] = x
        st["step_dev"] = 0.0 if first else st["step_dev"] + a * (min(abs(step), step_limit) - st["step_dev"])
        st["fast"] = 0.0 if first else fast
        st["lo"], st["hi"] = min(st["lo"], x), max(st["hi"], x)
        learnt = n - max(c.warm_up // 2, 1)
        a_s = 0.0 if learnt < 0 else max(self.a_surprise, 1.0 / max(learnt + 1.0, 1.0))
        for k in range(DETECTORS):
            d = raw[k] - st["mean"][k]
            st["mean"][k] += a_s * d
            st["var"][k] = (1.0 - a_s) * (st["var"][k] + a_s * d * d)
        st["recent"] = raw if first else recent
        if c.seasonal_bins > 0:
            rate = 1.0 - 0.5 ** (1.0 / (c.seasonal_half_life * per_visit))
            a_bin = max(rate, 1.0 / (season[1] + 1.0))
            season_resid = deviation - season[0]
            season[0] += a_bin * clamp(season_resid, limit)
            season[1] += 1.0
            if seasoned:
                st["season_dev"] += a * (abs(clamp(season_resid, season_limit)) - st["season_dev"])
            else:
                st["season_dev"] = st["dev"]
        return score
