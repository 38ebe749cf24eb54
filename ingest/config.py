"""Configuration of the Kafka edge and of decoding: ``[kafka]`` and ``[ingest]``."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping

import msgspec

from stadtwacht.durations import parse_duration

__all__ = ["IngestConfig", "KafkaConfig", "validate"]


class KafkaConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where readings come from and where alerts and dead letters go."""

    #: "host:port,host:port"; empty = start the embedded Tansu broker (demo, tests).
    bootstrap_servers: str = ""
    group_id: str = "stadtwacht"
    #: Topics in the reading contract (JSON object or array of readings).
    topics: list[str] = msgspec.field(default_factory=lambda: ["sensors.flood", "sensors.air"])
    #: Topics in sensor.community's native push format.
    community_topics: list[str] = msgspec.field(default_factory=lambda: ["sensors.community"])
    alerts_topic: str = "stadtwacht.alerts"
    #: Scale-out: internal topic keyed by district through which detection events reach the one process
    #: owning each district's roll-up, episodes and notifications (created compacted when missing, with as
    #: many partitions as the first input topic). Empty = off: one process rolls up in memory; run a single
    #: instance (or one per district set) then. All instances of a group must use the same value.
    district_topic: str = ""
    #: Dead letters of topic T go to T + dlq_suffix.
    dlq_suffix: str = ".dlq"
    client_id: str = "stadtwacht"
    #: Kafka client library of the readings consumer: "kafka-python" (default) or "confluent" (librdkafka,
    #: faster on many small messages; needs ``pip install stadtwacht[confluent]``). Producers (dead letters,
    #: alerts) always use kafka-python.
    client: str = "kafka-python"
    #: Upper bound of records one poll returns (memory bound and batch size).
    max_poll_records: int = 5000
    #: Longest the broker may hold a fetch waiting for data: bounds a reading's wait before it is seen
    #: (kafka-python's 500 ms default alone made the p99 latency miss 250 ms; 100 ms costs only empty fetches).
    fetch_max_wait_ms: int = 100
    poll_timeout_ms: int = 200
    #: Longest the producer (dead letters, alert events, district records) waits for the metadata of a topic it
    #: has not sent to yet before that send fails (kafka-python's ``max_block_ms``, its default 60000). A
    #: healthy broker answers in milliseconds; the wait runs out only for a topic the brokers neither have nor
    #: create, and then the batch is re-read from its last commit (nothing is lost). While it waits, the loop
    #: holds the lock the alert API and the page share, so the kafka-python minute froze them per attempt.
    max_block_ms: int = 10000
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    #: Where a group without committed offsets starts: "earliest" (never skip data) or "latest".
    auto_offset_reset: str = "earliest"
    # Passed through to kafka-python unchanged, mapped to librdkafka's names with client = "confluent"
    # (secrets: use *_file or environment).
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    #: Name of an environment variable holding the SASL password (never the password itself).
    sasl_plain_password_env: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True


class IngestConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Limits that decide what is dead-lettered."""

    max_message_bytes: int = 1_048_576
    max_readings_per_message: int = 10_000
    #: Readings stamped further than this in the future (sensor clock wrong) are dead-lettered.
    max_future: str = "5m"


_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_BROKER = re.compile(r"(?:[A-Za-z_]+://)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")


def bootstrap_problem(bootstrap: str) -> str | None:
    """Why a bootstrap list (``host:port[,host:port...]``) is not one, or None; a client would retry it forever."""
    bad = [b for b in bootstrap.split(",") if not _BROKER.fullmatch(b.strip())]
    return f"not host:port: {', '.join(repr(b) for b in bad)}" if bad else None


def environment_problems(kafka: KafkaConfig, environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """What the process environment and file system lack for the configured connection (checked where it runs)."""
    problems = []
    if kafka.sasl_plain_password_env and kafka.sasl_plain_password_env not in environ:
        problems.append(("kafka.sasl_plain_password_env",
                         f"environment variable {kafka.sasl_plain_password_env} is not set (an empty password)"))
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(kafka, key)
        if path and not os.access(path, os.R_OK):
            problems.append((f"kafka.{key}", f"cannot read {path}"))
    return problems


def validate(kafka: KafkaConfig, ingest: IngestConfig) -> list[tuple[str, str]]:
    """Semantic problems as (key path, message)."""
    problems: list[tuple[str, str]] = []
    if kafka.auto_offset_reset not in ("earliest", "latest"):
        problems.append(("kafka.auto_offset_reset", "must be 'earliest' or 'latest'"))
    if not kafka.topics and not kafka.community_topics:
        problems.append(("kafka.topics", "no input topic configured"))
    if not 0 <= kafka.fetch_max_wait_ms <= 60_000:
        problems.append(("kafka.fetch_max_wait_ms", "must be between 0 and 60000"))
    if not 1000 <= kafka.max_block_ms <= 300_000:
        problems.append(("kafka.max_block_ms", "must be between 1000 and 300000"))
    if kafka.max_poll_records < 1:
        problems.append(("kafka.max_poll_records", "must be >= 1"))
    if kafka.district_topic and kafka.district_topic in (*kafka.topics, *kafka.community_topics,
                                                         kafka.alerts_topic):
        problems.append(("kafka.district_topic", "must differ from the input and alerts topics"))
    if kafka.client not in ("kafka-python", "confluent"):
        problems.append(("kafka.client", "must be 'kafka-python' or 'confluent'"))
    elif kafka.client == "confluent" and importlib.util.find_spec("confluent_kafka") is None:
        problems.append(("kafka.client", "'confluent' needs the confluent-kafka package: "
                                         "pip install stadtwacht[confluent]"))
    if not kafka.dlq_suffix:
        problems.append(("kafka.dlq_suffix", "must not be empty (dead letters would loop into the input)"))
    # the Kafka clients take an unknown protocol as plaintext: a typo must not turn TLS and SASL off in silence
    if kafka.security_protocol not in _PROTOCOLS:
        problems.append(("kafka.security_protocol", f"must be one of {', '.join(_PROTOCOLS)} (exactly)"))
    elif kafka.sasl_mechanism and not kafka.security_protocol.startswith("SASL_"):
        problems.append(("kafka.sasl_mechanism", f"needs security_protocol SASL_SSL or SASL_PLAINTEXT, not "
                                                 f"{kafka.security_protocol} (it would be ignored)"))
    if kafka.bootstrap_servers and (why := bootstrap_problem(kafka.bootstrap_servers)):
        problems.append(("kafka.bootstrap_servers", why))
    for topic in {*kafka.topics, *kafka.community_topics, kafka.alerts_topic} | (
            {kafka.district_topic} if kafka.district_topic else set()):
        if not _TOPIC.fullmatch(topic):
            problems.append(("kafka.topics", f"{topic!r} is not a legal Kafka topic name (letters, digits, . _ -; "
                                             f"at most 249)"))
    if ingest.max_message_bytes < 64:
        problems.append(("ingest.max_message_bytes", "must be >= 64"))
    try:
        parse_duration(ingest.max_future)
    except ValueError as e:
        problems.append(("ingest.max_future", str(e)))
    return problems
