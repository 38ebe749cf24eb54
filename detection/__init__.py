"""Detection: readings to level transitions (threshold and rate rules, sensor health, anomalies)."""

from detection.kernel_cache import cached_per_source_version

with cached_per_source_version():  # the package's kernels are defined (decorated) on import
    from detection.config import DetectionConfig, HealthConfig, RuleConfig, load_default_rules, validate
    from detection.engine import DetectionEngine, DetectionResult
    from detection.events import DetectionBatch, RuleInfo

__all__ = [
    "DetectionBatch",
    "DetectionConfig",
    "DetectionEngine",
    "DetectionResult",
    "HealthConfig",
    "RuleConfig",
    "RuleInfo",
    "load_default_rules",
    "validate",
]
