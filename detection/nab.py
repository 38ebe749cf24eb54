"""Numenta Anomaly Benchmark (NAB v1.1) scoring, reimplemented from its published rules.

The rules follow NAB's sweep scorer (``nab/sweeper.py``) and normaliser (``nab/runner.py``):

* the first ``min(floor(0.15 n), 750)`` rows of a series are probationary and never scored;
* a row inside an anomaly window scores ``tpWeight * S(-(right - i + 1) / width) / S(-1)`` when it is the
  best (earliest) detection in its window; only that one detection counts, a window without any costs
  ``-fnWeight``;
* a detection outside every window costs ``fpWeight * S(|i - prev_right| / (prev_width - 1))`` after a
  window and ``-fpWeight`` before the first one, where ``S(x) = 2 sigmoid(-5x) - 1`` (``-1`` beyond 3);
* one threshold per profile is chosen for the whole corpus (a detection is ``score >= threshold``) to
  maximise the summed raw score; the raw score is normalised to ``100 (raw - null) / (perfect - null)``
  with ``perfect = tpWeight * number of windows`` and ``null`` the best raw score of a constant detector.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "PROFILES",
    "LabelledSeries",
    "NabResult",
    "Profile",
    "ThresholdScore",
    "best_threshold",
    "label_series",
    "load_profiles",
    "load_series",
    "load_windows",
    "nab_score",
    "null_raw_score",
    "perfect_raw_score",
    "probationary_length",
    "scaled_sigmoid",
    "sweep_thresholds",
]

PROBATION_PERCENT = 0.15


@dataclass(frozen=True, slots=True)
class Profile:
    """One NAB cost matrix (true negatives weigh nothing in NAB)."""

    tp_weight: float
    fp_weight: float
    fn_weight: float


#: The three application profiles of NAB's ``config/profiles.json``.
PROFILES: dict[str, Profile] = {
    "standard": Profile(tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    "reward_low_FP_rate": Profile(tp_weight=1.0, fp_weight=0.22, fn_weight=1.0),
    "reward_low_FN_rate": Profile(tp_weight=1.0, fp_weight=0.11, fn_weight=2.0),
}


@dataclass(frozen=True, slots=True)
class LabelledSeries:
    """A series' rows with their NAB window membership and unweighted sweep scores.

    ``window`` holds the window number of a row (-1 outside every window); ``position`` holds the unweighted
    scaled sigmoid of the row (positive inside a window, negative outside); ``scorable`` is False for rows in
    the probationary period.
    """

    name: str
    n_windows: int
    window: np.ndarray
    position: np.ndarray
    scorable: np.ndarray


@dataclass(frozen=True, slots=True)
class ThresholdScore:
    """The raw NAB score of a corpus at one detection threshold."""

    threshold: float
    raw: float
    detected_windows: int
    false_positives: int


@dataclass(frozen=True, slots=True)
class NabResult:
    """A normalised NAB score (0 = null detector, 100 = perfect) with the figures it came from."""

    score: float
    raw: float
    threshold: float
    null_raw: float
    perfect_raw: float
    detected_windows: int
    false_positives: int
    n_windows: int


def scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    """NAB's weighting ``2 sigmoid(-5x) - 1``, clipped to -1 beyond ``x > 3``."""
    x = np.asarray(x, dtype=np.float64)
    out = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, out)


def probationary_length(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a series that NAB never scores: ``min(floor(p n), p 5000)``."""
    return math.ceil(min(math.floor(percent * n_rows), percent * 5000))


def load_profiles(path: Path) -> dict[str, Profile]:
    """The profiles of a NAB ``profiles.json``."""
    raw = json.loads(Path(path).read_text())
    return {
        name: Profile(tp_weight=float(p["CostMatrix"]["tpWeight"]), fp_weight=float(p["CostMatrix"]["fpWeight"]),
                      fn_weight=float(p["CostMatrix"]["fnWeight"]))
        for name, p in raw.items()
    }


def load_windows(path: Path) -> dict[str, np.ndarray]:
    """Anomaly windows of NAB's ``combined_windows.json``: series name -> (k, 2) int64 ns [start, end]."""
    raw = json.loads(Path(path).read_text())
    out = {}
    for name, windows in raw.items():
        arr = np.array([[w[0], w[1]] for w in windows], dtype="datetime64[ns]").astype(np.int64)
        out[name] = arr.reshape(-1, 2)
    return out


def load_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``timestamp,value`` CSV as (int64 ns times, float64 values)."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().strip().split(",")
        if header[:2] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected header 'timestamp,value', got {header!r}")
        stamps, values = [], []
        for line in f:
            if line.strip():
                stamp, value = line.rstrip("\n").split(",")[:2]
                stamps.append(stamp)
                values.append(value)
    times = np.array(stamps, dtype="datetime64[ns]").astype(np.int64)
    return times, np.array(values, dtype=np.float64)


def label_series(name: str, times_ns: np.ndarray, windows_ns: np.ndarray,
                 probation_percent: float = PROBATION_PERCENT) -> LabelledSeries:
    """Window membership and unweighted sweep scores of every row of one series.

    Window limits are matched to rows by time (start: first row at or after it, end: last row at or before
    it), which equals NAB's exact timestamp match on its own label files.
    """
    times_ns = np.asarray(times_ns, dtype=np.int64)
    n = times_ns.size
    windows_ns = np.asarray(windows_ns, dtype=np.int64).reshape(-1, 2)
    window = np.full(n, -1, dtype=np.int64)
    position = np.full(n, -1.0)
    idx = np.arange(n)
    prev_right, prev_width = -1, 0.0
    for k, (start, end) in enumerate(windows_ns[np.argsort(windows_ns[:, 0], kind="stable")]):
        left = int(np.searchsorted(times_ns, start, side="left"))
        right = int(np.searchsorted(times_ns, end, side="right")) - 1
        if right < left:
            continue
        width = float(right - left + 1)
        # Rows between the previous window and this one: false positives weighted by distance.
        gap = slice(prev_right + 1, left)
        if prev_right >= 0:
            position[gap] = scaled_sigmoid(np.abs(idx[gap] - prev_right) / max(prev_width - 1.0, 1.0))
        window[left:right + 1] = k
        position[left:right + 1] = scaled_sigmoid(-(right - idx[left:right + 1] + 1) / width) / scaled_sigmoid(-1.0)
        prev_right, prev_width = right, width
    if prev_right >= 0:
        tail = slice(prev_right + 1, n)
        position[tail] = scaled_sigmoid(np.abs(idx[tail] - prev_right) / max(prev_width - 1.0, 1.0))
    scorable = idx >= probationary_length(n, probation_percent)
    return LabelledSeries(name=name, n_windows=int(windows_ns.shape[0]), window=window, position=position,
                          scorable=scorable)


def sweep_thresholds(series: Sequence[LabelledSeries], scores: Sequence[np.ndarray],
                     profile: Profile) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw corpus score at every distinct threshold, highest threshold (1.1: no detection) first.

    Returns ``(thresholds, raw, detected_windows, false_positives)``; a row is a detection when its
    score is ``>= threshold``; within a window only its best (earliest) detection counts.
    """
    sc, wid, pos = [], [], []
    offset = 0
    for s, a in zip(series, scores, strict=True):
        a = np.asarray(a, dtype=np.float64)
        if a.shape != s.window.shape:
            raise ValueError(f"{s.name}: {a.size} scores for {s.window.size} rows")
        keep = s.scorable
        sc.append(a[keep])
        w = s.window[keep]
        wid.append(np.where(w >= 0, w + offset, -1))
        pos.append(s.position[keep])
        offset += s.n_windows
    score = np.concatenate(sc) if sc else np.zeros(0)
    window = np.concatenate(wid) if wid else np.zeros(0, dtype=np.int64)
    position = np.concatenate(pos) if pos else np.zeros(0)

    inside = window >= 0
    n_scorable_windows = np.unique(window[inside]).size
    # False positives: each adds its weighted (negative) score once detected.
    fp_score, fp_delta = score[~inside], position[~inside] * profile.fp_weight
    # Windows: the contribution steps up each time a better (earlier) row becomes a detection.
    w, s, v = window[inside], score[inside], position[inside] * profile.tp_weight
    order = np.lexsort((-s, w))
    w, s, v = w[order], s[order], v[order]
    rank = np.cumsum(np.r_[True, w[1:] != w[:-1]]) if w.size else np.zeros(0, dtype=np.int64)
    running = np.maximum.accumulate(v + 10.0 * rank) - 10.0 * rank if w.size else v
    first = np.r_[True, w[1:] != w[:-1]] if w.size else np.zeros(0, dtype=bool)
    prev = np.where(first, -profile.fn_weight, np.r_[0.0, running[:-1]])
    step = running - prev
    up = step > 0
    tp_score, tp_delta = s[up], step[up]
    tp_new = first[up].astype(np.int64)

    ev_score = np.concatenate([fp_score, tp_score])
    ev_delta = np.concatenate([fp_delta, tp_delta])
    ev_fp = np.r_[np.ones(fp_score.size, dtype=np.int64), np.zeros(tp_score.size, dtype=np.int64)]
    ev_tp = np.r_[np.zeros(fp_score.size, dtype=np.int64), tp_new]
    order = np.argsort(-ev_score, kind="stable")
    ev_score, ev_delta, ev_fp, ev_tp = ev_score[order], ev_delta[order], ev_fp[order], ev_tp[order]
    # Evaluate after the last event of each distinct score value.
    last = np.r_[ev_score[1:] != ev_score[:-1], True] if ev_score.size else np.zeros(0, dtype=bool)
    base = -profile.fn_weight * n_scorable_windows
    thresholds = np.r_[1.1, ev_score[last]]
    raw = np.r_[base, base + np.cumsum(ev_delta)[last]]
    detected = np.r_[0, np.cumsum(ev_tp)[last]]
    false_pos = np.r_[0, np.cumsum(ev_fp)[last]]
    return thresholds, raw, detected, false_pos


def best_threshold(series: Sequence[LabelledSeries], scores: Sequence[np.ndarray],
                   profile: Profile) -> ThresholdScore:
    """The corpus-wide threshold with the highest raw score (ties: the highest threshold, as NAB)."""
    thresholds, raw, detected, false_pos = sweep_thresholds(series, scores, profile)
    i = int(np.argmax(raw))
    return ThresholdScore(threshold=float(thresholds[i]), raw=float(raw[i]), detected_windows=int(detected[i]),
                          false_positives=int(false_pos[i]))


def null_raw_score(series: Sequence[LabelledSeries], profile: Profile) -> float:
    """Raw score of NAB's null detector (a constant 0.5 for every row), after threshold optimisation."""
    return best_threshold(series, [np.full(s.window.size, 0.5) for s in series], profile).raw


def perfect_raw_score(series: Sequence[LabelledSeries], profile: Profile) -> float:
    """Raw score of a detector that fires on the first row of every window: ``tpWeight`` per window."""
    return profile.tp_weight * sum(s.n_windows for s in series)


def nab_score(series: Sequence[LabelledSeries], scores: Sequence[np.ndarray], profile: Profile) -> NabResult:
    """The normalised NAB score of a detector's per-row scores over a corpus for one profile."""
    best = best_threshold(series, scores, profile)
    null = null_raw_score(series, profile)
    perfect = perfect_raw_score(series, profile)
    value = 100.0 * (best.raw - null) / (perfect - null) if perfect != null else 0.0
    return NabResult(score=value, raw=best.raw, threshold=best.threshold, null_raw=null, perfect_raw=perfect,
                     detected_windows=best.detected_windows, false_positives=best.false_positives,
                     n_windows=sum(s.n_windows for s in series))
