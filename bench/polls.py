"""The two consumers the benchmarks compare: a bare kafka-python consumer (the raw baseline) and the service's
own consumer (``ingest.kafka_io.open_consumer``).

The benchmarks time stadtwacht through its own consumer backends, not a bare
client: what the consumer does for throughput (kafka-python: sending the next
fetch before the batch is processed; confluent: librdkafka's prefetch) is part
of the product. The consumer joins a fresh group and is positioned at the start
of the topic before it is handed over, so timing can start at the first poll,
as it does for a bare consumer after ``assign`` and ``seek``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from kafka import KafkaConsumer, TopicPartition

from ingest.config import KafkaConfig
from ingest.decode import RawMessage
from ingest.kafka_io import GroupConsumer, open_consumer

__all__ = ["bare_consumer", "raw_seconds", "ready_consumer", "stadtwacht_polls"]


def bare_consumer(bootstrap: str, topic: str) -> KafkaConsumer:
    """A plain kafka-python consumer assigned every partition of ``topic`` at offset 0 (no group)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=5000,
                             fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
    consumer.assign(parts)
    for tp in parts:
        consumer.seek(tp, 0)
    return consumer


def raw_seconds(bootstrap: str, topic: str, n_messages: int) -> float:
    """The raw baseline: seconds for the bare consumer to read ``n_messages`` (first poll to last message)."""
    consumer = bare_consumer(bootstrap, topic)
    seen = 0
    started = time.perf_counter()
    while seen < n_messages:
        for msgs in consumer.poll(timeout_ms=1000).values():
            seen += len(msgs)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def ready_consumer(bootstrap: str, topic: str, client: str = "kafka-python") -> GroupConsumer:
    """The service's consumer of ``topic``, group joined, every partition positioned at its first offset."""
    cfg = KafkaConfig(client=client, group_id=f"bench-{uuid.uuid4().hex[:8]}", topics=[topic], community_topics=[],
                      session_timeout_ms=6000, heartbeat_interval_ms=1000)
    consumer = open_consumer(cfg, bootstrap, [topic])
    deadline = time.monotonic() + 60
    while not consumer.assignment():
        if time.monotonic() > deadline:
            consumer.close()
            raise RuntimeError(f"no partition of {topic} assigned within 60 s")
        consumer.poll(timeout_ms=200)  # records read while joining are read again after the seek
    for tp in consumer.assignment():
        consumer.seek(tp, consumer.beginning_offset(tp))
    return consumer


def stadtwacht_polls(bootstrap: str, topic: str, client: str = "kafka-python",
                     timeout_ms: int = 1000) -> Iterator[list[RawMessage]]:
    """Endless poll batches (possibly empty) of ``topic`` from its start; close() to leave the group."""
    consumer = ready_consumer(bootstrap, topic, client)
    try:
        while True:
            yield consumer.poll(timeout_ms=timeout_ms)
    finally:
        consumer.close()
