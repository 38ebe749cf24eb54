"""The engine's results do not depend on how readings are cut into batches; rules keep state only where needed."""

from __future__ import annotations

import numpy as np

from detection.config import DetectionConfig, HealthConfig, load_default_rules
from detection.engine import DetectionEngine
from ingest.batch import ReadingBatch
from ingest.quantities import quantity_code
from ingest.sensor_index import SensorIndex

MIN = 60_000_000_000
NAMES = ["pegel-a", "pegel-b", "luft-c"]
CONFIG = DetectionConfig(health=HealthConfig(stuck_for="2h", stuck_min_readings=5))


def _stream(n: int = 3000, seed: int = 4) -> ReadingBatch:
    """Three sensors, a thousand readings each in time order: floods, a stuck stretch, saturation."""
    rng = np.random.default_rng(seed)
    sensor = rng.integers(0, 3, n)
    q = np.where(sensor == 2, quantity_code("pm10"), quantity_code("water_level")).astype(np.uint8)
    t = np.arange(n, dtype=np.int64) * MIN
    wave = 300 + 250 * np.sin(np.arange(n) / 150.0)
    v = np.where(sensor == 2, 40 + 30 * np.sin(np.arange(n) / 90.0), wave) + rng.normal(0, 3, n)
    v[1000:1400] = np.where(sensor[1000:1400] == 2, 25.0, v[1000:1400])  # pm10 stuck
    v[rng.integers(0, n, 10)] = 1999.9
    return ReadingBatch.from_columns(sensor, q, t, v)


def _events(batch: ReadingBatch, rows: int) -> list[tuple]:
    index = SensorIndex()
    for name in NAMES:
        index.add(name)
    engine = DetectionEngine(load_default_rules(), CONFIG, index)
    out = []
    for lo in range(0, len(batch), rows):
        ev = engine.process(batch.take(slice(lo, lo + rows))).events
        out += [(int(ev.time[i]), int(ev.sensor[i]), int(ev.rule[i]), int(ev.level[i]), int(ev.prev_level[i]))
                for i in range(len(ev))]
    return sorted(out)


def test_one_big_batch_equals_small_batches():
    """Long per-sensor runs in one batch (the archive shape) give the same transitions as poll-sized batches.

    (In-order data: with disorder, batching legitimately matters through lateness and merging.)
    """
    batch = _stream()
    whole = _events(batch, len(batch))
    assert whole == _events(batch, 7)
    rules = {r for _, _, r, _, _ in whole}
    assert len(rules) >= 4  # hazard rules, health and anomaly all took part


def test_rules_keep_state_only_for_matching_sensors():
    index = SensorIndex()
    for name in NAMES:
        index.add(name)
    engine = DetectionEngine(load_default_rules(), CONFIG, index)
    engine.process(_stream(300))
    slots = {r.name: r.n_slots for r in engine.rules}
    assert slots["pm10-24h"] == 1  # only luft-c sends pm10
    assert slots["no2-1h"] == 0
    gauges = [n for r, n in slots.items() if r.startswith("neckar")]
    assert gauges and all(n == 2 for n in gauges)  # pegel-a, pegel-b
