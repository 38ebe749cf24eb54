"""A district partition taken away stops this instance exporting its districts' levels.

Dashboards take the max of ``stadtwacht_district_level`` over replicas: a series left behind on the replica that
lost the district showed its old level beside the new owner's, red in the control room until a restart.
"""

from __future__ import annotations

import time

import pytest

from stadtwacht.district_stage import district_partition
from tests.reliability.harness import in_process_runner, reading

pytestmark = pytest.mark.broker


def test_a_revoked_district_partition_takes_its_level_series_along(kafka_bootstrap, topic_prefix, tmp_path):
    t0 = time.time_ns() - 600 * 10**9
    setup, runner, registry = in_process_runner(kafka_bootstrap, topic_prefix, tmp_path, "kafka-python",
                                                [reading("pegel-0", t0, 500.0)], district_topic=True)
    district = setup.gauges["pegel-0"]

    def level() -> float | None:
        return registry.get_sample_value("stadtwacht_district_level", {"district": district, "hazard": "flood"})

    try:
        deadline = time.monotonic() + 60
        while level() != 1 and time.monotonic() < deadline:
            runner.step()
        assert level() == 1
        stage = runner.district
        stage.revoked([(stage.topic, district_partition(district, stage.partitions))])
        assert level() is None
    finally:
        runner.close()
