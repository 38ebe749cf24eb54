"""Poll batches exactly as the service's consumer delivers them (``ingest.kafka_io.open_consumer``).

The benchmarks time stadtwacht through its own consumer backends, not a bare
client: what the consumer does for throughput (kafka-python: sending the next
fetch before the batch is processed; confluent: librdkafka's prefetch) is part
of the product. Each call joins a fresh consumer group and reads the topic from
its start; callers time from the first batch received, which leaves the group
join out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from ingest.config import KafkaConfig
from ingest.decode import RawMessage
from ingest.kafka_io import open_consumer

__all__ = ["stadtwacht_polls"]


def stadtwacht_polls(bootstrap: str, topic: str, client: str = "kafka-python",
                     timeout_ms: int = 1000) -> Iterator[list[RawMessage]]:
    """Endless poll batches (possibly empty) of ``topic`` from its first offset; close() to leave the group."""
    cfg = KafkaConfig(client=client, group_id=f"bench-{uuid.uuid4().hex[:8]}", topics=[topic], community_topics=[],
                      session_timeout_ms=6000, heartbeat_interval_ms=1000)
    consumer = open_consumer(cfg, bootstrap, [topic])
    try:
        while True:
            yield consumer.poll(timeout_ms=timeout_ms)
    finally:
        consumer.close()
