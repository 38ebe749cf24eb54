"""A restart that gets only some partitions (another member still holds the rest) must not end the alerts of
sensors it cannot read (docs/reliability.md finding 10: a killed member held a partition until its session
expired, and the restarted process resolved that partition's episodes, then fired them again); the alerts of
sensors it reads end as usual."""

from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaConsumer

from tests.reliability.harness import HIGH, LOW, alert_records, events_by_district, reading, write_flood_setup
from tests.support.kafka_topics import create_topics, producer
from tests.support.service import wait_until

pytestmark = [pytest.mark.broker]


class _Service:
    """An in-process ``run`` loop on the setup's state directory."""

    def __init__(self, setup, bootstrap: str, state) -> None:
        from stadtwacht.config import load_config
        from stadtwacht.metrics import new_registry
        from stadtwacht.pipeline import Pipeline
        from stadtwacht.runner import Runner

        cfg, problems = load_config(setup.config)
        assert not problems
        self.runner = Runner(Pipeline(cfg, new_registry(), state, sensors_path=str(setup.registry)), bootstrap)
        self.views: list[bool] = []  # partial_view at each reconcile
        pipeline = self.runner.pipeline
        reconcile = pipeline.reconcile

        def noting_reconcile(*args, **kwargs):
            self.views.append(pipeline.partial_view)
            return reconcile(*args, **kwargs)

        pipeline.reconcile = noting_reconcile
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.runner.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_restart_owning_one_partition_keeps_the_other_partitions_alerts(client, kafka_bootstrap, topic_prefix,
                                                                          tmp_path):
    if client == "confluent":
        pytest.importorskip("confluent_kafka", reason="confluent-kafka not installed (pip install "
                            "stadtwacht[confluent]); only the kafka-python backend is tested")
    # pegel-0 in mitte, pegel-1 in nord
    setup = write_flood_setup(tmp_path, topic_prefix, 2, extra_kafka=f'client = "{client}"')
    create_topics(kafka_bootstrap, [setup.topic, setup.alerts_topic], partitions=2)
    state = tmp_path / "state"
    prod = producer(kafka_bootstrap)
    t0 = time.time_ns() - 600 * 10**9

    def send(value: float, t_ns: int) -> None:
        for p, sensor in enumerate(setup.gauges):  # pegel-<p> on partition p
            prod.send(setup.topic, key=sensor.encode(), value=reading(sensor, t_ns, value), partition=p)
        prod.flush()

    def events() -> dict[str, list[str]]:
        return events_by_district(alert_records(kafka_bootstrap, setup.alerts_topic))[0]

    send(HIGH, t0)
    first = _Service(setup, kafka_bootstrap, state)
    try:
        wait_until(lambda: events() == {"mitte": ["firing"], "nord": ["firing"]}, 60, interval=0.5,
                   what="both episodes firing")
    finally:
        first.close()

    # Another member of the group (a killed process whose session has not expired yet) takes part.
    holder = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=setup.group, enable_auto_commit=False,
                           session_timeout_ms=6000, heartbeat_interval_ms=1000)
    holder.subscribe([setup.topic])
    holding = threading.Event()

    def hold() -> None:
        while not holding.is_set():
            holder.poll(timeout_ms=200)
        holder.close(autocommit=False)

    holder_thread = threading.Thread(target=hold, daemon=True)
    holder_thread.start()
    wait_until(lambda: holder.assignment(), 30, interval=0.2, what="the holder's assignment")

    second = _Service(setup, kafka_bootstrap, state)
    try:
        runner = second.runner
        wait_until(lambda: len(runner.consumer.assignment()) == 1 and second.views, 60, interval=0.2,
                   what="the restart's reconcile with one of two partitions")
        assert second.views == [True] and runner.health.partial_view
        assert runner.pipeline.metrics.partial_view._value.get() == 1
        assert events() == {"mitte": ["firing"], "nord": ["firing"]}  # the unseen partition's alert stands
        ((_, seen),) = runner.consumer.assignment()
        seen_district, unseen_district = (setup.gauges[f"pegel-{p}"] for p in (seen, 1 - seen))
        send(LOW, t0 + 10**9)  # the danger ends: the gauge read here gives its district's all-clear at once
        wait_until(lambda: events()[seen_district] == ["firing", "resolved"], 30, interval=0.5,
                   what="the all-clear of the district whose gauge this process reads")
        time.sleep(2)
        assert events()[unseen_district] == ["firing"]  # the other gauge's district waits for the whole view

        holding.set()  # the other member leaves: this process owns both partitions and judges them all
        holder_thread.join(30)
        wait_until(lambda: events() == {"mitte": ["firing", "resolved"], "nord": ["firing", "resolved"]}, 60,
                   interval=0.5, what="both all-clears")
        assert second.views[-1] is False and not runner.health.partial_view
    finally:
        holding.set()
        second.close()
    ids = {r["alert_id"] for r in alert_records(kafka_bootstrap, setup.alerts_topic)}
    assert len(ids) == 2, ids  # no episode ended and fired again under a new id


def test_a_replica_left_with_no_partition_reports_reading_nothing(kafka_bootstrap, topic_prefix, tmp_path):
    """A rebalance that leaves a process nothing (a second replica of a one-partition topic took it) revokes
    its partition and assigns it none: /readyz's partitions and ``stadtwacht_assigned_partitions`` then say it
    reads nothing (they kept naming the partition it had lost), and its ``stadtwacht_consumer_lag`` of that
    partition goes (its last value would add to the new owner's). The client ids order the members, so the
    range assignor gives the partition to the second replica."""
    later = write_flood_setup(tmp_path / "b", topic_prefix, 1, extra_kafka='client_id = "stadtwacht-b"')
    earlier = write_flood_setup(tmp_path / "a", topic_prefix, 1, extra_kafka='client_id = "stadtwacht-a"')
    tp = (later.topic, 0)
    create_topics(kafka_bootstrap, [later.topic, later.alerts_topic], partitions=1)

    def reads(service: _Service) -> tuple[list, float | None]:
        metrics = service.runner.pipeline.metrics
        return service.runner.health.assigned, metrics.assigned_partitions.labels(later.topic)._value.get()

    def lag_series(service: _Service) -> set[tuple[str, str]]:
        samples = service.runner.pipeline.metrics.consumer_lag.collect()[0].samples
        return {(s.labels["topic"], s.labels["partition"]) for s in samples}

    first = _Service(later, kafka_bootstrap, tmp_path / "b" / "state")
    try:
        assert reads(first) == ([], 0)  # the series exists before any assignment
        wait_until(lambda: reads(first) == ([tp], 1), 60, what="the first replica reading the partition")
        wait_until(lambda: lag_series(first) == {(later.topic, "0")}, 30, what="the first replica's lag")
        second = _Service(earlier, kafka_bootstrap, tmp_path / "a" / "state")
        try:
            wait_until(lambda: reads(second) == ([tp], 1), 60, what="the second replica taking the partition")
            wait_until(lambda: reads(first) == ([], 0), 30, what="the first replica saying it reads nothing")
            assert lag_series(first) == set()
            wait_until(lambda: lag_series(second) == {(later.topic, "0")}, 30, what="the new owner's lag")
        finally:
            second.close()
    finally:
        first.close()
