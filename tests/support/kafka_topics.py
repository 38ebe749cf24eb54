"""Kafka helpers of the broker tests: create topics, produce, read a topic whole, compare commits to ends."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

__all__ = ["by_reason", "committed_vs_end", "create_topics", "produce", "producer", "read_topic"]


def create_topics(bootstrap: str, names: list[str], partitions: int = 3, **admin_opts) -> None:
    """Create the topics (replication 1); ones that already exist are left as they are."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **admin_opts)
    try:
        for n in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(n, partitions, 1)])
    finally:
        admin.close()


def producer(bootstrap: str, **opts) -> KafkaProducer:
    """A producer that waits for all replicas (options override the defaults)."""
    return KafkaProducer(**{"bootstrap_servers": bootstrap, "linger_ms": 5, "acks": "all", **opts})


def produce(bootstrap: str, messages: list[tuple[str, str, bytes]]) -> None:
    """(topic, key, value) messages, flushed."""
    prod = producer(bootstrap, acks=1)
    try:
        for topic, key, value in messages:
            prod.send(topic, key=key.encode(), value=value)
        prod.flush()
    finally:
        prod.close()


def read_topic(bootstrap: str, topic: str, expect: int | None = None, timeout: float = 30.0, idle_s: float = 1.5,
               **opts) -> list:
    """Every record of a topic (all partitions, from the beginning) via assign (no group).

    Stops once caught up and either ``expect`` records arrived or nothing came for ``idle_s``.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **opts)
    try:
        deadline = time.monotonic() + timeout
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        records: list = []
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            got = [m for msgs in consumer.poll(timeout_ms=300).values() for m in msgs]
            records.extend(got)
            if got:
                idle_since = time.monotonic()
            caught_up = all(consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp)
                            for tp in tps)
            if caught_up and (len(records) >= expect if expect is not None
                              else time.monotonic() - idle_since > idle_s):
                break
        return records
    finally:
        consumer.close()


def poll_until(consumer, expect: int, timeout: float = 60.0) -> list:
    """What a stadtwacht group consumer (``ingest.kafka_io.GroupConsumer``) hands out until ``expect`` messages
    arrived or ``timeout`` passed; closes it."""
    got: list = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            got += consumer.poll(timeout_ms=500)
    finally:
        consumer.close()
    return got


def committed_vs_end(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """(committed offset, end offset) per partition; the end from the high watermark (Tansu-safe)."""
    out = {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    probe = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        for t in topics:
            for p in sorted(probe.partitions_for_topic(t) or []):
                tp = TopicPartition(t, p)
                probe.assign([tp])
                probe.seek(tp, 0)
                probe.poll(timeout_ms=500, max_records=1)
                end = probe.highwater(tp) or 0
                out[(t, p)] = (consumer.committed(tp) or 0, end)
    finally:
        consumer.close()
        probe.close()
    return out


def by_reason(records) -> dict[str, int]:
    """Dead-letter records counted by their ``stadtwacht.reason`` header."""
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        reason = dict(r.headers).get("stadtwacht.reason", b"?").decode()
        counts[reason] += 1
    return dict(counts)
