"""Configuration of the online anomaly detector (TOML section ``[detection.anomaly]``)."""

from __future__ import annotations

import msgspec

from stadtwacht.durations import parse_duration

__all__ = ["AnomalyConfig", "validate"]


class AnomalyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the anomaly detector scores each reading of each (sensor, quantity) series."""

    # Score anomalies at all; when false the detector is not built.
    enabled: bool = True
    # Score (0..1) at or above which a reading counts as an anomaly detection (and starts the hold-off). A
    # score s < 1 means the recent surprise of the series has a tail probability of 10^(-5 s / (1 - s)):
    # 0.45 is about 1 in 10,000, 0.5 about 1 in 100,000; 1.0 is a value outside the range seen so far.
    # Tuned on the whole NAB corpus: its optimal standard-profile threshold is 0.4455.
    threshold: float = 0.45
    # Readings a series needs before it is scored at all (its scores are 0 until then); the surprise
    # distribution is learnt from half of this on. NAB-tuned (600 scored worse than 300).
    warm_up: int = 300
    # Half-life, in readings of the series, of the robust running level and spread (EWMA of the value and
    # of its absolute deviation, with outliers clipped).
    baseline_half_life: float = 400.0
    # Half-life, in readings, of the short running level compared with the baseline to find level shifts.
    level_half_life: float = 4.0
    # Half-life, in readings, of the running distribution (mean, variance) of the raw surprise.
    surprise_half_life: float = 2000.0
    # Half-life, in readings, of the short average of the raw surprise that is compared with it.
    recent_half_life: float = 3.0
    # Smallest spread of the raw (log) surprise assumed when comparing with its running distribution, so that
    # a series whose surprise never varies is not called anomalous by a tiny change.
    surprise_floor: float = 0.1
    # A value beyond every value seen so far by more than this fraction of the seen range scores 1.0
    # (after warm-up); 0 turns the rule off. NAB-tuned: 0.01 (0.05 scored 64.7, 0.02 67.4, off 44).
    range_tolerance: float = 0.01
    # Length of the seasonal cycle ("1d" daily); the level is learnt per time-of-cycle bin as well.
    seasonal_period: str = "1d"
    # Bins of the seasonal cycle (24 for hourly bins of a day); 0 turns the seasonal baseline off.
    seasonal_bins: int = 24
    # Half-life, in visits of a bin (cycles), of the seasonal level of each bin.
    seasonal_half_life: float = 3.0
    # After a detection (score >= threshold), the series' scores are halved for this many readings, so that
    # one event tends to yield one detection; 0 turns the hold-off off. NAB-tuned: 100 (off: 54 -> 65).
    hold_off: int = 100


def validate(cfg: AnomalyConfig) -> list[tuple[str, str]]:
    """Semantic problems of an anomaly configuration as (key path, message)."""
    p = "detection.anomaly"
    problems: list[tuple[str, str]] = []
    if not 0.0 < cfg.threshold <= 1.0:
        problems.append((f"{p}.threshold", f"must be in (0, 1], got {cfg.threshold}"))
    if cfg.warm_up < 1:
        problems.append((f"{p}.warm_up", f"must be at least 1 reading, got {cfg.warm_up}"))
    for name in ("baseline_half_life", "level_half_life", "surprise_half_life", "recent_half_life",
                 "seasonal_half_life"):
        if not getattr(cfg, name) > 0:
            problems.append((f"{p}.{name}", f"must be a positive number of readings, got {getattr(cfg, name)}"))
    if cfg.level_half_life >= cfg.baseline_half_life:
        problems.append((f"{p}.level_half_life", "must be shorter than baseline_half_life"))
    if cfg.surprise_floor < 0:
        problems.append((f"{p}.surprise_floor", f"must be >= 0, got {cfg.surprise_floor}"))
    if cfg.range_tolerance < 0:
        problems.append((f"{p}.range_tolerance", f"must be >= 0, got {cfg.range_tolerance}"))
    try:
        if parse_duration(cfg.seasonal_period) <= 0:
            problems.append((f"{p}.seasonal_period", "must be a positive duration"))
    except ValueError as e:
        problems.append((f"{p}.seasonal_period", str(e)))
    if cfg.seasonal_bins < 0:
        problems.append((f"{p}.seasonal_bins", f"must be >= 0, got {cfg.seasonal_bins}"))
    if cfg.hold_off < 0:
        problems.append((f"{p}.hold_off", f"must be >= 0 readings, got {cfg.hold_off}"))
    return problems
