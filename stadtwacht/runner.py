"""The Kafka loop of ``run`` and ``demo``: poll, process, hand on, commit; warm-up after (re)assignment.

Order per batch, for at-least-once without lost alerts: decode and detect,
apply to the durable alert state (SQLite, with the batch's offsets), send
alert records, district records and dead letters to Kafka and flush (outside
the lock the HTTP threads share: a send may wait for a missing topic), then
commit offsets.

Restarts and rebalances: detection state is rebuilt, not shipped. Each
commit's metadata names the offset from which the partition's newest
``warmup`` span of event time can be re-read; a new owner seeks there and
re-processes up to the last applied offset with alerts held back, then
reconciles the durable alert state with the rebuilt levels.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from kafka.errors import CommitFailedError, KafkaError

from alerting.record import AlertRecord
from ingest.decode import RawMessage
from ingest.kafka_io import (
    DeadLetterSink,
    DeliveryFailed,
    flush_delivered,
    make_producer,
    open_consumer,
    unwritable_topics,
)
from stadtwacht.city_view import CityView
from stadtwacht.district_stage import DistrictStage, ensure_district_topic
from stadtwacht.durations import parse_duration
from stadtwacht.outputs import AlertOutputs
from stadtwacht.pipeline import Pipeline

__all__ = ["Health", "Runner", "freeze_startup_heap", "warmup_horizon_ns"]

log = logging.getLogger(__name__)

TP = tuple[str, int]

#: Messages kept in memory while a warm-up runs (see Runner.step).
MAX_DEFERRED = 200_000

#: GIL switch interval while the loop runs. At Python's 5 ms a notifier thread sending a webhook waits up to
#: 5 ms for the GIL after every socket call while the loop decodes a poll: a loopback send took 60-80 ms
#: instead of 15-25 ms at 1 ms (the switch only happens when another thread waits, so the loop loses little).
SWITCH_INTERVAL_S = 0.001

#: While an output topic cannot be written (or records were not delivered), the brokers are asked again this often
#: whether every output topic can be written (one Metadata request; a topic created meanwhile is noticed).
OUTPUT_RECHECK_S = 30.0


def freeze_startup_heap() -> None:
    """Move everything built at start-up (layer, indexes, config, modules) out of the cyclic GC's view.

    The loop allocates many short-lived containers per batch; without this every full collection walks
    the whole long-lived heap again (5-10 % of a batch). Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()


def warmup_horizon_ns(pipeline: Pipeline) -> int:
    """How much event time must be re-read to rebuild every window and `for` condition."""
    cfg = pipeline.cfg
    longest = 0
    for rule in cfg.rules:
        longest = max(longest, parse_duration(rule.window) + max(rule.for_ns() or [0])
                      + parse_duration(rule.keep_firing_for))
    return longest + parse_duration(cfg.detection.late_tolerance)


@dataclass
class Health:
    """What /readyz reports; written by the loop, read by HTTP threads."""

    started: float = field(default_factory=time.time)
    last_poll_ok: float = 0.0
    last_poll_error: str = ""
    assigned: list[TP] = field(default_factory=list)
    warming: list[TP] = field(default_factory=list)
    partial_view: bool = False  # owns only some readings partitions and rolls up in memory (Runner._check_view)
    stopping: bool = False
    #: output topics the brokers will not take records on (Runner.check_outputs) -> why, the fix, what goes there
    missing_topics: dict[str, str] = field(default_factory=dict)
    #: why the last batch's records were not delivered (its offsets not committed), until records are again
    delivery_error: str = ""
    delivery_topics: list[str] = field(default_factory=list)  # the topics that failed, as far as known
    delivery_failed_at: float = 0.0


class _Checkpoints:
    """Per partition: (event time, first offset) samples to find where a warm-up must start."""

    def __init__(self, horizon_ns: int) -> None:
        self.horizon = horizon_ns
        self.step = max(horizon_ns // 100, 1)
        self.samples: dict[TP, deque[tuple[int, int]]] = {}

    def add(self, tp: TP, time_ns: int, first_offset: int) -> None:
        q = self.samples.setdefault(tp, deque())
        if not q or time_ns - q[-1][0] >= self.step:
            q.append((time_ns, first_offset))

    def committed(self, tp: TP, now_ns: int, next_offset: int) -> int:
        """Record a commit of next_offset at event time now_ns; return where a warm-up must start.

        A commit can sit at offset 0 (messages deferred from the partition's start): the
        sample then says 0, never -1, which no consumer can seek to.
        """
        self.add(tp, now_ns, max(next_offset - 1, 0))
        q = self.samples[tp]
        while len(q) > 1 and q[1][0] < now_ns - self.horizon:
            q.popleft()
        return min(q[0][1], next_offset)

    def drop(self, tp: TP) -> None:
        self.samples.pop(tp, None)


class Runner:
    """Owns the consumer and producer of one process and drives the pipeline."""

    def __init__(self, pipeline: Pipeline, bootstrap: str, health: Health | None = None,
                 topics: list[str] | None = None, on_change=None, connect: bool = True) -> None:
        self.pipeline = pipeline
        self.cfg = pipeline.cfg.kafka
        self.health = health or Health()
        self.on_change = on_change or (lambda: None)
        self.lock = threading.RLock()
        self.topics = topics or [*self.cfg.topics, *self.cfg.community_topics]
        self._suppress_until: dict[TP, int] = {}
        self._new_partitions: list[TP] = []
        self._committed_at_assign: dict[TP, int] = {}
        self._resume_from: dict[TP, int] = {}  # the last offset committed (or first read) per partition
        self._deferred: list[RawMessage] = []  # read during a warm-up, processed after it
        self._deferred_from: dict[TP, int] = {}  # first deferred offset per partition (commits stop there)
        self._applied: dict[TP, int] = dict(pipeline.alerts.applied_offsets())  # next offset per partition
        self._warm_file = pipeline.state_dir / "warmup-offsets.json"
        self._local_warm = self._load_local_warm()
        self._revoked: list[TP] = []
        self._checkpoints = _Checkpoints(warmup_horizon_ns(pipeline))
        self._backlog = True  # look for committed but unpublished alert events once
        self._reconcile_due = False  # the view became whole: judge what a partial view held back
        self._bootstrap = bootstrap
        self._outputs_asked = -math.inf  # time.monotonic() of the last check_outputs
        self._outputs_known = False  # whether one was answered
        self.producer = self.consumer = self.district = None
        self._note_assignment()
        if connect:
            self.connect()

    def connect(self) -> None:
        """Create the Kafka clients (the producer connects at once: a wrong password fails here)."""
        self.producer = make_producer(self.cfg, self._bootstrap)
        self.dead_letters = DeadLetterSink(self.producer, self.cfg.dlq_suffix)
        self.outputs = AlertOutputs(self.pipeline, self.producer, self.cfg.alerts_topic)
        district_parts = (ensure_district_topic(self.cfg, self._bootstrap, self.producer)
                          if self.cfg.district_topic else 0)
        if district_parts:  # scale-out: detection events reach each district's owner through this topic
            self.topics = [*self.topics, self.cfg.district_topic]
        self.consumer = open_consumer(self.cfg, self._bootstrap, self.topics, on_assign=self._on_assign,
                                      on_revoke=self._on_revoke)
        self.district = (DistrictStage(self.pipeline, self.producer, self.consumer, self.cfg.district_topic,
                                       district_parts) if district_parts else None)
        if self.district is not None:
            self.district.publisher.on_delivered = self._delivered
        if district_parts:  # every instance's page and API show the whole city
            alerts = self.pipeline.alerts
            self.pipeline.city_view = CityView(self.cfg, self._bootstrap, self.cfg.district_topic, district_parts,
                                               self.producer, on_change=self.on_change,
                                               on_silence=alerts.take_shared_silence, silenced=alerts.is_silenced,
                                               alerts_topic=self.cfg.alerts_topic,
                                               on_alert=self.outputs.write_cap_later,
                                               unshared=alerts.unshared_silences)
            self.pipeline.city_view.start()
        self._note_assignment()  # every topic at 0 until partitions are assigned
        self.check_outputs()  # after ensure_district_topic: a broker that creates topics must not create that one

    def output_topics(self) -> dict[str, str]:
        """Every topic this process produces to, with what goes there."""
        out = {f"{t}{self.cfg.dlq_suffix}": f"dead letters of {t}" for t in self.topics if t != self.cfg.district_topic}
        out[self.cfg.alerts_topic] = "alert events"
        if self.cfg.district_topic:
            out[self.cfg.district_topic] = "district records"
        return out

    def check_outputs(self) -> None:
        """Ask the brokers whether every output topic takes records (``unwritable_topics``: one that is missing
        where the brokers create topics is created now, as its first record would); log each topic newly found
        missing at ERROR, with the fix, and each one found again at INFO. /readyz reports the missing ones and is
        503 meanwhile (checks.delivery): the first record to such a topic would stop the loop. The process
        starts anyway: the topic may be created later, and the loop checks again every OUTPUT_RECHECK_S."""
        wanted = self.output_topics()
        try:
            problems = unwritable_topics(self.cfg, self._bootstrap, wanted, timeout_ms=5000)
        except Exception as e:  # (KafkaError, OSError; a kafka-python without the internal used) it only informs
            log.warning("cannot check whether the output topics exist (%s: %s); asking again in %.0f s",
                        type(e).__name__, e, OUTPUT_RECHECK_S)
            return
        finally:
            self._outputs_asked = time.monotonic()
        self._outputs_known = True
        before = self.health.missing_topics
        missing = {t: f"{why} ({wanted[t]})" for t, why in problems.items() if t in wanted}
        for topic in missing.keys() - before.keys():
            log.error("output topic %s %s; until then %s are not delivered and every batch with one is re-read "
                      "from its last commit, committing nothing past it", topic, problems[topic], wanted[topic])
        for topic in before.keys() - missing.keys():
            log.info("output topic %s takes records now", topic)
        self.health.missing_topics = missing

    def _connect_until(self, stop: threading.Event) -> bool:
        """Connect, retrying with backoff: a broker that is down or refuses our credentials is an outage
        for /readyz and the metrics to show, not a crash loop."""
        delay = 1.0
        cause = _LastClientError()  # kafka-python logs why (e.g. authentication failed) and raises a timeout
        logging.getLogger("kafka").addHandler(cause)
        while self.consumer is None and not stop.is_set():
            try:
                self.connect()
            except (KafkaError, OSError, ValueError) as e:
                if self.producer is not None:
                    self.producer.close(timeout=0)
                    self.producer = None
                self.health.last_poll_error = f"{type(e).__name__}: {e}" + (f" ({cause.message})" if cause.message
                                                                              else "")
                self.pipeline.metrics.broker_up.set(0)
                log.error("cannot connect to Kafka (%s); retrying in %.0f s", self.health.last_poll_error, delay)
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        logging.getLogger("kafka").removeHandler(cause)
        return self.consumer is not None

    # -- rebalance callbacks (on kafka-python's IO thread, inside poll: must not block) --
    def _on_assign(self, tps: list[TP]) -> None:
        self._new_partitions.extend(tps)

    def _on_revoke(self, tps: list[TP]) -> None:
        self._revoked.extend(tps)

    def _settle_rebalance(self, messages: list[RawMessage]) -> list[RawMessage]:
        """Act on a rebalance after poll: drop revoked state; set up warm-up of new partitions.

        Records the same poll already returned for a partition that needs a
        warm-up are discarded (not processed, not committed): the seek re-reads them.
        """
        if self._revoked:
            revoked, self._revoked = self._revoked, []
            if self.district is not None:
                revoked = self.district.revoked(revoked)
            with self.lock:
                self.pipeline.drop_partitions(revoked)
            self._deferred = [m for m in self._deferred if (m.topic, m.partition) not in revoked]
            for tp in revoked:
                self._deferred_from.pop(tp, None)
                self._suppress_until.pop(tp, None)
                self._committed_at_assign.pop(tp, None)
                self._resume_from.pop(tp, None)
                self._checkpoints.drop(tp)
            self.on_change()  # the page shows what this process watches
        if not self._new_partitions:
            if self.consumer.assignment() != self.health.assigned:  # a rebalance that left this process nothing
                self._note_assignment()  # (the clients call back only with partitions)
            return messages
        owned = set(self.consumer.assignment())
        # what is still assigned (a partition assigned and revoked again within one poll, or while a failed
        # set-up waited for its retry, is not set up)
        new = [tp for tp in dict.fromkeys(self._new_partitions) if tp in owned]
        self._new_partitions = []
        try:
            return self._take_partitions(new, messages)
        except KafkaError:
            # a broker request failed half-way (e.g. a committed-offset or ListOffsets request timing out on
            # a busy broker): take the partitions again next round and read this poll's records again, rather
            # than skip them or leave partitions /readyz reports assigned but nobody set up (a district
            # partition never watched)
            self._new_partitions = new + self._new_partitions
            for tp, offset in _first_offsets(messages).items():
                if tp in owned:
                    self.consumer.seek(tp, offset)
            raise

    def _take_partitions(self, new: list[TP], messages: list[RawMessage]) -> list[RawMessage]:
        """Set up newly assigned partitions: district rebuilds, warm-up seeks, the offsets to hold alerts back to."""
        if self.district is not None:
            new, messages = self.district.assigned(new, messages)
        applied = self.pipeline.alerts.applied_offsets()
        self._applied.update(applied)
        rewound: set[TP] = set()
        for tp in new:
            committed, meta = self.consumer.committed(tp)
            self._committed_at_assign[tp] = committed or 0
            if committed is not None:
                self._resume_from[tp] = committed
            resume = max(committed or 0, applied.get(tp, 0))
            warm = _parse_warm(meta)
            if warm is None:  # brokers that drop commit metadata (Tansu): this process's own record
                warm = self._local_warm.get(tp)
            if committed is not None and warm is not None and warm < committed:
                log.info("warm-up of %s/%d: re-reading offsets %d..%d with alerts held back",
                         tp[0], tp[1], warm, resume)
                self.consumer.seek(tp, warm)
                rewound.add(tp)
                self._suppress_until[tp] = resume
            elif resume > (committed or 0):
                self._suppress_until[tp] = resume
            self._checkpoints.add(tp, 0, warm if warm is not None else (committed or 0))
            log.debug("assigned %s/%d: committed %s, applied %s, warm-up from %s", tp[0], tp[1], committed,
                      applied.get(tp), warm)
        self._note_assignment()
        self._check_view()
        self.on_change()
        if not rewound:
            return messages
        return [m for m in messages if (m.topic, m.partition) not in rewound]

    def _note_assignment(self) -> None:
        """What /readyz and /metrics say this process reads; also after a rebalance that left it nothing (no
        assign callback with partitions follows the revoke then)."""
        owned = self.consumer.assignment() if self.consumer is not None else []
        gone = set(self.health.assigned) - set(owned)
        self.health.assigned = owned
        for topic in self.topics:
            self.pipeline.metrics.assigned_partitions.labels(topic).set(sum(1 for tp in owned if tp[0] == topic))
            if topic != self.cfg.district_topic:  # at 0 from the start: a topic that never delivers shows as one
                self.pipeline.metrics.messages_consumed.labels(topic)
        for topic, part in gone:  # another replica reports its lag now; a last value kept here would add to it
            with contextlib.suppress(KeyError):
                self.pipeline.metrics.consumer_lag.remove(topic, str(part))

    def _check_view(self) -> None:
        """Note whether this process sees every readings partition; without a district topic it rolls up
        districts in memory, and a partial view may raise any alert but lower or end only those whose
        sensors it all reads (Pipeline.set_view).

        A partial view is brief in a one-process deployment (a killed member holds partitions until its
        session expires); when the view is whole again, the next round reconciles what it held back.
        """
        owned = self.consumer.assignment()
        if self.district is not None or not owned:
            return  # the district stage owns whole districts; with nothing assigned nothing is judged
        have = {t: sum(1 for tp in owned if tp[0] == t) for t in self.topics}
        total = {t: self.consumer.partition_count(t) for t in self.topics}
        partial = any(total[t] is None or have[t] < total[t] for t in self.topics)
        if partial and not self.pipeline.partial_view:
            log.warning("this process reads %d of %s readings partitions and rolls up districts in memory (no "
                        "kafka.district_topic): alerts may fire or rise; all-clears of districts with sensors on "
                        "the other partitions wait until it owns them all",
                        len(owned), sum(n or 0 for n in total.values()) or "?")
        elif self.pipeline.partial_view and not partial:
            log.info("this process now reads every readings partition; reconciling held-back all-clears")
            self._reconcile_due = True
        self.pipeline.set_view(owned if partial else None)
        self.health.partial_view = partial
        self.pipeline.metrics.partial_view.set(1 if partial else 0)

    # -- the loop --
    def run(self, stop: threading.Event) -> None:
        log.info("loading the decode and detection kernels (the first start after an install compiles them, "
                 "about a minute; not ready until then)")
        seconds = self._load_kernels(stop)
        if seconds is None:
            log.info("stopped while the kernels were loading (nothing read yet)")
            self.health.stopping = True
            return
        log.info("decode and detection kernels ready in %.1f s", seconds)
        # the full collection holds the GIL for 0.1-0.5 s: before the Kafka clients' IO threads exist (they
        # would miss heartbeats and log "blocking the event loop"); what connecting builds is frozen after
        freeze_startup_heap()
        if not self._connect_until(stop):
            self.health.stopping = True
            return
        log.info("consuming %s as group %r", ", ".join(self.topics), self.cfg.group_id)
        self.pipeline.alerts.start()
        gc.freeze()
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        try:
            try:
                with self.lock:
                    backlog = self._unpublished([])
                self._hand_on([], backlog)  # events committed before a kill but never published
            except KafkaError as e:
                log.warning("publishing the alert backlog failed (%s); retrying with the next batch", e)
                if isinstance(e, DeliveryFailed):
                    self._not_delivered(e)
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def _load_kernels(self, stop: threading.Event) -> float | None:
        """``Pipeline.compile_kernels`` on a thread of its own, the seconds it took; None when ``stop`` came
        first. A SIGTERM (a rollout, Ctrl-C) during the first start's minute of compiling ends the process at
        once instead of after it: nothing has been read yet, and numba writes its cache files whole or not at
        all. The compile thread is a daemon: it ends with the process."""
        done: list = []

        def load() -> None:
            try:
                done.append(self.pipeline.compile_kernels())
            except BaseException as e:  # handed to the caller
                done.append(e)

        loader = threading.Thread(target=load, name="kernel-load", daemon=True)
        loader.start()
        while loader.is_alive():  # waiting on the event, not a join: the signal handler sets it
            if stop.wait(0.1):
                return None
        (result,) = done
        if isinstance(result, BaseException):
            raise result
        return result

    def step(self) -> int:
        """One poll-process-commit round; returns the number of messages handled."""
        h = self.health
        if ((h.missing_topics or h.delivery_error or not self._outputs_known)
                and time.monotonic() - self._outputs_asked >= OUTPUT_RECHECK_S and self.consumer.connected()):
            self.check_outputs()
        try:
            messages = self.consumer.poll()
            self.health.last_poll_ok = time.time()
            messages = self._settle_rebalance(messages)
        except KafkaError as e:
            self.health.last_poll_error = f"{type(e).__name__}: {e}"
            self.pipeline.metrics.broker_up.set(0)
            self._lag_unknown()
            log.warning("poll (or setting up assigned partitions) failed: %s; retrying", self.health.last_poll_error)
            time.sleep(1.0)
            return 0
        try:
            return self._process(messages)
        except KafkaError as e:  # part of the batch's outputs may be out, its offsets are not committed
            self._reread_from_commit(e)
            return 0

    def _reread_from_commit(self, cause: KafkaError) -> None:
        """A batch's dead letters, alert or district records were not acknowledged (e.g. the broker went away
        while they were in flight, or refused them), or a broker request failed half-way through it: its offsets
        stay uncommitted, but its state is applied. Re-read every partition from its last commit as after a
        rebalance: state dropped and warmed up again with alerts held back, the re-read's dead letters sent
        again, alert events not marked published sent again."""
        owned = self.consumer.assignment()
        if self.district is not None:
            self.district.publisher.discard()
        if isinstance(cause, DeliveryFailed):
            self._not_delivered(cause)
        else:
            self.health.last_poll_error = f"{type(cause).__name__}: {cause}"
        self.pipeline.metrics.rereads.labels("delivery" if isinstance(cause, DeliveryFailed) else "broker").inc()
        log.error("%s; re-reading %d partition(s) from their last commit", cause, len(owned))
        for tp in owned:
            if tp in self._resume_from:
                self.consumer.seek(tp, self._resume_from[tp])
        self._revoked.extend(owned)
        self._new_partitions.extend(owned)
        self._backlog = True
        time.sleep(1.0)

    def _process(self, messages: list[RawMessage]) -> int:
        """Decode, detect, roll up, alert, hand on and commit one polled batch."""
        # Partitions with unread messages after this poll (or an unknown lag) hold the event-time clock back,
        # so a batch mixing a partition far ahead with one still catching up flags nobody stale.
        lags = self.consumer.lag()
        code = self.pipeline.sensors.partition_code
        self.pipeline.behind = {code(*tp) for tp in self.consumer.assignment() if lags.get(tp, 1) > 0}
        # set once per round: 1-then-0 would let a scrape in between read 1 while the broker is gone
        connected = self.consumer.connected()
        self.pipeline.metrics.broker_up.set(1 if connected else 0)
        started = time.perf_counter()
        next_offsets: dict[TP, int] = {}
        per_topic: dict[str, int] = {}
        applied = self._applied
        for m in messages:
            tp = (m.topic, m.partition)
            if m.offset + 1 > next_offsets.get(tp, -1):
                next_offsets[tp] = m.offset + 1
            if m.offset >= applied.get(tp, 0):  # a re-read (warm-up, redelivery) was counted the first time
                per_topic[m.topic] = per_topic.get(m.topic, 0) + 1
        per_topic.pop(self.cfg.district_topic, None)  # the readings topics' messages only (not the stages' own)
        if next_offsets.keys() - self._resume_from.keys():  # read before any commit: re-read from here
            self._resume_from = {**_first_offsets(messages), **self._resume_from}
        for topic, n in per_topic.items():  # one counter update per topic, not per message
            self.pipeline.metrics.messages_consumed.labels(topic).inc(n)
        district_messages: list[RawMessage] = []
        if self.district is not None:
            messages, district_messages = self.district.split(messages)
        was_warming = bool(self._suppress_until)
        warming = self._warming(next_offsets)
        records: list[AlertRecord] = []
        dead: list = []
        # The pipeline and alert-state work holds the lock the HTTP API and page threads take; the Kafka sends
        # and flushes come after it (``_hand_on``): a send waits up to max_block_ms for a missing topic's
        # metadata, a flush as long as the brokers take, and the API and page must answer meanwhile.
        due = warming  # whether the batch hands its outputs on (where each branch below did)
        with self.lock:
            if warming:
                # While any partition warms up, district levels are incomplete: only re-read (rebuild) what the
                # alert state already covers; keep every later message in memory, its offset not committed,
                # until the warm-up is over, so no transition is lost or judged on a half-rebuilt district.
                # (Past MAX_DEFERRED messages the rest is only re-read too and reaches the alert state as the
                # net change at the reconcile: a bound on memory during very long warm-ups.)
                def limit(tp: TP) -> int:
                    return max(self._suppress_until.get(tp, 0), self._applied.get(tp, 0))

                held = [m for m in messages if m.offset < limit((m.topic, m.partition))]
                later = [m for m in messages if m.offset >= limit((m.topic, m.partition))]
                if len(self._deferred) + len(later) <= MAX_DEFERRED:
                    for m in later:
                        self._deferred_from.setdefault((m.topic, m.partition), m.offset)
                    self._deferred.extend(later)
                else:
                    held = [*self._deferred, *messages]
                    self._deferred = []
                    self._deferred_from.clear()
                for tp, first in self._deferred_from.items():
                    if tp in next_offsets:
                        next_offsets[tp] = min(next_offsets[tp], first)
                result = self.pipeline.process_messages(held, deliver=False)
                dead += self._not_yet_handed_on(result.dead)
            else:
                if self._deferred:
                    messages = [*self._deferred, *messages]
                    self._deferred = []
                    for m in messages:
                        tp = (m.topic, m.partition)
                        next_offsets[tp] = max(next_offsets.get(tp, 0), m.offset + 1)
                self._deferred_from.clear()
                # Never apply a message twice: whatever the alert state already covers (a redelivery after
                # a rebalance or a crash between the SQLite commit and the offset commit) only rebuilds state.
                held = [m for m in messages if m.offset < self._applied.get((m.topic, m.partition), 0)]
                live = [m for m in messages if m.offset >= self._applied.get((m.topic, m.partition), 0)]
                due = bool(held or live)
                if held:
                    result = self.pipeline.process_messages(held, deliver=False)
                    dead += self._not_yet_handed_on(result.dead)
                if held or was_warming or self._reconcile_due:
                    log.info("re-read %d already applied message(s); reconciling alert state", len(held))
                    records = self.pipeline.reconcile()
                    self._reconcile_due = False
                if live:
                    live_offsets = {}
                    for m in live:
                        tp = (m.topic, m.partition)
                        live_offsets[tp] = max(live_offsets.get(tp, 0), m.offset + 1)
                    result = self.pipeline.process_messages(live, deliver=True, offsets=live_offsets)
                    dead += result.dead
                    records += result.records
                    # (the alert state holds these offsets now: a failed hand-on re-reads them as applied)
                    for tp, off in live_offsets.items():
                        self._applied[tp] = max(self._applied.get(tp, 0), off)
            if not warming:
                records += self.pipeline.tick()
            if self.district is not None:
                records += self.district.process(district_messages, next_offsets)
            unpublished = self._unpublished(records) if due or records else None
        self._hand_on(dead, unpublished)
        self.health.warming = sorted(self._suppress_until)
        self.pipeline.metrics.warming_up.set(1 if warming else 0)
        if messages:
            self._commit(next_offsets)
            self.pipeline.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.on_change()
        elif records:
            self.on_change()
        if not connected:
            self._lag_unknown()
        else:
            for (topic, part), lag in lags.items():  # positions and high watermarks only move inside poll
                self.pipeline.metrics.consumer_lag.labels(topic, str(part)).set(lag)
        return len(messages)

    def _lag_unknown(self) -> None:
        """Without a broker the lag is unknown (fetch answers stop, so the last values would read as "caught
        up"): NaN for every assigned partition until the next answer; stadtwacht_broker_up says why."""
        for topic, part in self.health.assigned:
            self.pipeline.metrics.consumer_lag.labels(topic, str(part)).set(math.nan)

    def _load_local_warm(self) -> dict[TP, int]:
        try:
            raw = json.loads(self._warm_file.read_text(encoding="utf-8"))
            return {(t, int(p)): int(o) for t, p, o in raw if int(o) >= 0}
        except (OSError, ValueError, TypeError):
            return {}

    def _save_local_warm(self, meta: dict[TP, str]) -> None:
        """Keep the warm-up starts next to the alert state too, for brokers that drop commit metadata."""
        for tp, m in meta.items():
            warm = _parse_warm(m)
            if warm is not None:
                self._local_warm[tp] = warm
        tmp = self._warm_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps([[t, p, o] for (t, p), o in self._local_warm.items()]), encoding="utf-8")
            os.replace(tmp, self._warm_file)
        except OSError as e:
            log.warning("cannot record warm-up offsets in %s: %s", self._warm_file, e)

    def _not_yet_handed_on(self, dead: list) -> list:
        """Dead letters of a warm-up re-read below the committed offset were sent before: drop them."""
        if not self._committed_at_assign:
            return dead
        return [d for d in dead if d.offset >= self._committed_at_assign.get((d.topic, d.partition), -1)]

    def _warming(self, next_offsets: dict[TP, int]) -> bool:
        for tp, until in list(self._suppress_until.items()):
            pos = next_offsets.get(tp)
            if pos is None:
                pos = self.consumer.position(tp)
            if pos is not None and pos >= until:
                del self._suppress_until[tp]
        return bool(self._suppress_until)

    def _unpublished(self, records: list[AlertRecord]) -> tuple[int, list[AlertRecord]] | None:
        """Under the lock: the alert events to publish and the newest one's id, None when there is no reason
        to look (no new records, nothing left over from a failed or interrupted hand-on).

        They are taken from the durable history (every committed event not yet marked published), so events
        committed to SQLite just before a kill are published after the restart.
        """
        if records or self._backlog:
            return self.pipeline.alerts.unpublished()
        return None

    def _hand_on(self, dead: list, unpublished: tuple[int, list[AlertRecord]] | None) -> None:
        """Alert records (``_unpublished``), district records and dead letters to Kafka, flushed: durable
        before the offset commit.

        Called without the lock: a send waits up to max_block_ms for the metadata of a topic the brokers do not
        have, a flush as long as they take to answer, and the API and page threads must not wait with it. Only
        marking the alert events published takes the lock again (a short SQLite write).
        """
        looked = unpublished is not None
        if looked:
            self._backlog = True  # until they are acknowledged
        upto, records = unpublished or (0, [])
        if records:  # first and on their own: a dead-letter topic the producer cannot reach must not hold them back
            flush_delivered(self.producer, self.outputs.emit(records), topics=(self.cfg.alerts_topic,))
            with self.lock:
                self.pipeline.alerts.mark_published(upto)
            self._delivered({self.cfg.alerts_topic})
        if self.district is not None:  # what the batch queued for the district topic (DistrictPublisher.flush)
            self.district.publisher.flush()
        if dead:
            topics = {d.topic + self.cfg.dlq_suffix for d in dead}
            flush_delivered(self.producer, self.dead_letters.send(dead), topics=topics)
            self._delivered(topics)
        if looked:
            self._backlog = False

    def _not_delivered(self, cause: DeliveryFailed) -> None:
        """/readyz: 503, naming the topics and the cause, until records are delivered again (``_delivered``)."""
        self.health.delivery_error = str(cause.args[0]) if cause.args else type(cause).__name__
        self.health.delivery_topics = list(cause.topics)
        self.health.delivery_failed_at = time.time()

    def _delivered(self, topics: set[str]) -> None:
        """Records sent to ``topics`` were all acknowledged: a delivery failure of (only) these topics is over,
        and none of them is missing."""
        h = self.health
        if h.delivery_error and topics.issuperset(h.delivery_topics):  # (none known: any delivery)
            log.info("records delivered to %s again", ", ".join(sorted(h.delivery_topics or topics)))
            h.delivery_error = ""
            h.delivery_topics = []
        if h.missing_topics.keys() & topics:
            for topic in sorted(h.missing_topics.keys() & topics):
                log.info("output topic %s takes records now", topic)
            h.missing_topics = {t: why for t, why in h.missing_topics.items() if t not in topics}

    def _commit(self, next_offsets: dict[TP, int]) -> None:
        now = self.pipeline.now_ns()
        meta = {}
        for tp, off in next_offsets.items():
            meta[tp] = f"warm={self._checkpoints.committed(tp, now, off)}"
        self._save_local_warm(meta)
        try:
            self.consumer.commit(next_offsets, meta)
            self._resume_from.update(next_offsets)
        except CommitFailedError as e:
            # the group rebalanced under us: the new owner re-processes from the last commit
            log.warning("commit failed after a rebalance (%s); the new owner re-reads these offsets", e)
        except KafkaError as e:
            log.warning("commit failed (%s); offsets will be committed with the next batch", e)

    def close(self) -> None:
        self.health.stopping = True
        if self.pipeline.city_view is not None:
            self.pipeline.city_view.stop()
        try:
            self.pipeline.alerts.stop(deadline_s=10.0)
        finally:
            try:
                if self.producer is not None:
                    self.producer.flush(timeout=10)
                    self.producer.close(timeout=5)  # (kafka-python 3.0 flushes here too, raising as flush does)
            except KafkaError as e:  # a batch is committed only after its records were acknowledged
                log.warning("stopping with records not acknowledged (%s); the offsets behind them are not "
                            "committed, the next owner reads them again", e)
            finally:
                if self.consumer is not None:
                    self.consumer.close()


def _first_offsets(messages: list[RawMessage]) -> dict[TP, int]:
    """The first offset of each partition in a poll's messages (they come in offset order per partition)."""
    first: dict[TP, int] = {}
    for m in messages:
        first.setdefault((m.topic, m.partition), m.offset)
    return first


class _LastClientError(logging.Handler):
    """Keeps the Kafka client's last error log line, the only place kafka-python says why it cannot connect."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        lowered = message.lower()
        if "authenticat" in lowered or ("bootstrap" not in lowered and "authenticat" not in self.message.lower()):
            self.message = message[:300]  # an authentication failure outranks the disconnects that follow it


def _parse_warm(meta: str) -> int | None:
    for part in (meta or "").split(";"):
        if part.startswith("warm="):
            try:
                warm = int(part[5:])
            except ValueError:
                return None
            return warm if warm >= 0 else None  # -1 was written by releases before the fix in _Checkpoints
    return None
