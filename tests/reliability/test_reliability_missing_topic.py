"""Reliability: an output topic the brokers neither have nor create (Apache Kafka, ``auto.create.topics.enable=false``).

The service starts anyway (the topic may be created later), but says so: one ERROR line per missing topic at start,
naming it and the fix, and the topic listed in ``/readyz`` ``checks.delivery`` (still ready: readiness also routes
the page and the API). A batch whose dead letter cannot be produced is re-read from its last commit, committing
nothing past it (at-least-once, as before), and ``/readyz`` is 503, naming the topic and the cause; once the topic
exists the dead letter goes out, the batch is committed and ``/readyz`` answers 200 again. Before this, ``/readyz``
answered 200 throughout and only the log told.

Starts its own Apache Kafka without topic auto-creation (Tansu and the test tier's Apache Kafka create a topic a
producer names): runs in the ``--broker=apache`` pass.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from tests.reliability.harness import RunProcess, alert_records, in_process_runner, report, write_flood_setup
from tests.support.flood_story import produce_flood_story
from tests.support.kafka_topics import by_reason, create_topics, read_topic
from tests.support.service import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TOKEN = "tok-missing-topic"


@pytest.fixture(scope="module")
def strict_kafka(tmp_path_factory, broker_kind, compiled_kernels):
    """Apache Kafka that never creates a topic on its own (the kernels compiled first, as for every broker test)."""
    from tests.support.apache_kafka import ApacheKafka, skip_unless_own_broker_can_run

    skip_unless_own_broker_can_run(broker_kind, "without topic auto-creation")
    with ApacheKafka(tmp_path_factory.mktemp("kafka-strict"), auto_create_topics=False) as kafka:
        yield kafka.bootstrap


def _readyz(proc: RunProcess) -> tuple[int, dict] | None:
    try:
        status, body = proc.get("/readyz")
        return status, json.loads(body)
    except (OSError, ValueError):  # not listening yet
        return None


def test_missing_dead_letter_topic_is_logged_at_start_and_readyz_503_while_a_dead_letter_waits(strict_kafka,
                                                                                                topic_prefix,
                                                                                                tmp_path):
    bootstrap = strict_kafka
    setup = write_flood_setup(tmp_path / "run", topic_prefix, 1, extra_kafka="max_block_ms = 2000")
    dlq = f"{setup.topic}.dlq"
    create_topics(bootstrap, [setup.topic, setup.alerts_topic], partitions=1)  # not the dead-letter topic
    proc = RunProcess(setup, bootstrap, tmp_path / "state", log=tmp_path / "run.log").start()
    try:
        # connected and reading, the dead-letter topic listed as missing; ready until a record needs it
        status, doc = wait_until(lambda: (r := _readyz(proc)) and r[1]["checks"]["partitions"]["ok"] and r, 120,
                                 what="the partition assigned", alive=proc.check_alive)
        assert status == 200 and doc["ready"] is True, doc
        delivery = doc["checks"]["delivery"]
        assert delivery["ok"] is True and list(delivery["missing_topics"]) == [dlq], delivery
        assert "does not exist" in delivery["missing_topics"][dlq] and "create it" in delivery["missing_topics"][dlq]
        start_errors = [line for line in proc.tail(100_000).splitlines()
                        if " ERROR " in line and "stadtwacht.runner" in line and "output topic" in line]
        assert len(start_errors) == 1 and dlq in start_errors[0] and "create it" in start_errors[0], start_errors
        assert setup.alerts_topic not in start_errors[0]

        produce_flood_story(bootstrap, setup.topic)
        produced = time.monotonic()

        # the dead letter cannot be produced: /readyz names the topic and the cause; the alert event went out first
        status, doc = wait_until(lambda: (r := _readyz(proc)) and r[1]["checks"]["delivery"]["last_error"] and r, 60,
                                 what="the failed delivery on /readyz", alive=proc.check_alive)
        failed_s = time.monotonic() - produced
        delivery = doc["checks"]["delivery"]
        assert status == 503 and delivery["failing_topics"] == [dlq], delivery
        assert f"cannot produce to {dlq}" in delivery["last_error"], delivery
        assert "Failed to update metadata after 2.0 secs" in delivery["last_error"], delivery
        assert [r["event"] for r in alert_records(bootstrap, setup.alerts_topic)] == ["firing"]
        wait_until(lambda: proc.total("stadtwacht_rereads_total", cause="delivery") >= 2, 30,
                   what="the batch re-read again and again", alive=proc.check_alive)
        while_failing = [s for s in (_readyz(proc) for _ in range(10)) if s]
        assert all(s[0] == 503 for s in while_failing), while_failing
        assert read_topic(bootstrap, dlq, timeout=2) == []  # (the read does not create it)

        create_topics(bootstrap, [dlq], partitions=1)
        created = time.monotonic()
        status, doc = wait_until(lambda: (r := _readyz(proc)) and r[0] == 200 and r, 60,
                                 what="/readyz 200 once the topic exists", alive=proc.check_alive)
        recovered_s = time.monotonic() - created
        delivery = doc["checks"]["delivery"]
        assert delivery == {"ok": True, "missing_topics": {}, "failing_topics": [], "last_error": None,
                            "last_error_age_s": None}, delivery
        assert by_reason(read_topic(bootstrap, dlq)) == {"malformed": 1}
        rereads = proc.total("stadtwacht_rereads_total", cause="delivery")
        log = proc.tail(1_000_000)
        assert f"records delivered to {dlq} again" in log
        # kafka-python logs the missing topic at ERROR with every metadata refresh (ten a second): one let through
        assert log.count(f"Topic {dlq} not found in cluster metadata") <= 2, log[-3000:]
        assert proc.stop() == 0
    finally:
        proc.kill()
    report("missing_topic", failed_on_readyz_s=round(failed_s, 1), recovered_s=round(recovered_s, 1),
           rereads=rereads, kafka_cluster_lines=log.count(f"Topic {dlq} not found in cluster metadata"))
    assert [r["event"] for r in alert_records(bootstrap, setup.alerts_topic)] == ["firing"]


def test_a_topic_missing_at_start_and_created_before_any_record_needs_it_is_noticed(strict_kafka, topic_prefix,
                                                                                   tmp_path, caplog, monkeypatch):
    """No record was sent to it: the loop asks the brokers again (every OUTPUT_RECHECK_S) and finds it."""
    from stadtwacht import runner as runner_module

    monkeypatch.setattr(runner_module, "OUTPUT_RECHECK_S", 0.5)
    caplog.set_level(logging.INFO, logger="stadtwacht.runner")
    bootstrap = strict_kafka
    setup, runner, _ = in_process_runner(bootstrap, topic_prefix, tmp_path, "kafka-python", [])
    dlq = f"{setup.topic}.dlq"
    try:
        assert list(runner.health.missing_topics) == [dlq]
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and dlq in r.getMessage()]
        for _ in range(3):
            runner.step()
        assert list(runner.health.missing_topics) == [dlq]  # still missing: asked again, still there
        create_topics(bootstrap, [dlq], partitions=1)
        wait_until(lambda: (runner.step(), not runner.health.missing_topics)[1], 30, interval=0,
                   what="the created topic noticed")
        assert any(r.getMessage() == f"output topic {dlq} takes records now" for r in caplog.records)
    finally:
        runner.close()


def test_the_api_answers_at_once_while_a_batch_waits_for_a_missing_topic(strict_kafka, topic_prefix, tmp_path):
    """A dead letter for a topic the brokers neither have nor create: every attempt's send waits ``max_block_ms``
    (10 s) for the topic's metadata. The alert API takes the lock the loop holds for its pipeline work; it must
    not wait with the send. Before, the loop sent and flushed inside that lock: the API and the page stood still
    about 10 s of every 11 (each request here waited up to 10 s)."""
    bootstrap = strict_kafka
    setup = write_flood_setup(tmp_path / "run", topic_prefix, 1, extra_kafka="max_block_ms = 10000")
    create_topics(bootstrap, [setup.topic, setup.alerts_topic], partitions=1)  # not the dead-letter topic
    proc = RunProcess(setup, bootstrap, tmp_path / "state", log=tmp_path / "run.log",
                      env={"STADTWACHT_API_TOKEN": TOKEN}).start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_until(lambda: (r := _readyz(proc)) and r[1]["checks"]["partitions"]["ok"], 120,
                   what="the partition assigned", alive=proc.check_alive)
        produce_flood_story(bootstrap, setup.topic)
        wait_until(lambda: (r := _readyz(proc)) and r[1]["checks"]["delivery"]["last_error"], 60,
                   what="the failed delivery on /readyz", alive=proc.check_alive)
        rereads = proc.total("stadtwacht_rereads_total", cause="delivery")
        # a little more than one whole attempt (1 s pause, 10 s metadata wait), wherever in it the sampling starts
        waits: list[float] = []
        end = time.monotonic() + 13
        while time.monotonic() < end:
            asked = time.monotonic()
            status, body = proc.get("/api/alerts", headers=auth, timeout=30)
            waits.append(time.monotonic() - asked)
            assert status == 200, body
            time.sleep(0.2)
        assert [(a["district"], a["level"]) for a in json.loads(body)["alerts"]] == [("mitte", 1)], body
        assert [r["event"] for r in alert_records(bootstrap, setup.alerts_topic)] == ["firing"]  # out first
        wait_until(lambda: proc.total("stadtwacht_rereads_total", cause="delivery") > rereads, 30,
                   what="the next attempt failing too", alive=proc.check_alive)  # failing all along
        assert _readyz(proc)[0] == 503
        assert max(waits) < 3.0, f"the API waited {max(waits):.1f} s (of {len(waits)} requests) for the loop"
        assert proc.stop() == 0
    finally:
        proc.kill()
    report("missing_topic_api", requests=len(waits), slowest_s=round(max(waits), 2))
