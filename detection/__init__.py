"""Detection: readings to level transitions (threshold and rate rules, sensor health, anomalies)."""

import detection.kernel_cache  # noqa: F401  (first: chooses the kernels' cache directory)

# isort: split
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
