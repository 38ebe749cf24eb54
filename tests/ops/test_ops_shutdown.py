"""Graceful shutdown: SIGTERM mid-stream finishes the batch, commits, flushes the outbox and exits 0.

A producer thread keeps writing readings while the service runs, so the signal always lands mid-stream;
two gauges fire just before it, and the webhook answers slowly, so notifications are still pending.
A second run on the same group and state directory must then process only the remainder.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time

import pytest
from kafka import KafkaProducer

from alerting.recovery import open_store
from tests.ops.support import WebhookReceiver, gauge_registry, iso, ops_config
from tests.support.kafka_topics import committed_vs_end, create_topics, produce
from tests.support.service import ServiceProcess, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

MAX_POLL = 50
SHUTDOWN_DEADLINE_S = 30.0  # well inside Kubernetes' terminationGracePeriodSeconds (60)


class _Feeder(threading.Thread):
    """Writes one pm10 reading per message at a steady rate until stopped; counts what was sent."""

    def __init__(self, bootstrap: str, topic: str, rate: float = 300.0) -> None:
        super().__init__(daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.topic, self.rate = topic, rate
        self.sent = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            now = time.time()
            for _ in range(int(self.rate / 10)):
                i = self.sent
                # millisecond event times: each batch advances the event-time clock the warm-up checkpoints use
                t = now - 30 + i * 1e-3
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}+00:00"
                self.producer.send(self.topic, key=f"air-{i % 50}".encode(), value=json.dumps(
                    {"sensor_id": f"air-{i % 50}", "time": stamp, "values": {"pm10": 10.0 + i % 7},
                     "lat": 48.77 + (i % 50) * 1e-3, "lon": 9.18}).encode())
                self.sent += 1
            time.sleep(0.1)

    def finish(self) -> int:
        self.halt.set()
        self.join(10)
        self.producer.flush()
        self.producer.close()
        return self.sent


def test_sigterm_mid_stream_commits_what_was_processed_and_flushes_notifications(kafka_bootstrap, topic_prefix,
                                                                                 tmp_path):
    prefix = topic_prefix
    topics = [f"{prefix}.flood", f"{prefix}.air", f"{prefix}.community"]
    create_topics(kafka_bootstrap, topics)
    gauges = [("pegel-a", "mitte"), ("pegel-b", "nord")]
    registry = gauge_registry(tmp_path / "gauges.csv", gauges)
    state = tmp_path / "state"
    with WebhookReceiver(delay_s=1.5) as hook:  # slow: deliveries are pending when the signal comes
        config = ops_config(tmp_path / "stadtwacht.toml", prefix, hook.config_url(), max_poll_records=MAX_POLL)
        first = ServiceProcess(config, kafka_bootstrap, state, "--sensors", str(registry), env=hook.secret_env(),
                               log=tmp_path / "first.log").start()
        feeder = _Feeder(kafka_bootstrap, f"{prefix}.air")
        try:
            first.wait_ready()
            feeder.start()
            wait_for(lambda: first.total("stadtwacht_readings_accepted_total") >= 200, 30, "readings flowing",
                     first.check_alive)
            now = time.time()
            produce(kafka_bootstrap, [(f"{prefix}.flood", g, json.dumps(
                {"sensor_id": g, "time": iso(now - 20), "values": {"water_level": 380.0}}).encode())
                for g, _ in gauges])
            wait_for(lambda: first.total("stadtwacht_alert_events_total", event="firing") >= len(gauges), 30,
                     "both gauges firing", first.check_alive)
            assert first.total("stadtwacht_outbox_depth") >= 1, "no notification pending: nothing to flush"
            assert feeder.is_alive()
            signalled = time.monotonic()
            first.proc.send_signal(signal.SIGTERM)
            # the loop stops after the batch in hand; the HTTP port serves on while the outbox is flushed
            # and the consumer closed, so the last scrape holds the first run's final reading count
            last: dict[str, float] = {}
            while first.proc.poll() is None and time.monotonic() - signalled < SHUTDOWN_DEADLINE_S:
                with contextlib.suppress(OSError):  # the port closes just before the exit
                    last = {"accepted": first.total("stadtwacht_readings_accepted_total")}
                time.sleep(0.05)
            rc = first.proc.wait(timeout=max(1.0, SHUTDOWN_DEADLINE_S - (time.monotonic() - signalled)))
            took = time.monotonic() - signalled
        finally:
            total = feeder.finish() if feeder.is_alive() or feeder.sent else 0
            if first.proc.poll() is None:
                first.kill()
        log = (tmp_path / "first.log").read_text()
        assert rc == 0, log[-3000:]
        print(f"SIGTERM to exit: {took:.1f}s; first run accepted {last['accepted']:.0f} of {total} readings")
        assert "finishing the batch" in log

        # pending notifications were flushed, not left in the outbox
        store, _ = open_store(state)
        try:
            assert store.outbox_depth() == 0
            sent = len(list(store.deliveries("sent")))
        finally:
            store.close()
        assert hook.count() == sent >= 1
        # (every delivery is marked sent in the state store; the webhook got each of them once)

        # the committed offsets are exactly what the first run processed (one reading per message)
        ends = committed_vs_end(kafka_bootstrap, f"{prefix}-group", topics)
        committed_air = sum(c for (t, _), (c, _) in ends.items() if t == f"{prefix}.air")
        assert committed_air == last["accepted"] - len(gauges)
        assert committed_air < total, "the signal did not land mid-stream"

        # a second run processes the remainder; the warm-up re-reads at most the last batch per partition
        second = ServiceProcess(config, kafka_bootstrap, state, "--sensors", str(registry), env=hook.secret_env(),
                                log=tmp_path / "second.log").start()
        try:
            second.wait_ready()
            try:
                wait_for(lambda: second.total("stadtwacht_readings_accepted_total") >= total - committed_air
                         and second.total("stadtwacht_consumer_lag") == 0, 60, "the second run caught up",
                         second.check_alive)
            except AssertionError as e:
                raise AssertionError(f"{e}: accepted {second.total('stadtwacht_readings_accepted_total')}, "
                                     f"remainder {total - committed_air}, "
                                     f"lag {second.total('stadtwacht_consumer_lag')}") from None
            wait_for(lambda: all(c == e for c, e in committed_vs_end(kafka_bootstrap, f"{prefix}-group",
                                                                     topics).values()),
                     30, "offsets committed to the end", second.check_alive)
            again = second.total("stadtwacht_readings_accepted_total", quantity="pm10")
            notified_again = hook.count() - sent
        finally:
            assert second.stop() == 0
        remainder = total - committed_air
        partitions = len([1 for (t, _) in ends if t == f"{prefix}.air"])
        print(f"second run: remainder {remainder}, accepted {again:.0f}")
        assert remainder <= again <= remainder + MAX_POLL * partitions
        assert notified_again == 0, "the restart re-notified alerts already sent"
