"""kafka-python's socket reads and field copies as amended by ingest/kafka_python_reads.py: same results.

The unit tests drive the amended methods with scripted sockets and compare ``KafkaBytes.read`` with a
transcription of kafka-python 3.0.12's own; the broker test reads multi-MB fetch answers through the
service's consumer and checks every byte.
"""

from __future__ import annotations

import hashlib
import os
import ssl

import pytest
from kafka.errors import KafkaConnectionError
from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport
from kafka.protocol.frame import KafkaBytes

import ingest.kafka_io  # noqa: F401  (applies the amendment, as the service does)
from ingest.config import KafkaConfig
from ingest.kafka_python_reads import RECV_BYTES, read_in_large_pieces
from tests.support.kafka_topics import create_topics, poll_until, producer


class _Socket:
    """Hands out scripted pieces per ``recv``, then raises the scripted exception; records the sizes asked."""

    def __init__(self, pieces: list[bytes], then: BaseException) -> None:
        self.pieces, self.then, self.asked = list(pieces), then, []

    def recv(self, n: int) -> bytes:
        self.asked.append(n)
        if self.pieces:
            return self.pieces.pop(0)
        raise self.then


class _Transport:
    def __init__(self, sock: _Socket) -> None:
        self._sock = sock


def _recv(cls, pieces: list[bytes], then: BaseException) -> tuple[bytes, BaseException | None, list[int]]:
    sock = _Socket(pieces, then)
    data, err = cls._sock_recv(_Transport(sock))
    return data, err, sock.asked


def test_the_amendment_is_in_place_once_kafka_io_is_imported():
    assert KafkaTCPTransport._sock_recv.amended_by_stadtwacht
    assert KafkaSSLTransport._sock_recv.amended_by_stadtwacht
    assert KafkaBytes.read.amended_by_stadtwacht
    recv = KafkaTCPTransport._sock_recv
    assert read_in_large_pieces()  # idempotent: the method is not wrapped again
    assert KafkaTCPTransport._sock_recv is recv


@pytest.mark.parametrize("cls", [KafkaTCPTransport, KafkaSSLTransport])
def test_reads_until_the_socket_has_nothing_more_asking_for_large_pieces(cls):
    data, err, asked = _recv(cls, [b"abc", b"defg"], BlockingIOError())
    assert (data, err) == (b"abcdefg", None)
    assert asked == [RECV_BYTES] * 3 and RECV_BYTES >= 1 << 20


def test_one_piece_is_handed_on_without_a_copy():
    piece = os.urandom(100_000)
    data, err, _ = _recv(KafkaTCPTransport, [piece], BlockingIOError())
    assert data is piece and err is None


def test_tls_want_read_ends_a_tls_read_but_is_an_error_on_plain_tcp():
    data, err, _ = _recv(KafkaSSLTransport, [b"x"], ssl.SSLWantReadError())
    assert (data, err) == (b"x", None)
    data, err, _ = _recv(KafkaTCPTransport, [b"x"], ssl.SSLWantReadError())
    assert data == b"x" and isinstance(err, KafkaConnectionError)


def test_a_closed_socket_and_a_failing_one_are_connection_errors(caplog):
    data, err, _ = _recv(KafkaTCPTransport, [b"x", b""], BlockingIOError())
    assert data == b"x" and isinstance(err, KafkaConnectionError) and "disconnected" in str(err)
    data, err, _ = _recv(KafkaTCPTransport, [], ConnectionResetError("reset by peer"))
    assert data == b"" and isinstance(err, KafkaConnectionError) and "reset by peer" in str(err)
    assert "Error receiving network data" in caplog.text


def _read_upstream(buf: KafkaBytes, nbytes=None) -> bytes:
    """kafka-python 3.0.12's KafkaBytes.read, transcribed."""
    if nbytes is None:
        nbytes = len(buf) - buf._idx
    start = buf._idx
    buf._idx += nbytes
    if buf._idx > len(buf):
        buf._idx = len(buf)
    return bytes(buf[start:buf._idx])


@pytest.mark.parametrize("steps", [[None], [0, 3, None], [4, 4, 4, 100], [10, -4, 6, None], [25, 1]])
def test_kafka_bytes_read_gives_what_upstream_gives(steps):
    mine, theirs = KafkaBytes(20), KafkaBytes(20)
    for b in (mine, theirs):
        b.write(bytes(range(20)))
        b.seek(0)
    for n in steps:
        got = mine.read(n)
        assert type(got) is bytes
        assert got == _read_upstream(theirs, n)
        assert mine.tell() == theirs.tell()
    mine.write(b"\xff")  # the buffer is not left exported (a live view would forbid resizing it)
    mine.extend(b"more")


@pytest.mark.broker
@pytest.mark.slow
def test_multi_megabyte_fetch_answers_arrive_intact(kafka_bootstrap, topic_prefix):
    from ingest.kafka_io import open_consumer

    topic = f"{topic_prefix}.large"
    create_topics(kafka_bootstrap, [topic], partitions=1)
    values = [os.urandom(700_000) for _ in range(12)]  # ~8 MB: fetch answers of several MB, many socket reads
    prod = producer(kafka_bootstrap, max_request_size=2_000_000)
    try:
        for v in values:
            prod.send(topic, key=b"k", value=v)
        prod.flush()
    finally:
        prod.close()
    cfg = KafkaConfig(group_id=f"{topic_prefix}-g", topics=[topic], session_timeout_ms=6000,
                      heartbeat_interval_ms=1000)
    got = poll_until(open_consumer(cfg, kafka_bootstrap, [topic]), len(values))
    assert [hashlib.sha256(m.value).hexdigest() for m in got] == [hashlib.sha256(v).hexdigest() for v in values]
