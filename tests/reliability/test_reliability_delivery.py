"""Reliability: records the broker did not acknowledge are produced again, never lost and never fatal.

kafka-python's ``flush`` only logs a batch that failed (its delivery timeout passed in a broker outage, or the
broker refused it), so a dead letter, a district record or an alert event could vanish while the offsets of the
readings behind it were committed. Here the first record sent to each of the dead-letter, district and alerts
topics fails; the runner must re-read from its last commit and end with every record on its topic (the alert
event once, the dead letter at least once), the alert fired once, everything committed.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from tests.integration.test_consumer_backends import CLIENTS, _needs
from tests.reliability.harness import alert_records, in_process_runner
from tests.support.flood_story import flood_story, produce_flood_story
from tests.support.kafka_topics import by_reason, read_topic
from tests.support.service import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("how", ["future", "raise"])
def test_records_not_acknowledged_are_produced_again_and_their_batch_re_read(client, how, kafka_bootstrap,
                                                                            topic_prefix, tmp_path, caplog):
    """how: the send's future fails (a delivery that gave up), or the send raises (the producer's metadata wait
    for the topic timed out, as when the topic is missing and the broker does not create topics)."""
    _needs(client)
    dlq, districts = f"{topic_prefix}.flood.dlq", f"{topic_prefix}.districts"
    setup, runner, registry = in_process_runner(kafka_bootstrap, topic_prefix, tmp_path, client, flood_story(),
                                                district_topic=True, more_topics=(dlq,))
    committed = runner.consumer.committed
    send = runner.producer.send
    failed: list[str] = []

    def first_send_per_topic_fails(topic, *args, **kwargs):
        if topic not in failed:
            failed.append(topic)
            error = KafkaTimeoutError(f"{topic}: injected delivery timeout")
            if how == "raise":
                raise error
            return Future().failure(error)
        return send(topic, *args, **kwargs)

    runner.producer.send = first_send_per_topic_fails
    caplog.set_level(logging.ERROR, logger="stadtwacht.runner")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                committed((setup.topic, 0))[0] == 3 and runner.pipeline.alerts.active_records()
                and not runner.pipeline.alerts.unpublished()[1]):
            runner.step()
        assert sorted(failed) == sorted([dlq, districts, setup.alerts_topic])
        assert committed((setup.topic, 0))[0] == 3
    finally:
        runner.close()
    rereads = [r.getMessage() for r in caplog.records if "re-reading" in r.getMessage()]
    assert len(rereads) == 3 and all("injected delivery timeout" in m for m in rereads), rereads
    if how == "raise":  # the log names the topic the producer could not send to
        assert [m.split("cannot produce to ", 1)[1].split(":")[0] for m in rereads] == failed
    assert registry.get_sample_value("stadtwacht_rereads_total", {"cause": "delivery"}) == 3
    # at least once: the round that failed on the district record had sent the dead letter already
    letters = by_reason(read_topic(kafka_bootstrap, dlq))  # all flushed: read to the end
    assert list(letters) == ["malformed"] and letters["malformed"] in (1, 2), letters
    records = alert_records(kafka_bootstrap, setup.alerts_topic)
    assert [(r["event"], r["districts"], r["seq"]) for r in records] == [("firing", ["mitte"], 1)]


def test_stopping_while_records_are_not_acknowledged_is_clean(kafka_bootstrap, topic_prefix, tmp_path, caplog):
    """A stop during a broker outage: the last flush times out; close says so and still closes the consumer
    (it raised out of the shutdown before)."""
    _, runner, _ = in_process_runner(kafka_bootstrap, topic_prefix, tmp_path, "kafka-python", [])
    real_flush = runner.producer.flush

    def timing_out(timeout=None):
        real_flush(timeout=timeout)
        raise KafkaTimeoutError("Timeout waiting for future")

    runner.producer.flush = timing_out
    caplog.set_level(logging.WARNING, logger="stadtwacht.runner")
    try:
        runner.close()
    finally:
        runner.producer.flush = real_flush  # the producer's __del__ closes it again
    assert runner.consumer._consumer._closed
    assert any("stopping with records not acknowledged" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("how", ["future", "raise"])
def test_readyz_names_the_topic_records_are_not_delivered_to_until_they_are(how, kafka_bootstrap, topic_prefix,
                                                                           tmp_path, caplog):
    """/readyz answers 503 while a batch's records cannot be delivered, with the topic and the cause in
    ``checks.delivery``, and 200 again once they are (before: 200 throughout, only the log told)."""
    from stadtwacht.app import Service
    from stadtwacht.config import load_config
    from tests.reliability.harness import write_flood_setup
    from tests.support.kafka_topics import create_topics

    setup = write_flood_setup(tmp_path / "run", topic_prefix, 1)
    dlq = f"{setup.topic}.dlq"
    create_topics(kafka_bootstrap, [setup.topic, setup.alerts_topic, dlq], partitions=1)
    produce_flood_story(kafka_bootstrap, setup.topic)
    cfg, problems = load_config(setup.config)
    assert not problems
    service = Service(cfg, kafka_bootstrap, tmp_path / "state", port=0, sensors=str(setup.registry))
    service.http.start()

    def readyz() -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{service.http.port}/readyz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    runner = service.runner
    runner.connect()
    send = runner.producer.send
    blocked = {dlq}

    def dead_letters_fail(topic, *args, **kwargs):
        if topic in blocked:
            error = KafkaTimeoutError("Failed to update metadata after 2.0 secs.")
            if how == "raise":
                raise error
            return Future().failure(error)
        return send(topic, *args, **kwargs)

    runner.producer.send = dead_letters_fail
    caplog.set_level(logging.INFO, logger="stadtwacht.runner")
    committed = runner.consumer.committed
    try:
        wait_until(lambda: (runner.step(), any("re-reading" in r.getMessage() for r in caplog.records))[1], 60,
                   interval=0, what="a batch whose dead letter was not delivered")
        status, doc = readyz()
        assert status == 503 and doc["ready"] is False, doc
        assert doc["checks"]["broker"]["ok"] is True and doc["checks"]["partitions"]["ok"] is True, doc
        delivery = doc["checks"]["delivery"]
        assert delivery["ok"] is False and delivery["failing_topics"] == [dlq], delivery
        assert "Failed to update metadata after 2.0 secs" in delivery["last_error"], delivery
        if how == "raise":
            assert delivery["last_error"].startswith(f"cannot produce to {dlq}: "), delivery
        assert committed((setup.topic, 0))[0] is None  # nothing committed past the batch
        for _ in range(3):  # still failing: still not ready (the alert events still went out)
            runner.step()
            assert readyz()[0] == 503
        blocked.clear()
        wait_until(lambda: (runner.step(), committed((setup.topic, 0))[0] == 3)[1], 60, interval=0,
                   what="the batch delivered and committed")
        status, doc = readyz()
        assert status == 200 and doc["ready"] is True, doc
        assert doc["checks"]["delivery"] == {"ok": True, "missing_topics": {}, "failing_topics": [],
                                             "last_error": None, "last_error_age_s": None}
    finally:
        runner.close()
        service.http.stop()
        service._state_lock.close()
    assert any(r.getMessage() == f"records delivered to {dlq} again" for r in caplog.records)
    letters = by_reason(read_topic(kafka_bootstrap, dlq))
    assert letters == {"malformed": 1}, letters
    assert [r["event"] for r in alert_records(kafka_bootstrap, setup.alerts_topic)] == ["firing"]
