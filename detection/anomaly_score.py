"""Anomaly scores for standalone ``timestamp,value`` series (the ``anomaly-score`` command and NAB runs)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detection.anomaly import AnomalyDetector
from detection.anomaly_config import AnomalyConfig
from detection.nab import load_series

__all__ = ["score_csv", "score_many", "score_series"]


def score_series(times_ns: np.ndarray, values: np.ndarray, config: AnomalyConfig | None = None) -> np.ndarray:
    """Online anomaly scores of one series in time order, as a fresh detector sees it."""
    return score_many([(times_ns, values)], config)[0]


def score_many(series: Sequence[tuple[np.ndarray, np.ndarray]],
               config: AnomalyConfig | None = None) -> list[np.ndarray]:
    """Scores of several independent series with one detector (series ``i`` is sensor ``i``), in one batch."""
    config = config or AnomalyConfig()
    detector = AnomalyDetector(config, capacity=max(len(series), 1))
    sizes = [len(t) for t, _ in series]
    sensor = np.repeat(np.arange(len(series), dtype=np.int32), sizes)
    time = np.concatenate([np.asarray(t, dtype=np.int64) for t, _ in series]) if series else np.zeros(0, np.int64)
    value = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in series]) if series else np.zeros(0)
    scores = detector.update(sensor, np.zeros(sensor.size, dtype=np.uint8), time, value)
    return np.split(scores, np.cumsum(sizes)[:-1])


def score_csv(input_path: Path, output_path: Path | None = None, config: AnomalyConfig | None = None) -> Path:
    """Write ``timestamp,value,anomaly_score`` for a ``timestamp,value`` CSV; returns the path written.

    Without ``output_path`` the result goes next to the input as ``<stem>.scored.csv``; an ``output_path``
    of ``-`` writes to standard output (and returns ``Path("-")``). Rows must be in time order.
    """
    input_path = Path(input_path)
    times, values = load_series(input_path)
    scores = score_series(times, values, config)
    stamps = np.datetime_as_string(times.astype("datetime64[ns]"), unit="s")
    lines = ["timestamp,value,anomaly_score"]
    rows = zip(stamps, values.tolist(), scores, strict=True)
    lines += [f"{t.replace('T', ' ')},{v:.10g},{s:.6f}" for t, v, s in rows]
    text = "\n".join(lines) + "\n"
    if output_path is not None and str(output_path) == "-":
        sys.stdout.write(text)
        return Path("-")
    out = Path(output_path) if output_path is not None else input_path.with_name(input_path.stem + ".scored.csv")
    out.write_text(text, encoding="utf-8")
    return out
