"""Broker outage: the pipeline is cut from its broker by a proxy for 30 s mid-stream (5 min with
STADTWACHT_OUTAGE_SECONDS=300); nothing is lost, the lag drains, /readyz and stadtwacht_broker_up show it.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time

import pytest

from stadtwacht.broker import EmbeddedBroker, free_port
from stadtwacht.district_stage import SILENCE_KEY
from tests.reliability.harness import RunProcess, reading, report, write_flood_setup
from tests.reliability.proxy import TcpProxy
from tests.support.kafka_topics import create_topics, producer, read_topic
from tests.support.service import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RATE = 40  # readings per second


def test_broker_outage_loses_nothing_and_shows_in_readyz_and_metrics(tmp_path, topic_prefix, broker_kind):
    if broker_kind == "apache":
        pytest.skip("uses its own Tansu broker behind the proxy (runs in the Tansu pass)")
    outage_s = float(os.environ.get("STADTWACHT_OUTAGE_SECONDS", "30"))
    broker_port = free_port()
    proxy = TcpProxy(broker_port, spare_pid=os.getpid())
    broker = EmbeddedBroker(port=broker_port, advertised_port=proxy.port, log_path=tmp_path / "tansu.log").start()
    bootstrap = f"127.0.0.1:{proxy.port}"
    setup = write_flood_setup(tmp_path, topic_prefix, 2, n_air=40)
    create_topics(bootstrap, [setup.topic, setup.alerts_topic, setup.topic + ".dlq"], partitions=2)
    proc = RunProcess(setup, bootstrap, tmp_path / "state").start()
    samples: list[tuple[float, float, int, bool | None, float]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.is_set():
            try:
                up = proc.total("stadtwacht_broker_up")
                status, body = proc.get("/readyz")
                broker_ok = json.loads(body)["checks"]["broker"]["ok"]
                lag = proc.total("stadtwacht_consumer_lag")
                samples.append((time.monotonic(), up, status, broker_ok, lag))
            except (OSError, ValueError, KeyError):
                pass
            stop_sampling.wait(0.5)

    sensors = [f"luft-{i}" for i in range(40)]
    prod = producer(bootstrap)
    produced = 0
    try:
        proc.wait_ready()
        threading.Thread(target=sample, daemon=True).start()
        t0 = time.time_ns() - 3600 * 10**9
        start = time.monotonic()
        cut_at = start + 10
        restore_at = cut_at + outage_s
        end_at = restore_at + 10
        cut_done = restored = False
        tick = 0
        while time.monotonic() < end_at:
            now = time.monotonic()
            if not cut_done and now >= cut_at:
                proxy.cut()
                cut_done, cut_mono = True, now
            if cut_done and not restored and now >= restore_at:
                proxy.restore()
                restored, restore_mono = True, now
            for j in range(RATE // 4):
                sensor = sensors[(tick * (RATE // 4) + j) % len(sensors)]
                prod.send(setup.topic, key=sensor.encode(),
                          value=reading(sensor, t0 + tick * 250_000_000, 20.0, "pm10"))
                produced += 1
            tick += 1
            time.sleep(0.25)
        prod.flush()
        produced_at = time.monotonic()

        def drained() -> bool:
            accepted = proc.total("stadtwacht_readings_accepted_total")
            dead = proc.total("stadtwacht_dead_letter_readings_total")
            lag = proc.total("stadtwacht_consumer_lag")
            return accepted + dead == produced and lag == 0

        wait_until(drained, 120, interval=0.5, what="the lag to drain")
        drain_s = time.monotonic() - restore_mono
        after_stream_s = time.monotonic() - produced_at
        wait_until(lambda: proc.get("/readyz")[0] == 200, 60, what="/readyz 200 again")
        time.sleep(1.0)
        stop_sampling.set()
        accepted = proc.total("stadtwacht_readings_accepted_total")
        dlq = len(read_topic(bootstrap, setup.topic + ".dlq", timeout=10))
        assert accepted + dlq == produced, (accepted, dlq, produced)
        assert dlq == 0
        during = [s for s in samples if cut_mono + 3 <= s[0] <= restore_mono]
        assert during, "no sample during the outage"
        assert any(up == 0 for _, up, _, _, _ in during), "stadtwacht_broker_up never went 0 during the outage"
        assert any(status == 503 and ok is False for _, _, status, ok, _ in during), "/readyz never showed it"
        first_down = min(s[0] for s in samples if s[0] >= cut_mono and s[1] == 0)
        lag_zero = min((s[0] for s in samples if s[0] > restore_mono and s[4] == 0), default=None)
        peak_lag = max((s[4] for s in samples if not math.isnan(s[4])), default=0)
        assert any(math.isnan(s[4]) for s in during), "the consumer lag kept a value without a broker"
        assert samples[-1][1] == 1 and samples[-1][2] == 200
        before = [s for s in samples if s[0] < cut_mono]
        assert before and before[-1][1] == 1
        proc.check_alive()
        assert proc.stop() == 0
    finally:
        stop_sampling.set()
        proc.kill()
        prod.close(timeout=2)
        broker.stop()
        proxy.close()
    report("broker_outage", outage_s=outage_s, produced=produced, accepted=accepted, dlq=dlq,
           broker_up_0_after_s=round(first_down - cut_mono, 1),
           lag_zero_after_restore_s=round(lag_zero - restore_mono, 1) if lag_zero else None, peak_lag=peak_lag,
           all_accounted_after_restore_s=round(drain_s, 1), drain_after_stream_end_s=round(after_stream_s, 1),
           readyz_503_samples=sum(1 for s in during if s[2] == 503), samples_during=len(during),
           lag_unknown_samples=sum(1 for s in during if math.isnan(s[4])))


def test_a_silence_deleted_during_an_outage_stays_deleted_and_is_shared_after_it(tmp_path, topic_prefix,
                                                                               broker_kind):
    """With several instances (a district topic) a silence deleted through the API while the broker is cut off
    answers ``"shared": false``. The instance is killed before its producer could deliver the deletion and
    started again once the broker is back: reading the district topic from its start (which still holds the
    silence) must not bring the silence back, and the instance sends the deletion itself, so the other
    instances lift it too."""
    if broker_kind == "apache":
        pytest.skip("uses its own Tansu broker behind the proxy (runs in the Tansu pass)")
    broker_port = free_port()
    proxy = TcpProxy(broker_port, spare_pid=os.getpid())
    broker = EmbeddedBroker(port=broker_port, advertised_port=proxy.port, log_path=tmp_path / "tansu.log").start()
    bootstrap = f"127.0.0.1:{proxy.port}"
    districts = f"{topic_prefix}.districts"
    setup = write_flood_setup(tmp_path, topic_prefix, 1, extra_kafka=f'district_topic = "{districts}"')
    create_topics(bootstrap, [setup.topic, setup.alerts_topic], partitions=2)
    auth = {"Authorization": "Bearer outage-token", "Content-Type": "application/json"}

    def instance() -> RunProcess:
        return RunProcess(setup, bootstrap, tmp_path / "state", env={"STADTWACHT_API_TOKEN": "outage-token"},
                          log=tmp_path / "run.log")

    def on_topic(silence_id: str) -> bool | None:
        """Whether the district topic's newest record of the silence holds it (None: no record)."""
        held = None
        for r in read_topic(bootstrap, districts, timeout=5):
            if r.key == SILENCE_KEY + silence_id.encode():
                held = r.value is not None
        return held

    def silences(proc: RunProcess) -> list[str]:
        return [s["id"] for s in json.loads(proc.get("/api/silences", headers=auth)[1])["silences"]]

    proc = instance()
    try:
        proc.start().wait_ready()
        status, body = proc.get("/api/silences", data=b'{"districts": ["mitte"], "comment": "Wartung"}',
                                headers=auth, method="POST")
        answer = json.loads(body)
        silence_id = answer["silence"]["id"]
        assert status == 201 and answer["shared"] is True
        wait_until(lambda: on_topic(silence_id), 30, what="the silence on the district topic")
        proxy.cut()
        status, body = proc.get(f"/api/silences/{silence_id}", headers=auth, method="DELETE", timeout=30)
        answer = json.loads(body)
        assert status == 200 and answer["shared"] is False and "once the broker takes it" in answer["warning"]
        assert silences(proc) == []
        proc.kill()  # before its producer could deliver the deletion
        assert on_topic(silence_id) is True
        proxy.restore()
        proc = instance()
        proc.start().wait_ready()
        start_s = time.monotonic()
        wait_until(lambda: on_topic(silence_id) is False, 60, what="the deletion on the district topic")
        shared_after_s = time.monotonic() - start_s
        assert silences(proc) == []
        proc.check_alive()
        assert proc.stop() == 0
    finally:
        proc.kill()
        broker.stop()
        proxy.close()
    report("silence_deleted_during_outage", deletion_on_topic_after_restart_s=round(shared_after_s, 1))
