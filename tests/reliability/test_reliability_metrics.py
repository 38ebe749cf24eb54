"""Metrics across restarts and rebalances: what a replica re-reads or gives away does not count twice or linger."""

from __future__ import annotations

import time

import pytest

from stadtwacht.district_stage import district_partition
from tests.reliability.harness import in_process_runner, reading

pytestmark = pytest.mark.broker


def test_a_revoked_district_partition_takes_its_level_series_along(kafka_bootstrap, topic_prefix, tmp_path):
    """Dashboards take the max of ``stadtwacht_district_level`` over replicas: a series left behind on the replica
    that lost the district showed its old level beside the new owner's, red in the control room until a restart."""
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


def test_a_restart_re_reads_without_counting_messages_or_detections_again(kafka_bootstrap, topic_prefix, tmp_path):
    """The warm-up re-read after a restart rebuilds state only: counted again, it made a feed that had stopped
    look alive (StadtwachtTopicSilent) and replayed level changes on the detections panel."""
    t0 = (time.time_ns() // 10**9 - 60) * 10**9  # inside the warm-up horizon: the restart re-reads them
    values = [reading("pegel-0", t0, 500.0), reading("pegel-0", t0 + 10**9, 100.0)]
    setup, runner, registry = in_process_runner(kafka_bootstrap, topic_prefix, tmp_path, "kafka-python", values)

    def counts(reg) -> tuple[float, float]:
        return (reg.get_sample_value("stadtwacht_messages_consumed_total", {"topic": setup.topic}) or 0,
                sum(s.value for m in reg.collect() if m.name == "stadtwacht_detections" for s in m.samples
                    if s.name.endswith("_total")))

    try:
        deadline = time.monotonic() + 60
        while runner.consumer.committed((setup.topic, 0))[0] != 2 and time.monotonic() < deadline:
            runner.step()
        assert counts(registry) == (2, 2)  # up to level 1, back to 0
    finally:
        runner.close()
    _, again, registry = in_process_runner(kafka_bootstrap, topic_prefix, tmp_path, "kafka-python", [])
    try:
        deadline = time.monotonic() + 30
        while again.pipeline.watermark_ns < t0 + 10**9 and time.monotonic() < deadline:
            again.step()
        assert again.pipeline.watermark_ns == t0 + 10**9  # the restart did re-read both readings
        assert counts(registry) == (0, 0)
    finally:
        again.close()
