"""The optional confluent-kafka (librdkafka) consumer of readings, a drop-in for :class:`ReadingConsumer`.

Chosen with ``[kafka] client = "confluent"`` (needs ``pip install stadtwacht[confluent]``): librdkafka
fetches and checks record batches in C on its own threads, which lifts the consumption ceiling for
streams of small (single-reading) messages. Same contract as the kafka-python consumer: no automatic
commits, offsets with metadata committed by :meth:`ConfluentReadingConsumer.commit` only, rebalance
callbacks that only note partitions, and errors raised as kafka-python's ``KafkaError`` /
``CommitFailedError`` subclasses so the runner handles both clients alike. Producers stay kafka-python.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable

from kafka.errors import CommitFailedError, KafkaError

from ingest.config import KafkaConfig
from ingest.decode import RawMessage
from ingest.kafka_io import KafkaIOError

try:
    import confluent_kafka as ck
except ImportError:  # the optional extra is not installed: a clear error when the backend is chosen
    ck = None

__all__ = ["INSTALL_HINT", "ConfluentCommitFailed", "ConfluentConsumerError", "ConfluentReadingConsumer",
           "confluent_available", "confluent_options"]

log = logging.getLogger(__name__)

TP = tuple[str, int]

INSTALL_HINT = "the confluent consumer needs the confluent-kafka package: pip install stadtwacht[confluent]"

#: Broker error names after which a commit is lost to a rebalance (the new owner re-reads from the last commit).
_REBALANCE_ERRORS = frozenset({"REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID",
                               "FENCED_INSTANCE_ID", "_ASSIGNMENT_LOST", "_STATE"})
_NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: no position / no committed offset


class ConfluentConsumerError(KafkaIOError, KafkaError):
    """A librdkafka consumer error, with its error name and whether librdkafka deems it retriable."""

    def __init__(self, what: str, code: str = "", retriable: bool = False) -> None:
        super().__init__(f"{what} ({code})" if code else what)
        self.code = code
        self.retriable = retriable


class ConfluentCommitFailed(ConfluentConsumerError, CommitFailedError):
    """A commit refused because the group rebalanced: the partitions' new owner re-reads from the last commit."""


def confluent_available() -> bool:
    """True when confluent-kafka can be imported."""
    return ck is not None


def confluent_options(cfg: KafkaConfig, bootstrap: str) -> dict:
    """librdkafka consumer settings from ``[kafka]`` (security mapped to librdkafka's names)."""
    opts: dict = {
        "bootstrap.servers": bootstrap,
        "client.id": cfg.client_id,
        "group.id": cfg.group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": cfg.auto_offset_reset,
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
        "max.partition.fetch.bytes": 4 * 1_048_576,
        "fetch.max.bytes": 32 * 1_048_576,
        "fetch.wait.max.ms": cfg.fetch_max_wait_ms,
        # the assignor kafka-python also offers: members of both clients can share one group
        "partition.assignment.strategy": "range",
        "queued.max.messages.kbytes": 32 * 1024,  # prefetch bound (memory), like fetch_max_bytes
        "statistics.interval.ms": 1000,  # broker states for connected()
        # the district stage needs to know that a fetch after a seek reached an empty partition's end
        # (highwater()); only then, since the events come with a librdkafka position bug (see _past_eof)
        "enable.partition.eof": bool(cfg.district_topic),
        "security.protocol": cfg.security_protocol.lower(),
    }
    if cfg.sasl_mechanism:
        opts["sasl.mechanism"] = cfg.sasl_mechanism
        if cfg.sasl_plain_username:
            opts["sasl.username"] = cfg.sasl_plain_username
        if cfg.sasl_plain_password_env:
            opts["sasl.password"] = os.environ.get(cfg.sasl_plain_password_env, "")
    for ours, theirs in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                         ("ssl_keyfile", "ssl.key.location")):
        if getattr(cfg, ours):
            opts[theirs] = getattr(cfg, ours)
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl.endpoint.identification.algorithm"] = "https" if cfg.ssl_check_hostname else "none"
    return opts


def _raise(what: str, exc: Exception) -> None:
    err = exc.args[0] if exc.args and ck is not None and isinstance(exc.args[0], ck.KafkaError) else None
    if err is None:
        raise ConfluentConsumerError(f"{what}: {exc}") from exc
    cls = ConfluentCommitFailed if what == "commit" and err.name() in _REBALANCE_ERRORS else ConfluentConsumerError
    raise cls(f"{what}: {err.str()}", err.name(), err.retriable()) from exc


class ConfluentReadingConsumer:
    """One member of the consumer group reading the sensor topics, through librdkafka.

    ``on_assign``/``on_revoke`` are called from inside :meth:`poll` (librdkafka serves rebalance
    callbacks on the polling thread) with lists of (topic, partition); they only note partitions,
    the runner acts on them after ``poll`` returns, exactly as with the kafka-python consumer.
    """

    def __init__(self, cfg: KafkaConfig, bootstrap: str, topics: Iterable[str],
                 on_assign: Callable[[list[TP]], None] = lambda tps: None,
                 on_revoke: Callable[[list[TP]], None] = lambda tps: None) -> None:
        if ck is None:
            raise KafkaIOError(INSTALL_HINT)
        self.cfg = cfg
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self._timeout_s = cfg.poll_timeout_ms / 1000
        self._sought: dict[TP, int] = {}  # seeks not yet followed by a fetch (librdkafka has no position then)
        # seeks not yet followed by a fetch answer: librdkafka keeps its cached high watermark for the life
        # of the client (over revocations and seeks), so it counts only after a message or an end-of-partition
        # event of that partition arrived (both come from fetches at the sought offset or later)
        self._hw_unknown: set[TP] = set()
        # end-of-partition offsets last reported: librdkafka then reports the position one past them
        self._eof: dict[TP, int] = {}
        self._brokers_up: bool | None = None  # from the statistics; None before the first report
        self._consumer = ck.Consumer({**confluent_options(cfg, bootstrap), "error_cb": self._on_error,
                                      "stats_cb": self._on_stats})
        self._consumer.subscribe(list(topics), on_assign=self._assigned, on_revoke=self._revoked,
                                 on_lost=self._revoked)

    # -- librdkafka callbacks (served inside consume/poll on this thread) --
    def _assigned(self, consumer, partitions) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if tps:
            log.info("partitions assigned: %s", tps)
            self.on_assign(tps)

    def _revoked(self, consumer, partitions) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        for tp in tps:
            self._sought.pop(tp, None)
            self._hw_unknown.discard(tp)
            self._eof.pop(tp, None)
        if tps:
            log.info("partitions revoked: %s", tps)
            self.on_revoke(tps)

    def _on_error(self, err) -> None:
        if err.code() == ck.KafkaError._ALL_BROKERS_DOWN:
            if self._brokers_up is False:
                return  # said once per outage
            self._brokers_up = False
        log.warning("kafka client: %s", err.str())

    def _on_stats(self, raw: str) -> None:
        try:
            brokers = json.loads(raw).get("brokers", {}).values()
            self._brokers_up = any(b.get("state") == "UP" for b in brokers)
        except (ValueError, AttributeError):
            pass

    # -- the consumer interface of the runner --
    def poll(self, timeout_ms: int | None = None) -> list[RawMessage]:
        """The next batch of records, at most ``max_poll_records``: what is already fetched, or, when nothing is,
        the first record(s) to arrive within the timeout (and what came with them).

        Not one ``consume(max_poll_records, timeout)``: it returns only once it has that many messages or the
        timeout passed, so at a sensor feed's rate every reading waited out the poll timeout (200 ms).
        """
        timeout = self._timeout_s if timeout_ms is None else timeout_ms / 1000
        n = self.cfg.max_poll_records
        try:
            msgs = self._consumer.consume(num_messages=n, timeout=0)
            if not msgs:
                msgs = self._consumer.consume(num_messages=1, timeout=timeout)
                if msgs and n > 1:
                    msgs += self._consumer.consume(num_messages=n - 1, timeout=0)
        except ck.KafkaException as e:
            _raise("poll", e)
        out = [RawMessage(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
               for m in msgs if m.error() is None]
        if out:
            self._brokers_up = True
            if self._sought or self._hw_unknown or self._eof:
                for m in out:
                    self._sought.pop((m.topic, m.partition), None)
                    self._hw_unknown.discard((m.topic, m.partition))
                    self._eof.pop((m.topic, m.partition), None)
        if len(out) != len(msgs):
            for m in msgs:
                err = m.error()
                if err is None:
                    continue
                if err.code() == ck.KafkaError._PARTITION_EOF:
                    self._hw_unknown.discard((m.topic(), m.partition()))
                    self._eof[(m.topic(), m.partition())] = m.offset()
                    continue
                if err.fatal():
                    raise ConfluentConsumerError(f"poll: {err.str()}", err.name(), False)
                log.warning("consume: %s (librdkafka retries)", err.str())
        return out

    def commit(self, offsets: dict[TP, int], metadata: dict[TP, str] | None = None) -> None:
        """Commit "next offset to read" per partition, with optional metadata (synchronously)."""
        if not offsets:
            return
        metadata = metadata or {}
        tpl = [ck.TopicPartition(t, p, o, metadata=metadata[(t, p)]) if metadata.get((t, p))
               else ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            result = self._consumer.commit(offsets=tpl, asynchronous=False)
        except ck.KafkaException as e:
            _raise("commit", e)
        for tp in result or []:
            if tp.error is not None:
                _raise("commit", ck.KafkaException(tp.error))

    def committed(self, tp: TP) -> tuple[int | None, str]:
        """The group's committed offset and metadata for a partition (None when none)."""
        try:
            (got,) = self._consumer.committed([ck.TopicPartition(*tp)], timeout=10.0)
        except ck.KafkaException as e:
            _raise("committed", e)
        if got.error is not None:
            _raise("committed", ck.KafkaException(got.error))
        if got.offset < 0:
            return None, ""
        return got.offset, got.metadata or ""

    def seek(self, tp: TP, offset: int) -> None:
        try:
            self._consumer.seek(ck.TopicPartition(tp[0], tp[1], offset))
        except ck.KafkaException as e:
            _raise("seek", e)
        self._sought[tp] = offset
        self._hw_unknown.add(tp)
        self._eof.pop(tp, None)

    def beginning_offset(self, tp: TP) -> int:
        """The first offset still in the partition (ListOffsets EARLIEST; the LATEST answer asked alongside
        is dropped and does not reach librdkafka's cached high watermark, which only fetches set)."""
        try:
            low, _ = self._consumer.get_watermark_offsets(ck.TopicPartition(*tp), timeout=10.0, cached=False)
        except ck.KafkaException as e:
            _raise("beginning_offset", e)
        return low

    def highwater(self, tp: TP) -> int | None:
        """The high watermark of the latest fetch answer since the last seek (None before one)."""
        if tp in self._hw_unknown:
            return None
        _, high = self._consumer.get_watermark_offsets(ck.TopicPartition(*tp), cached=True)
        return high if high >= 0 else None

    def position(self, tp: TP) -> int | None:
        """Next offset to read: after the last consumed record, a pending seek, or the committed offset."""
        try:
            (got,) = self._consumer.position([ck.TopicPartition(*tp)])
        except ck.KafkaException:
            return None
        if got.offset >= 0:
            return self._past_eof(tp, got.offset)
        if tp in self._sought:
            return self._sought[tp]
        try:
            return self.committed(tp)[0]
        except KafkaError:
            return None

    def _past_eof(self, tp: TP, position: int) -> int:
        """librdkafka's position, corrected: after an end-of-partition event at offset E it says E + 1
        (librdkafka >= 2.2, confluentinc/librdkafka#4844)."""
        eof = self._eof.get(tp)
        return eof if eof is not None and position == eof + 1 else position

    def assignment(self) -> list[TP]:
        return sorted((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def partition_count(self, topic: str) -> int | None:
        """From a metadata request for the topic (0 when it does not exist, None when the request fails)."""
        try:
            meta = self._consumer.list_topics(topic, timeout=10.0).topics.get(topic)
        except ck.KafkaException:
            return None
        if meta is None or (meta.error is not None and meta.error.code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART):
            return 0
        return None if meta.error is not None else len(meta.partitions)

    def lag(self) -> dict[TP, int]:
        """Messages behind the high watermark per assigned partition (from fetch responses, no round trip)."""
        out: dict[TP, int] = {}
        assigned = self._consumer.assignment()
        if not assigned:
            return out
        for p in self._consumer.position(assigned):
            tp = (p.topic, p.partition)
            position = self._past_eof(tp, p.offset) if p.offset >= 0 else self._sought.get(tp)
            if position is None:
                continue
            _, high = self._consumer.get_watermark_offsets(p, cached=True)
            if high >= 0:
                out[tp] = max(0, high - position)
        return out

    def connected(self) -> bool:
        """True when librdkafka holds a live connection to some broker (statistics of the last second)."""
        return bool(self._brokers_up)

    def close(self) -> None:
        self._consumer.close()
