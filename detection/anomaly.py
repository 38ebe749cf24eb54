"""Online anomaly scores for every (sensor, quantity) series, vectorised over series.

Per series the detector runs three cheap raw detectors on robust running statistics:

* spike: the value against a robust running level and spread (EWMA of the value and of its absolute
  deviation, outliers clipped), or against a per-time-of-day level where that fits the series better;
* step: the first difference against its own running absolute size;
* level shift: a short running level of the residual against the spread of a short average.

As in Numenta's "anomaly likelihood", each raw detector's (log) surprise is compared with the series' own
long-run distribution of that surprise: the short average of the raw surprise is turned into a z-score
against the long-run mean and deviation, and its normal tail probability Q gives ``-log10(Q)``. The spike
detector also judges the single reading (its z-score, discounted by ``instant_spike_weight``), so that one
gross spike is found. The detectors' ``-log10(Q)`` add up (independent evidence multiplies); less what they
add up to when nothing is surprising and less the series' repeat penalty, this surprise ``L`` gives the
score ``L / (L + 5)``. A value beyond the range seen so far (by a tolerance) scores 1.

After a detection (score >= threshold) the series is in hold-off: its likelihood scores are damped and only a
value well beyond the seen range (``hold_range_tolerance``) scores 1, so that one event tends to yield one
detection. Each detection also raises the surprise the series must show (``repeat_penalty``, decaying
slowly), so that a series that keeps firing needs ever stronger evidence: NAB-like corpora hold a few
anomalies per series whatever its length. The defaults were tuned on the whole NAB corpus (one parameter
set for all series); see ``detection/anomaly_config.py``.

All state lives in numpy arrays, one row per (sensor, quantity) series in order of first appearance. A
batch is scored by one compiled (numba) pass over its rows in the given order, so several readings of one
series in one batch are handled exactly in order; ``rounds`` is kept for callers that group rows into
one-row-per-key steps.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from detection.anomaly_config import AnomalyConfig
from detection.arrays import prefetch
from ingest.quantities import QUANTITIES
from stadtwacht.durations import parse_duration

__all__ = ["AnomalyDetector", "level_changes_of_rows", "rounds"]

_NQ = len(QUANTITIES)
_K = 3  # raw detectors: spike, step, level shift
# State columns; the likelihood state holds _K columns each for the long mean, variance and short average.
_CNT, _MU, _DEV, _PREV, _DDEV, _FAST, _SDEV, _VMIN, _VMAX, _HOLD, _T0 = range(11)
_RM = 11
_RV = _RM + _K
_RA = _RV + _K
_BAR = _RA + _K  # extra surprise a series must show, raised by each of its detections
_NCOL = _BAR + 1
_SIGMA_PER_MAD = math.sqrt(math.pi / 2.0)  # sigma / mean absolute deviation of a normal distribution
_CLIP = 4.0  # deviations beyond this many sigmas enter the baseline clipped
_UNCLIPPED = 30.0  # readings learnt without clipping
_RAW_CAP = 1e3  # z-scores are capped here before their logarithm
_BS_A, _BS_B = 0.339, 5.510  # Borjesson-Sundberg approximation of the normal tail
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SEASON_MIN_VISITS = 3.0
_NO_SURPRISE = _K * math.log10(2.0)  # summed -log10 tail of K detectors that are not surprised at all
_AHEAD = 16  # rows ahead whose state the scoring kernel prefetches
_RATE_TABLE = 64  # seasonal learning rates precomputed for 0 .. _RATE_TABLE - 1 readings per visit


def _alpha(half_life: float) -> float:
    return 1.0 - 0.5 ** (1.0 / half_life)


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
        self._a_bar = _alpha(config.repeat_penalty_half_life)
        self._half_score = 5.0  # surprise (-log10 tail probability) that maps to a score of 0.5
        # Stationary std of the short EWMA relative to the reading's std.
        self._fast_sd = math.sqrt(self._a_fast / (2.0 - self._a_fast))
        # The surprise distribution is learnt from this reading on (the baseline is settled by then).
        self._learn_from = float(max(config.warm_up // 2, 1))
        self._period = parse_duration(config.seasonal_period)
        self._bins = config.seasonal_bins
        self._state = np.zeros((0, _NCOL))
        # per seasonal bin and series: the bin's level offset and its visits, side by side (one cache line).
        # Bin-major: readings of one hour of the day touch one bin's block (16 bytes per series), not a
        # line in every series' row of all bins; new series fault in that block only.
        self._seasonal = np.zeros((max(self._bins, 1), 0, 2))
        # dense series slots: series (sensor * 7 + quantity) -> row of the state arrays, -1 until first seen
        self._slot_of = np.full(capacity * _NQ, -1, np.int32)
        self._n_series = 0
        self._grow(capacity)

    def _grow(self, slots: int) -> None:
        old = self._state.shape[0]
        if slots <= old:
            return
        new = max(slots, 2 * old)
        state = np.zeros((new, _NCOL))
        state[:old] = self._state
        seasonal = np.zeros((self._seasonal.shape[0], new, 2))
        seasonal[:, :old] = self._seasonal
        self._state, self._seasonal = state, seasonal

    def reserve(self, sensors: int) -> None:
        """Room for ``sensors`` sensors with a series each (no copying as they appear; zero pages cost nothing)."""
        if sensors * _NQ > self._slot_of.size:
            grown = np.full(sensors * _NQ, -1, np.int32)
            grown[: self._slot_of.size] = self._slot_of
            self._slot_of = grown
        self._grow(sensors)

    def nbytes(self) -> int:
        """Bytes held by the series map and the per-series state arrays."""
        return self._slot_of.nbytes + self._state.nbytes + self._seasonal.nbytes

    def reset(self, sensor_mask: np.ndarray) -> None:
        """Forget everything learnt about the sensors where ``sensor_mask`` is True (all quantities)."""
        sensors = np.flatnonzero(np.asarray(sensor_mask, dtype=bool))
        keys = (sensors[:, None] * _NQ + np.arange(_NQ)[None, :]).ravel()
        slots = self._slot_of[keys[keys < self._slot_of.size]]
        slots = slots[slots >= 0]
        self._state[slots] = 0.0
        self._seasonal[:, slots] = 0.0

    def _slots(self, rows: np.ndarray, sensor: np.ndarray, quantity: np.ndarray) -> np.ndarray:
        """The state row of each row's series, giving new series the next free rows (in key order)."""
        top = _max_key(rows, sensor, quantity) + 1
        if top > self._slot_of.size:
            grown = np.full(max(top, 2 * self._slot_of.size), -1, np.int32)
            grown[: self._slot_of.size] = self._slot_of
            self._slot_of = grown
        slot = np.empty(rows.size, np.int32)
        if _lookup_slots(rows, sensor, quantity, self._slot_of, slot):
            miss = np.flatnonzero(slot < 0)
            key = sensor[rows[miss]].astype(np.int64) * _NQ + quantity[rows[miss]]
            new = np.unique(key)
            lo = self._n_series
            self._n_series = lo + new.size
            self._grow(self._n_series)
            self._slot_of[new] = np.arange(lo, self._n_series, dtype=np.int32)
            slot[miss] = self._slot_of[key]
        return slot

    def update(self, sensor: np.ndarray, quantity: np.ndarray, time: np.ndarray,
               value: np.ndarray) -> np.ndarray:
        """Score a batch of readings (rows of one series in event-time order) and learn from them."""
        sensor = np.asarray(sensor, dtype=np.int64)
        return self.update_rows(np.arange(sensor.size), sensor, np.asarray(quantity, dtype=np.int64), time, value)

    def update_rows(self, rows: np.ndarray, sensor: np.ndarray, quantity: np.ndarray, time: np.ndarray,
                    value: np.ndarray) -> np.ndarray:
        """Score the readings ``rows`` of the columns, in that order (as ``update`` of the selected rows)."""
        sensor = np.asarray(sensor, dtype=np.int64)
        quantity = np.asarray(quantity, dtype=np.int64)
        time = np.asarray(time, dtype=np.int64)
        value = np.asarray(value, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros(rows.size)
        if rows.size == 0:
            return out
        slot = self._slots(rows, sensor, quantity)
        cfg = self.config
        _score_rows(rows, slot, time, value, self._state, self._seasonal, out,
                    float(cfg.warm_up), float(cfg.threshold), float(cfg.hold_off), float(cfg.range_tolerance),
                    float(cfg.surprise_floor), float(cfg.seasonal_half_life), self._bins, self._period,
                    self._a_base, self._a_fast, self._a_surp, self._a_recent, self._half_score, self._fast_sd,
                    self._learn_from, float(cfg.hold_damping), float(cfg.hold_range_tolerance), self._a_bar,
                    float(cfg.repeat_penalty), float(cfg.instant_spike_weight))
        return out


@njit(cache=True, nogil=True, error_model="numpy")
def _np_max(a: float, b: float) -> float:
    """np.maximum for scalars (NaN wins)."""
    if a != a or b != b:
        return np.nan
    return a if a >= b else b


@njit(cache=True, nogil=True, error_model="numpy")
def _np_min(a: float, b: float) -> float:
    """np.minimum for scalars (NaN wins)."""
    if a != a or b != b:
        return np.nan
    return a if a <= b else b


@njit(cache=True, nogil=True, error_model="numpy")
def _clip(x: float, lo: float, hi: float) -> float:
    return _np_min(_np_max(x, lo), hi)


@njit(cache=True, nogil=True, error_model="numpy")
def _season_rate(seasonal_half_life: float, per_visit: float) -> float:
    """Learning rate of a seasonal bin with this many readings per visit (before its 1 / visits floor)."""
    return 1.0 - 0.5 ** (1.0 / (seasonal_half_life * per_visit))


@njit(cache=True, nogil=True, error_model="numpy")
def _score_rows(rows, slot, time, value, state, seasonal, out, warm_up, threshold, hold_off,
                range_tolerance, surprise_floor, seasonal_half_life, bins, period, a_base, a_fast, a_surp,
                a_recent, half_score, fast_sd, learn_from, hold_damping, hold_range_tolerance, a_bar,
                repeat_penalty, instant_weight):
    """Score rows ``rows`` (their series' slots in ``slot``) in order and learn from them.

    Rows of one series must come in event-time order.
    """
    raw = np.empty(_K)
    ra = np.empty(_K)
    # The seasonal learning rate of a small whole number of readings per visit (every reading during a
    # series' first seasonal bin), computed once by the same expression (bit-identical).
    season_rate = np.empty(_RATE_TABLE)
    for n in range(_RATE_TABLE):
        season_rate[n] = _season_rate(seasonal_half_life, np.float64(n))
    flat_state = state.reshape(state.size)
    ncol = state.shape[1]
    flat_seasonal = seasonal.reshape(seasonal.size)
    n_series = seasonal.shape[1]
    n_rows = slot.size
    phase_bin = np.zeros(n_rows, np.int64)  # each row's seasonal bin, computed once (two divisions)
    if bins > 0:
        for j in range(n_rows):
            phase_bin[j] = (time[rows[j]] % period) * bins // period
    for j in range(n_rows):
        if j + _AHEAD < n_rows:  # the state of the row _AHEAD rows on: its record and seasonal cells
            s1 = slot[j + _AHEAD]
            o1 = s1 * ncol
            for w in range(0, ncol, 7):  # 56 bytes apart: every cache line of the record
                prefetch(flat_state, o1 + w)
            prefetch(flat_state, o1 + ncol - 1)
            prefetch(flat_seasonal, 2 * (phase_bin[j + _AHEAD] * n_series + s1))
        s = slot[j]
        row = rows[j]
        t = time[row]
        x = value[row]
        b = phase_bin[j]
        o = s * ncol  # the series' state record in flat_state
        cnt = flat_state[o + _CNT]
        first = cnt == 0
        mu = x if first else flat_state[o + _MU]
        prev = x if first else flat_state[o + _PREV]
        vmin = x if first else flat_state[o + _VMIN]
        vmax = x if first else flat_state[o + _VMAX]
        span = vmax - vmin
        floor = 1e-3 * span + 1e-9 * abs(mu) + 1e-12
        scale = _np_max(flat_state[o + _DEV] * _SIGMA_PER_MAD, floor)
        dscale = _np_max(flat_state[o + _DDEV] * _SIGMA_PER_MAD, floor)

        # Spike surprise against the plain baseline and, once learnt, the seasonal one.
        dev_plain = x - mu
        resid, rscale = dev_plain, scale
        t0 = 0.0
        per_visit = 1.0
        visits = 0.0
        seasoned = False
        off = 0.0
        sscale = 0.0
        if bins > 0:
            t0 = np.float64(t) if first else flat_state[o + _T0]
            cycles = (t - t0) / period
            per_visit = _np_max(cnt / _np_max(cycles * bins, 1.0), 1.0)
            visits = seasonal[b, s, 1]
            seasoned = (cycles >= _SEASON_MIN_VISITS) and (visits / per_visit >= _SEASON_MIN_VISITS - 1.0)
            off = seasonal[b, s, 0]
            sscale = _np_max(flat_state[o + _SDEV] * _SIGMA_PER_MAD, floor)
            if seasoned and flat_state[o + _SDEV] < flat_state[o + _DEV]:
                resid = dev_plain - off
                rscale = sscale
        step = x - prev
        fast = flat_state[o + _FAST] + a_fast * (resid - flat_state[o + _FAST])
        z0 = abs(resid) / rscale
        z1 = abs(step) / dscale
        z2 = abs(fast) / (rscale * fast_sd)
        if first:
            for k in range(_K):
                raw[k] = 0.0
        else:
            # log(1 + z), not log1p: z >= 0 needs no log1p precision, and numba's log1p costs three logs
            raw[0] = np.log(1.0 + _np_min(z0, _RAW_CAP))
            raw[1] = np.log(1.0 + _np_min(z1, _RAW_CAP))
            raw[2] = np.log(1.0 + _np_min(z2, _RAW_CAP))

        # Surprise relative to the series' usual surprise ("anomaly likelihood"), per raw detector; the
        # detectors' -log10 tail probabilities add up (evidence of independent detectors multiplies).
        for k in range(_K):
            ra[k] = flat_state[o + _RA + k] + a_recent * (raw[k] - flat_state[o + _RA + k])
        bar = flat_state[o + _BAR]
        hold = flat_state[o + _HOLD]
        score = 0.0  # during the warm-up the score is 0 whatever the evidence: its maths is skipped
        if cnt >= warm_up:
            # the detectors' -log10 normal tails (Borjesson-Sundberg, relative error < 0.3 %), summed with one
            # logarithm of the product
            quad = 0.0
            prod = 1.0
            for k in range(_K):
                spread = np.sqrt(flat_state[o + _RV + k] + surprise_floor ** 2)
                zk = (ra[k] - flat_state[o + _RM + k]) / spread
                if k == 0 and instant_weight > 0:  # a single gross spike counts on its own, discounted
                    zk = _np_max(zk, instant_weight * (raw[k] - flat_state[o + _RM + k]) / spread)
                zk = _np_max(zk, 0.0)
                quad += 0.5 * zk * zk + _LOG_SQRT_2PI
                prod *= (1.0 - _BS_A) * zk + _BS_A * np.sqrt(zk * zk + _BS_B)
            l_sum = (quad + np.log(prod)) / math.log(10.0)
            surprise = _np_max(l_sum - _NO_SURPRISE - bar, 0.0)
            score = surprise / (surprise + half_score)
            if hold > 0:
                score = hold_damping * score
            if range_tolerance > 0 and span > 0:
                tol = (hold_range_tolerance if hold > 0 else range_tolerance) * span
                if x > vmax + tol or x < vmin - tol:
                    score = 1.0
        detected = score >= threshold
        if hold_off > 0:
            hold = hold_off if detected else _np_max(hold - 1.0, 0.0)
        if cnt >= warm_up:
            bar = (1.0 - a_bar) * bar + (repeat_penalty if detected else 0.0)
        flat_state[o + _BAR] = bar
        out[j] = score

        # Learn.
        a = 1.0 if first else _np_max(a_base, 1.0 / (cnt + 1.0))
        # Outliers enter clipped, once the spread is known.
        limit = np.inf if cnt < _UNCLIPPED else _CLIP * scale
        clipped = _clip(dev_plain, -limit, limit)
        dlimit = np.inf if cnt < _UNCLIPPED else _CLIP * dscale
        dev_old = flat_state[o + _DEV]
        sdev_old = flat_state[o + _SDEV]
        ddev_old = flat_state[o + _DDEV]
        flat_state[o + _CNT] = cnt + 1.0
        flat_state[o + _MU] = mu + a * clipped
        flat_state[o + _DEV] = dev_old + a * (abs(clipped) - dev_old)
        flat_state[o + _PREV] = x
        flat_state[o + _DDEV] = 0.0 if first else ddev_old + a * (_np_min(abs(step), dlimit) - ddev_old)
        flat_state[o + _FAST] = 0.0 if first else fast
        flat_state[o + _VMIN] = _np_min(vmin, x)
        flat_state[o + _VMAX] = _np_max(vmax, x)
        flat_state[o + _HOLD] = hold
        n_s = cnt - learn_from
        a_s = 0.0 if n_s < 0 else _np_max(a_surp, 1.0 / _np_max(n_s + 1.0, 1.0))
        for k in range(_K):
            rm = flat_state[o + _RM + k]
            rv = flat_state[o + _RV + k]
            d = raw[k] - rm
            flat_state[o + _RM + k] = rm + a_s * d
            flat_state[o + _RV + k] = (1.0 - a_s) * (rv + a_s * d * d)
            flat_state[o + _RA + k] = raw[k] if first else ra[k]
        if bins > 0:
            slimit = np.inf if cnt < _UNCLIPPED else _CLIP * sscale
            sclip = _clip(dev_plain - off, -slimit, slimit)
            if per_visit < _RATE_TABLE and per_visit == np.floor(per_visit):
                rate = season_rate[np.int64(per_visit)]
            else:
                rate = _season_rate(seasonal_half_life, per_visit)
            a_b = _np_max(rate, 1.0 / (visits + 1.0))
            seasonal[b, s, 0] = off + a_b * _clip(dev_plain - off, -limit, limit)
            seasonal[b, s, 1] = visits + 1.0
            flat_state[o + _T0] = t0
            flat_state[o + _SDEV] = sdev_old + a * (abs(sclip) - sdev_old) if seasoned else flat_state[o + _DEV]


@njit(cache=True, nogil=True)
def _max_key(rows, sensor, quantity):
    """The largest series key of the rows."""
    top = -1
    for r in rows:
        top = max(top, sensor[r] * _NQ + quantity[r])
    return top


@njit(cache=True, nogil=True)
def _lookup_slots(rows, sensor, quantity, slot_of, slot):
    """Each row's series slot into ``slot`` (-1: a new series); returns how many rows have none yet."""
    missing = 0
    for j in range(rows.size):
        r = rows[j]
        s = slot_of[sensor[r] * _NQ + quantity[r]]
        slot[j] = s
        missing += s < 0
    return missing


@njit(cache=True, nogil=True)
def level_changes_of_rows(rows, sensor, quantity, time, score, threshold, keep_ns, level_of, until, ev_row):
    """Anomaly level of the rows ``rows`` in order (``score[j]`` that of ``rows[j]``): 1 at a score >= threshold,
    held until ``until`` (the last such reading's time plus ``keep_ns``) by the readings before it; the
    positions j whose level changed into ``ev_row``, ``level_of`` and ``until`` updated; returns their number."""
    n_ev = 0
    for j in range(rows.size):
        r = rows[j]
        i = sensor[r]
        q = quantity[r]
        if score[j] >= threshold:
            lv = 1
            until[i, q] = max(until[i, q], time[r] + keep_ns)
        else:
            lv = 1 if level_of[i, q] == 1 and time[r] < until[i, q] else 0
        if lv != level_of[i, q]:
            level_of[i, q] = lv
            ev_row[n_ev] = j
            n_ev += 1
    return n_ev
