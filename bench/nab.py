"""NAB benchmark of the anomaly detector: the three profile scores next to the published HTM detector."""

from __future__ import annotations

import json
import time
from pathlib import Path

from detection import nab
from detection.anomaly_config import AnomalyConfig
from detection.anomaly_score import score_many

__all__ = ["NAB_ROOT", "run"]

#: NAB v1 corpus (MIT, Numenta) beside the repository.
NAB_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nab"
_FIGURES = {"standard": "nab_standard", "reward_low_FP_rate": "nab_reward_low_fp",
            "reward_low_FN_rate": "nab_reward_low_fn"}
_PUBLISHED_DETECTOR = "numenta"  # NAB's HTM detector


def run(quick: bool = False, config: AnomalyConfig | None = None) -> list[dict]:
    """Score all 58 NAB series (``quick``: every other series, still against the full published scores)."""
    if not NAB_ROOT.is_dir():
        raise FileNotFoundError(f"NAB data not found at {NAB_ROOT} (../shared/data/nab)")
    windows = nab.load_windows(NAB_ROOT / "labels" / "combined_windows.json")
    profiles = nab.load_profiles(NAB_ROOT / "config" / "profiles.json")
    published = json.loads((NAB_ROOT / "results" / "final_results.json").read_text())[_PUBLISHED_DETECTOR]
    names = sorted(windows)[:: 2 if quick else 1]
    data = [nab.load_series(NAB_ROOT / "data" / name) for name in names]
    labelled = [nab.label_series(name, t, windows[name]) for name, (t, _) in zip(names, data, strict=True)]
    points = sum(t.size for t, _ in data)
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
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
