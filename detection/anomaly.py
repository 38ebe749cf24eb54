"""Online anomaly scores for every (sensor, quantity) series, vectorised over series.

Per series the detector runs three cheap raw detectors on robust running statistics:

* spike: the value against a robust running level and spread (EWMA of the value and of its absolute
  deviation, outliers clipped), or against a per-time-of-day level where that fits the series better;
* step: the first difference against its own running absolute size;
* level shift: a short running level of the residual against the spread of a short average.

As in Numenta's "anomaly likelihood", each raw detector's (log) surprise is compared with the series' own
long-run distribution of that surprise: the short average of the raw surprise is turned into a z-score
against the long-run mean and deviation, and its normal tail probability Q gives ``L = -log10(Q)``. The
score is ``L / (L + 5)`` for the most surprised detector. A value beyond the range seen so far (by a
tolerance) scores 1. After a detection the series' scores are damped for a hold-off, so that one event
tends to yield one detection.

All state lives in numpy arrays indexed by ``sensor * 7 + quantity``. A batch is processed in rounds: each
round takes at most one reading of each series (its rank within its series), so several readings of one
series in one batch are handled exactly in order while the only Python loop is over rounds.
"""

from __future__ import annotations

import math

import numpy as np

from detection.anomaly_config import AnomalyConfig
from ingest.quantities import QUANTITIES
from stadtwacht.durations import parse_duration

__all__ = ["AnomalyDetector", "rounds"]

_NQ = len(QUANTITIES)
_K = 4  # raw detectors: spike, step, level shift, spread change
# State columns; the likelihood state holds _K columns each for the long mean, variance and short average.
_CNT, _MU, _DEV, _PREV, _DDEV, _FAST, _SDEV, _VMIN, _VMAX, _HOLD, _T0, _VS = range(12)
_RM = 12
_RV = _RM + _K
_RA = _RV + _K
_PK = _RA + _K
_NCOL = _PK + _K
_SIGMA_PER_MAD = math.sqrt(math.pi / 2.0)  # sigma / mean absolute deviation of a normal distribution
_CLIP = 4.0  # deviations beyond this many sigmas enter the baseline clipped
_UNCLIPPED = 30.0  # readings learnt without clipping
_RAW_CAP = 1e3  # z-scores are capped here before their logarithm
_BS_A, _BS_B = 0.339, 5.510  # Borjesson-Sundberg approximation of the normal tail
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SEASON_MIN_VISITS = 3.0
_ACTIVE = [0, 1, 2, 3]
_SPREAD_HALF_LIFE = 10.0
_SPREAD_GAIN = 3.0
_HOLD_DAMPING = 0.5  # factor on the scores of a series in hold-off


def _alpha(half_life: float) -> float:
    return 1.0 - 0.5 ** (1.0 / half_life)


def _neg_log10_tail(z: np.ndarray) -> np.ndarray:
    """-log10 of the upper normal tail Q(z) for z >= 0 (Borjesson-Sundberg, relative error < 0.3 %)."""
    z = np.maximum(z, 0.0)
    log_q = -0.5 * z * z - _LOG_SQRT_2PI - np.log((1.0 - _BS_A) * z + _BS_A * np.sqrt(z * z + _BS_B))
    return -log_q / math.log(10.0)


def rounds(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order and round boundaries so that each round holds at most one row per key, rows in order.

    Returns ``(order, bounds)``: round ``r`` is ``order[bounds[r]:bounds[r + 1]]``; the rows of one key
    appear in rounds 0, 1, 2, ... in their original order.
    """
    n = key.size
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    by_key = np.argsort(key, kind="stable")
    k = key[by_key]
    start = np.r_[True, k[1:] != k[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[by_key] = np.arange(n) - first
    order = np.argsort(rank, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(rank))]
    return order, bounds


class AnomalyDetector:
    """Scores readings in [0, 1] online; state per (dense sensor index, quantity) grows with new sensors."""

    def __init__(self, config: AnomalyConfig, capacity: int = 64) -> None:
        self.config = config
        self._a_base = _alpha(config.baseline_half_life)
        self._a_fast = _alpha(config.level_half_life)
        self._a_surp = _alpha(config.surprise_half_life)
        self._a_recent = _alpha(config.recent_half_life)
        self._half_score = 5.0  # -log10 tail probability that maps to a score of 0.5
        # Stationary std of the short EWMA relative to the reading's std.
        self._fast_sd = math.sqrt(self._a_fast / (2.0 - self._a_fast))
        # The surprise distribution is learnt from this reading on (the baseline is settled by then).
        self._learn_from = float(max(config.warm_up // 2, 1))
        self._peak_decay = 0.5 ** (1.0 / config.peak_half_life) if config.peak_half_life > 0 else 0.0
        self._peak_weight = 0.5
        self._a_spread = _alpha(_SPREAD_HALF_LIFE)
        self._range_decay = 0.5 ** (1.0 / config.range_half_life) if config.range_half_life > 0 else 1.0
        self._period = parse_duration(config.seasonal_period)
        self._bins = config.seasonal_bins
        self._state = np.zeros((0, _NCOL))
        self._season = np.zeros((0, max(self._bins, 1)))
        self._visits = np.zeros((0, max(self._bins, 1)))
        self._grow(capacity * _NQ)

    def _grow(self, slots: int) -> None:
        old = self._state.shape[0]
        if slots <= old:
            return
        new = max(slots, 2 * old)
        state = np.zeros((new, _NCOL))
        state[:old] = self._state
        season = np.zeros((new, self._season.shape[1]))
        season[:old] = self._season
        visits = np.zeros((new, self._visits.shape[1]))
        visits[:old] = self._visits
        self._state, self._season, self._visits = state, season, visits

    def nbytes(self) -> int:
        """Bytes held by the per-series state arrays."""
        return self._state.nbytes + self._season.nbytes + self._visits.nbytes

    def reset(self, sensor_mask: np.ndarray) -> None:
        """Forget everything learnt about the sensors where ``sensor_mask`` is True (all quantities)."""
        sensors = np.flatnonzero(np.asarray(sensor_mask, dtype=bool))
        slots = (sensors[:, None] * _NQ + np.arange(_NQ)[None, :]).ravel()
        slots = slots[slots < self._state.shape[0]]
        self._state[slots] = 0.0
        self._season[slots] = 0.0
        self._visits[slots] = 0.0

    def update(self, sensor: np.ndarray, quantity: np.ndarray, time: np.ndarray,
               value: np.ndarray) -> np.ndarray:
        """Score a batch of readings (rows of one series in event-time order) and learn from them."""
        sensor = np.asarray(sensor, dtype=np.int64)
        slot = sensor * _NQ + np.asarray(quantity, dtype=np.int64)
        time = np.asarray(time, dtype=np.int64)
        value = np.asarray(value, dtype=np.float64)
        out = np.zeros(slot.size)
        if slot.size == 0:
            return out
        self._grow(int(slot.max()) + 1)
        if self._bins > 0:
            phase_bin = ((time % self._period) * self._bins // self._period).astype(np.int64)
        else:
            phase_bin = np.zeros(slot.size, dtype=np.int64)
        order, bounds = rounds(slot)
        for r in range(bounds.size - 1):
            rows = order[bounds[r]:bounds[r + 1]]
            out[rows] = self._step(slot[rows], phase_bin[rows], time[rows], value[rows])
        return out

    def _step(self, s: np.ndarray, b: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Score one reading of each of the distinct series ``s`` and update their state."""
        cfg = self.config
        st = self._state[s]
        cnt = st[:, _CNT]
        first = cnt == 0
        mu = np.where(first, x, st[:, _MU])
        prev = np.where(first, x, st[:, _PREV])
        vmin = np.where(first, x, st[:, _VMIN])
        vmax = np.where(first, x, st[:, _VMAX])
        span = vmax - vmin
        floor = 1e-3 * span + 1e-9 * np.abs(mu) + 1e-12
        scale = np.maximum(st[:, _DEV] * _SIGMA_PER_MAD, floor)
        dscale = np.maximum(st[:, _DDEV] * _SIGMA_PER_MAD, floor)

        # Spike surprise against the plain baseline and, once learnt, the seasonal one.
        dev_plain = x - mu
        resid, rscale = dev_plain, scale
        if self._bins > 0:
            t0 = np.where(first, t.astype(np.float64), st[:, _T0])
            cycles = (t - t0) / self._period
            # Readings per bin visit, to count a bin's readings in cycles.
            per_visit = np.maximum(cnt / np.maximum(cycles * self._bins, 1.0), 1.0)
            visits = self._visits[s, b]
            seasoned = (cycles >= _SEASON_MIN_VISITS) & (visits / per_visit >= _SEASON_MIN_VISITS - 1.0)
            off = self._season[s, b]
            sscale = np.maximum(st[:, _SDEV] * _SIGMA_PER_MAD, floor)
            # The seasonal baseline is used where it fits the series better than the plain one.
            better = seasoned & (st[:, _SDEV] < st[:, _DEV])
            resid = np.where(better, dev_plain - off, dev_plain)
            rscale = np.where(better, sscale, scale)
        step = x - prev
        fast = st[:, _FAST] + self._a_fast * (resid - st[:, _FAST])
        z = np.empty((s.size, _K))
        z[:, 0] = np.abs(resid) / rscale
        z[:, 1] = np.abs(step) / dscale
        z[:, 2] = np.abs(fast) / (rscale * self._fast_sd)
        vs = st[:, _VS] + self._a_spread * (np.abs(resid) - st[:, _VS])
        base_dev = rscale / _SIGMA_PER_MAD
        z[:, 3] = np.abs(np.log((vs + floor) / (base_dev + floor))) * _SPREAD_GAIN
        raw = np.log1p(np.minimum(z, _RAW_CAP))
        raw[first] = 0.0

        # Surprise relative to the series' usual surprise ("anomaly likelihood"), per raw detector.
        rm, rv = st[:, _RM:_RV], st[:, _RV:_RA]
        ra = st[:, _RA:_PK] + self._a_recent * (raw - st[:, _RA:_PK])
        z_lik = (ra - rm) / np.sqrt(rv + cfg.surprise_floor ** 2)
        surprise = _neg_log10_tail(z_lik[:, _ACTIVE].max(axis=1))
        score = surprise / (surprise + self._half_score)
        peak = st[:, _PK:_NCOL]
        learning = cnt >= self._learn_from
        if cfg.peak_half_life > 0:
            ratio = (ra / np.maximum(peak, 1e-9)).max(axis=1)
            score = np.maximum(score, self._peak_weight * np.minimum(ratio, 2.0))
        if cfg.range_tolerance > 0:
            tol = cfg.range_tolerance * span
            novel = (span > 0) & ((x > vmax + tol) | (x < vmin - tol))
            score = np.where(novel, 1.0, score)
        score = np.where(cnt >= cfg.warm_up, score, 0.0)
        hold = st[:, _HOLD]
        if cfg.hold_off > 0:
            score = np.where(hold > 0, _HOLD_DAMPING * score, score)
            hold = np.where(score >= cfg.threshold, float(cfg.hold_off), np.maximum(hold - 1.0, 0.0))

        # Learn.
        a = np.where(first, 1.0, np.maximum(self._a_base, 1.0 / (cnt + 1.0)))
        # Outliers enter clipped, once the spread is known.
        limit = np.where(cnt < _UNCLIPPED, np.inf, _CLIP * scale)
        clipped = np.clip(dev_plain, -limit, limit)
        dlimit = np.where(cnt < _UNCLIPPED, np.inf, _CLIP * dscale)
        new = np.empty_like(st)
        new[:, _CNT] = cnt + 1.0
        new[:, _MU] = mu + a * clipped
        new[:, _DEV] = st[:, _DEV] + a * (np.abs(clipped) - st[:, _DEV])
        new[:, _PREV] = x
        new[:, _DDEV] = np.where(first, 0.0, st[:, _DDEV] + a * (np.minimum(np.abs(step), dlimit) - st[:, _DDEV]))
        new[:, _FAST] = np.where(first, 0.0, fast)
        # The range relaxes slowly towards the level, so an old extreme does not mask later ones forever.
        new_mu = new[:, _MU]
        new[:, _VMIN] = np.minimum(new_mu - (new_mu - vmin) * self._range_decay, x)
        new[:, _VMAX] = np.maximum(new_mu + (vmax - new_mu) * self._range_decay, x)
        new[:, _HOLD] = hold
        new[:, _VS] = np.where(first, 0.0, vs)
        n_s = cnt - self._learn_from
        a_s = np.where(n_s < 0, 0.0, np.maximum(self._a_surp, 1.0 / np.maximum(n_s + 1.0, 1.0)))[:, None]
        d = raw - rm
        new[:, _RM:_RV] = rm + a_s * d
        new[:, _RV:_RA] = (1.0 - a_s) * (rv + a_s * d * d)
        new[:, _RA:_PK] = np.where(first[:, None], raw, ra)
        new[:, _PK:_NCOL] = np.where(learning[:, None], np.maximum(peak * self._peak_decay, ra), 0.0)
        if self._bins > 0:
            slimit = np.where(cnt < _UNCLIPPED, np.inf, _CLIP * sscale)
            sclip = np.clip(dev_plain - off, -slimit, slimit)
            a_b = np.maximum(1.0 - 0.5 ** (1.0 / (self.config.seasonal_half_life * per_visit)),
                             1.0 / (visits + 1.0))
            self._season[s, b] = off + a_b * np.clip(dev_plain - off, -limit, limit)
            self._visits[s, b] = visits + 1.0
            new[:, _T0] = t0
            new[:, _SDEV] = np.where(seasoned, st[:, _SDEV] + a * (np.abs(sclip) - st[:, _SDEV]),
                                     new[:, _DEV])
        self._state[s] = new
        return score
