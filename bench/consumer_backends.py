"""Ingest throughput of the two consumer backends: confluent-kafka (librdkafka) vs kafka-python.

Each run is a fresh group member of the backend's own class (``open_consumer``, as the runner builds it)
reading the whole topic from the beginning, decoding every poll into a ReadingBatch; timed from the
first non-empty poll (group join excluded) to the last message, in wall time and in this process's CPU
time (librdkafka's threads included; less disturbed by other load on a shared machine). Clients alternate
on the same embedded broker, best of two (quick) or three; the ratio is confluent over kafka-python.
"""

from __future__ import annotations

import json
import time
import uuid

from bench import ingest as ingest_bench
from ingest.config import KafkaConfig
from ingest.decode import ReadingDecoder
from ingest.kafka_io import open_consumer
from ingest.sensor_index import SensorIndex
from stadtwacht.broker import EmbeddedBroker

__all__ = ["consume", "produce", "run"]

SENSORS = 2000


def _reading(i: int) -> dict:
    return {"sensor_id": f"sensor-{i % SENSORS}", "time": f"2026-11-26T04:{(i // 60) % 60:02d}:{i % 60:02d}+01:00",
            "values": {"pm10": float(i % 97)}, "lat": 48.7 + (i % 100) * 1e-3, "lon": 9.1 + (i % 77) * 1e-3}


def produce(bootstrap: str, topic: str, messages: int, per_message: int) -> int:
    """bench/ingest.py's topic with one value per reading (it sends two), so decoded rows count readings."""
    return ingest_bench.produce(bootstrap, topic, messages, per_message, reading=_reading)


def consume(bootstrap: str, topic: str, client: str, messages: int) -> tuple[float, float, int]:
    """Wall and CPU seconds to poll and decode every message of the topic with one backend; the readings."""
    cfg = KafkaConfig(client=client, group_id=f"bench-{uuid.uuid4().hex[:8]}", topics=[topic], community_topics=[])
    consumer = open_consumer(cfg, bootstrap, [topic])
    decoder = ReadingDecoder(SensorIndex())
    seen = readings = 0
    started = None
    deadline = time.monotonic() + 600
    try:
        while seen < messages and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000)
            if not batch:
                continue
            if started is None:
                started, cpu_started = time.perf_counter(), time.process_time()
            seen += len(batch)
            readings += len(decoder.decode(batch).batch)
        elapsed = time.perf_counter() - (started or time.perf_counter())
        cpu = time.process_time() - cpu_started if started else 0.0
    finally:
        consumer.close()
    if seen < messages:
        raise RuntimeError(f"{client}: read {seen} of {messages} messages")
    return elapsed, cpu, readings


def run(quick: bool = False) -> list[dict]:
    figures = []
    with EmbeddedBroker() as broker:
        for name, messages, per in (("consumer_single", 40_000 if quick else 200_000, 1),
                                    ("consumer_batch100", 400 if quick else 2_000, 100)):
            topic = f"bench-{name}"
            n = produce(broker.bootstrap, topic, messages, per)
            wall: dict[str, list[float]] = {"kafka-python": [], "confluent": []}
            cpu: dict[str, list[float]] = {"kafka-python": [], "confluent": []}
            for _ in range(2 if quick else 3):
                for client in wall:
                    t, c, got = consume(broker.bootstrap, topic, client, messages)
                    assert got == n, (client, got, n)
                    wall[client].append(t)
                    cpu[client].append(c)
            kp, cf = n / min(wall["kafka-python"]), n / min(wall["confluent"])
            figures.append({"name": name, "value": cf, "unit": "readings/s", "baseline_value": kp,
                            "ratio": cf / kp, "messages": messages, "readings_per_message": per,
                            "note": "value: confluent-kafka backend, baseline: kafka-python backend; "
                                    "poll + decode into ReadingBatch, wall time, best of runs, group join excluded"})
            kp, cf = n / min(cpu["kafka-python"]), n / min(cpu["confluent"])
            figures.append({"name": f"{name}_cpu", "value": cf, "unit": "readings/cpu-s", "baseline_value": kp,
                            "ratio": cf / kp, "messages": messages, "readings_per_message": per,
                            "note": "the same runs per CPU second of this process (client threads included, "
                                    "the broker's excluded)"})
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
