"""Both consumer backends (kafka-python, confluent-kafka) run the same scenarios against a real broker.

Readings consumed and decoded, dead letters written, offsets committed with metadata and read back (by
the other client too), a restart resuming from the commit, a warm-up seek, lag from the high watermark,
and a whole Runner firing an alert. Runs on the session broker: Tansu by default, Apache Kafka with
``--broker=apache``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from ingest.config import IngestConfig, KafkaConfig, validate
from ingest.decode import RawMessage, ReadingDecoder
from ingest.kafka_io import DeadLetterSink, GroupConsumer, flush_delivered, make_producer, open_consumer
from ingest.sensor_index import SensorIndex
from tests.support.kafka_topics import by_reason, create_topics, producer, read_topic
from tests.support.service import wait_until

REPO = Path(__file__).resolve().parents[2]
NOW = time.time()
PARTITIONS = 2


def _needs(client: str) -> None:
    if client == "confluent":
        pytest.importorskip("confluent_kafka", reason="confluent-kafka not installed "
                            "(pip install stadtwacht[confluent]); only the kafka-python backend is tested")


CLIENTS = [pytest.param("kafka-python", id="kafka-python"), pytest.param("confluent", id="confluent")]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def _reading(sensor: str, t: float, value: float) -> dict:
    return {"sensor_id": sensor, "time": _iso(t), "values": {"pm10": value}, "lat": 48.78, "lon": 9.18}


def _produce(bootstrap: str, topic: str, per_partition: list[list[bytes]]) -> None:
    prod = producer(bootstrap)
    try:
        for p, values in enumerate(per_partition):
            for v in values:
                prod.send(topic, key=b"k", value=v, partition=p)
        prod.flush()
    finally:
        prod.close()


def _drain(consumer: GroupConsumer, want: int, timeout: float = 30.0) -> list[RawMessage]:
    got: list[RawMessage] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += consumer.poll(timeout_ms=300)
    assert len(got) == want, f"consumed {len(got)} of {want} messages"
    return got


def _join_answered_between_polls(consumer: GroupConsumer) -> None:
    """Send a JoinGroup with a poll that returns at once, then wait, not polling, until it is answered."""
    coordinator = consumer._consumer._coordinator

    def answered_between_polls() -> bool:
        task = coordinator._join_task
        if task is None or task.failed():
            consumer.poll(timeout_ms=0)  # (re)sends the JoinGroup and returns before the answer
            return False
        return task.succeeded()
    wait_until(answered_between_polls, 30, interval=0.01, what="a join answered between two polls")


def _kafka_cfg(client: str, group: str, **kw) -> KafkaConfig:
    return KafkaConfig(client=client, group_id=group, session_timeout_ms=6000, heartbeat_interval_ms=1000,
                       poll_timeout_ms=300, **kw)


def _next_offsets(msgs: list[RawMessage]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for m in msgs:
        out[(m.topic, m.partition)] = max(out.get((m.topic, m.partition), 0), m.offset + 1)
    return out


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
def test_consume_dead_letter_commit_restart_lag(client, kafka_bootstrap, topic_prefix, broker_kind):
    _needs(client)
    topic, group = f"{topic_prefix}.air", f"{topic_prefix}-group"
    create_topics(kafka_bootstrap, [topic, topic + ".dlq"], partitions=PARTITIONS)
    # partition 0: 30 single readings and two bad messages; partition 1: 10 arrays of 5 readings
    part0 = [json.dumps(_reading(f"s{i % 7}", NOW - 600 + i, float(i))).encode() for i in range(30)]
    part0 += [b"not json at all", json.dumps(_reading("s1", NOW - 60, -5.0)).encode()]
    part1 = [json.dumps([_reading(f"a{j}", NOW - 300 + b, 10.0 + j) for j in range(5)]).encode() for b in range(10)]
    _produce(kafka_bootstrap, topic, [part0, part1])
    ends = {(topic, 0): len(part0), (topic, 1): len(part1)}

    # 1. a small poll size leaves the partitions behind: lag is highwater - position wherever it is known
    assigned: list[tuple[str, int]] = []
    cfg = _kafka_cfg(client, group, max_poll_records=4)
    consumer = open_consumer(cfg, kafka_bootstrap, [topic], on_assign=assigned.extend)
    try:
        first = wait_until(lambda: consumer.poll(timeout_ms=300), 30, interval=0, what="a first batch")
        assert len(first) <= 4
        assert sorted(assigned) == sorted(ends) == consumer.assignment()
        assert consumer.partition_count(topic) == PARTITIONS  # the runner's "do I see every partition"
        assert consumer.partition_count(f"{topic_prefix}.missing") == 0
        lag = consumer.lag()
        assert lag, "no high watermark known after a fetch"
        for tp, behind in lag.items():
            assert behind == ends[tp] - consumer.position(tp)
        assert sum(lag.values()) > 0
        got = first + _drain(consumer, len(part0) + len(part1) - len(first))
        assert consumer.lag() == {tp: 0 for tp in ends}
        # every record exactly once, in order per partition
        for tp, end in ends.items():
            assert [m.offset for m in got if (m.topic, m.partition) == tp] == list(range(end))

        # 2. decode and dead-letter through the (kafka-python) producer
        decoded = ReadingDecoder(SensorIndex()).decode(got)
        assert len(decoded.batch) == 30 + 50
        prod = make_producer(cfg, kafka_bootstrap)
        try:
            flush_delivered(prod, DeadLetterSink(prod, cfg.dlq_suffix).send(decoded.dead))
        finally:
            prod.close()
        assert by_reason(read_topic(kafka_bootstrap, topic + ".dlq", expect=2)) == {"malformed": 1,
                                                                                   "out_of_range": 1}

        # 3. commit with metadata; read it back with this client and with kafka-python
        nxt = _next_offsets(got)
        assert nxt == ends
        consumer.commit(nxt, {tp: f"warm={off - 3}" for tp, off in nxt.items()})
        for tp, off in nxt.items():
            committed, meta = consumer.committed(tp)
            assert committed == off
            if broker_kind == "tansu":  # Tansu drops commit metadata (the runner keeps a local copy)
                assert meta in ("", f"warm={off - 3}")
            else:
                assert meta == f"warm={off - 3}"
    finally:
        consumer.close()
    probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert {tp: probe.committed(TopicPartition(*tp)) for tp in ends} == ends
    finally:
        probe.close()

    # 4. restart: resumes at the commit; a warm-up seek re-reads the partition's last three
    _produce(kafka_bootstrap, topic, [[json.dumps(_reading("s9", NOW - 5, 1.0)).encode()] * 2, []])
    assigned.clear()
    consumer = open_consumer(_kafka_cfg(client, group), kafka_bootstrap, [topic], on_assign=assigned.extend)
    try:
        resumed = wait_until(lambda: consumer.poll(timeout_ms=300), 30, interval=0, what="the resumed batch")
        assert [(m.partition, m.offset) for m in resumed] == [(0, ends[(topic, 0)]), (0, ends[(topic, 0)] + 1)]
        tp0 = (topic, 0)
        consumer.seek(tp0, ends[tp0] - 3)
        assert consumer.position(tp0) == ends[tp0] - 3
        again = _drain(consumer, 5)
        assert [m.offset for m in again] == list(range(ends[tp0] - 3, ends[tp0] + 2))
        assert consumer.position(tp0) == ends[tp0] + 2
        assert consumer.lag().get(tp0) == 0
        assert consumer.connected()
    finally:
        consumer.close()


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
def test_runner_on_either_client_fires_and_commits(client, kafka_bootstrap, topic_prefix, tmp_path):
    """The whole Kafka loop (config key -> runner -> consumer): one high gauge reading fires one alert."""
    _needs(client)
    from tests.reliability.harness import alert_records, in_process_runner, reading

    t0 = time.time_ns() - 600 * 10**9
    setup, runner, _ = in_process_runner(kafka_bootstrap, topic_prefix, tmp_path, client,
                                         [reading("pegel-0", t0, 300.0), reading("pegel-0", t0 + 10**9, 500.0)])
    try:
        assert type(runner.consumer).__module__ == ("ingest.kafka_confluent" if client == "confluent"
                                                    else "ingest.kafka_io")
        handled = 0
        deadline = time.monotonic() + 30
        while handled < 2 and time.monotonic() < deadline:
            handled += runner.step()
        assert handled == 2
        assert runner.consumer.committed((setup.topic, 0))[0] == 2
    finally:
        runner.close()
    recs = wait_until(lambda: alert_records(kafka_bootstrap, setup.alerts_topic), 30, interval=1,
                      what="the firing record")
    assert [(r["event"], r["districts"]) for r in recs] == [("firing", ["mitte"])]


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
def test_a_broker_request_failing_while_partitions_are_set_up_is_retried(client, kafka_bootstrap, topic_prefix,
                                                                        tmp_path):
    """A ListOffsets and a committed-offset request failing once while the runner sets up its new partitions
    (as on a busy broker): the next round sets them up again, so the district partition is watched and the
    polled readings are read again, not skipped; the alert fires."""
    _needs(client)
    from kafka.errors import KafkaTimeoutError

    from tests.reliability.harness import alert_records, in_process_runner, reading

    t0 = time.time_ns() - 600 * 10**9
    setup, runner, _ = in_process_runner(kafka_bootstrap, topic_prefix, tmp_path, client,
                                         [reading("pegel-0", t0, 300.0), reading("pegel-0", t0 + 10**9, 500.0)],
                                         district_topic=True)
    failed: list[str] = []
    committed = runner.consumer.committed

    def failing_once(name: str):
        real = getattr(runner.consumer, name)

        def call(*args, **kwargs):
            if name not in failed:
                failed.append(name)
                raise KafkaTimeoutError(f"{name}: injected timeout")
            return real(*args, **kwargs)
        return call

    for name in ("beginning_offset", "committed"):
        setattr(runner.consumer, name, failing_once(name))
    try:
        deadline = time.monotonic() + 40
        while not runner.pipeline.alerts.active_records() and time.monotonic() < deadline:
            runner.step()
        assert failed == ["beginning_offset", "committed"]
        assert committed((setup.topic, 0))[0] == 2
        assert runner.health.assigned == runner.consumer.assignment()
        assert runner.pipeline.watched_districts == set(runner.pipeline.layer.ids)
    finally:
        runner.close()
    recs = wait_until(lambda: alert_records(kafka_bootstrap, setup.alerts_topic), 30, interval=1,
                      what="the firing record")
    assert [(r["event"], r["districts"]) for r in recs] == [("firing", ["mitte"])]


@pytest.mark.broker
@pytest.mark.slow
def test_mixed_group_shares_partitions_and_rebalances(kafka_bootstrap, topic_prefix):
    """A kafka-python and a confluent member share one group (a rolling switch of clients): disjoint
    assignments covering every partition, each message read once, and a member leaving hands its
    partitions over with revoke/assign noted on both sides."""
    _needs("confluent")
    topic, group = f"{topic_prefix}.air", f"{topic_prefix}-group"
    create_topics(kafka_bootstrap, [topic], partitions=PARTITIONS)
    notes: dict[str, list] = {"kafka-python": [], "confluent": []}
    members = {}
    for client in notes:
        members[client] = open_consumer(
            _kafka_cfg(client, group), kafka_bootstrap, [topic],
            on_assign=lambda tps, c=client: notes[c].append(("assigned", sorted(tps))),
            on_revoke=lambda tps, c=client: notes[c].append(("revoked", sorted(tps))))
    got: dict[str, list[RawMessage]] = {c: [] for c in members}
    try:
        def settled():
            for c, m in members.items():
                got[c] += m.poll(timeout_ms=200)
            parts = [m.assignment() for m in members.values()]
            return all(len(p) == 1 for p in parts) and sorted(parts[0] + parts[1]) == [(topic, 0), (topic, 1)]
        wait_until(settled, 60, interval=0, what="one partition per member")
        values = [json.dumps(_reading("m1", NOW - 60 + i, 1.0)).encode() for i in range(10)]
        _produce(kafka_bootstrap, topic, [values, values])  # after the group settled: each reads its own
        wait_until(lambda: settled() and sum(map(len, got.values())) >= 20, 30, interval=0, what="every message")
        for c, m in members.items():
            ((tp,),) = [m.assignment()]
            assert {(x.topic, x.partition) for x in got[c]} <= {tp}
            m.commit({tp: 10})
        seen = [(x.partition, x.offset) for msgs in got.values() for x in msgs]
        assert sorted(seen) == [(p, o) for p in range(PARTITIONS) for o in range(10)]
        members.pop("confluent").close()
        assert any(n[0] == "revoked" for n in notes["confluent"])
        survivor = members["kafka-python"]
        wait_until(lambda: survivor.poll(timeout_ms=200) == [] and len(survivor.assignment()) == 2, 60,
                   interval=0, what="the survivor taking both partitions")
        assert notes["kafka-python"][-1] == ("assigned", [(topic, 0), (topic, 1)])
        assert {tp: survivor.committed(tp)[0] for tp in survivor.assignment()} == {(topic, 0): 10, (topic, 1): 10}
    finally:
        for m in members.values():
            m.close()


@pytest.mark.broker
@pytest.mark.parametrize("client", CLIENTS)
def test_rebuild_end_is_the_first_fetched_high_watermark_after_a_seek(client, kafka_bootstrap, topic_prefix):
    """What the district stage rebuilds by: beginning_offset, seek, then highwater from a fetch answer after
    the seek (never before it: librdkafka caches the last one for the client's life), empty partitions too."""
    _needs(client)
    topic = f"{topic_prefix}.districts"
    create_topics(kafka_bootstrap, [topic], partitions=PARTITIONS)
    tps = [(topic, 0), (topic, 1)]
    _produce(kafka_bootstrap, topic, [[b"{}"] * 13, []])
    cfg = _kafka_cfg(client, f"{topic_prefix}-group", max_poll_records=5, district_topic=topic)  # (end events)
    consumer = open_consumer(cfg, kafka_bootstrap, [topic])
    try:
        wait_until(lambda: (consumer.poll(timeout_ms=200), consumer.assignment() == tps)[1], 30, interval=0,
                   what="the assignment")
        if client == "confluent":  # the hard case: the empty partition's end was reported before the seek
            wait_until(lambda: (consumer.poll(timeout_ms=200), tps[1] in consumer._eof)[1], 30, interval=0,
                       what="librdkafka's end-of-partition event of the empty partition")
        for want in ([13, 0], [17, 3]):
            for tp in tps:
                consumer.seek(tp, consumer.beginning_offset(tp))
            assert [consumer.beginning_offset(tp) for tp in tps] == [0, 0]
            if client == "confluent":  # nothing fetched since the seek (kafka-python: where nothing moved)
                assert [consumer.highwater(tp) for tp in tps] == [None, None]
            else:
                assert consumer.highwater(tps[0]) is None
            wait_until(lambda: (consumer.poll(timeout_ms=200), None not in [consumer.highwater(tp) for tp in tps])[1],
                       30, interval=0, what=f"a fetch answer for both partitions (want {want})")
            if client == "kafka-python" and want[1]:
                # the empty partition's seek moved nothing, so kafka-python kept its last high watermark (0): a
                # fetch answer for it may come after the other one's (CI on Apache Kafka, once), so wait for it
                # (a partition the stage rebuilds is newly assigned: kafka-python starts it with none)
                wait_until(lambda: (consumer.poll(timeout_ms=200), consumer.highwater(tps[1]) != 0)[1], 30,
                           interval=0, what="a fetch answer for the empty partition after the produce")
            assert [consumer.highwater(tp) for tp in tps] == want
            _produce(kafka_bootstrap, topic, [[b"{}"] * 4, [b"{}"] * 3])  # the cached 13 and 0 are stale now
    finally:
        consumer.close()


@pytest.mark.broker
@pytest.mark.parametrize("client", CLIENTS)
def test_a_poll_returns_what_arrived_without_waiting_out_its_timeout(client, kafka_bootstrap, topic_prefix):
    """A reading at a sensor's pace is handed over as soon as it is fetched, not when a full batch (or the poll
    timeout) is reached: librdkafka's consume(n, timeout) waits for n messages, which held every reading of
    the confluent backend for the whole poll timeout."""
    _needs(client)
    topic = f"{topic_prefix}.air"
    create_topics(kafka_bootstrap, [topic], partitions=PARTITIONS)
    consumer = open_consumer(_kafka_cfg(client, f"{topic_prefix}-group", max_poll_records=500), kafka_bootstrap,
                             [topic])
    try:
        wait_until(lambda: (consumer.poll(timeout_ms=200), len(consumer.assignment()) == PARTITIONS)[1], 30,
                   interval=0, what="the assignment")
        for k in range(3):
            _produce(kafka_bootstrap, topic, [[json.dumps(_reading("air-1", time.time(), 10.0 + k)).encode()], []])
            started = time.monotonic()
            got = consumer.poll(timeout_ms=60_000)
            # a poll that waited for its batch to fill would take the whole minute; fetching takes milliseconds
            assert len(got) == 1 and time.monotonic() - started < 30, (k, len(got), time.monotonic() - started)
    finally:
        consumer.close()


@pytest.mark.parametrize(("client", "district_topic", "problem"), [
    ("kafka-python", "", None),
    ("confluent", "", None),
    ("librdkafka", "", "must be 'kafka-python' or 'confluent'"),
    ("confluent", "districts", None),
    ("kafka-python", "districts", None),
])
def test_client_key_validation(client, district_topic, problem):
    if client == "confluent":
        _needs(client)
    found = [m for k, m in validate(KafkaConfig(client=client, district_topic=district_topic), IngestConfig())
             if k == "kafka.client"]
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and problem in found[0]


def test_confluent_missing_names_the_extra():
    """Without the package, both the config check and the backend name ``pip install stadtwacht[confluent]``."""
    code = """
import sys
sys.modules["confluent_kafka"] = None  # as if not installed
from ingest.config import IngestConfig, KafkaConfig, validate
from ingest.kafka_io import KafkaIOError, open_consumer
print([m for k, m in validate(KafkaConfig(client="confluent"), IngestConfig()) if k == "kafka.client"])
try:
    open_consumer(KafkaConfig(client="confluent"), "127.0.0.1:1", ["t"])
except KafkaIOError as e:
    print("raised:", e)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all("pip install stadtwacht[confluent]" in line for line in lines), out.stdout
    assert lines[1].startswith("raised:")


@pytest.mark.parametrize(("what", "code", "commit_failed"), [
    ("commit", "REBALANCE_IN_PROGRESS", True),
    ("commit", "ILLEGAL_GENERATION", True),
    ("commit", "UNKNOWN_MEMBER_ID", True),
    ("commit", "_TRANSPORT", False),
    ("poll", "ILLEGAL_GENERATION", False),
])
def test_confluent_errors_reach_the_runner_as_kafka_python_errors(what, code, commit_failed):
    """The runner catches kafka-python's KafkaError / CommitFailedError: librdkafka errors are raised as those."""
    _needs("confluent")
    import confluent_kafka as ck
    from kafka.errors import CommitFailedError, KafkaError

    from ingest.kafka_confluent import ConfluentConsumerError, _raise
    from ingest.kafka_io import KafkaIOError

    with pytest.raises(ConfluentConsumerError) as info:
        _raise(what, ck.KafkaException(ck.KafkaError(getattr(ck.KafkaError, code))))
    assert isinstance(info.value, KafkaError) and isinstance(info.value, KafkaIOError)
    assert isinstance(info.value, CommitFailedError) is commit_failed
    assert info.value.code == code


@pytest.mark.broker
def test_kafka_python_poll_leaves_the_next_fetch_under_way(kafka_bootstrap, topic_prefix):
    """A poll that returns records has already asked for the next ones (kafka-python 3.0 alone would wait
    for the next poll, so every poll waited a whole fetch round trip); records still arrive once, in order."""
    topic = f"{topic_prefix}.air"
    create_topics(kafka_bootstrap, [topic], partitions=1)
    _produce(kafka_bootstrap, topic, [[json.dumps(_reading("f1", NOW - 60 + i, 1.0)).encode() for i in range(40)]])
    consumer = open_consumer(_kafka_cfg("kafka-python", f"{topic_prefix}-group", fetch_max_wait_ms=2000),
                             kafka_bootstrap, [topic])
    try:
        got = wait_until(lambda: consumer.poll(timeout_ms=300), 30, interval=0, what="a first batch")
        fetcher = consumer._consumer._fetcher
        assert fetcher._nodes_with_pending_fetch_requests or fetcher._completed_fetches, \
            "no fetch under way after a poll that returned records"
        got += _drain(consumer, 40 - len(got))
        assert [m.offset for m in got] == list(range(40))
    finally:
        consumer.close()


@pytest.mark.broker
def test_kafka_python_keeps_a_join_answered_between_polls(kafka_bootstrap, topic_prefix, caplog):
    """A JoinGroup/SyncGroup answered while the application was not polling is kept (kafka-python 3.0.12
    alone throws it away and joins again: another half session timeout on Tansu, and on a real group a
    rebalance of every member); the member joins once."""
    topic = f"{topic_prefix}.air"
    create_topics(kafka_bootstrap, [topic], partitions=PARTITIONS)
    caplog.set_level(logging.INFO, logger="kafka.coordinator")
    consumer = open_consumer(_kafka_cfg("kafka-python", f"{topic_prefix}-group"), kafka_bootstrap, [topic])
    try:  # the leader must see the new topic's partitions, or it rightly joins again once it does
        wait_until(lambda: consumer._consumer.partitions_for_topic(topic) == {0, 1}, 30, what="the topic's metadata")

        _join_answered_between_polls(consumer)
        assert consumer.assignment() == []
        wait_until(lambda: (consumer.poll(timeout_ms=100), consumer.assignment())[1], 30, interval=0,
                   what="the assignment")
        joins = [r for r in caplog.records if r.getMessage().startswith("Successfully joined group")]
        assert len(joins) == 1, "\n".join(r.getMessage() for r in caplog.records)
        assert sorted(consumer.assignment()) == [(topic, 0), (topic, 1)]
    finally:
        consumer.close()


@pytest.mark.broker
def test_kafka_python_leader_collects_a_join_its_metadata_started(kafka_bootstrap, topic_prefix, broker_kind):
    """The service subscribed before its topic existed: the leader assigned nothing, the topic appears, and
    the join that its metadata started is answered between two polls. kafka-python 3.0.12 alone never
    collects that join (the leader's own assignment made its "metadata changed" check false again):
    heartbeats stay off, the member drops out of the group and reads nothing, without an error."""
    if broker_kind != "apache":
        pytest.skip("Tansu creates a topic as soon as a metadata request names it (auto-creation off or not), so "
                    "the leader never assigns without it: runs on Apache Kafka")
    topic = f"{topic_prefix}.late"
    consumer = open_consumer(_kafka_cfg("kafka-python", f"{topic_prefix}-group"), kafka_bootstrap, [topic])
    coordinator = consumer._consumer._coordinator
    try:
        wait_until(lambda: (consumer.poll(timeout_ms=100), coordinator._assignment_snapshot is not None)[1], 30,
                   interval=0, what="a first assignment (of nothing)")
        assert consumer.assignment() == []
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:  # the service's consumer never creates an input topic (the test broker would)
            assert topic not in admin.list_topics()
        finally:
            admin.close()
        create_topics(kafka_bootstrap, [topic], partitions=PARTITIONS)
        wait_until(lambda: coordinator._metadata_snapshot.get(topic), 30, interval=0.05,
                   what="the leader seeing the topic's partitions")

        _join_answered_between_polls(consumer)
        parts = sorted((topic, p) for p in coordinator._metadata_snapshot[topic])
        wait_until(lambda: (consumer.poll(timeout_ms=100), sorted(consumer.assignment()) == parts)[1], 30,
                   interval=0, what=f"the assignment {parts}")
        _produce(kafka_bootstrap, topic, [[b"{}"] * 3 for _ in parts])
        got = _drain(consumer, 3 * len(parts))
        assert len(got) == 3 * len(parts)
    finally:
        consumer.close()
