"""Self-test of the Apache Kafka test tier: a real broker serves kafka-python over PLAINTEXT and TLS."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from tests.support.apache_kafka import SCRIPT, ApacheKafka, ApacheKafkaError

MESSAGES = 9
POLL_DEADLINE_S = 60.0


def _require(tls: bool) -> None:
    """Skip (fail in CI, where the tier must run) when this machine cannot run Apache Kafka."""
    ok, reason = ApacheKafka.available(tls=tls)
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the Apache Kafka tier: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def plaintext_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    _require(tls=False)
    with ApacheKafka(tmp_path_factory.mktemp("apache-kafka")) as broker:
        yield broker


def _produce(config: dict[str, Any], topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(acks="all", **config)
    try:
        for i, value in enumerate(values):
            producer.send(topic, key=f"k{i}".encode(), value=value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def _group_consumer(config: dict[str, Any], topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        **config,
    )


def _poll_values(consumer: KafkaConsumer, expected: int) -> list[bytes]:
    """Poll until `expected` records arrived (or the deadline passed) and return their values."""
    values: list[bytes] = []
    deadline = time.monotonic() + POLL_DEADLINE_S
    while len(values) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            values.extend(record.value for record in records)
    return values


def _roundtrip(config: dict[str, Any]) -> None:
    """Produce, group-consume, commit manually, then check a rejoining member resumes after the commit."""
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    group = f"group-{uuid.uuid4().hex[:8]}"
    sent = [f"reading-{i}".encode() for i in range(MESSAGES)]
    _produce(config, topic, sent)

    consumer = _group_consumer(config, topic, group)
    try:
        received = _poll_values(consumer, MESSAGES)
        assert sorted(received) == sorted(sent)
        consumer.commit()
        assignment = consumer.assignment()
        assert {tp.partition for tp in assignment} == {0, 1, 2}  # num.partitions=3 on auto-create
        highwaters = {tp: consumer.highwater(tp) for tp in assignment}
        assert sum(highwaters.values()) == MESSAGES
        for tp in assignment:
            assert consumer.committed(tp) == highwaters[tp], tp
    finally:
        consumer.close()

    late = b"reading-late"
    _produce(config, topic, [late])
    rejoined = _group_consumer(config, topic, group)
    try:
        assert _poll_values(rejoined, 1) == [late]
        assert rejoined.poll(timeout_ms=1000) == {}
    finally:
        rejoined.close()


def _answers_plaintext(port: int) -> bool:
    """Send a PLAINTEXT ApiVersions v0 request and tell whether a Kafka response frame came back."""
    client_id = b"smoke"
    request = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        try:
            header = sock.recv(8)
        except OSError:
            return False
    return len(header) == 8 and struct.unpack(">i", header[4:8])[0] == 1


def _port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.broker
@pytest.mark.slow
def test_plaintext_produce_group_consume_commit(plaintext_broker: ApacheKafka) -> None:
    assert plaintext_broker.bootstrap == f"127.0.0.1:{plaintext_broker.port}"
    assert _answers_plaintext(plaintext_broker.port)
    _roundtrip(plaintext_broker.client_config())


@pytest.mark.broker
@pytest.mark.slow
def test_tls_with_ca_file_and_client_certificate(tmp_path: Path) -> None:
    _require(tls=True)
    broker = ApacheKafka(tmp_path / "apache-kafka-tls", tls=True)
    with broker:
        assert broker.ssl_cafile is not None and broker.ssl_cafile.is_file()
        _roundtrip(broker.client_config())

        mutual = {
            **broker.client_config(),
            "ssl_certfile": str(broker.ssl_certfile),
            "ssl_keyfile": str(broker.ssl_keyfile),
        }
        topic = f"mtls-{uuid.uuid4().hex[:8]}"
        _produce(mutual, topic, [b"signed"])
        consumer = KafkaConsumer(topic, auto_offset_reset="earliest", **mutual)
        try:
            assert _poll_values(consumer, 1) == [b"signed"]
        finally:
            consumer.close()

        assert not _answers_plaintext(broker.port)
    assert not _port_accepts(broker.port)
    assert not (broker.workdir / "kafka.pid").exists()


def test_available_names_a_missing_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA", "/nonexistent/java")
    ok, reason = ApacheKafka.available()
    assert not ok
    assert "/nonexistent/java" in reason


def test_stop_leaves_a_foreign_pid_alone(tmp_path: Path) -> None:
    """A stale pid file naming another process (here: this test) must not get that process killed."""
    (tmp_path / "server.properties").write_text("node.id=1\n")
    (tmp_path / "kafka.pid").write_text(f"{os.getpid()}\n")
    subprocess.run(["bash", str(SCRIPT), "stop", "--dir", str(tmp_path)], check=True, timeout=60)
    assert not (tmp_path / "kafka.pid").exists()


@pytest.mark.broker
@pytest.mark.slow
def test_start_refuses_a_port_in_use(tmp_path: Path) -> None:
    _require(tls=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = ApacheKafka(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(ApacheKafkaError, match="already in use"):
            broker.start(timeout=30)
    assert not (tmp_path / "kafka.pid").exists()
