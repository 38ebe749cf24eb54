"""Configuration of detection: ``[detection]`` (health, lateness, anomaly) and ``[[rules]]``."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import msgspec

from detection.anomaly_config import AnomalyConfig
from detection.anomaly_config import validate as validate_anomaly
from ingest.quantities import HAZARD_OF, QUANTITIES
from stadtwacht.durations import parse_duration

__all__ = ["AGGREGATES", "DetectionConfig", "HealthConfig", "RuleConfig", "load_default_rules", "validate"]

#: Window aggregates a rule may use.
AGGREGATES: tuple[str, ...] = ("mean", "max", "min", "last", "rate_per_hour")

DEFAULT_RULES_PATH = Path(__file__).with_name("default_rules.toml")


class RuleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One threshold (or rate-of-rise) rule: an aggregate over a rolling window against ascending levels.

    Rules on the same quantity share one level scale: level k of any rule on that
    quantity is equally severe, so a roll-up may take the worst level across them.
    """

    #: Unique name, shown in alerts.
    name: str = ""
    #: Canonical quantity (ingest.quantities.QUANTITIES), e.g. "no2", "water_level".
    quantity: str = ""
    #: Which sensors: "*" (all), or a list of sensor ids and/or glob patterns such as "pegel-*".
    sensors: str | list[str] = "*"
    #: Rolling event-time window; "0s" judges each reading on its own. Windows are kept as 24 buckets
    #: (12 for rate_per_hour), so the window spans between (buckets-1)/buckets of it and all of it.
    window: str = "0s"
    #: mean | max | min | last | rate_per_hour (least-squares slope over the window, per hour).
    aggregate: str = "mean"
    #: Ascending level boundaries: level k is active while the aggregate >= levels[k-1].
    levels: list[float] = msgspec.field(default_factory=list)
    #: Optional hysteresis: level k clears only when the aggregate < clear[k-1] (each clear <= its level).
    clear: list[float] | None = None
    #: How long a level's condition must hold before it fires: one duration, or one per level.
    for_: str | list[str] = msgspec.field(default="0s", name="for")
    #: Keep a level firing this long after its condition last held.
    keep_firing_for: str = "0s"
    #: Names of the levels 1..k (index 0, normal, is implicit).
    level_names: list[str] = msgspec.field(default_factory=list)
    #: Hazard the rule belongs to; default from the quantity ("flood" or "air").
    hazard: str | None = None

    def hazard_name(self) -> str:
        """The configured hazard or the quantity's default."""
        return self.hazard or HAZARD_OF.get(self.quantity, "air")

    def for_ns(self) -> list[int]:
        """The `for` duration of each level in ns."""
        if isinstance(self.for_, str):
            return [parse_duration(self.for_)] * len(self.levels)
        return [parse_duration(d) for d in self.for_]

    def clear_levels(self) -> list[float]:
        """Clear boundaries (the levels themselves without hysteresis)."""
        return list(self.clear) if self.clear is not None else list(self.levels)

    def sensor_pattern(self) -> re.Pattern[str]:
        """One compiled regular expression for the ``sensors`` selection (ids and glob patterns)."""
        pats = [self.sensors] if isinstance(self.sensors, str) else self.sensors
        return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pats) or "(?!)")


class HealthConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """When a sensor counts as stale, stuck or out of range (its hazard levels are then suppressed)."""

    #: Stale after no reading for stale_factor x the sensor's learned usual interval ...
    stale_factor: float = 5.0
    #: ... but never sooner than this.
    stale_min: str = "15m"
    #: Weight of the newest gap in the learned usual interval (exponential moving average).
    interval_alpha: float = 0.05
    #: Stuck when the sensor's first quantity stayed within a band this long ...
    stuck_for: str = "24h"
    #: ... the band being stuck_abs_tolerance + relative tolerance x |mean| (per quantity; default 0).
    stuck_abs_tolerance: float = 0.0
    stuck_rel_tolerance: dict[str, float] = msgspec.field(
        default_factory=lambda: {"pm10": 0.25, "pm2_5": 0.25})
    #: A stuck sensor counts as healthy again only when its band exceeds this many times the allowed band.
    stuck_clear_factor: float = 4.0
    #: Fewest readings in the stuck window before judging.
    stuck_min_readings: int = 20
    #: Values at or above these (per quantity) are a saturated sensor (SDS011: 1999.9), like
    #: values outside the physical range of ingest.quantities.
    saturation: dict[str, float] = msgspec.field(
        default_factory=lambda: {"pm10": 1999.9, "pm2_5": 999.9})


class DetectionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``[detection]`` section."""

    #: Readings older than the sensor's newest event time minus this are late (dead-lettered, not judged).
    late_tolerance: str = "10m"
    #: While a (sensor, rule) fires, its current value is reported this often (event time) without a change of
    #: level, so an alert shows the reading now, not the one it fired with ("0s": only at level changes).
    value_refresh: str = "5m"
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    #: Anomaly scoring (see detection/anomaly_config.py).
    anomaly: AnomalyConfig = msgspec.field(default_factory=AnomalyConfig)


class _RulesFile(msgspec.Struct, forbid_unknown_fields=True):
    rules: list[RuleConfig] = msgspec.field(default_factory=list)


def load_default_rules() -> list[RuleConfig]:
    """The shipped 39. BImSchV and example flood rules (detection/default_rules.toml)."""
    data = tomllib.loads(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    return msgspec.convert(data, _RulesFile).rules


def _duration_problem(path: str, text: str, problems: list[tuple[str, str]]) -> int | None:
    try:
        ns = parse_duration(text)
    except ValueError as e:
        problems.append((path, str(e)))
        return None
    if ns < 0:
        problems.append((path, "must not be negative"))
    return ns


def validate(detection: DetectionConfig, rules: list[RuleConfig]) -> list[tuple[str, str]]:
    """Semantic problems as (key path, message)."""
    problems: list[tuple[str, str]] = list(validate_anomaly(detection.anomaly))
    known = ", ".join(QUANTITIES)
    _duration_problem("detection.late_tolerance", detection.late_tolerance, problems)
    _duration_problem("detection.value_refresh", detection.value_refresh, problems)
    h = detection.health
    if h.stale_factor <= 0:
        problems.append(("detection.health.stale_factor", "must be > 0"))
    if not 0 < h.interval_alpha <= 1:
        problems.append(("detection.health.interval_alpha", "must be in (0, 1]"))
    _duration_problem("detection.health.stale_min", h.stale_min, problems)
    stuck = _duration_problem("detection.health.stuck_for", h.stuck_for, problems)
    if stuck is not None and stuck <= 0:
        problems.append(("detection.health.stuck_for", "must be > 0"))
    if h.stuck_clear_factor < 1:
        problems.append(("detection.health.stuck_clear_factor", "must be >= 1"))
    if h.stuck_min_readings < 1:
        problems.append(("detection.health.stuck_min_readings", "must be >= 1"))
    if h.stuck_abs_tolerance < 0:
        problems.append(("detection.health.stuck_abs_tolerance", "must be >= 0"))
    for key, table in (("stuck_rel_tolerance", h.stuck_rel_tolerance), ("saturation", h.saturation)):
        for q in table:
            if q not in QUANTITIES:
                problems.append((f"detection.health.{key}.{q}", f"unknown quantity (known: {known})"))
    seen: dict[str, int] = {}
    for i, r in enumerate(rules):
        p = f"rules[{i}]"
        if not r.name:
            problems.append((f"{p}.name", "must not be empty"))
        elif r.name in seen:
            problems.append((f"{p}.name", f"duplicate of rules[{seen[r.name]}]"))
        else:
            seen[r.name] = i
        if r.quantity not in QUANTITIES:
            problems.append((f"{p}.quantity", f"unknown quantity {r.quantity!r} (known: {known})"))
        if isinstance(r.sensors, list) and not r.sensors:
            problems.append((f"{p}.sensors", "empty list selects no sensor (use \"*\" for all)"))
        window = _duration_problem(f"{p}.window", r.window, problems)
        if window is not None and 0 < window < 60_000_000_000:
            problems.append((f"{p}.window", "must be '0s' (each reading) or at least '1m'"))
        if r.aggregate not in AGGREGATES:
            problems.append((f"{p}.aggregate", f"must be one of {', '.join(AGGREGATES)}"))
        elif r.aggregate == "rate_per_hour" and window == 0:
            problems.append((f"{p}.window", "rate_per_hour needs a window > 0"))
        n = len(r.levels)
        if n == 0:
            problems.append((f"{p}.levels", "needs at least one level"))
        elif n > 100:
            problems.append((f"{p}.levels", "at most 100 levels"))
        if any(b <= a for a, b in zip(r.levels, r.levels[1:], strict=False)):
            problems.append((f"{p}.levels", "must be strictly ascending"))
        if r.clear is not None:
            if len(r.clear) != n:
                problems.append((f"{p}.clear", f"needs one value per level ({n})"))
            elif any(c > lv for c, lv in zip(r.clear, r.levels, strict=True)):
                problems.append((f"{p}.clear", "each clear value must be <= its level"))
        if isinstance(r.for_, list):
            if len(r.for_) != n:
                problems.append((f"{p}.for", f"needs one duration per level ({n}) or a single duration"))
            for j, d in enumerate(r.for_):
                _duration_problem(f"{p}.for[{j}]", d, problems)
        else:
            _duration_problem(f"{p}.for", r.for_, problems)
        _duration_problem(f"{p}.keep_firing_for", r.keep_firing_for, problems)
        if len(r.level_names) != n:
            problems.append((f"{p}.level_names", f"needs one name per level ({n})"))
        if r.hazard is not None and r.hazard not in ("flood", "air"):
            problems.append((f"{p}.hazard", "must be 'flood' or 'air'"))
    return problems
