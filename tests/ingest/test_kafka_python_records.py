"""The compiled record parsing of ingest/kafka_python_records.py against kafka-python's own.

Record batches are built with kafka-python's own builders (every codec, both timestamp types, nulls,
headers, legacy formats, control batches) and read by kafka-python's ``PartitionRecords`` and by
``CompiledPartitionRecords``: the records handed out, the position after each take, the metrics and
the errors on malformed bytes must be the same. The broker test reads through the service's consumer.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c, decode_varint, encode_varint
from kafka.structs import TopicPartition

from ingest.config import KafkaConfig
from ingest.decode import RawMessage
from ingest.kafka_python_records import HEADERS, LOCATED, MALFORMED, CompiledPartitionRecords, _varint, locate_records
from tests.support.kafka_topics import create_topics, poll_until, producer, read_topic

TP = TopicPartition("readings", 3)
CODECS = [DefaultRecordBatch.CODEC_NONE, DefaultRecordBatch.CODEC_GZIP, DefaultRecordBatch.CODEC_SNAPPY,
          DefaultRecordBatch.CODEC_LZ4, DefaultRecordBatch.CODEC_ZSTD]

_bytes = st.one_of(st.none(), st.binary(max_size=300))
_record = st.tuples(_bytes, _bytes, st.integers(-10**6, 10**9))  # key, value, timestamp delta (ms)


def _batch(base: int, records, codec: int = 0, headers=None, first_ts: int = 1_760_000_000_000,
           producer: int = -1) -> bytes:
    """A v2 record batch at offset ``base``; ``producer`` >= 0: a transactional batch of that producer."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=int(producer >= 0),
                                  producer_id=producer, producer_epoch=0 if producer >= 0 else -1,
                                  base_sequence=0 if producer >= 0 else -1, batch_size=1 << 30)
    for i, (key, value, dt) in enumerate(records):
        b.append(i, timestamp=first_ts + dt, key=key, value=value, headers=(headers or {}).get(i, []))
    raw = bytearray(b.build())
    struct.pack_into(">q", raw, 0, base)
    return bytes(raw)


def _with_attributes(raw: bytes, set_bits: int) -> bytes:
    """The batch with attribute bits set and its CRC made right again."""
    raw = bytearray(raw)
    attrs = struct.unpack_from(">h", raw, DefaultRecordBatch.ATTRIBUTES_OFFSET)[0] | set_bits
    struct.pack_into(">h", raw, DefaultRecordBatch.ATTRIBUTES_OFFSET, attrs)
    struct.pack_into(">I", raw, DefaultRecordBatch.CRC_OFFSET,
                     calc_crc32c(memoryview(raw)[DefaultRecordBatch.ATTRIBUTES_OFFSET:]))
    return bytes(raw)


def _as_tuple(r) -> tuple:
    if isinstance(r, RawMessage):
        return (r.offset, r.key, r.value, r.timestamp_ms)
    return (r.offset, r.key, r.value, r.timestamp)


def _read(cls, data: bytes, fetch_offset: int = 0, takes=(None,), check_crcs: bool = True, **kw):
    """Everything one PartitionRecords hands out over a sequence of takes: (records and position per take,
    the error, records_read, bytes_read)."""
    part = cls(fetch_offset, TP, MemoryRecords(data), check_crcs=check_crcs, **kw)
    steps, error = [], None
    try:
        for n in (*takes, None):  # the last take: the rest, or what an earlier take stashed
            if not part:  # drained (the fetcher takes no more then)
                break
            got = part.take(n)
            steps.append(([_as_tuple(r) for r in got], part.next_fetch_offset, bool(part)))
    except CorruptRecordError as e:
        error = type(e)
    part.drain()
    return steps, error, part.records_read, part.bytes_read


def _same(data: bytes, **kw) -> tuple:
    theirs = _read(Fetcher.PartitionRecords, data, **kw)
    mine = _read(CompiledPartitionRecords, data, **kw)
    assert mine == theirs
    return mine


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(_record, max_size=30), min_size=1, max_size=4),
       codec=st.sampled_from(CODECS), base=st.integers(0, 2**40), skip=st.integers(0, 40),
       takes=st.lists(st.integers(1, 25), max_size=4))
def test_records_are_those_kafka_python_hands_out(batches, codec, base, skip, takes):
    data, offset = b"", base
    for records in batches:
        data += _batch(offset, records, codec)
        offset += max(len(records), 1)
    _, error, read, _ = _same(data, fetch_offset=base + skip, takes=takes)
    assert error is None
    assert read == sum(map(len, batches))


def test_log_append_time_batches_give_every_record_the_brokers_time():
    raw = _batch(7, [(b"k", b"v1", 5), (None, b"v2", 9), (b"k", None, 1)])
    steps, *_ = _same(_with_attributes(raw, DefaultRecordBatch.TIMESTAMP_TYPE_MASK))
    assert {r[3] for r in steps[0][0]} == {1_760_000_000_009}  # the batch's max timestamp


def test_records_with_headers_go_through_kafka_pythons_own_parsing():
    records = [(b"a", b"1", 0), (b"b", b"2", 1), (b"c", b"3", 2)]
    raw = _batch(0, records, headers={1: [("source", b"lubw")]})
    arr = np.frombuffer(DefaultRecordBatch(raw)._buffer, np.uint8)
    assert locate_records(arr, DefaultRecordBatch.HEADER_STRUCT.size, 3)[0] == HEADERS
    steps, error, *_ = _same(raw)
    assert [r[2] for r in steps[0][0]] == [b"1", b"2", b"3"] and error is None
    with_bad_key = raw.replace(b"source", b"sourc\xff")  # kafka-python: a header key must be UTF-8
    _same(with_bad_key, check_crcs=False)


@pytest.mark.parametrize("magic", [0, 1])
def test_legacy_message_sets_are_read_as_before(magic):
    b = LegacyRecordBatchBuilder(magic=magic, compression_type=0, batch_size=1 << 20)
    for i in range(5):
        b.append(i, timestamp=1_760_000_000_000 + i if magic else None, key=b"k%d" % i, value=b"v%d" % i)
    steps, error, read, _ = _same(bytes(b.build()), fetch_offset=1, takes=[2])
    assert [r[0] for r in steps[0][0]] == [1, 2] and read == 5 and error is None


def test_control_and_aborted_transaction_batches_are_skipped_as_kafka_python_does():
    data = (_batch(0, [(b"k", b"before", 0)])
            + _with_attributes(_batch(1, [(None, b"\x00\x00\x00\x00", 0)]), DefaultRecordBatch.CONTROL_MASK)
            + _batch(2, [(b"k", b"after", 0)]))
    steps, *_ = _same(data)
    assert [r[2] for r in steps[0][0]] == [b"before", b"after"]
    # a transactional batch of an aborted producer under read_committed
    txn = _batch(3, [(b"k", b"aborted", 0)], producer=5)
    aborted = type("Aborted", (), {"first_offset": 3, "producer_id": 5})
    steps, *_ = _same(data + txn + _batch(4, [(b"k", b"last", 0)]),
                      isolation_level=IsolationLevel.READ_COMMITTED, aborted_transactions=[aborted])
    assert [r[2] for r in steps[0][0]][-2:] == [b"after", b"last"]


@settings(max_examples=300, deadline=None)
@given(records=st.lists(st.tuples(st.one_of(st.none(), st.binary(max_size=12)), st.binary(max_size=40),
                                  st.integers(0, 1000)), min_size=1, max_size=8),
       at=st.integers(0, 10**6), byte=st.integers(0, 255), cut=st.integers(0, 10**6), how=st.sampled_from("xtb"))
def test_malformed_records_fail_as_in_kafka_python(records, at, byte, cut, how):
    raw = bytearray(_batch(0, records))
    head = DefaultRecordBatch.HEADER_STRUCT.size
    body = len(raw) - head
    if how == "x":  # one record byte changed
        raw[head + at % body] = byte
    elif how == "t":  # the batch cut short, its length field kept right
        del raw[head + cut % body:]
        struct.pack_into(">i", raw, 8, len(raw) - 12)
    else:  # a wrong record count
        struct.pack_into(">i", raw, head - 4, byte - 10)
    _same(bytes(raw), check_crcs=False, takes=[3])


def test_locate_records_reports_malformed_and_bounds_a_huge_count():
    raw = _batch(0, [(b"k", b"v", 0)])
    arr = np.frombuffer(DefaultRecordBatch(raw)._buffer, np.uint8)
    start = DefaultRecordBatch.HEADER_STRUCT.size
    status, at = locate_records(arr, start, 1)
    assert status == LOCATED and at[:, 0].tolist() == [0, 0, start + 5, start + 6, start + 7, start + 8, 8]
    assert locate_records(arr, start, 2**31 - 1)[0] == MALFORMED  # no 2**31-record array is allocated
    assert locate_records(arr, start, 0)[0] == MALFORMED  # bytes left over


@pytest.mark.parametrize("value", [0, -1, 1, 63, -64, 64, 2**31, -(2**63), 2**63 - 1])
def test_varints_read_as_kafka_python_reads_them(value):
    raw = bytearray()
    encode_varint(value, raw.append)
    assert _varint(np.frombuffer(bytes(raw), np.uint8), 0, len(raw)) == decode_varint(raw, 0) == (value, len(raw))


def test_a_varint_beyond_64_bits_is_malformed():
    wide, long = b"\xff" * 9 + b"\x02", b"\xff" * 10 + b"\x00"
    assert decode_varint(bytearray(wide), 0)[0] < -(2**63)  # kafka-python: an int beyond int64
    with pytest.raises(ValueError):
        decode_varint(bytearray(long), 0)
    for raw in (wide, long):
        assert _varint(np.frombuffer(raw, np.uint8), 0, len(raw))[1] == -1


@pytest.mark.broker
def test_the_service_consumer_hands_out_what_kafka_python_reads(kafka_bootstrap, topic_prefix):
    from ingest.kafka_io import ReadingConsumer

    topic = f"{topic_prefix}.compiled"
    create_topics(kafka_bootstrap, [topic], partitions=2)
    prod = producer(kafka_bootstrap, compression_type="lz4", linger_ms=5)
    sent = []
    try:
        for i in range(3000):
            key = None if i % 7 == 0 else b"s-%d" % (i % 50)
            value = None if key and i % 101 == 3 else b'{"sensor_id":"s-%d","n":%d}' % (i % 50, i)
            prod.send(topic, key=key, value=value, partition=i % 2,
                      headers=[("h", b"1")] if i % 500 == 0 else None)
            sent.append((i % 2, key, value))
        prod.flush()
    finally:
        prod.close()
    cfg = KafkaConfig(group_id=f"{topic_prefix}-g", topics=[topic], session_timeout_ms=6000,
                      heartbeat_interval_ms=1000)
    consumer = ReadingConsumer(cfg, kafka_bootstrap, [topic])
    assert consumer.compiled_records
    got = poll_until(consumer, len(sent))
    assert all(type(m) is RawMessage for m in got)
    theirs = read_topic(kafka_bootstrap, topic, expect=len(sent))  # a stock kafka-python consumer
    key = lambda m: (m.partition, m.offset)  # noqa: E731
    assert [(m.partition, m.offset, m.key, m.value, m.timestamp_ms) for m in sorted(got, key=key)] == [
        (m.partition, m.offset, m.key, m.value, m.timestamp) for m in sorted(theirs, key=key)]
    in_order = sorted(sent, key=lambda s: s[0])  # each partition's messages in the order sent
    assert [(m.partition, m.key, m.value) for m in sorted(got, key=key)] == in_order
