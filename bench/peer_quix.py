"""Peer: the PM10 24 h rolling-mean threshold job (mean >= 50 per sensor) in stadtwacht and in Quix Streams.

Same broker (the embedded Tansu), same topics, same data (``bench.data``:
hourly integer readings, so every implementation must find exactly the same
exceedance transitions, and this is checked). Quix runs twice: idiomatically
(its ``sliding_window`` with RocksDB state, keyed by sensor) and as fast as it
goes (a plain dict of per-sensor deques inside ``.apply``). Throughput counts
readings from the first message handled to the last one handled, in both.
stadtwacht reads through its own consumer backends (``bench.polls``), as the
service does: kafka-python by default, confluent-kafka as the option.

Quix Streams is an optional dependency (``pip install quixstreams``, the
``bench`` extra); without it the figures are skipped with a note.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import deque
from datetime import datetime

from bench.data import HOUR_NS, batch_messages, pm10_stream, produce, single_messages
from bench.polls import stadtwacht_polls

__all__ = ["run"]

WINDOW_NS = 24 * HOUR_NS
LIMIT = 50.0
Transition = tuple[str, int, int]  # sensor id, event time ns, new level (1 exceeding, 0 clear)


# -- stadtwacht ------------------------------------------------------------------------------------------
def stadtwacht_job(bootstrap: str, topic: str, n_messages: int, client: str = "kafka-python") -> tuple[
        float, int, set[Transition]]:
    """Consume the topic, decode, detect; returns (seconds, readings, transitions)."""
    from detection.anomaly_config import AnomalyConfig
    from detection.config import DetectionConfig, HealthConfig, RuleConfig
    from detection.engine import DetectionEngine
    from detection.events import KINDS
    from ingest.decode import RawMessage, ReadingDecoder
    from ingest.sensor_index import SensorIndex

    rule = RuleConfig(name="pm10-24h", quantity="pm10", window="24h", aggregate="mean", levels=[LIMIT],
                      level_names=["Grenzwertüberschreitung"])
    config = DetectionConfig(anomaly=AnomalyConfig(enabled=False),
                             health=HealthConfig(stuck_rel_tolerance={"pm10": 0.0}))
    warm = SensorIndex()  # load the compiled kernels once, outside the timing (Quix's start-up is outside too)
    DetectionEngine([rule], config, warm).process(ReadingDecoder(warm).decode([RawMessage(
        topic, 0, 0, None, b'{"sensor_id":"w","time":"2026-01-01T00:00:00Z","values":{"pm10":1},"lat":48.7,'
        b'"lon":9.1}')]).batch)
    sensors = SensorIndex()
    decoder = ReadingDecoder(sensors)
    engine = DetectionEngine([rule], config, sensors)
    threshold = KINDS.index("threshold")
    polls = stadtwacht_polls(bootstrap, topic, client)
    out: set[Transition] = set()
    seen = readings = 0
    started = None
    for batch in polls:
        if not batch:
            continue
        if started is None:
            started = time.perf_counter()
        seen += len(batch)
        decoded = decoder.decode(batch)
        readings += len(decoded.batch)
        ev = engine.process(decoded.batch).events
        rows = (ev.kind == threshold).nonzero()[0]
        if rows.size:
            names = sensors.ids(ev.sensor[rows])
            out.update(zip(names, ev.time[rows].tolist(), ev.level[rows].tolist(), strict=True))
        if seen >= n_messages:
            break
    elapsed = time.perf_counter() - (started or time.perf_counter())
    polls.close()
    return elapsed, readings, out


# -- Quix Streams -----------------------------------------------------------------------------------------
def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 1_000_000_000


class _Clock:
    """First and last handled message, and the readings handled."""

    def __init__(self, expected: int) -> None:
        self.first = self.last = 0.0
        self.readings = 0
        self.expected = expected

    def tick(self, n: int = 1) -> None:
        now = time.perf_counter()
        if not self.first:
            self.first = now
        self.readings += n
        self.last = now


def _tolerate_missing_retention() -> None:
    """Tansu's DescribeConfigs omits "retention.ms", which Quix reads to derive its internal topics' config.

    Quix treats a missing "retention.bytes" as unlimited already; the same default for
    "retention.ms" (only used for internal topics, changelogs are off here) lets it run on Tansu.
    """
    from quixstreams.models.topics.manager import TopicManager

    original = TopicManager.derive_topic_config.__func__

    def derive(cls, topics):
        topics = list(topics)
        for t in topics:
            t.broker_config.extra_config.setdefault("retention.ms", "-1")
        return original(cls, topics)

    TopicManager.derive_topic_config = classmethod(derive)


def quix_job(bootstrap: str, topic: str, variant: str, expected_readings: int, batched: bool) -> tuple[
        float, int, set[Transition]]:
    """Run one Quix Streams variant ("sliding" or "dict") over the topic until it goes quiet."""
    import logging

    from quixstreams import Application

    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    _tolerate_missing_retention()
    state_dir = tempfile.mkdtemp(prefix="quix-state-")
    app = Application(broker_address=bootstrap, consumer_group=f"bench-{variant}-{time.time_ns()}",
                      auto_offset_reset="earliest", state_dir=state_dir, use_changelog_topics=False,
                      loglevel="WARNING", auto_create_topics=True)
    sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
    clock = _Clock(expected_readings)
    out: set[Transition] = set()
    if variant == "dict":
        windows: dict[str, deque] = {}
        sums: dict[str, float] = {}
        levels: dict[str, int] = {}

        def one(r: dict) -> None:
            s, t, v = r["sensor_id"], _ns(r["time"]), r["values"]["pm10"]
            w = windows.get(s)
            if w is None:
                w = windows[s] = deque()
                sums[s] = 0.0
            w.append((t, v))
            total = sums[s] + v
            while w[0][0] <= t - WINDOW_NS:
                total -= w.popleft()[1]
            sums[s] = total
            level = 1 if total / len(w) >= LIMIT else 0
            if level != levels.get(s, 0):
                levels[s] = level
                out.add((s, t, level))

        def handle(value) -> None:
            if batched:
                for r in value:
                    one(r)
                clock.tick(len(value))
            else:
                one(value)
                clock.tick()

        sdf = sdf.update(handle)
    else:
        levels_q: dict[str, int] = {}
        if batched:  # a gateway message holds many sensors: split it and re-key by sensor (repartition)
            sdf = sdf.apply(lambda value: value, expand=True)
            sdf = sdf.group_by(lambda r: r["sensor_id"], name="sensor")
        sdf = sdf.set_timestamp(lambda value, key, ts, headers: _ns(value["time"]) // 1_000_000)
        # inclusive [t - duration, t]; one reading per hour, so 24 h - 1 ms holds the same 24 readings
        sdf = sdf.apply(lambda r: r["values"]["pm10"])
        sdf = sdf.sliding_window(duration_ms=WINDOW_NS // 1_000_000 - 1).mean().current()

        def judge(window: dict, key, ts, headers) -> None:
            s = key.decode() if isinstance(key, bytes) else str(key)
            level = 1 if window["value"] >= LIMIT else 0
            if level != levels_q.get(s, 0):
                levels_q[s] = level
                out.add((s, window["end"] * 1_000_000, level))
            clock.tick()

        sdf = sdf.update(judge, metadata=True)
    app.run(timeout=3.0, collect=False)
    return (clock.last - clock.first), clock.readings, out


def _quix_in_subprocess(bootstrap: str, topic: str, variant: str, expected: int, batched: bool) -> dict:
    """Quix runs in its own process (its signal handlers and threads stay out of ours)."""
    import subprocess

    code = ("import json,sys; from bench.peer_quix import quix_job; "
            f"s,n,ev=quix_job({bootstrap!r},{topic!r},{variant!r},{expected},{batched}); "
            "print(json.dumps({'seconds':s,'readings':n,'events':sorted(ev)}))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"quix {variant} failed: {proc.stderr[-2000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    doc["events"] = {tuple(e) for e in doc["events"]}
    return doc


def run(quick: bool = False) -> list[dict]:
    """Figures peer_quix_single and peer_quix_batch (stadtwacht vs the fastest Quix), plus the other variants."""
    try:
        import quixstreams
    except ImportError:
        print("peer_quix: skipped, quixstreams not installed (pip install '.[bench]')", file=sys.stderr)
        return []
    from stadtwacht.broker import EmbeddedBroker

    n_sensors = 500 if quick else 2_000
    sizes = {"single": 5_000 if quick else 100_000, "batch": 20_000 if quick else 500_000}
    rounds = 1 if quick else 2
    figures = []
    with EmbeddedBroker() as broker:
        for shape in ("single", "batch"):
            batched = shape == "batch"
            stream = pm10_stream(n_sensors, sizes[shape])
            msgs = batch_messages(stream) if batched else single_messages(stream)
            topic = f"bench-peer-{shape}"
            produce(broker.bootstrap, topic, msgs)
            best = {"kafka-python": 0.0, "confluent": 0.0, "quix": 0.0}
            events = {}
            for _ in range(rounds):  # alternately, best of each: the machine is shared
                for client in ("kafka-python", "confluent"):
                    s, n, ev = stadtwacht_job(broker.bootstrap, topic, len(msgs), client)
                    best[client] = max(best[client], n / s)
                    events[client] = ev
                fast = _quix_in_subprocess(broker.bootstrap, topic, "dict", len(stream), batched)
                best["quix"] = max(best["quix"], fast["readings"] / fast["seconds"])
                events["quix"] = fast["events"]
            common = {"transitions": len(events["kafka-python"]), "readings": len(stream), "sensors": n_sensors,
                      "readings_per_message": 100 if batched else 1, "quix_version": quixstreams.__version__}
            figures.append({
                "name": f"peer_quix_{shape}", "value": best["kafka-python"], "unit": "readings/s",
                "baseline_value": best["quix"], "ratio": best["kafka-python"] / best["quix"],
                "same_events": events["quix"] == events["kafka-python"], **common,
                "note": "value: stadtwacht (its kafka-python consumer with the compiled record pass + decode + "
                        "detection engine, PM10 24 h mean >= 50); baseline: Quix Streams, plain dict in .apply "
                        "(its fastest form); goal ratio >= 2",
            })
            figures.append({
                "name": f"peer_quix_{shape}_confluent", "value": best["confluent"], "unit": "readings/s",
                "baseline_value": best["quix"], "ratio": best["confluent"] / best["quix"],
                "same_events": events["quix"] == events["confluent"], **common,
                "note": "value: stadtwacht's decode + detection through its confluent-kafka consumer backend "
                        "(client = \"confluent\"); baseline: Quix dict variant",
            })
            if quick:
                continue  # the idiomatic variant runs about 1k readings/s: full runs only
            small = pm10_stream(200, 20_000 if not batched else 40_000, seed=12)
            small_msgs = batch_messages(small) if batched else single_messages(small)
            small_topic = f"{topic}-small"
            produce(broker.bootstrap, small_topic, small_msgs)
            ref_s, ref_n, ref_ev = stadtwacht_job(broker.bootstrap, small_topic, len(small_msgs))
            note = ""
            try:
                slide = _quix_in_subprocess(broker.bootstrap, small_topic, "sliding", len(small), batched)
                slide_rate = slide["readings"] / slide["seconds"]
                slide_same = slide["events"] == ref_ev
            except Exception as e:  # reported, the other figures stand
                slide_rate, slide_same, note = float("nan"), False, f"sliding variant failed: {e}"[:300]
            figures.append({
                "name": f"peer_quix_sliding_{shape}", "value": ref_n / ref_s, "unit": "readings/s",
                "baseline_value": slide_rate, "ratio": (ref_n / ref_s) / slide_rate if slide_rate else None,
                "same_events": slide_same, "transitions": len(ref_ev), "readings": len(small), "sensors": 200,
                "note": ("stadtwacht vs Quix Streams sliding_window(24 h).mean() with RocksDB state"
                         + (", re-keyed by sensor with group_by" if batched else "")
                         + " on a smaller stream of the same shape (stadtwacht's rate there is dominated by "
                           "fixed per-poll costs). " + note).strip(),
            })
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
