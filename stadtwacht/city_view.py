"""With several instances: the whole city on every instance's page, read from the district topic.

Each instance decides the districts of its district topic partitions, and the owner of a district publishes
every committed change of its episodes there (``district_stage``: the episode changelog). A group-less consumer
of every partition of that topic keeps the newest state of each episode, so the page and ``/api/alerts`` of any
instance show the alerts the others decide (read-only here, marked ``remote``), and an acknowledgement given for
such an alert is forwarded to its owner as a record on the district's partition (key
``"<district>|~ack|<alert_id>"``), which the owner applies like its own API's and then deletes (a tombstone).
Silences created or deleted through any instance's API are shared the same way (key
``"|~silence|<silence_id>"`` on partition 0, the silence or a tombstone): every instance stores what it reads,
so the owner of a district keeps it quiet whichever instance the operator used. What the broker did not take
(created or deleted here during an outage) the reader shares later (``unshared``), and each time it has read the
topic from its start it also lifts what the topic no longer holds. The same reader reads the
alerts topic back into an ``AlertLog`` (every instance's records: the timeline, remote episodes' CAP messages).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import msgspec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from alerting.episodes import Episode, episode_view
from alerting.errors import AckOutdatedError
from alerting.record import AlertRecord
from alerting.store import Silence
from ingest.config import KafkaConfig
from ingest.kafka_io import client_options
from stadtwacht.alert_log import AlertLog
from stadtwacht.district_stage import (
    ACK_KEY,
    EPISODE_KEY,
    SILENCE_KEY,
    AckCommand,
    district_partition,
    read_episode_state,
)

__all__ = ["CityView", "send_silence"]

log = logging.getLogger(__name__)

_encode = msgspec.msgpack.Encoder().encode
_decode_silence = msgspec.msgpack.Decoder(Silence).decode
#: the partition shared silences go to (any one would do: every instance reads them all)
SILENCE_PARTITION = 0
#: how often to look again for an alerts topic that does not exist yet (created by the first alert)
_ALERTS_TOPIC_RECHECK_S = 5.0


def send_silence(producer: KafkaProducer, topic: str, silence_id: str, silence: Silence | None) -> None:
    """Share a silence (None: its deletion) with every instance through the district topic; waits for the
    broker's acknowledgement (raises when it does not come)."""
    producer.send(topic, key=SILENCE_KEY + silence_id.encode(), value=None if silence is None else _encode(silence),
                  partition=SILENCE_PARTITION).get(timeout=10)
    log.info("silence %s %s; shared with the other instances", silence_id, "deleted" if silence is None else "created")


class CityView:
    """The active episodes of every district as their owners last published them, the ack forwarder and the
    silence sharer."""

    def __init__(self, cfg: KafkaConfig, bootstrap: str, topic: str, partitions: int, producer: KafkaProducer,
                 on_change: Callable[[], None] = lambda: None,
                 on_silence: Callable[[str, Silence | None], bool] = lambda silence_id, s: False,
                 silenced: Callable[[Episode], bool] = lambda ep: False, alerts_topic: str = "",
                 on_alert: Callable[[AlertRecord], None] = lambda record: None,
                 unshared: Callable[[set[str], bool], list[tuple[str, Silence | None]]] = lambda alive, whole: [],
                 share_retry_s: float = 30.0) -> None:
        """``on_silence``: stores a shared silence (None: removes it), whether that changed anything;
        ``silenced``: whether the silences known here cover an episode; ``alerts_topic`` (when set) is read
        into ``alert_log``, ``on_alert`` called with each new record (after the log has it); ``unshared``:
        given the silences the topic holds and whether that is known from reading it whole (from its start,
        at start and after a broker outage), what this instance has to share (None: a deletion); asked then and
        every ``share_retry_s`` seconds."""
        self.cfg = cfg
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.producer = producer
        self.on_change = on_change
        self.on_silence = on_silence
        self.silenced = silenced
        self.alerts_topic = alerts_topic
        self.on_alert = on_alert
        self.unshared = unshared
        self.share_retry_s = share_retry_s
        self._silence_alive: dict[str, bool] = {}  # silence id -> held by the topic, as read since its start
        self.alert_log = AlertLog()
        self._episodes: dict[bytes, Episode] = {}  # episode key -> newest active state
        self._lock = threading.Lock()
        self._caught_up = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the read model --
    def take(self, key: bytes | None, value: bytes | None) -> bool:
        """Apply one district topic record; whether it changed the view (episode and silence records may)."""
        if key is not None and key.startswith(SILENCE_KEY):
            return self._take_silence(key[len(SILENCE_KEY):].decode(errors="replace"), value)
        if key is None or EPISODE_KEY not in key:
            return False
        state = None if value is None else read_episode_state(value)  # None: a tombstone, or undecodable
        with self._lock:
            if state is not None and state.active:
                self._episodes[key] = state.episode
            elif (state is None and value is not None) or self._episodes.pop(key, None) is None:
                return False  # undecodable (logged; the last good state stays), or nothing to end
        return True

    def _take_alerts(self, records: list) -> bool:
        """Alerts topic records into the log; whether any was new."""
        new = False
        for r in records:
            record = self.alert_log.take(r.value)
            if record is not None:
                new = True
                try:
                    self.on_alert(record)
                except Exception:  # an extra output (CAP files): never stop the reader
                    log.exception("handling alert record %s/%d failed", record.alert_id, record.seq)
        return new

    def _take_silence(self, silence_id: str, value: bytes | None) -> bool:
        try:
            silence = None if value is None else _decode_silence(value)
        except (msgspec.DecodeError, TypeError):
            log.warning("undecodable shared silence %r skipped", silence_id)
            return False
        self._silence_alive[silence_id] = silence is not None
        return self.on_silence(silence_id, silence)

    def _share_unshared(self, whole: bool) -> None:
        """Send what the topic lacks of this instance's silences (``whole``: the topic was read from its start
        to its end, so what it no longer holds is lifted here)."""
        alive = {sid for sid, live in self._silence_alive.items() if live}
        for silence_id, silence in self.unshared(alive, whole):
            send_silence(self.producer, self.topic, silence_id, silence)

    def episodes(self, skip: Collection[str] = ()) -> list[Episode]:
        """The active episodes, but those of the districts in ``skip``."""
        with self._lock:
            return [ep for ep in self._episodes.values() if ep.district not in skip]

    def remote_records(self, decided_here: set[str]) -> list[AlertRecord]:
        """The latest record of each active episode another instance decides (``active_records()``'s shape)."""
        return [ep.record("firing" if ep.seq == 1 else "update", ep.last_ns)
                for ep in self.episodes(skip=decided_here)]

    def remote_alerts(self, decided_here: set[str]) -> list[dict[str, Any]]:
        """The active alerts of the districts another instance decides, in ``AlertService.active()``'s shape,
        marked ``remote`` (silenced: by the silences shared with this instance, which its owner shares too)."""
        return [{**episode_view(ep), "silenced": self.silenced(ep), "remote": True,
                 "trend": "rising" if ep.seq == 1 or ep.level > ep.prev_level else "falling"}
                for ep in self.episodes(skip=decided_here)]

    @property
    def caught_up(self) -> bool:
        """Whether the view has once read every partition to its end (before that, districts it has no
        episode of may still have one)."""
        return self._caught_up

    def forward_ack(self, alert_id: str, operator: str, level: int | None = None) -> Episode | None:
        """Send an acknowledgement to the owner of a remote alert's district; the episode, None if unknown.

        ``level`` (the level the operator saw) goes with it: the owner refuses it when the level rose since,
        and so does this, at once, when the view already shows the rise (``AckOutdatedError``)."""
        with self._lock:
            ep = next((e for e in self._episodes.values() if e.alert_id == alert_id), None)
        if ep is None:
            return None
        if level is not None and ep.level > level:
            raise AckOutdatedError(alert_id, level, ep.level, ep.level_name)
        key = f"{ep.district}{ACK_KEY.decode()}{alert_id}".encode()
        value = _encode(AckCommand(operator=operator, level=level))
        self.producer.send(self.topic, key=key, value=value,
                           partition=district_partition(ep.district, self.partitions)).get(timeout=10)
        log.info("acknowledgement of %s by %s forwarded to the owner of district %s", alert_id, operator,
                 ep.district)
        return ep

    def share_silence(self, silence_id: str, silence: Silence | None) -> None:
        """Send a silence created here (None: deleted here) to every instance, this one included."""
        send_silence(self.producer, self.topic, silence_id, silence)

    # -- the reader thread --
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="city-view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = KafkaConsumer(**client_options(self.cfg, self.bootstrap), group_id=None,
                                         enable_auto_commit=False, allow_auto_create_topics=False)
                tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
                self._silence_alive = {}
                replaying, shared_at = True, 0.0
                delay = 1.0
                alert_tps: list[TopicPartition] = []
                looked = 0.0
                while not self._stop.is_set():
                    if self.alerts_topic and not alert_tps and time.monotonic() - looked > _ALERTS_TOPIC_RECHECK_S:
                        looked = time.monotonic()
                        alert_tps = [TopicPartition(self.alerts_topic, p)
                                     for p in sorted(consumer.partitions_for_topic(self.alerts_topic))]
                        if alert_tps:
                            consumer.assign(tps + alert_tps)  # the district partitions keep their positions
                            consumer.seek_to_beginning(*alert_tps)
                    changed = False
                    for tp, records in consumer.poll(timeout_ms=500).items():
                        if tp.topic == self.alerts_topic:
                            changed |= self._take_alerts(records)
                            continue
                        for r in records:
                            changed |= self.take(r.key, r.value)
                    if replaying:
                        # the high watermark of a fetch answer, not ListOffsets(LATEST) (wrong on Tansu)
                        ends = [consumer.highwater(tp) for tp in tps]
                        if None not in ends and all(
                                consumer.position(tp) >= end for tp, end in zip(tps, ends, strict=True)):
                            replaying, shared_at = False, time.monotonic()
                            self._share_unshared(whole=True)
                            changed |= not self._caught_up
                            self._caught_up = True
                    elif time.monotonic() - shared_at > self.share_retry_s:
                        shared_at = time.monotonic()
                        self._share_unshared(whole=False)
                    if changed:
                        self.on_change()
            except KafkaError as e:  # the main loop reports the broker's state; here: read again later
                log.warning("city view: reading %s failed (%s); retrying in %.0f s", self.topic, e, delay)
                self._stop.wait(delay)
                delay = min(2 * delay, 30.0)
            finally:
                if consumer is not None:
                    consumer.close()
