"""Setting up the district topic (``stadtwacht.district_stage.ensure_district_topic``) on a real broker.

It takes the district topic's partition count from the first input topic. Asked through the producer
(``partitions_for``: kafka-python 3.0.12 asks with auto-creation allowed, whatever its config says), a missing input
topic was created on brokers that create topics, and the service read the topic it made in silence. Runs on the
session broker: Tansu by default, Apache Kafka (``auto.create.topics.enable=true``) with ``--broker=apache``.
"""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError, UnknownTopicOrPartitionError

from ingest.config import KafkaConfig
from ingest.kafka_io import make_producer
from stadtwacht.district_stage import ensure_district_topic
from tests.support.kafka_topics import create_topics

pytestmark = pytest.mark.broker


def test_a_missing_input_topic_is_not_created_and_the_district_topic_waits_for_it(kafka_bootstrap, topic_prefix):
    flood, districts = f"{topic_prefix}.flood", f"{topic_prefix}.districts"
    cfg = KafkaConfig(topics=[flood], community_topics=[], district_topic=districts, max_block_ms=5000)
    producer = make_producer(cfg, kafka_bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        try:
            ensure_district_topic(cfg, kafka_bootstrap, producer)
            raised = None
        except KafkaError as e:  # (the connect attempt fails and is retried with backoff)
            raised = e
        listed = admin.list_topics()
        assert flood not in listed, "the district topic set-up created the missing input topic"
        assert districts not in listed
        assert isinstance(raised, UnknownTopicOrPartitionError), raised
        assert f"input topic {flood} does not exist" in str(raised) and "create it" in str(raised), raised

        create_topics(kafka_bootstrap, [flood], partitions=2)  # (not the broker's default of 3 on Apache Kafka)
        assert ensure_district_topic(cfg, kafka_bootstrap, producer) == 2
        described = {t["name"]: t for t in admin.describe_topics([districts])}
        assert len(described[districts]["partitions"]) == 2
        assert ensure_district_topic(cfg, kafka_bootstrap, producer) == 2  # there already: left as it is
    finally:
        producer.close(timeout=5)
        admin.close()
