"""Configuration of the online anomaly detector (TOML section ``[detection.anomaly]``)."""

from __future__ import annotations

import msgspec

from stadtwacht.durations import parse_duration

__all__ = ["AnomalyConfig", "validate"]


class AnomalyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the anomaly detector scores each reading of each (sensor, quantity) series.

    The defaults were tuned on the whole Numenta Anomaly Benchmark (NAB v1, 58 series), one parameter set
    for all series, by hand-driven sweeps judged by NAB's standard profile: they are fitted to that corpus
    (NAB 70.6 / 65.1 / 74.4 standard / low-FP / low-FN; single-parameter neighbours of the defaults score
    69.3 to 70.9 standard). Re-tune ``threshold`` first for data of another kind.
    """

    # Score anomalies at all; when false the detector is not built.
    enabled: bool = True
    # Score (0..1) at or above which a reading counts as an anomaly detection (and starts the hold-off and
    # the repeat penalty). A score s < 1 means a surprise L = 5 s / (1 - s), L being the summed -log10 tail
    # probabilities of the detectors beyond their unsurprised level, less the repeat penalty: 0.47 is
    # L = 4.4; 1.0 is a value outside the range seen so far. NAB's own optimal threshold is 0.468 with it.
    threshold: float = 0.47
    # How long a series stays at the anomaly level after its last reading at or above ``threshold`` (as a
    # rule's keep_firing_for): a burst of detections is one "Anomalie" episode, not a warning and an all-clear
    # per reading. It ends at the first reading at least this long after the last detection, or at the tick
    # that reaches that time when no reading comes. "0s": each reading's score decides alone.
    keep_firing_for: str = "1h"
    # Readings a series needs before it is scored at all (its scores are 0 until then); the surprise
    # distribution is learnt from half of this on.
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
    # The spike detector also judges each single reading: its surprise is the larger of the short average's
    # and this weight times the single reading's (a z-score against the same running distribution). The
    # weight (< 1) discounts single readings, whose surprise is heavier-tailed; 0 turns it off. NAB-tuned.
    instant_spike_weight: float = 0.6
    # Smallest spread of the raw (log) surprise assumed when comparing with its running distribution, so that
    # a series whose surprise never varies is not called anomalous by a tiny change.
    surprise_floor: float = 0.1
    # A value beyond every value seen so far by more than this fraction of the seen range scores 1.0
    # (after warm-up); 0 turns the rule off. Most NAB detections come from this rule.
    range_tolerance: float = 0.01
    # Length of the seasonal cycle ("1d" daily); the level is learnt per time-of-cycle bin as well.
    seasonal_period: str = "1d"
    # Bins of the seasonal cycle (24 for hourly bins of a day); 0 turns the seasonal baseline off.
    seasonal_bins: int = 24
    # Half-life, in visits of a bin (cycles), of the seasonal level of each bin.
    seasonal_half_life: float = 3.0
    # After a detection (score >= threshold), the series' likelihood scores are multiplied by hold_damping for
    # this many readings, so that one event tends to yield one detection; 0 turns the hold-off off.
    hold_off: int = 400
    # Factor on the likelihood scores of a series in hold-off (0 silences them; 1 makes the hold-off a no-op).
    hold_damping: float = 0.0
    # During a hold-off a value beyond the seen range scores 1.0 only when it is beyond it by this fraction
    # of the range (instead of range_tolerance), so that a drift to ever new extremes yields one detection.
    hold_range_tolerance: float = 0.03
    # Each detection raises the surprise (-log10 tail probability) a series must show by this much; the
    # extra bar decays with repeat_penalty_half_life. Series that keep firing need ever stronger evidence.
    repeat_penalty: float = 1.0
    # Half-life, in readings of the series, of that extra bar.
    repeat_penalty_half_life: float = 1400.0


def validate(cfg: AnomalyConfig) -> list[tuple[str, str]]:
    """Semantic problems of an anomaly configuration as (key path, message)."""
    p = "detection.anomaly"
    problems: list[tuple[str, str]] = []
    if not 0.0 < cfg.threshold <= 1.0:
        problems.append((f"{p}.threshold", f"must be in (0, 1], got {cfg.threshold}"))
    try:
        parse_duration(cfg.keep_firing_for)
    except ValueError as e:
        problems.append((f"{p}.keep_firing_for", str(e)))
    if cfg.warm_up < 1:
        problems.append((f"{p}.warm_up", f"must be at least 1 reading, got {cfg.warm_up}"))
    for name in ("baseline_half_life", "level_half_life", "surprise_half_life", "recent_half_life",
                 "seasonal_half_life", "repeat_penalty_half_life"):
        if not getattr(cfg, name) > 0:
            problems.append((f"{p}.{name}", f"must be a positive number of readings, got {getattr(cfg, name)}"))
    if cfg.level_half_life >= cfg.baseline_half_life:
        problems.append((f"{p}.level_half_life", "must be shorter than baseline_half_life"))
    if cfg.instant_spike_weight < 0:
        problems.append((f"{p}.instant_spike_weight", f"must be >= 0, got {cfg.instant_spike_weight}"))
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
    if not 0.0 <= cfg.hold_damping <= 1.0:
        problems.append((f"{p}.hold_damping", f"must be in [0, 1], got {cfg.hold_damping}"))
    if cfg.hold_range_tolerance < 0:
        problems.append((f"{p}.hold_range_tolerance", f"must be >= 0, got {cfg.hold_range_tolerance}"))
    if cfg.repeat_penalty < 0:
        problems.append((f"{p}.repeat_penalty", f"must be >= 0, got {cfg.repeat_penalty}"))
    if cfg.hold_off < 0:
        problems.append((f"{p}.hold_off", f"must be >= 0 readings, got {cfg.hold_off}"))
    return problems
