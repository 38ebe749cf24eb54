"""The records of a fetch answer parsed by one compiled pass per record batch instead of kafka-python's.

kafka-python 3.0.12 parses every record in Python (``DefaultRecordBatch._read_msg``: seven varints,
two copies of key and value, a ``DefaultRecord``, then a 13-field ``ConsumerRecord``): about 3 µs per
record here, which caps single-reading messages at well under 200 k/s before any decoding. For the
service's own consumer (not process-wide: other kafka-python clients are left alone) the fetcher's
``PartitionRecords`` is replaced by :class:`CompiledPartitionRecords`. Per record batch it keeps
kafka-python's own steps (CRC check, decompression, leader epoch, aborted transactions, control
batches, the position after the last batch); the records of a format-v2 batch are then located by
:func:`locate_records` (numba) and handed out directly as :class:`ingest.decode.RawMessage`, one
slice each for key and value. Measured side by side: ``docs/benchmarks.md``.

Where kafka-python's answer could differ, the batch goes through kafka-python's own code: record
headers (stadtwacht does not read them; kafka-python decodes their keys as UTF-8 and treats a bad one
as corruption), message formats v0/v1, and any batch whose records the compiled pass finds malformed
(kafka-python then hands out the records before the bad one and raises its ``CorruptRecordError``,
exactly as before). kafka-python is pinned (``pyproject.toml``); on a version whose internals differ,
:func:`parse_records_compiled` leaves the consumer as it is. Tests: ``tests/ingest/test_kafka_python_records.py``
(against kafka-python's own parsing, every codec, malformed batches; and through a broker).
"""

from __future__ import annotations

import numpy as np
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from numba import njit

from ingest.decode import RawMessage

__all__ = ["CompiledPartitionRecords", "locate_records", "parse_records_compiled"]

#: What :func:`locate_records` says of a batch: all records located, or hand it to kafka-python.
LOCATED, MALFORMED, HEADERS = 0, 1, 2

_LOW7 = np.uint64(0x7F)
_MORE = np.uint64(0x80)
_ONE = np.uint64(1)


@njit(cache=True, nogil=True, inline="always")
def _varint(buf, pos, end):
    """A zigzag varint at ``pos``: (value, next position), next position -1 when it runs past ``end`` or
    beyond 64 bits, or when ``pos`` is -1 (so that a run of reads needs one check at its end)."""
    if pos < 0 or pos >= end:
        return 0, -1
    b = np.uint64(buf[pos])
    pos += 1
    result = b & _LOW7
    shift = 7
    while b & _MORE:
        if pos >= end:
            return 0, -1
        b = np.uint64(buf[pos])
        pos += 1
        if shift == 63 and b > _ONE:
            return 0, -1
        result |= (b & _LOW7) << np.uint64(shift)
        shift += 7
    return np.int64(result >> _ONE) ^ -np.int64(result & _ONE), pos


@njit(cache=True, nogil=True)
def locate_records(buf, pos, count):
    """Where each of the ``count`` records of a v2 batch's (decompressed) record bytes from ``pos`` lies.

    Returns ``(status, located)``: ``located`` is an int64 array (7, n) of offset delta, timestamp
    delta, key start, key end, value start, value end (start -1 for a null key or value) and record
    length per record, ``status`` :data:`LOCATED` when all ``count`` records were read and end exactly
    at the end of the buffer, :data:`HEADERS` at the first record with headers, :data:`MALFORMED` at
    the first record kafka-python would reject (or any bytes left over).
    """
    end = buf.size
    n = min(max(count, 0), (end - pos) // 7 + 1)  # a record takes at least 7 bytes: a bad count stops here
    out = np.empty((7, n), np.int64)
    for i in range(n):
        length, p = _varint(buf, pos, end)
        start = p
        _, p = _varint(buf, p, end)  # attributes: unused
        ts_delta, p = _varint(buf, p, end)
        offset_delta, p = _varint(buf, p, end)
        key_len, p = _varint(buf, p, end)
        if p < 0:
            return MALFORMED, out
        key_start = -1
        if key_len >= 0:
            key_start = p
            p += key_len
        value_len, p = _varint(buf, p, end)  # p past the end or -1: (0, -1), and -1 stays to the check below
        value_start = -1
        if value_len >= 0:
            value_start = p
            p += value_len
        headers, p = _varint(buf, p, end)
        if p < 0 or headers < 0:
            return MALFORMED, out
        if headers > 0:
            return HEADERS, out
        if p - start != length:
            return MALFORMED, out
        out[0, i] = offset_delta
        out[1, i] = ts_delta
        out[2, i] = key_start
        out[3, i] = key_start + max(key_len, 0)
        out[4, i] = value_start
        out[5, i] = value_start + max(value_len, 0)
        out[6, i] = length
        pos = p
    if n < count or pos != end:
        return MALFORMED, out
    return LOCATED, out


class CompiledPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's ``PartitionRecords`` handing out :class:`RawMessage` located by :func:`locate_records`.

    ``_unpack_records`` is kafka-python 3.0.12's own but for the records of a v2 batch (and the type
    handed out); deserializers are not supported (the service's consumer has none).
    """

    def _unpack_records(self, tp, records, key_deserializer, value_deserializer):
        try:
            batch = records.next_batch()
            last_batch = None
            while batch is not None:
                last_batch = batch

                if self.check_crcs and not batch.validate_crc():
                    raise CorruptRecordError(
                        f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} "
                        "failed crc check")

                if batch.magic == 2:
                    self.leader_epoch = batch.leader_epoch
                    if self.isolation_level == IsolationLevel.READ_COMMITTED and batch.has_producer_id():
                        self._consume_aborted_transactions_up_to(batch.last_offset)
                        producer_id = batch.producer_id
                        if self._contains_abort_marker(batch):
                            self.aborted_producer_ids.discard(producer_id)
                        elif self._is_batch_aborted(batch):
                            self.next_fetch_offset = batch.next_offset
                            batch = records.next_batch()
                            continue
                    if batch.is_control_batch:
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                    yield from self._located(tp, batch)
                else:
                    yield from self._parsed(tp, batch)
                batch = records.next_batch()
            else:
                if last_batch and last_batch.magic == 2:
                    self.next_fetch_offset = last_batch.next_offset
                self.drain()
        except StopIteration:  # as kafka-python: a StopIteration inside must not end the generator silently
            raise RuntimeError("StopIteration raised unpacking messageset") from None

    def _located(self, tp, batch: DefaultRecordBatch):
        """The records of a v2 batch from one compiled pass: one copy of the batch, one slice per key and value."""
        batch._maybe_uncompress()
        buf = batch._buffer
        status, at = locate_records(np.frombuffer(buf, np.uint8), batch._pos, batch.records_count)
        if status != LOCATED:  # kafka-python decides (and words its error) from the first record
            yield from self._parsed(tp, batch)
            return
        data = bytes(buf)
        n = at.shape[1]
        self.records_read += n
        self.bytes_read += int(at[6].sum())
        offsets = (at[0] + batch.base_offset).tolist()
        if batch.timestamp_type == DefaultRecordBatch.LOG_APPEND_TIME:
            stamps = [batch.max_timestamp] * n
        else:
            stamps = (at[1] + batch.first_timestamp).tolist()
        topic, partition = tp.topic, tp.partition
        for offset, stamp, ka, kb, va, vb in zip(offsets, stamps, *at[2:6].tolist(), strict=True):
            self.next_fetch_offset = offset + 1
            yield RawMessage(topic, partition, offset, data[ka:kb] if ka >= 0 else None,
                             data[va:vb] if va >= 0 else None, stamp)

    def _parsed(self, tp, batch):
        """kafka-python's own per-record loop (v0/v1 message sets, headers, malformed records)."""
        topic, partition = tp.topic, tp.partition
        for record in batch:
            if self.check_crcs and not record.validate_crc():
                raise CorruptRecordError(
                    f"Record for partition {self.topic_partition} at offset {record.offset} failed crc check")
            self.records_read += 1
            self.bytes_read += record.size_in_bytes
            self.next_fetch_offset = record.offset + 1
            yield RawMessage(topic, partition, record.offset, record.key, record.value, record.timestamp)


_BATCH_SLOTS = ("_buffer", "_pos", "_maybe_uncompress")


def parse_records_compiled(consumer) -> bool:
    """Make a ``KafkaConsumer`` without deserializers hand out :class:`RawMessage` parsed as above; False
    (consumer untouched, ``ConsumerRecord`` as usual) when kafka-python's internals are not the expected
    shape."""
    fetcher = getattr(consumer, "_fetcher", None)
    stock = getattr(fetcher, "PartitionRecords", None)
    if stock is not Fetcher.PartitionRecords or not all(hasattr(DefaultRecordBatch, a) for a in _BATCH_SLOTS):
        return False
    if consumer.config.get("key_deserializer") or consumer.config.get("value_deserializer"):
        return False
    fetcher.PartitionRecords = CompiledPartitionRecords
    return True
