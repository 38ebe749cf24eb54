"""Scale-out: detection events repartitioned by district through an internal Kafka topic.

With ``[kafka] district_topic`` set, each process runs two stages on one consumer:

* sensor side (where a sensor's partition is): detection, then every (sensor, rule) level
  transition is published to ``district_topic``, once per district the sensor speaks for, with
  key ``"<district>|<sensor>|<rule>"`` and partition ``murmur2(district) % partitions`` (all of
  a district's records share a partition; the latest record per key is the full state, so the
  topic may be compacted). The first reading of a sensor on a watched quantity also publishes a
  ``"<district>|<sensor>|seen:<quantity>"`` marker (the denominator of the quorum's ``min_fraction``);
* district side (where the district's partition is): records feed the roll-up and the alert
  state; only districts of assigned ``district_topic`` partitions are alerted, so exactly one
  process owns each district's episodes and notifications.

Assignment of a district partition rebuilds its roll-up by reading the partition from the
beginning with alerts held back, then reconciles the alert state of that partition's districts.
Revocation forgets those districts' roll-up; the episodes stay until the assignment has been stable
for ``retire_grace_s`` (an eager rebalance mostly hands the same partitions back), then they are
retired in this process's state *without* an event.

Records older (in event time) than the stored transition of their (sensor, rule) are ignored, so
re-publishing after a crash or a warm-up is harmless.

Episodes move with their district (a changelog, as Kafka Streams keeps one per state store): the owner
publishes every committed change of an episode's state (events, acknowledgements, escalations, the final
state when it ends) to the district's partition with key ``"<district>|~episode|<hazard>|<quantity>"``.
A new owner reads them with the rest of the partition and carries the episodes on before the reconcile:
same ``alert_id``, sequence numbers continuing, acknowledgement kept, nothing announced again. What the
old owner committed but had not published yet (it was killed in between) is judged from the levels:
an ended episode gets its ``resolved`` again under the same ``alert_id``/``seq`` (a duplicate a consumer
drops), and an episode it had just opened is opened by the new owner again (``firing`` once more).

Every instance also reads that changelog for the whole city (``stadtwacht.city_view``) and forwards an
acknowledgement of an alert it does not decide as ``"<district>|~ack|<alert_id>"``: the owner applies it once
its partition is live and deletes the record (a tombstone). A silence created or deleted through one
instance's API is shared as ``"|~silence|<silence_id>"`` on partition 0 (the silence, or a tombstone), so
that whichever instance decides a district keeps it quiet.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import msgspec
import numpy as np
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
from kafka.partitioner.default import murmur2

from alerting.episodes import Episode
from alerting.errors import AckOutdatedError, UnknownAlertError
from alerting.record import AlertRecord
from detection.events import DetectionBatch
from geodata.levels import DistrictLevel
from ingest.batch import ReadingBatch
from ingest.decode import RawMessage
from ingest.kafka_io import GroupConsumer, client_options, flush_delivered, send_checked
from ingest.quantities import QUANTITIES

__all__ = ["ACK_KEY", "EPISODE_KEY", "SILENCE_KEY", "AckCommand", "DistrictPublisher", "DistrictRecord",
           "DistrictStage", "EpisodeState", "district_partition", "ensure_district_topic", "read_episode_state"]

log = logging.getLogger(__name__)

TP = tuple[str, int]
_QCODE = {q: i for i, q in enumerate(QUANTITIES)}


class DistrictRecord(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One (district, sensor, rule) level, or a ``seen`` marker when ``rule`` is empty (msgpack)."""

    district: str
    sensor: str
    rule: str = ""
    level: int = 0
    value: float = 0.0
    threshold: float = 0.0
    time_ns: int = 0
    quantity: str = ""  # for a marker: the quantity the sensor measures
    lat: float | None = None  # the sensor's last known position (maps citizen sensors on the district side)
    lon: float | None = None


class EpisodeState(msgspec.Struct, kw_only=True):
    """An episode's full state as its owner last committed it (the district changelog, msgpack)."""

    episode: Episode
    active: bool


class AckCommand(msgspec.Struct, kw_only=True):
    """An acknowledgement given on another instance, for the district's owner to apply (msgpack)."""

    operator: str
    level: int | None = None  # the level the operator saw (None: any; an older version's command has none)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(DistrictRecord).decode
_decode_episode = msgspec.msgpack.Decoder(EpisodeState).decode
_decode_ack = msgspec.msgpack.Decoder(AckCommand).decode
#: Middle part of an episode record's key ("<district>|~episode|<hazard>|<quantity>"); no sensor id starts with ~.
EPISODE_KEY = b"|~episode|"
#: Middle part of a forwarded acknowledgement's key ("<district>|~ack|<alert_id>"; see stadtwacht.city_view).
ACK_KEY = b"|~ack|"
#: Start of a shared silence's key ("|~silence|<silence_id>", partition 0; see stadtwacht.city_view).
SILENCE_KEY = b"|~silence|"


def read_episode_state(value: bytes, where: str = "") -> EpisodeState | None:
    """An episode record's state; None (logged with ``where`` it was read) when it cannot be decoded."""
    try:
        return _decode_episode(value)
    except (msgspec.DecodeError, TypeError):
        log.warning("undecodable episode record %sskipped", f"at {where} " if where else "")
        return None


def episode_key(ep: Episode) -> bytes:
    return f"{ep.district}|~episode|{ep.hazard}|{ep.quantity}".encode()


def district_partition(district: str, partitions: int) -> int:
    """The district topic partition of a district (Kafka's default partitioner applied to the district id)."""
    return (murmur2(district.encode()) & 0x7FFFFFFF) % partitions


class DistrictPublisher:
    """Sensor side: turns the detection events of one process into district topic records."""

    def __init__(self, pipeline, producer: KafkaProducer, topic: str, partitions: int) -> None:
        self.pipeline = pipeline
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self._part = {d: district_partition(d, partitions) for d in pipeline.layer.ids}
        watched = {info.quantity for info in pipeline.engine.rule_info if info.hazard != "sensor"}
        self._watched = np.array([q in watched for q in QUANTITIES])
        self._seen_sent = np.zeros((0, len(QUANTITIES)), dtype=bool)
        # (sensor idx, rule idx) -> (level, value, threshold, time): this process's detection levels
        self._levels: dict[tuple[int, int], tuple[int, float, float, int]] = {}
        self._sent: dict[tuple[int, int], int] = {}  # -> event time of the last record sent
        self._queued: list[tuple[bytes, bytes | None, int]] = []  # (key, value, partition) to send at the flush
        #: called with the topic after records sent to it were all acknowledged (the runner's readiness)
        self.on_delivered: Callable[[set[str]], None] = lambda topics: None

    def publish(self, batch: ReadingBatch | None, events: DetectionBatch, deliver: bool) -> None:
        """Record the batch's transitions; send them unless a warm-up holds them back (then: ``snapshot``)."""
        mapping = self.pipeline.mapping
        mapping.update()
        if batch is not None and len(batch):
            self._send_markers(batch)
        for row in range(len(events)):
            key = (int(events.sensor[row]), int(events.rule[row]))
            self._levels[key] = (int(events.level[row]), float(events.value[row]),
                                 float(events.threshold[row]), int(events.time[row]))
            if deliver:
                self._send(key)

    def snapshot(self) -> None:
        """After a warm-up: send every level not sent yet (the district side keeps the newest per key)."""
        self.pipeline.mapping.update()
        for key, lv in self._levels.items():
            if self._sent.get(key) != lv[3]:
                self._send(key)

    def drop_sensors(self, mask: np.ndarray) -> None:
        """Forget levels and seen markers of sensors whose partitions were revoked (their new owner publishes
        them; this process too when it reads them again after a failed delivery)."""
        rows = np.flatnonzero(mask)
        self._seen_sent[rows[rows < self._seen_sent.shape[0]]] = False
        gone = set(rows.tolist())
        if gone:
            for key in [k for k in self._levels if k[0] in gone]:
                self._levels.pop(key, None)
                self._sent.pop(key, None)

    def send(self, key: bytes, value: bytes | None, partition: int) -> None:
        """Queue a record for ``flush``: records are made under the runner's lock (shared with the API and page
        threads), and a producer send may wait up to max_block_ms for the topic's metadata."""
        self._queued.append((key, value, partition))

    def flush(self) -> None:
        """Send every queued record and see each acknowledged (``DeliveryFailed`` otherwise: the rest of the
        queue is dropped with it, as the batch behind them is re-read). The runner calls it outside its lock."""
        if self._queued:
            queued, self._queued = self._queued, []
            futures = [send_checked(self.producer, self.topic, key=key, value=value, partition=partition)
                       for key, value, partition in queued]
            flush_delivered(self.producer, futures, topics=(self.topic,))
            self.on_delivered({self.topic})

    def discard(self) -> None:
        """Drop what is queued: a hand-on failed before the flush and the runner re-reads the batch, whose
        re-read (levels, markers, episode states of the partitions it takes again) makes them anew."""
        self._queued = []

    # -- helpers --
    def _districts(self, sensor: int) -> list[str]:
        m = self.pipeline.mapping
        lo, hi = np.searchsorted(m.pair_sensor, [sensor, sensor + 1])
        ids = self.pipeline.layer.ids
        return [ids[int(d)] for d in m.pair_district[lo:hi].tolist()]

    def _position(self, sensor: int) -> tuple[float | None, float | None]:
        lat, lon = float(self.pipeline.sensors.lat[sensor]), float(self.pipeline.sensors.lon[sensor])
        return (None, None) if lat != lat or lon != lon else (lat, lon)

    def _send(self, key: tuple[int, int]) -> None:
        sensor, rule = key
        level, value, threshold, time_ns = self._levels[key]
        sid = self.pipeline.sensors.id_of(sensor)
        rname = self.pipeline.engine.rule_info[rule].name
        lat, lon = self._position(sensor)
        for d in self._districts(sensor):
            rec = DistrictRecord(district=d, sensor=sid, rule=rname, level=level, value=value,
                                 threshold=threshold, time_ns=time_ns, lat=lat, lon=lon)
            self.send(f"{d}|{sid}|{rname}".encode(), _encode(rec), self._part[d])
        self._sent[key] = time_ns

    def _send_markers(self, batch: ReadingBatch) -> None:
        n = len(self.pipeline.sensors)
        if self._seen_sent.shape[0] < n:
            grown = np.zeros((max(n, 2 * self._seen_sent.shape[0]), len(QUANTITIES)), dtype=bool)
            grown[: self._seen_sent.shape[0]] = self._seen_sent
            self._seen_sent = grown
        s = batch.sensor.astype(np.int64)
        q = batch.quantity.astype(np.int64)
        new = self._watched[q] & ~self._seen_sent[s, q]
        if not new.any():
            return
        pairs = np.unique(s[new] * len(QUANTITIES) + q[new])
        for p in pairs.tolist():
            sensor, qc = divmod(p, len(QUANTITIES))
            self._seen_sent[sensor, qc] = True
            sid = self.pipeline.sensors.id_of(sensor)
            lat, lon = self._position(sensor)
            for d in self._districts(sensor):
                rec = DistrictRecord(district=d, sensor=sid, quantity=QUANTITIES[qc], lat=lat, lon=lon)
                self.send(f"{d}|{sid}|seen:{QUANTITIES[qc]}".encode(), _encode(rec), self._part[d])


class DistrictStage:
    """District side, plus the hooks the runner calls: split, assigned, revoked, process."""

    def __init__(self, pipeline, producer: KafkaProducer, consumer: GroupConsumer, topic: str, partitions: int,
                 now_ns: Callable[[], int] | None = None, retire_grace_s: float = 15.0) -> None:
        self.pipeline = pipeline
        self.consumer = consumer
        self.topic = topic
        self.partitions = partitions
        self.publisher = DistrictPublisher(pipeline, producer, topic, partitions)
        self._rule_index = {info.name: k for k, info in enumerate(pipeline.engine.rule_info)}
        self._district_index = {d: i for i, d in enumerate(pipeline.layer.ids)}
        self._part_of = np.array([district_partition(d, partitions) for d in pipeline.layer.ids], dtype=np.int64)
        self.owned: set[int] = set()  # assigned district topic partitions
        self.rebuilding: dict[int, int] = {}  # partition -> end offset to reach (-1: not known yet)
        self._now_ns = now_ns or pipeline.now_ns
        self._unknown_rules: set[str] = set()
        self._retire_check_at: float | None = None  # monotonic time to retire episodes of districts not owned
        self.retire_grace_s = retire_grace_s
        self._districts_of: dict[int, set[str]] = {}
        for d, p in zip(pipeline.layer.ids, self._part_of.tolist(), strict=True):
            self._districts_of.setdefault(p, set()).add(d)
        self._handed: dict[int, dict[bytes, EpisodeState]] = {}  # rebuilding partition -> episode key -> state
        pipeline.watched_districts = set()  # none until the group assigns district partitions
        self._published: dict[bytes, tuple[int, str, bytes]] = {}  # key -> (partition, alert id, value) sent
        self._acks: dict[bytes, tuple[int, AckCommand]] = {}  # forwarded acknowledgement key -> (partition, it)
        pipeline.district_out = self.publisher

    # -- runner hooks --
    def split(self, messages: list[RawMessage]) -> tuple[list[RawMessage], list[RawMessage]]:
        """(sensor-topic messages, district-topic messages)."""
        if not any(m.topic == self.topic for m in messages):
            return messages, []
        return ([m for m in messages if m.topic != self.topic], [m for m in messages if m.topic == self.topic])

    def assigned(self, tps: list[TP], messages: list[RawMessage]) -> tuple[list[TP], list[RawMessage]]:
        """Take the district partitions of an assignment: rebuild each from its beginning.

        The end to reach is the high watermark of the first fetch answer after the seek (what had
        been written by then, or more), not a ListOffsets(LATEST) request, which Tansu answers wrongly.
        """
        mine = [tp for tp in tps if tp[0] == self.topic]
        if not mine:
            return tps, messages
        begin = {tp: self.consumer.beginning_offset(tp) for tp in mine}
        self._retire_check_at = time.monotonic() + self.retire_grace_s
        for tp in mine:
            self.owned.add(tp[1])
            self.consumer.seek(tp, begin[tp])
            self.rebuilding[tp[1]] = -1  # even when empty: reconcile drops stale episodes
            self._handed[tp[1]] = {}
            log.info("district partition %d: rebuilding roll-up from offset %d with alerts held back",
                     tp[1], begin[tp])
        self._note_watched()
        rest = [tp for tp in tps if tp[0] != self.topic]
        return rest, [m for m in messages if m.topic != self.topic]

    def revoked(self, tps: list[TP]) -> list[TP]:
        """Drop state of revoked district partitions; note revoked sensor partitions; return the latter."""
        mine = {p for t, p in tps if t == self.topic}
        rest = [tp for tp in tps if tp[0] != self.topic]
        if rest:
            self.publisher.drop_sensors(self.pipeline.sensors.sensors_of_partitions(rest))
        if mine:  # eager rebalancing revokes everything and mostly assigns the same back: rebuild, keep episodes
            self.owned -= mine
            for p in mine:
                self.rebuilding.pop(p, None)
                self._handed.pop(p, None)
            self._acks = {k: v for k, v in self._acks.items() if v[0] not in mine}
            self._published = {k: v for k, v in self._published.items() if v[0] not in mine}
            self._note_watched()
            self._forget(np.flatnonzero(np.isin(self._part_of, list(mine))))
            self._retire_check_at = time.monotonic() + self.retire_grace_s
        return rest

    def process(self, messages: list[RawMessage], offsets: dict[TP, int]) -> list[AlertRecord]:
        """Apply district records, finish rebuilds, queue the episode changelog; the alert records. (What this
        and the sensor side queued goes out with ``publisher.flush``, which the runner calls outside its lock.)"""
        records: list[AlertRecord] = []
        changes = self._apply(messages) if messages else []
        live = [c for c in changes if self._owner_live(c.district)]
        doffsets = {tp: o for tp, o in offsets.items() if tp[0] == self.topic}
        if live or doffsets:
            records += self.pipeline.alerts.apply(live, offsets=doffsets or None)
        for p, end in list(self.rebuilding.items()):
            if end < 0:  # the end is the first high watermark fetched since the seek
                end = self.consumer.highwater((self.topic, p))
                if end is None:
                    continue
                self.rebuilding[p] = end
            pos = offsets.get((self.topic, p))
            if pos is None:
                pos = self.consumer.position((self.topic, p))
            if pos is not None and pos >= end:
                del self.rebuilding[p]
                self._take_over(p)
                log.info("district partition %d rebuilt; reconciling its districts' alert state", p)
                records += self._reconcile({d for d in range(len(self._part_of)) if self._part_of[d] == p})
        if self._retire_check_at is not None and time.monotonic() >= self._retire_check_at:
            self._retire_check_at = None
            foreign = {d for p, ds in self._districts_of.items() if p not in self.owned for d in ds}
            retired = self.pipeline.alerts.retire(foreign)
            if retired:
                log.info("retired %d active episode(s) of districts now owned by another instance: %s",
                         len(retired), ", ".join(sorted(retired)))
        self._apply_forwarded_acks()
        self._hand_on_episodes()
        return records

    def _apply_forwarded_acks(self) -> None:
        """Acknowledge the alerts other instances forwarded acknowledgements of (once their partition is
        live: a rebuild first carries the episodes on), then delete the commands (tombstones)."""
        done = [(k, p, ack) for k, (p, ack) in self._acks.items() if p in self.owned and p not in self.rebuilding]
        if not done:
            return
        for key, p, ack in done:
            del self._acks[key]
            alert_id = key.split(ACK_KEY, 1)[1].decode(errors="replace")
            try:
                self.pipeline.alerts.ack(alert_id, ack.operator, ack.level)
            except UnknownAlertError:
                log.info("forwarded acknowledgement of %s: no such active alert here (ended?)", alert_id)
            except AckOutdatedError as e:  # the operator saw a lower level than the one now in force
                log.warning("forwarded acknowledgement of %s by %s not applied: %s", alert_id, ack.operator, e)
            self.publisher.send(key, None, p)

    def _note_watched(self) -> None:
        self.pipeline.watched_districts = {d for p in self.owned for d in self._districts_of.get(p, ())}

    # -- the episode changelog --
    def _take_over(self, partition: int) -> None:
        """A district partition is rebuilt: carry on the episodes its previous owner handed on (same alert
        ids, sequence numbers and acknowledgements), before the reconcile compares them with the levels."""
        handed = self._handed.pop(partition, {})
        if not handed:
            return
        taken = self.pipeline.alerts.adopt([(st.episode, st.active) for st in handed.values()])
        for key, st in handed.items():
            if st.active:
                self._published[key] = (partition, st.episode.alert_id, _encode(st))
        log.info("district partition %d: carried on %d of %d handed-on episode state(s)", partition, taken,
                 len(handed))

    def _hand_on_episodes(self) -> None:
        """Publish the state of every episode of this process's live districts that changed since it was
        last published (events, acknowledgements, escalations), and the final state of ended ones."""
        live = [p for p in self.owned if p not in self.rebuilding]
        if not live:
            return
        alerts = self.pipeline.alerts
        current = {episode_key(ep): ep for ep in alerts.episodes({d for p in live for d in self._districts_of[p]})}
        sends = []
        for key, ep in current.items():
            value = _encode(EpisodeState(episode=ep, active=True))
            if key not in self._published or self._published[key][2] != value:
                p = int(self._part_of[self._district_index[ep.district]])
                self._published[key] = (p, ep.alert_id, value)
                sends.append((key, value, p))
        for key, (p, alert_id, _) in list(self._published.items()):
            if key not in current and p in live:
                del self._published[key]
                ended = alerts.episode(alert_id)
                if ended is not None:
                    sends.append((key, _encode(EpisodeState(episode=ended, active=False)), p))
        if sends:
            for key, value, p in sends:
                self.publisher.send(key, value, p)

    # -- helpers --
    def _owner_live(self, district: str) -> bool:
        p = int(self._part_of[self._district_index[district]])
        return p in self.owned and p not in self.rebuilding

    def _apply(self, messages: list[RawMessage]) -> list[DistrictLevel]:
        sensors = self.pipeline.sensors
        rollup = self.pipeline.rollup
        seen_s, seen_q = [], []
        cols: dict[str, list] = {k: [] for k in ("sensor", "rule", "level", "value", "threshold", "time")}
        for m in messages:
            if m.key is not None and EPISODE_KEY in m.key:
                self._note_handed(m)
                continue
            if m.key is not None and ACK_KEY in m.key:
                self._note_ack(m)
                continue
            if m.key is not None and m.key.startswith(SILENCE_KEY):  # every instance's city view takes these
                continue
            try:
                rec = _decode(m.value)
            except (msgspec.DecodeError, TypeError):
                log.warning("undecodable district record at %s/%d@%d skipped", m.topic, m.partition, m.offset)
                continue
            s = sensors.add(rec.sensor, rec.lat if rec.lat is not None else float("nan"),
                            rec.lon if rec.lon is not None else float("nan"))
            if not rec.rule:
                if rec.quantity in _QCODE:
                    seen_s.append(s)
                    seen_q.append(_QCODE[rec.quantity])
                continue
            k = self._rule_index.get(rec.rule)
            if k is None:
                if rec.rule not in self._unknown_rules:
                    self._unknown_rules.add(rec.rule)
                    log.warning("district record names rule %r unknown here (configurations differ?)", rec.rule)
                continue
            for name, v in (("sensor", s), ("rule", k), ("level", rec.level), ("value", rec.value),
                            ("threshold", rec.threshold), ("time", rec.time_ns)):
                cols[name].append(v)
        self.pipeline.mapping.update()
        if seen_s:
            rollup.observe(np.array(seen_s), np.array(seen_q))
        n = len(cols["sensor"])
        if not n:
            return []
        zeros = np.zeros(n)
        batch = DetectionBatch.from_columns(quantity=zeros, kind=zeros, hazard=zeros, prev_level=zeros, **cols)
        changes = rollup.apply_latest(batch)
        foreign = {self._district_index[c.district] for c in changes if not self._owns(c.district)}
        if foreign:
            rollup.forget_districts(np.array(sorted(foreign)))
        mine = [c for c in changes if self._owns(c.district)]
        self.pipeline._set_district_levels(mine)
        return mine

    def _note_ack(self, m: RawMessage) -> None:
        """Keep a forwarded acknowledgement until its partition is live (a tombstone: already applied)."""
        if m.value is None:
            self._acks.pop(m.key, None)
            return
        try:
            self._acks[m.key] = (m.partition, _decode_ack(m.value))
        except (msgspec.DecodeError, TypeError):
            log.warning("undecodable acknowledgement record at %s/%d@%d skipped", m.topic, m.partition, m.offset)

    def _note_handed(self, m: RawMessage) -> None:
        """Keep the newest episode state per key of a partition being rebuilt (read back live: ignored,
        this process's own store is the newer truth)."""
        handed = self._handed.get(m.partition)
        if handed is None:
            return
        state = read_episode_state(m.value, f"{m.topic}/{m.partition}@{m.offset}")
        if state is not None:
            handed[m.key] = state

    def _owns(self, district: str) -> bool:
        return int(self._part_of[self._district_index[district]]) in self.owned

    def _forget(self, districts: np.ndarray) -> None:
        """Forget revoked districts; reset sensors that speak for no district still owned."""
        if not districts.size:
            return
        rollup = self.pipeline.rollup
        mapping = self.pipeline.mapping
        owned_d = np.isin(self._part_of, list(self.owned))
        keep = np.zeros(len(self.pipeline.sensors), dtype=bool)
        hit = np.zeros(len(self.pipeline.sensors), dtype=bool)
        n = min(mapping.pair_sensor.size, mapping.pair_district.size)
        ps, pd = mapping.pair_sensor[:n], mapping.pair_district[:n]
        ok = ps < keep.size
        keep[ps[ok & owned_d[pd]]] = True
        hit[ps[ok & np.isin(pd, districts)]] = True
        drop = hit & ~keep
        if drop.any():
            rollup.reset_sensors(drop)
        rollup.forget_districts(districts)
        self.pipeline.drop_district_levels(self.pipeline.layer.ids[d] for d in districts.tolist())

    def _reconcile(self, districts: set[int]) -> list[AlertRecord]:
        """Bring the alert state of some districts in line with the rebuilt levels (Pipeline.reconcile, scoped)."""
        ids = {self.pipeline.layer.ids[d] for d in districts}
        current = [lv for lv in self.pipeline.rollup.current() if lv.district in ids]
        return self.pipeline.alerts.reconcile(current, districts=ids)


def ensure_district_topic(cfg, bootstrap: str, producer: KafkaProducer) -> int:
    """Create ``cfg.district_topic`` when missing (compacted, as many partitions as the first input topic);
    its partition count.

    What exists is read from one Metadata request for all topics (the admin client's, naming none: no broker
    creates a topic from it, not even Tansu, which creates any topic a request names). The producer's
    ``partitions_for`` of the input topic, used before, let brokers that create topics create a missing input
    topic (kafka-python 3.0.12 asks with auto-creation allowed whatever ``allow_auto_create_topics`` says), which
    the service then read in silence. A missing input topic now fails the connect attempt, which is retried with
    backoff: the district topic's partition count comes from it (where brokers do not create topics, the
    producer's wait for its metadata failed the attempt before, after ``max_block_ms``).
    """
    topic = cfg.district_topic
    admin = KafkaAdminClient(**client_options(cfg, bootstrap))
    try:
        partitions = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
        if topic not in partitions:
            inputs = [*cfg.topics, *cfg.community_topics]
            if inputs and not partitions.get(inputs[0]):
                raise UnknownTopicOrPartitionError(
                    f"input topic {inputs[0]} does not exist (or has no partitions yet): the district topic {topic} "
                    f"is created with as many partitions as it has; create it")
            n = partitions[inputs[0]] if inputs else 1
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic, n, -1, topic_configs={"cleanup.policy": "compact"})])
                log.info("created district topic %s with %d partitions (compacted)", topic, n)
    finally:
        admin.close()
    return len(producer.partitions_for(topic) or ())
