"""The simulator's wire messages decode with ingest's real decoder; a run never sends future event times."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from geodata.registry import SensorRegistry
from ingest.decode import RawMessage, ReadingDecoder
from ingest.sensor_index import SensorIndex
from stadtwacht.demo import DEMO_SENSORS_CSV
from stadtwacht.demo.scenarios import SimEvent
from stadtwacht.demo.simulator import DEFAULT_TOPICS, Simulator, encode_events


def _decoder(clock_ns=time.time_ns, community: str = DEFAULT_TOPICS["community"]) -> ReadingDecoder:
    index = SensorIndex()
    for s in SensorRegistry.from_csv(DEMO_SENSORS_CSV).sensors:
        index.add(s.sensor_id, s.lat, s.lon, registered=True)
    return ReadingDecoder(index, community_topics=[community], clock_ns=clock_ns)


def _raw(msgs) -> list[RawMessage]:
    return [RawMessage(m.topic, 0, i, m.key, m.value, m.timestamp_ms) for i, m in enumerate(msgs)]


@pytest.mark.parametrize("shared", [False, True], ids=["synthetic", "archive-if-present"])
def test_every_message_of_the_story_decodes(shared: bool) -> None:
    sim = Simulator("unused:9092", shared=shared)
    wall0 = time.time_ns()
    start, plan = sim.plan(wall0)
    msgs = [m for _, m in plan]
    decoded = _decoder(clock_ns=lambda: wall0 + int(sim.wall_seconds * 1e9)).decode(_raw(msgs))
    assert decoded.dead == []
    assert len(decoded.batch.value) == sum(_values_in(m) for m in msgs)
    assert decoded.batch.time.min() >= start - 1_000_000_000  # contract times carry whole seconds
    assert decoded.batch.time.max() <= wall0 + int(sim.wall_seconds * 1e9)
    assert {m.topic for m in msgs} == set(DEFAULT_TOPICS.values())


def _values_in(m) -> int:
    doc = json.loads(m.value)
    if isinstance(doc, list):
        return sum(len(d["values"]) for d in doc)
    if "sensordatavalues" in doc:
        return len(doc["sensordatavalues"])
    return len(doc["values"])


def test_plan_never_sends_an_event_before_its_time_and_ends_at_now() -> None:
    sim = Simulator("unused:9092", speed=600.0, shared=None)
    wall0 = 1_790_000_000_000_000_000
    start, plan = sim.plan(wall0)
    due = np.array([d for d, _ in plan])
    t = np.array([m.time_ns for _, m in plan])
    assert (t <= due).all()
    assert np.all(np.diff(due) >= 0)
    end = wall0 + int(sim.wall_seconds * 1e9)
    assert due.max() == pytest.approx(end, abs=2e6)
    assert t.max() >= end - 2e6  # simulated time reaches "now" at the story's end
    assert start == end - sim.story_ns


def test_wire_formats() -> None:
    t = 1_790_000_000_000_000_000
    events = [
        SimEvent(t, "pegel-plochingen", {"water_level": 412.0}, 48.71, 9.41, "contract"),
        SimEvent(t, "lubw-319", {"no2": 210.0}, 48.79, 9.19, "contract", "lubw"),
        SimEvent(t, "lubw-300", {"no2": 190.0}, 48.78, 9.18, "contract", "lubw"),
        SimEvent(t, "lubw-319", {"pm10": 40.0}, 48.79, 9.19, "contract", "lubw"),
        SimEvent(t, "sc-13083", {"pm10": 199.5, "pm2_5": 70.1}, None, None, "community"),
    ]
    msgs = encode_events(events)
    assert [m.topic for m in msgs] == ["sensors.flood", "sensors.air", "sensors.community"]
    gauge = json.loads(msgs[0].value)
    assert gauge == {"sensor_id": "pegel-plochingen", "time": gauge["time"], "values": {"water_level": 412.0},
                     "lat": 48.71, "lon": 9.41}
    assert gauge["time"].endswith(("+01:00", "+02:00"))
    batch = json.loads(msgs[1].value)
    assert msgs[1].key == b"lubw" and [d["sensor_id"] for d in batch] == ["lubw-319", "lubw-300"]
    assert batch[0]["values"] == {"no2": 210.0, "pm10": 40.0}
    assert json.loads(msgs[2].value) == {"esp8266id": "13083", "sensordatavalues": [
        {"value_type": "SDS_P1", "value": "199.50"}, {"value_type": "SDS_P2", "value": "70.10"}]}
    assert msgs[2].key == b"sc-13083" and msgs[2].timestamp_ms == t // 1_000_000


@pytest.mark.broker
def test_run_against_a_broker_sends_no_future_event_times(kafka_bootstrap: str, topic_prefix: str) -> None:
    from kafka import KafkaConsumer

    topics = {k: f"{topic_prefix}.{v}" for k, v in DEFAULT_TOPICS.items()}
    # 6 simulated hours at 7200x: 3 wall seconds
    sim = Simulator(kafka_bootstrap, speed=7200.0, topics=topics, story_s=6 * 3600, shared=None,
                    scenarios=("flood", "stuck", "inversion"))
    stop = threading.Event()
    stats = sim.run(duration_s=None, stop=stop)
    assert stats.finished and stats.messages > 100
    assert stats.max_ahead_ns <= 0, f"an event time was {stats.max_ahead_ns / 1e9:.3f} s in the future"
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    raw = []
    try:
        parts = [TopicPartition(t, p) for t in topics.values() for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + 30
        while len(raw) < stats.messages and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                raw += [RawMessage(tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp) for r in records]
    finally:
        consumer.close()
    assert len(raw) == stats.messages
    decoded = _decoder(community=topics["community"]).decode(raw)
    assert decoded.dead == []
    assert len(decoded.batch.value) >= stats.readings
    assert decoded.batch.time.max() <= time.time_ns()
