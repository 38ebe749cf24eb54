"""The Kafka edge: the group consumer of readings and the producer for dead letters and alerts.

At-least-once: offsets are committed only by :meth:`ReadingConsumer.commit`,
which the pipeline calls after a batch's outputs are durable. The commit
metadata carries the offset where a new owner of the partition starts its
warm-up re-read (see README, "Restarts and rebalances").
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from typing import Protocol

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.future import Future
from kafka.protocol.metadata import MetadataRequest
from kafka.structs import OffsetAndMetadata

from ingest.config import KafkaConfig
from ingest.deadletter import DeadLetter, dead_letter_headers
from ingest.decode import RawMessage
from ingest.kafka_python_reads import read_in_large_pieces
from ingest.kafka_python_records import parse_records_compiled
from stadtwacht.errors import StadtwachtError

__all__ = ["DeadLetterSink", "DeliveryFailed", "GroupConsumer", "KafkaIOError", "ReadingConsumer", "client_options",
           "flush_delivered", "make_producer", "open_consumer", "send_checked", "unwritable_topics"]

log = logging.getLogger(__name__)

TP = tuple[str, int]

read_in_large_pieces()  # kafka-python's IO thread reads fetch answers with less work under the GIL


class KafkaIOError(StadtwachtError):
    """A Kafka operation failed in a way the pipeline cannot ride out."""


def client_options(cfg: KafkaConfig, bootstrap: str) -> dict:
    """kafka-python options shared by consumer, producer and admin (security passed through)."""
    opts: dict = {"bootstrap_servers": bootstrap.split(","), "client_id": cfg.client_id,
                  "security_protocol": cfg.security_protocol}
    if cfg.sasl_mechanism:
        opts["sasl_mechanism"] = cfg.sasl_mechanism
        opts["sasl_plain_username"] = cfg.sasl_plain_username
        if cfg.sasl_plain_password_env:
            opts["sasl_plain_password"] = os.environ.get(cfg.sasl_plain_password_env, "")
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(cfg, key):
            opts[key] = getattr(cfg, key)
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_check_hostname"] = cfg.ssl_check_hostname
    return opts


class DeliveryFailed(KafkaError):
    """Records sent were not all acknowledged: the batch they came from must not be committed.

    ``topics``: the topics of the records that failed, as far as known (empty: unknown).
    """

    def __init__(self, message: str, topics: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.topics = tuple(sorted(set(topics)))


def send_checked(producer: KafkaProducer, topic: str, **kwargs) -> Future:
    """``producer.send``, a failure raised as ``DeliveryFailed`` naming the topic (the metadata wait for a
    topic the broker does not have, and does not create, times out after ``max_block_ms``)."""
    try:
        return producer.send(topic, **kwargs)
    except KafkaError as e:
        raise DeliveryFailed(f"cannot produce to {topic}: {e}", (topic,)) from e


def flush_delivered(producer: KafkaProducer, futures: list[Future], timeout: float = 60.0,
                    topics: Iterable[str] = ()) -> None:
    """Flush, then make sure every one of ``futures`` was acknowledged (``topics``: where they went, named by
    the ``DeliveryFailed`` raised when the failed records' own topics are not known).

    kafka-python's ``flush`` only logs a batch that failed (e.g. its delivery timeout passed in a broker
    outage) and raises when the timeout passes first; either way the records are not durable.
    """
    try:
        producer.flush(timeout=timeout)
    except KafkaTimeoutError as e:
        raise DeliveryFailed(f"records not acknowledged within {timeout:.0f} s", topics) from e
    failed = [f for f in futures if f.failed()]
    if failed:
        # kafka-python's record futures know their partition (an internal; other futures: the topics given)
        own = {tp[0] for f in failed if (tp := getattr(getattr(f, "_produce_future", None), "topic_partition", None))}
        raise DeliveryFailed(f"{len(failed)} of {len(futures)} record(s) not acknowledged: {failed[0].exception}",
                             own or topics)


def make_producer(cfg: KafkaConfig, bootstrap: str) -> KafkaProducer:
    """An idempotent-enough producer for dead letters and alerts: acks from all replicas, retries.

    It connects at once; an attempt gives up after 10 s (kafka-python: 30 s) because the runner retries
    with backoff and reports each failed attempt's cause on /readyz, so an operator sees why sooner.
    A send waits at most ``cfg.max_block_ms`` for a topic's metadata (kafka-python: 60 s; see KafkaConfig).
    """
    return KafkaProducer(**client_options(cfg, bootstrap), acks="all", retries=10, linger_ms=5,
                         max_request_size=max(2_097_152, 2 * 1_048_576), bootstrap_timeout_ms=10_000,
                         max_block_ms=cfg.max_block_ms)


def unwritable_topics(cfg: KafkaConfig, bootstrap: str, topics: Iterable[str],
                      timeout_ms: int = 10_000) -> dict[str, str]:
    """Which of ``topics`` a producer cannot send to as the cluster stands, each with why and the fix.

    One Metadata request naming them, with auto-creation allowed as the producer's own requests have it: brokers
    that create topics create them now, as the first record would have (Tansu; Apache Kafka with
    ``auto.create.topics.enable=true``), brokers that do not answer that the topic is unknown. (A listing of
    all topics would call a topic the brokers create as it is used missing.) Raises ``KafkaError`` (or
    ``OSError``) when the brokers cannot be asked.
    """
    names = list(dict.fromkeys(topics))
    if not names:
        return {}
    admin = KafkaAdminClient(**client_options(cfg, bootstrap), bootstrap_timeout_ms=timeout_ms,
                             request_timeout_ms=timeout_ms)
    try:
        request = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=t) for t in names],
                                  allow_auto_topic_creation=True)

        async def ask():
            return await admin._manager.send(request)

        response = admin._manager.run(ask)
    finally:
        admin.close()
    problems = {}
    for t in response.topics:
        error = kafka_errors.for_code(t.error_code)
        if error is kafka_errors.UnknownTopicOrPartitionError:
            problems[t.name] = "does not exist and the brokers do not create topics: create it"
        elif error is kafka_errors.TopicAuthorizationFailedError:
            problems[t.name] = ("is not authorized for this client (TopicAuthorizationFailedError): allow it to "
                                "describe and write the topic")
    return problems


class GroupConsumer(Protocol):
    """What the runner needs of a readings consumer, whichever client library serves it.

    Errors are raised as kafka-python's ``KafkaError`` (``CommitFailedError`` when a
    rebalance took the partitions away before the commit).
    """

    def poll(self, timeout_ms: int | None = None) -> list[RawMessage]: ...
    def commit(self, offsets: dict[TP, int], metadata: dict[TP, str] | None = None) -> None: ...
    def committed(self, tp: TP) -> tuple[int | None, str]: ...
    def seek(self, tp: TP, offset: int) -> None: ...
    def position(self, tp: TP) -> int | None: ...
    def beginning_offset(self, tp: TP) -> int:
        """The first offset still in an assigned partition (asked of the broker: ListOffsets EARLIEST)."""
        ...

    def highwater(self, tp: TP) -> int | None:
        """An assigned partition's high watermark from a fetch answer received since it was assigned and
        after its last :meth:`seek` (kafka-python: after its last seek that moved the position), None until
        one arrived; never a ListOffsets(LATEST) answer, which Tansu gets wrong."""
        ...

    def assignment(self) -> list[TP]: ...
    def partition_count(self, topic: str) -> int | None:
        """How many partitions the topic has (cluster metadata; 0 when it does not exist), None when unknown."""
        ...

    def lag(self) -> dict[TP, int]: ...
    def connected(self) -> bool: ...
    def close(self) -> None: ...


def open_consumer(cfg: KafkaConfig, bootstrap: str, topics: Iterable[str],
                  on_assign: Callable[[list[TP]], None] = lambda tps: None,
                  on_revoke: Callable[[list[TP]], None] = lambda tps: None) -> GroupConsumer:
    """The readings consumer of the client library ``cfg.client`` names ("kafka-python" or "confluent")."""
    if cfg.client == "confluent":
        from ingest.kafka_confluent import ConfluentReadingConsumer

        return ConfluentReadingConsumer(cfg, bootstrap, topics, on_assign=on_assign, on_revoke=on_revoke)
    if cfg.client != "kafka-python":
        raise KafkaIOError(f"unknown kafka.client {cfg.client!r}: 'kafka-python' or 'confluent'")
    return ReadingConsumer(cfg, bootstrap, topics, on_assign=on_assign, on_revoke=on_revoke)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: ReadingConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked):
        tps = [(tp.topic, tp.partition) for tp in revoked]
        if tps:
            log.info("partitions revoked: %s", tps)
            self.owner.on_revoke(tps)

    def on_partitions_assigned(self, assigned):
        tps = [(tp.topic, tp.partition) for tp in assigned]
        if tps:
            log.info("partitions assigned: %s", tps)
            self.owner.on_assign(tps)


class _FinishedJoin(Future):
    """A join that finished between polls, dressed as pending: the first awaiter gets its assignment."""

    def __init__(self, assignment: bytes) -> None:
        super().__init__()
        self._assignment = assignment

    def add_callback(self, f, *args, **kwargs):
        super().add_callback(f, *args, **kwargs)
        if not self.is_done:
            self.success(self._assignment)
        return self


def _keep_joins_finished_between_polls(coordinator) -> None:
    """Work around kafka-python 3.0.12 throwing away a rebalance that completed between two polls.

    Its ``join_group_async`` starts a new JoinGroup whenever the cached join task ``is_done``, success
    included, so a JoinGroup/SyncGroup answered while the application processes a batch (or, in a test,
    polls another member) is discarded and the whole group rebalances again: on Tansu each round waits
    half the session timeout, and a mixed group took up to a minute to settle. Here such a finished join
    is handed back as pending, so the next poll completes it (assignment, listener) as if it had waited.
    Failed joins are left alone: kafka-python retries those itself.

    A join in flight or finished also counts as "rejoin needed" (the Java client's
    ``rejoinNeededOrPending``). kafka-python asks only whether the metadata the leader assigned from is
    out of date, and the leader brings it up to date inside the join: a join that a metadata change
    started (a topic created or grown after the service subscribed) and that finished between two polls
    was never collected, heartbeats stayed off, and the member left the group for good without a word.
    """
    if not hasattr(coordinator, "_join_task"):  # another kafka-python: nothing to mend
        return
    join_group = coordinator.join_group_async
    need_rejoin = coordinator.need_rejoin

    def need_rejoin_or_pending() -> bool:
        return coordinator._join_task is not None or need_rejoin()

    async def join_group_async(timeout_ms=None):
        task = coordinator._join_task
        if task is not None and task.succeeded():
            coordinator._join_task = _FinishedJoin(task.value)
        return await join_group(timeout_ms=timeout_ms)

    coordinator.join_group_async = join_group_async
    coordinator.need_rejoin = need_rejoin_or_pending


class ReadingConsumer:
    """One member of the consumer group reading the sensor topics.

    ``on_assign``/``on_revoke`` are called from inside :meth:`poll` during a
    rebalance with lists of (topic, partition); kafka-python 3 runs them on
    its IO thread, so they must not block (no ``committed()``/``seek()`` there:
    note the partitions and act after ``poll`` returns).
    """

    def __init__(self, cfg: KafkaConfig, bootstrap: str, topics: Iterable[str],
                 on_assign: Callable[[list[TP]], None] = lambda tps: None,
                 on_revoke: Callable[[list[TP]], None] = lambda tps: None) -> None:
        self.cfg = cfg
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self._consumer = KafkaConsumer(
            **client_options(cfg, bootstrap),
            group_id=cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.auto_offset_reset,
            max_poll_records=cfg.max_poll_records,
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_partition_fetch_bytes=4 * 1_048_576,
            fetch_max_bytes=32 * 1_048_576,
            # never create an input topic (as librdkafka's consumer): a misspelt kafka.topics entry would be
            # created empty and read without a word; a missing topic shows on /readyz and as StadtwachtTopicUnread
            allow_auto_create_topics=False,
        )
        # kafka-python 3.0.12 does not hand that setting to the cluster metadata its requests are built from
        # (kafka/net/manager.py builds ClusterMetadata without it): its Metadata requests asked brokers to create
        # the subscribed topics all the same. Set where the requests read it.
        self._consumer._cluster.config["allow_auto_create_topics"] = False
        #: Records parsed by the compiled pass (``ingest.kafka_python_records``), handed out as RawMessage.
        self.compiled_records = parse_records_compiled(self._consumer)
        self._consumer.subscribe(topics=list(topics), listener=_Listener(self))
        _keep_joins_finished_between_polls(self._consumer._coordinator)

    def poll(self, timeout_ms: int | None = None) -> list[RawMessage]:
        """The next batch of records, at most ``max_poll_records``."""
        if timeout_ms is None:
            timeout_ms = self.cfg.poll_timeout_ms
        records = self._consumer.poll(timeout_ms=timeout_ms)
        if records:
            self._fetch_ahead()
        out: list[RawMessage] = []
        if self.compiled_records:
            for msgs in records.values():
                out.extend(msgs)
            return out
        for tp, msgs in records.items():
            t, p = tp.topic, tp.partition
            out.extend(RawMessage(t, p, m.offset, m.key, m.value, m.timestamp) for m in msgs)
        return out

    def _fetch_ahead(self) -> None:
        """Send the next fetch now, so the broker answers while the batch just returned is processed.

        kafka-python 3.0 sends it only when a poll finds nothing buffered: a poll that had to wait for
        its records returns them without a fetch in flight, and every poll then waits a full fetch round
        trip (~45 ms per 40 k readings on the embedded broker: a third of end-to-end time). Partitions
        with buffered records or a fetch in flight are skipped by the fetcher itself.
        """
        with contextlib.suppress(AttributeError):  # a kafka-python without this internal: fetch as before
            self._consumer._fetcher.send_fetches()

    def commit(self, offsets: dict[TP, int], metadata: dict[TP, str] | None = None) -> None:
        """Commit "next offset to read" per partition, with optional metadata."""
        if not offsets:
            return
        metadata = metadata or {}
        self._consumer.commit({
            TopicPartition(t, p): OffsetAndMetadata(o, metadata.get((t, p), ""), -1)
            for (t, p), o in offsets.items()
        })

    def committed(self, tp: TP) -> tuple[int | None, str]:
        """The group's committed offset and metadata for a partition (None when none)."""
        meta = self._consumer._coordinator.fetch_committed_offsets([TopicPartition(*tp)])
        om = meta.get(TopicPartition(*tp))
        if om is None or om.offset < 0:
            return None, ""
        return om.offset, om.metadata or ""

    def seek(self, tp: TP, offset: int) -> None:
        ktp = TopicPartition(*tp)
        state = self._consumer._subscription.assignment.get(ktp)
        was = state.position if state is not None and state.has_valid_position else None
        self._consumer.seek(ktp, offset)
        # kafka-python keeps the high watermark over a seek and sets it only from fetches at the current
        # position: forget it when the position moves. A seek to where the consumer already is keeps it
        # (with Apache Kafka's incremental fetch sessions an unchanged empty partition gets no new answer).
        if state is not None and (was is None or was.offset != offset):
            state.highwater = None

    def beginning_offset(self, tp: TP) -> int:
        """The first offset still in the partition (ListOffsets EARLIEST)."""
        ktp = TopicPartition(*tp)
        return self._consumer.beginning_offsets([ktp])[ktp]

    def highwater(self, tp: TP) -> int | None:
        """The high watermark of the latest fetch answer since the last seek (None before one)."""
        return self._consumer.highwater(TopicPartition(*tp))

    def position(self, tp: TP) -> int | None:
        try:
            return self._consumer.position(TopicPartition(*tp), timeout_ms=1000)
        except KafkaError:
            return None

    def assignment(self) -> list[TP]:
        return sorted((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def partition_count(self, topic: str) -> int | None:
        """From the metadata cache the group assignment also used (a metadata request when not cached)."""
        try:
            return len(self._consumer.partitions_for_topic(topic))
        except KafkaError:
            return None

    def lag(self) -> dict[TP, int]:
        """Messages behind the high watermark per assigned partition (from fetch responses)."""
        out: dict[TP, int] = {}
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is None:
                continue
            pos = self._consumer._subscription.assignment.get(tp)
            position = pos.position.offset if pos is not None and pos.position is not None else None
            if position is not None:
                out[(tp.topic, tp.partition)] = max(0, hw - position)
        return out

    def connected(self) -> bool:
        """True when the client holds a live connection to some broker."""
        client = self._consumer._client
        try:
            return any(client.connected(b.node_id) for b in client.cluster.brokers())
        except Exception:  # a client-internal hiccup is reported as 'not connected', never raised
            return False

    def close(self) -> None:
        self._consumer.close(autocommit=False)


#: Largest original value (and key) a dead letter carries; longer ones are cut (the producer's request limit
#: is 2 MiB, and a message the producer refuses must never stop the pipeline).
DEAD_LETTER_MAX_BYTES = 1_000_000


class DeadLetterSink:
    """Sends dead letters to ``<source topic><suffix>`` with the original bytes and reason headers.

    Originals over ``max_bytes`` are cut to their first ``max_bytes`` with a ``stadtwacht.truncated``
    header giving the original size.
    """

    def __init__(self, producer: KafkaProducer, suffix: str, max_bytes: int = DEAD_LETTER_MAX_BYTES) -> None:
        self._producer = producer
        self._suffix = suffix
        self._max = max_bytes

    def send(self, letters: list[DeadLetter]) -> list[Future]:
        """Send (not flush) the letters; their delivery futures."""
        futures = []
        for d in letters:
            key, value, headers = d.key, d.value, dead_letter_headers(d)
            if len(value or b"") > self._max or len(key or b"") > self._max:
                headers.append(("stadtwacht.truncated", f"{len(value or b'')}/{len(key or b'')}".encode()))
                value, key = (value or b"")[: self._max], None if key is None else key[: self._max]
            futures.append(send_checked(self._producer, d.topic + self._suffix, key=key, value=value, headers=headers))
        return futures
