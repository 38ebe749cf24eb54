"""NAB benchmark of the anomaly detector: the three profile scores next to the published HTM detector."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from detection import nab
from detection.anomaly import AnomalyDetector
from detection.anomaly_config import AnomalyConfig
from detection.anomaly_score import score_many

__all__ = ["NAB_ROOT", "run", "stage_throughput"]

#: NAB v1 corpus (MIT, Numenta) beside the repository.
NAB_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nab"
_FIGURES = {"standard": "nab_standard", "reward_low_FP_rate": "nab_reward_low_fp",
            "reward_low_FN_rate": "nab_reward_low_fn"}
_PUBLISHED_DETECTOR = "numenta"  # NAB's HTM detector


def run(quick: bool = False, config: AnomalyConfig | None = None, stage: bool = True) -> list[dict]:
    """Score all 58 NAB series (``quick``: every other series, still against the full published scores).

    With ``stage`` the anomaly stage's own throughput on many sensors is measured as well.
    """
    if not NAB_ROOT.is_dir():
        raise FileNotFoundError(f"NAB data not found at {NAB_ROOT} (../shared/data/nab)")
    windows = nab.load_windows(NAB_ROOT / "labels" / "combined_windows.json")
    profiles = nab.load_profiles(NAB_ROOT / "config" / "profiles.json")
    published = json.loads((NAB_ROOT / "results" / "final_results.json").read_text())[_PUBLISHED_DETECTOR]
    names = sorted(windows)[:: 2 if quick else 1]
    data = [nab.load_series(NAB_ROOT / "data" / name) for name in names]
    labelled = [nab.label_series(name, t, windows[name]) for name, (t, _) in zip(names, data, strict=True)]
    points = sum(t.size for t, _ in data)
    score_many(data[:1], config)  # compiled kernels loaded before the clock starts (run alone, this is their first use)
    start = time.perf_counter()
    scores = score_many(data, config)
    elapsed = time.perf_counter() - start
    figures = []
    for profile_name, figure in _FIGURES.items():
        result = nab.nab_score(labelled, scores, profiles[profile_name])
        base = float(published[profile_name])
        figures.append({"name": figure, "value": round(result.score, 2), "unit": "NAB score (0..100)",
                        "baseline_value": round(base, 2), "ratio": round(result.score / base, 3),
                        "threshold": result.threshold, "detected_windows": result.detected_windows,
                        "windows": result.n_windows, "false_positives": result.false_positives,
                        "series": len(names), "baseline": "published NAB 'numenta' (HTM) score"})
    figures.append({"name": "anomaly_throughput", "value": round(points / elapsed), "unit": "points/s",
                    "points": points, "seconds": round(elapsed, 3)})
    if stage:
        figures.append(stage_throughput(config, readings=200_000 if quick else 1_000_000,
                                        sensors=20_000 if quick else 100_000))
    return figures


def stage_throughput(config: AnomalyConfig | None = None, readings: int = 1_000_000, sensors: int = 100_000,
                     batch: int = 10_000, repeats: int = 3) -> dict:
    """Readings/s of the anomaly stage alone: random readings of random quantities over many sensors.

    Batches come sorted by (sensor, time) as the detection engine hands them on; the best of ``repeats``
    fresh detectors (the kernel compiled beforehand) is reported.
    """
    config = config or AnomalyConfig()
    rng = np.random.default_rng(0)
    sensor = rng.integers(0, sensors, readings).astype(np.int32)
    quantity = rng.integers(0, 7, readings).astype(np.uint8)
    stamp = np.sort(rng.integers(0, 7 * 86_400 * 10**9, readings)).astype(np.int64)
    value = rng.normal(50.0, 10.0, readings)
    batches = []
    for i in range(0, readings, batch):
        part = slice(i, i + batch)
        order = np.lexsort((stamp[part], sensor[part]))
        batches.append((sensor[part][order], quantity[part][order], stamp[part][order], value[part][order]))
    AnomalyDetector(config).update(*batches[0])  # compile
    best = float("inf")
    for _ in range(repeats):
        detector = AnomalyDetector(config)
        start = time.perf_counter()
        for b in batches:
            detector.update(*b)
        best = min(best, time.perf_counter() - start)
    return {"name": "anomaly_stage_throughput", "value": round(readings / best), "unit": "readings/s",
            "readings": readings, "sensors": sensors, "batch": batch, "seconds": round(best, 3)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
