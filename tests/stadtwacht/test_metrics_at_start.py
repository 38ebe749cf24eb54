"""What the pipeline's metrics say before the first batch: nothing alarming that is not so, every counter at 0."""

from __future__ import annotations

import math

from stadtwacht.metrics import PipelineMetrics, new_registry


def test_broker_up_is_unknown_until_the_first_attempt_and_counters_start_at_zero() -> None:
    registry = new_registry()
    metrics = PipelineMetrics.create(registry)
    # 0 would read as an outage (StadtwachtBrokerDown) while a fresh pod compiles its kernels for minutes
    assert math.isnan(registry.get_sample_value("stadtwacht_broker_up"))
    for cause in ("delivery", "broker"):
        assert registry.get_sample_value("stadtwacht_rereads_total", {"cause": cause}) == 0
    metrics.broker_up.set(0)
    assert registry.get_sample_value("stadtwacht_broker_up") == 0
