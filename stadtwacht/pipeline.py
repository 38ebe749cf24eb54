"""The stages wired together for one process: decode, detect, map, roll up, alert.

Kafka-free: ``run`` and ``demo`` feed it poll batches from the consumer,
``replay`` feeds it batches read from files. What it returns (dead letters,
alert records) the caller hands on before committing offsets.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np
from prometheus_client import CollectorRegistry

from alerting.config import AlertingConfig, ChannelConfig, RouteConfig
from alerting.record import AlertRecord
from alerting.service import AlertService
from alerting.templates import rule_aggregates
from detection.engine import DetectionEngine
from detection.events import HAZARDS, KINDS, DetectionBatch
from geodata.districts import DistrictLayer
from geodata.levels import DistrictLevel
from geodata.mapping import SensorDistricts
from geodata.registry import SensorRegistry
from geodata.rollup import Rollup
from ingest.batch import ReadingBatch
from ingest.deadletter import DeadLetter
from ingest.decode import DecodeLimits, RawMessage, ReadingDecoder
from ingest.kafka_python_records import locate_records
from ingest.quantities import QUANTITIES
from ingest.sensor_index import SensorIndex
from stadtwacht.alert_log import merge_history
from stadtwacht.config import Config
from stadtwacht.durations import parse_duration
from stadtwacht.metrics import PipelineMetrics

__all__ = ["Pipeline", "StepResult"]

log = logging.getLogger(__name__)

#: How long an ended alert's last record stays in the Atom feed (event time; see ``Pipeline.feed_records``).
FEED_ENDED_NS = 24 * 3600 * 10**9


@dataclass(slots=True)
class StepResult:
    """What one batch produced: to be handed on (dead letters, records) before the offset commit."""

    dead: list[DeadLetter] = field(default_factory=list)
    records: list[AlertRecord] = field(default_factory=list)
    accepted: int = 0
    detections: int = 0
    late_by_quantity: np.ndarray | None = None  # readings dead-lettered as late, per quantity code


def with_extra_channels(alerting: AlertingConfig, urls: Iterable[str]) -> AlertingConfig:
    """Channels given on the command line (--notify) receive every alert event, whatever the routes."""
    urls = list(urls)
    if not urls:
        return alerting
    extra = [ChannelConfig(name=f"notify-{i + 1}", url=url, tags=["--notify"]) for i, url in enumerate(urls)]
    route = RouteConfig(min_level=1, tags=["--notify"], continue_=True)
    return msgspec.structs.replace(alerting, channels=[*alerting.channels, *extra],
                                   routes=[route, *alerting.routes] if alerting.routes else [])


class Pipeline:
    """All stages of one stadtwacht process, with their state."""

    def __init__(self, cfg: Config, registry: CollectorRegistry, state_dir: Path, *,
                 districts_path: str | None = None, sensors_path: str | None = None,
                 extra_channels: list[str] = (), exercise: bool = False,
                 clock_ns: Callable[[], int] = time.time_ns,
                 alert_clock_ns: Callable[[], int] | None = None) -> None:
        self.cfg = cfg
        self.clock_ns = clock_ns
        self.metrics = PipelineMetrics.create(registry)
        self.sensors = SensorIndex()
        geo = cfg.geodata
        districts_path = districts_path or geo.districts
        self.layer = (DistrictLayer.from_file(districts_path, geo.id_column, geo.name_column, geo.metric_crs,
                                              geo.number_column)
                      if districts_path else DistrictLayer.demo())
        sensors_path = sensors_path or geo.sensors
        self.registry = SensorRegistry.from_csv(sensors_path) if sensors_path else SensorRegistry.shipped()
        self.decoder = ReadingDecoder(
            self.sensors,
            DecodeLimits(cfg.ingest.max_message_bytes, cfg.ingest.max_readings_per_message,
                         parse_duration(cfg.ingest.max_future)),
            community_topics=cfg.kafka.community_topics,
            clock_ns=clock_ns,
        )
        self.engine = DetectionEngine(cfg.rules, cfg.detection, self.sensors)
        self.mapping = SensorDistricts(self.layer, self.registry, self.sensors)
        self.rollup = Rollup(self.layer, self.mapping, self.engine.rule_info, geo.quorum)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir
        names = dict(zip(self.layer.ids, self.layer.names, strict=True))
        self.alerts = AlertService(with_extra_channels(cfg.alerting, extra_channels), state_dir, names, registry,
                                   clock=alert_clock_ns or clock_ns, exercise=exercise,
                                   rule_aggregates=rule_aggregates(cfg.rules),
                                   sensor_names={s.sensor_id: s.name for s in self.registry.sensors})
        self.watermark_ns = 0  # newest accepted event time (the event-time clock for ticks)
        self._partition_time: dict[int, int] = {}  # newest event time per partition code
        self.behind: set[int] = set()  # partition codes with unread messages (set by the Kafka loop)
        self._owned: set[int] | None = None  # partition codes of a partial view (see set_view)
        #: Scale-out ([kafka] district_topic): a stadtwacht.district_stage.DistrictPublisher that takes the
        #: detection events instead of the in-memory roll-up (which then runs where the district is owned).
        self.district_out = None
        #: Districts whose alerts this process decides (None: all); the district stage narrows it to the
        #: districts of its district topic partitions.
        self.watched_districts: set[str] | None = None
        #: With a district topic: the episodes of every district as their owners published them
        #: (stadtwacht.city_view.CityView), for the page and the API to show the rest of the city.
        self.city_view = None
        self.exercise = exercise
        self.cap_dir: Path | None = Path(cfg.state.cap_dir) if cfg.state.cap_dir else state_dir / "cap"
        self._top_levels: dict[tuple[str, str], int] = {}
        for info in self.engine.rule_info:
            key = (info.hazard, info.quantity)
            self._top_levels[key] = max(self._top_levels.get(key, 0), len(info.level_names) - 1)

    # -- the hot path --
    def compile_kernels(self) -> float:
        """Compile (or load from numba's cache) the record, decode and detection kernels on throwaway state.

        A fresh install compiles them on first use, which would stall the first real readings by tens of
        seconds; the runner calls this before its first poll, so the instance is not ready until it is done.
        Returns the seconds it took.
        """
        started = time.perf_counter()
        sensors = SensorIndex()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock_ns() // 10**9 - 60))
        values = ",".join(f'"{q}":1.0' for q in QUANTITIES)
        raw = f'[{{"sensor_id":"warm-up","time":"{stamp}","values":{{{values}}},"lat":48.77,"lon":9.18}}]'.encode()
        decoded = ReadingDecoder(sensors, clock_ns=self.clock_ns).decode([RawMessage("warm-up", 0, 0, None, raw)])
        engine = DetectionEngine(self.cfg.rules, self.cfg.detection, sensors)
        engine.process(decoded.batch)
        engine.tick(self.clock_ns())
        locate_records(np.zeros(0, np.uint8), 0, 0)  # the consumer's record parsing
        return time.perf_counter() - started

    def process_messages(self, messages: list[RawMessage], deliver: bool = True,
                         offsets: dict[tuple[str, int], int] | None = None) -> StepResult:
        decoded = self.decoder.decode(messages)
        result = self.process_batch(decoded.batch, deliver=deliver, offsets=offsets, messages=messages)
        result.dead[:0] = decoded.dead
        if deliver:  # a re-read that only rebuilds state (warm-up, redelivery) was counted the first time
            accepted = decoded.accepted_by_quantity
            if result.late_by_quantity is not None:  # late readings are dead letters, not accepted readings
                accepted = accepted - result.late_by_quantity
            for q, n in enumerate(accepted.tolist()):
                if n:
                    self.metrics.readings_accepted.labels(QUANTITIES[q]).inc(n)
            for d in result.dead:
                self.metrics.dead_letter_messages.labels(d.reason).inc()
                self.metrics.dead_letter_readings.labels(d.reason).inc(d.readings)
        return result

    def process_batch(self, batch: ReadingBatch, deliver: bool = True,
                      offsets: dict[tuple[str, int], int] | None = None,
                      messages: list[RawMessage] | None = None) -> StepResult:
        """Detect, map, roll up and (when ``deliver``) apply to the alert state."""
        result = StepResult(accepted=len(batch))
        if len(batch):
            self.rollup.observe(batch.sensor, batch.quantity)
            det = self.engine.process(batch)
            if det.late.any():
                result.dead.extend(self._late_letters(batch, det.late, messages))
                result.accepted -= int(det.late.sum())
                result.late_by_quantity = np.bincount(batch.quantity[det.late], minlength=len(QUANTITIES))
            events, values = det.events, det.values
            ok = ~det.late
            newest = int(batch.time[ok].max()) if ok.any() else 0
            if newest > self.watermark_ns:
                self.watermark_ns = min(newest, self.clock_ns())
                self.metrics.last_reading.set(newest / 1e9)
            self._advance_partition_times(batch.sensor[ok], batch.time[ok])
        else:
            events = values = DetectionBatch.empty()
        events = DetectionBatch.concat([events, self.engine.tick(self.now_ns())])
        result.detections = len(events)
        if deliver:  # a re-read's detections were counted the first time
            self._count_detections(events)
        if len(values):  # the current values of firing rules travel with the transitions, in time order
            events = DetectionBatch.concat([events, values])
            events = events.take(np.argsort(events.time, kind="stable"))
        if self.district_out is not None:
            self.district_out.publish(batch, events, deliver)
            return result
        changes = self.rollup.apply(events) if len(events) else []
        self._set_district_levels(changes)
        if deliver:
            result.records = self.alerts.apply(changes, offsets=offsets, sees=self._sees())
        return result

    def now_ns(self) -> int:
        """The event-time clock: the newest reading seen, never ahead of the wall clock.

        While some partitions are still behind (a backlog after an outage, partitions consumed at
        different speeds), the clock is held at the oldest of their event times, so their sensors are
        not judged stale just because another partition's readings ran ahead (like Kafka Streams'
        stream time over its inputs). ``behind`` is set by the Kafka loop from the consumer lag.
        """
        now = self.watermark_ns
        if now and self.behind:
            times = [self._partition_time[c] for c in self.behind if c in self._partition_time]
            if times:
                now = min(now, min(times))
        return now or self.clock_ns()

    def _advance_partition_times(self, sensor: np.ndarray, time_ns: np.ndarray) -> None:
        if not len(sensor):
            return
        codes = self.sensors.partition[sensor]
        order = np.argsort(codes, kind="stable")
        codes, times = codes[order], time_ns[order]
        starts = np.r_[0, np.flatnonzero(np.diff(codes)) + 1]
        for code, t in zip(codes[starts].tolist(), np.maximum.reduceat(times, starts).tolist(), strict=True):
            if t > self._partition_time.get(code, 0):
                self._partition_time[code] = t

    def tick(self) -> list[AlertRecord]:
        """Time-driven work between batches: stale sensors, group_wait, reminders, escalation."""
        events = self.engine.tick(self.now_ns())
        records: list[AlertRecord] = []
        if len(events):
            self._count_detections(events)
            if self.district_out is not None:
                self.district_out.publish(None, events, True)
            else:
                changes = self.rollup.apply(events)
                self._set_district_levels(changes)
                records = self.alerts.apply(changes, sees=self._sees())
        self.alerts.tick()
        return records

    def reconcile(self, offsets: dict[tuple[str, int], int] | None = None) -> list[AlertRecord]:
        """After a warm-up: bring the durable alert state in line with the rebuilt levels."""
        if self.district_out is not None:  # the district side reconciles per district partition
            self.district_out.snapshot()
            return []
        return self.alerts.reconcile(self.rollup.current(), offsets=offsets, sees=self._sees())

    def set_view(self, owned: list[tuple[str, int]] | None) -> None:
        """The readings partitions this process owns while it does not own them all (None: it sees every
        sensor). Set by the Kafka loop; see :meth:`_sees` for what a partial view may decide."""
        self._owned = None if owned is None else {self.sensors.partition_code(*tp) for tp in owned}

    @property
    def partial_view(self) -> bool:
        return self._owned is not None

    def _sees(self) -> Callable[[str, tuple[str, ...]], bool] | None:
        """Under a partial view: whether it sees everything that can hold a district's alert up.

        Yes when every sensor mapped to the district (the registry's included, read or not) and every
        sensor of the episode was last read from an owned partition. A sensor it has never read and the
        registry does not list (a citizen sensor on another partition) cannot be accounted for: at worst a
        district it would only lower is ended, and fired again once the view is whole.
        """
        owned = self._owned
        if owned is None:
            return None
        n = len(self.sensors)
        part = self.sensors.partition[:n]
        unseen = np.flatnonzero(~np.isin(part, np.fromiter(owned, dtype=part.dtype, count=len(owned))))
        ids = self.layer.ids
        blind = {ids[d] for d in self.mapping.districts_of(unseen).tolist()}
        index = self.sensors

        def sees(district: str, sensors: tuple[str, ...]) -> bool:
            if district in blind:
                return False
            return all((i := index.get(s)) is not None and int(part[i]) in owned for s in sensors)

        return sees

    def drop_partitions(self, partitions: list[tuple[str, int]]) -> None:
        """Forget per-sensor state of sensors whose readings came from revoked partitions."""
        mask = self.sensors.sensors_of_partitions(partitions)
        if mask.any():
            self.engine.reset(mask)
            if self.district_out is None:  # with a district topic the roll-up follows district partitions
                self.rollup.reset_sensors(mask)

    def alert_history(self, limit: int = 100) -> list[AlertRecord]:
        """The latest alert events, newest first: this instance's and, with several instances, the others'
        (read back from the alerts topic), so every instance shows the same timeline."""
        local = self.alerts.history(limit)
        if self.city_view is None:
            return local
        return merge_history(local, self.city_view.alert_log.recent(limit), limit)

    def remote_alerts(self) -> list[dict]:
        """With several instances: the active alerts the others decide, marked ``remote`` (the page's and
        ``/api/alerts``' shape; from their episode changelog)."""
        here = self.watched_districts
        return self.city_view.remote_alerts(here) if self.city_view is not None and here is not None else []

    def active_records(self) -> list[AlertRecord]:
        """The latest record of every active alert (the Atom feed): those decided here and, with several
        instances, the others' (from their episode changelog, as the page shows them)."""
        local, here = self.alerts.active_records(), self.watched_districts
        if self.city_view is None or here is None:
            return local
        return local + self.city_view.remote_records(here)

    def feed_records(self) -> list[AlertRecord]:
        """The Atom feed's records: every active alert's latest, and the last of every alert that ended (all-clear
        or measurement lost) within ``FEED_ENDED_NS`` of the event-time clock. A reader that polls the feed learns
        the end that way: the CAP messages carry no expiry, and an alert that only dropped out would stay active
        for it."""
        since = self.now_ns() / 1e9 - FEED_ENDED_NS / 1e9
        ended = [r for r in self.alert_history(1000)
                 if r.event == "resolved" and datetime.fromisoformat(r.time).timestamp() >= since]
        return self.active_records() + ended

    def top_level(self, hazard: str, quantity: str) -> int | None:
        """The highest level of the (hazard, quantity) scale, for mapping to CAP severity."""
        return self._top_levels.get((hazard, quantity))

    # -- helpers --
    def _late_letters(self, batch: ReadingBatch, late: np.ndarray,
                      messages: list[RawMessage] | None) -> list[DeadLetter]:
        """One dead letter per message with late readings (a whole late backlog must not multiply its bytes)."""
        out = []
        rows = np.flatnonzero(late)
        tolerance = self.cfg.detection.late_tolerance
        msg_of = batch.message[rows]
        order = np.argsort(msg_of, kind="stable")
        rows, msg_of = rows[order], msg_of[order]
        firsts = np.flatnonzero(np.r_[True, msg_of[1:] != msg_of[:-1]])
        counts = np.diff(np.r_[firsts, len(rows)])
        for first, n in zip(firsts.tolist(), counts.tolist(), strict=True):
            r, m = int(rows[first]), int(msg_of[first])
            msg = messages[m] if messages is not None and m >= 0 else None
            detail = (f"{self.sensors.id_of(int(batch.sensor[r]))} {QUANTITIES[batch.quantity[r]]} at "
                      f"{np.datetime64(int(batch.time[r]), 'ns')}Z is more than {tolerance} behind the "
                      f"sensor's newest reading" + (f" (and {n - 1} more readings of this message)" if n > 1 else ""))
            if msg is None:
                out.append(DeadLetter("replay", 0, -1, None, b"", "late", detail, readings=n))
            else:
                out.append(DeadLetter(msg.topic, msg.partition, msg.offset, msg.key, msg.value, "late", detail,
                                      readings=n))
        return out

    def _count_detections(self, events: DetectionBatch) -> None:
        if not len(events):
            return
        key = (events.hazard.astype(np.int64) * 64 + events.kind) * 128 + events.level.astype(np.int64)
        uniq, counts = np.unique(key, return_counts=True)
        for k, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            hazard, rest = divmod(k, 64 * 128)
            kind, level = divmod(rest, 128)
            self.metrics.detections.labels(HAZARDS[hazard], KINDS[kind], str(level)).inc(c)

    def drop_district_levels(self, districts: Iterable[str]) -> None:
        """Stop exporting the levels of districts another instance decides now: that one exports them, and a
        value left here would show the district's old level beside the owner's (dashboards take the max)."""
        for district in districts:
            for hazard in HAZARDS:
                with contextlib.suppress(KeyError):
                    self.metrics.district_level.remove(district, hazard)

    def _set_district_levels(self, changes: list[DistrictLevel]) -> None:
        if not changes:
            return
        worst: dict[tuple[str, str], int] = {}
        for lv in self.rollup.current():
            key = (lv.district, lv.hazard)
            worst[key] = max(worst.get(key, 0), lv.level)
        for c in changes:
            self.metrics.district_level.labels(c.district, c.hazard).set(worst.get((c.district, c.hazard), 0))
