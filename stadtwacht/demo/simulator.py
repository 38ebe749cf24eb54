"""The scenario simulator: publishes the demo story to Kafka on a compressed clock.

Simulated time runs ``speed`` times faster than the wall clock and is laid out so that it reaches
the wall clock's "now" exactly when the story ends; it is never ahead of the wall clock, so the
pipeline never dead-letters a reading as coming from the future.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from stadtwacht.demo.scenarios import DEFAULT_SPEED, STORY_SIM_SECONDS, SimEvent, story_events

__all__ = ["DEFAULT_TOPICS", "OutMessage", "SimulationStats", "Simulator", "encode_events", "shared_dir"]

log = logging.getLogger(__name__)

#: Topic per kind of feed: gauges, air stations and citizen sensors in the contract, sensor.community pushes.
DEFAULT_TOPICS: dict[str, str] = {"flood": "sensors.flood", "air": "sensors.air",
                                  "community": "sensors.community"}

_BERLIN = ZoneInfo("Europe/Berlin")
_encode = msgspec.json.Encoder().encode


def shared_dir() -> Path | None:
    """The ``shared`` folder beside the repository root (real data), or None on a fresh clone."""
    p = Path(__file__).resolve().parents[2] / ".." / "shared"
    return p.resolve() if p.is_dir() else None


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One Kafka record to publish: event time, topic, key, value and record timestamp."""

    time_ns: int  # simulated event time of the record's readings
    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int
    readings: int


def _rfc3339(time_ns: int) -> str:
    return _dt.datetime.fromtimestamp(time_ns / 1e9, tz=_BERLIN).isoformat(timespec="seconds")


def _contract_doc(e: SimEvent) -> dict:
    doc: dict = {"sensor_id": e.sensor_id, "time": _rfc3339(e.time_ns), "values": e.values}
    if e.lat is not None and e.lon is not None:
        doc["lat"], doc["lon"] = e.lat, e.lon
    return doc


def _community_doc(e: SimEvent) -> dict:
    suffix = {"pm10": "SDS_P1", "pm2_5": "SDS_P2"}
    return {"esp8266id": e.sensor_id.removeprefix("sc-"),
            "sensordatavalues": [{"value_type": suffix[q], "value": f"{v:.2f}"} for q, v in e.values.items()]}


def encode_events(events: list[SimEvent], topics: dict[str, str] | None = None) -> list[OutMessage]:
    """Wire messages for time-sorted events: gateway readings of one instant batched in one JSON array."""
    topics = topics or DEFAULT_TOPICS
    out: list[OutMessage] = []
    batches: dict[tuple[int, str], list[SimEvent]] = {}
    for e in events:
        ts_ms = e.time_ns // 1_000_000
        if e.format == "community":
            out.append(OutMessage(e.time_ns, topics["community"], e.sensor_id.encode(),
                                  _encode(_community_doc(e)), ts_ms, 1))
        elif e.gateway is None:
            out.append(OutMessage(e.time_ns, _topic_of(e, topics), e.sensor_id.encode(),
                                  _encode(_contract_doc(e)), ts_ms, 1))
        else:
            group = batches.get((e.time_ns, e.gateway))
            if group is None:
                group = batches[(e.time_ns, e.gateway)] = []
                out.append(OutMessage(e.time_ns, _topic_of(e, topics), e.gateway.encode(), b"", ts_ms, 0))
            group.append(e)
    for i, m in enumerate(out):
        if m.readings == 0:  # fill in the gateway batches
            group = batches[(m.time_ns, m.key.decode())]
            merged: dict[str, SimEvent] = {}
            for g in group:  # one reading per sensor and instant, all its quantities together
                prev = merged.get(g.sensor_id)
                merged[g.sensor_id] = g if prev is None else prev._replace(values={**prev.values, **g.values})
            out[i] = OutMessage(m.time_ns, m.topic, m.key, _encode([_contract_doc(g) for g in merged.values()]),
                                m.timestamp_ms, len(merged))
    return out


def _topic_of(e: SimEvent, topics: dict[str, str]) -> str:
    return topics["flood" if "water_level" in e.values or "discharge" in e.values else "air"]


@dataclass(slots=True)
class SimulationStats:
    """What one run published; ``max_ahead_ns`` > 0 would mean an event time ahead of the wall clock."""

    messages: int = 0
    readings: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    max_ahead_ns: int = -(1 << 62)
    story_start_ns: int = 0
    finished: bool = False


class Simulator:
    """Publishes the demo scenarios to Kafka; also usable standalone (``stadtwacht simulate``)."""

    def __init__(self, bootstrap: str, speed: float = DEFAULT_SPEED, scenarios: tuple[str, ...] | None = None,
                 topics: dict[str, str] | None = None, story_s: float = STORY_SIM_SECONDS,
                 shared: Path | bool | None = True, clock_ns: Callable[[], int] = time.time_ns,
                 producer_config: dict | None = None) -> None:
        if speed < 1.0:
            raise ValueError(f"speed must be >= 1 (simulated seconds per wall second), got {speed}")
        self.bootstrap = bootstrap
        self.speed = float(speed)
        self.scenarios = scenarios
        self.topics = {**DEFAULT_TOPICS, **(topics or {})}
        self.story_ns = int(story_s * 1e9)
        self.shared = shared_dir() if shared is True else (shared or None)
        self._clock_ns = clock_ns
        self._producer_config = producer_config or {}
        self.stats = SimulationStats()

    @property
    def wall_seconds(self) -> float:
        """Wall-clock length of the whole story at this speed."""
        return self.story_ns / 1e9 / self.speed

    def messages(self, start_ns: int) -> list[OutMessage]:
        """Every message of the story starting at simulated ``start_ns``, in time order."""
        return encode_events(story_events(start_ns, self.story_ns, self.scenarios, self.shared), self.topics)

    def plan(self, wall0_ns: int) -> tuple[int, list[tuple[int, OutMessage]]]:
        """Story start (simulated) and (wall due time, message) pairs for a run beginning at ``wall0_ns``.

        Simulated time ``s`` is sent at wall time ``wall0 + (s - start) / speed`` with ``start`` chosen so the
        story ends at that wall instant: ``s <= due`` for every message, equality only at the very end.
        """
        wall_len_ns = int(self.story_ns / self.speed)
        start_ns = wall0_ns + wall_len_ns - self.story_ns
        plan = []
        for m in self.messages(start_ns):
            due = wall0_ns + math.ceil((m.time_ns - start_ns) / self.speed)
            plan.append((max(due, m.time_ns), m))  # guard against float rounding: never before its event time
        return start_ns, plan

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None) -> SimulationStats:
        """Publish until the story ends, ``duration_s`` wall seconds pass or ``stop`` is set."""
        from kafka import KafkaProducer

        stop = stop or threading.Event()
        wall0 = self._clock_ns()
        start_ns, plan = self.plan(wall0)
        deadline = wall0 + int(duration_s * 1e9) if duration_s is not None else None
        self.stats = stats = SimulationStats(story_start_ns=start_ns)
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20, acks=1,
                                 enable_idempotence=False,  # a sensor gateway's producer; says so, not warns
                                 client_id="stadtwacht-simulator", **self._producer_config)
        log.info("simulator: %d messages over %.0f s wall (speed %.0fx)", len(plan), self.wall_seconds, self.speed)
        try:
            for due, m in plan:
                if deadline is not None and due > deadline:
                    break
                delay = (due - self._clock_ns()) / 1e9
                if delay > 0 and stop.wait(delay):
                    break
                if stop.is_set():
                    break
                stats.max_ahead_ns = max(stats.max_ahead_ns, m.time_ns - self._clock_ns())
                producer.send(m.topic, key=m.key, value=m.value, timestamp_ms=m.timestamp_ms)
                stats.messages += 1
                stats.readings += m.readings
                stats.by_topic[m.topic] = stats.by_topic.get(m.topic, 0) + 1
            else:
                stats.finished = True
            producer.flush(timeout=30)
        finally:
            producer.close(timeout=10)
        return stats
