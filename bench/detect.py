"""Benchmark of the detection step: readings/s of the engine vs. the per-reading Python reference.

Synthetic stream: N sensors, each with one quantity (gauges "pegel-*" read water_level), about
one reading every 2.5 min, delivered in time order in poll-sized batches; all default rules,
sensor health and (when enabled) anomaly scoring. Rates use process CPU time (readings per
CPU-second of one core), since the machine may be shared. A second shape has few sensors with
many readings each (the sensor.community archive's shape). ``anomaly_share`` is the part of the
detect step's CPU time that anomaly scoring takes (from the steady rates with and without it).
"""

from __future__ import annotations

import json
import resource
import time

import numpy as np

from detection.anomaly_config import AnomalyConfig
from detection.config import DetectionConfig, load_default_rules
from detection.engine import DetectionEngine
from ingest.batch import ReadingBatch
from ingest.quantities import QUANTITIES
from ingest.sensor_index import SensorIndex

__all__ = ["run"]

_STEP = 150_000_000_000  # 2.5 min
_T0 = 1_700_000_000_000_000_000
_TYPICAL = {"water_level": (250.0, 60.0), "discharge": (80.0, 30.0), "pm10": (20.0, 10.0),
            "pm2_5": (12.0, 6.0), "no2": (40.0, 30.0), "o3": (60.0, 40.0), "so2": (5.0, 3.0)}


def _stream(n_sensors: int, n_readings: int, seed: int = 7) -> tuple[list[str], ReadingBatch]:
    rng = np.random.default_rng(seed)
    q_of = np.arange(n_sensors) % len(QUANTITIES)
    names = [("pegel-" if QUANTITIES[q] == "water_level" else "sensor-") + str(i) for i, q in enumerate(q_of)]
    per = -(-n_readings // n_sensors)
    sensor = np.tile(np.arange(n_sensors, dtype=np.int32), per)[:n_readings]
    k = np.repeat(np.arange(per), n_sensors)[:n_readings]
    t = _T0 + k * _STEP + rng.integers(0, _STEP, n_readings)
    q = q_of[sensor].astype(np.uint8)
    mu = np.array([_TYPICAL[x][0] for x in QUANTITIES])[q]
    sd = np.array([_TYPICAL[x][1] for x in QUANTITIES])[q]
    v = np.abs(mu + sd * rng.standard_normal(n_readings))
    return names, ReadingBatch.from_columns(sensor, q, t, v).sorted_by_time()


def _engine_rate(names, batch: ReadingBatch, config: DetectionConfig, batch_rows: int,
                 engine: DetectionEngine | None = None) -> tuple[float, DetectionEngine]:
    """Readings per CPU second of a new engine (state created inside the timing), or of ``engine`` going on."""
    if engine is None:
        index = SensorIndex(len(names))
        for n in names:
            index.add(n)
        engine = DetectionEngine(load_default_rules(), config, index)
    start = time.process_time()
    for lo in range(0, len(batch), batch_rows):
        engine.process(batch.take(slice(lo, lo + batch_rows)))
        engine.tick(int(batch.time[min(lo + batch_rows, len(batch)) - 1]))
    return len(batch) / (time.process_time() - start), engine


def _reference_rate(names, batch: ReadingBatch, config: DetectionConfig, batch_rows: int) -> float:
    from tests.detection.reference import ReferenceDetector

    ref = ReferenceDetector(load_default_rules(), config, names)
    rows = list(zip(batch.sensor.tolist(), batch.quantity.tolist(), batch.time.tolist(), batch.value.tolist(),
                    strict=True))
    start = time.process_time()
    for lo in range(0, len(rows), batch_rows):
        ref.process(rows[lo: lo + batch_rows])
        ref.tick(rows[min(lo + batch_rows, len(rows)) - 1][2])
    return len(rows) / (time.process_time() - start)


def _few_sensor_stream(n_sensors: int, per_sensor: int, seed: int = 9) -> tuple[list[str], ReadingBatch]:
    """The archive shape: a few sensors with many readings each (every batch holds long runs per sensor)."""
    names, batch = _stream(n_sensors, n_sensors * per_sensor, seed=seed)
    return names, batch


def _warm_up_seconds() -> float:
    """Wall time of the first ``process`` call in this process: numba kernels loaded from the cache (or compiled)."""
    index = SensorIndex(1)
    index.add("pegel-0")
    engine = DetectionEngine(load_default_rules(), DetectionConfig(), index)
    one = ReadingBatch.from_columns([0], [QUANTITIES.index("water_level")], [_T0], [100.0])
    start = time.perf_counter()
    engine.process(one)
    engine.tick(_T0)
    return time.perf_counter() - start


def run(quick: bool = False) -> list[dict]:
    """Figures: detect (readings/s, vs. the reference), detect without anomaly, the few-sensor shape, state bytes."""
    warm = _warm_up_seconds()
    n_sensors, n_readings = (10_000, 100_000) if quick else (100_000, 1_000_000)
    batch_rows = n_sensors // 2  # a poll covers about half of the sensors' newest readings
    names, both = _stream(n_sensors, 2 * n_readings)
    batch, later = both.take(slice(0, n_readings)), both.take(slice(n_readings, 2 * n_readings))
    no_anomaly = DetectionConfig(anomaly=AnomalyConfig(enabled=False))
    # the reference on the same data, doing the same work (~30 s on 1 M readings) and without anomaly (~15 s)
    ref_rate = _reference_rate(names, batch, DetectionConfig(), batch_rows)
    ref_plain_rate = _reference_rate(names, batch, no_anomaly, batch_rows)
    before = resource.getrusage(resource.RUSAGE_SELF)
    full_rate, full_engine = _engine_rate(names, batch, DetectionConfig(), batch_rows)
    after = resource.getrusage(resource.RUSAGE_SELF)
    user_s, system_s = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    steady_rate, _ = _engine_rate(names, later, DetectionConfig(), batch_rows, engine=full_engine)
    del full_engine
    plain_rate, engine = _engine_rate(names, batch, no_anomaly, batch_rows)
    plain_steady_rate, _ = _engine_rate(names, later, no_anomaly, batch_rows, engine=engine)
    # few sensors, many readings each: 12 sensors (like the sensor.community archive), polls of 5,000 rows
    few, per_few = 12, (4_000 if quick else 40_000)
    few_names, few_batch = _few_sensor_stream(few, per_few)
    few_rate, _ = _engine_rate(few_names, few_batch, DetectionConfig(), 5_000)
    ref_few_names, ref_few = _few_sensor_stream(few, 1_000, seed=10)
    ref_few_rate = _reference_rate(ref_few_names, ref_few, DetectionConfig(), 5_000)
    windowed = [r for r in engine.rules if r.windowed]
    per_slot = sum(r.slot_nbytes() for r in windowed) / max(1, len(windowed))
    per_sensor = sum(r.nbytes() for r in windowed) / len(names) / max(1, len(windowed))
    return [
        {"name": "detect", "value": round(full_rate), "unit": "readings/s",
         "baseline_value": round(ref_rate), "ratio": round(full_rate / ref_rate, 1),
         "user_s": round(user_s, 3), "system_s": round(system_s, 3),
         "note": f"{n_readings} readings over {n_sensors} sensors, default rules + health + anomaly; "
                 "baseline: the per-reading Python reference (rules + health + anomaly, tests/detection/reference.py "
                 "and anomaly_reference.py) on the same readings; "
                 f"CPU of this run: user {user_s:.3f} s, system {system_s:.3f} s (page faults of the new state: "
                 "varies from run to run with the kernel's huge-page compaction)"},
        {"name": "detect_steady", "value": round(steady_rate), "unit": "readings/s",
         "baseline_value": round(ref_rate), "ratio": round(steady_rate / ref_rate, 1),
         "note": f"the next {n_readings} readings of the same sensors through the same engine (their state "
                 "exists: no state created, no series warming up); baseline: the reference's rate on the first "
                 f"{n_readings}"},
        {"name": "detect_without_anomaly", "value": round(plain_rate), "unit": "readings/s",
         "baseline_value": round(ref_plain_rate), "ratio": round(plain_rate / ref_plain_rate, 1),
         "note": "default rules + health, anomaly scoring off; baseline: the reference without it"},
        {"name": "anomaly_share", "value": round(1.0 - steady_rate / plain_steady_rate, 3), "unit": "fraction",
         "note": "share of the detect step's CPU time spent in anomaly scoring, with state in place: "
                 f"1 - detect_steady / the same without anomaly ({plain_steady_rate:.0f} readings/s) (the runs "
                 "that create state also time page faults, which vary from run to run)"},
        {"name": "detect_few_sensors", "value": round(few_rate), "unit": "readings/s",
         "baseline_value": round(ref_few_rate), "ratio": round(few_rate / ref_few_rate, 1),
         "note": f"{few * per_few} readings over {few} sensors in polls of 5,000 rows, default rules + health + "
                 f"anomaly; baseline: the reference (the same work) on {few} x 1,000 readings"},
        {"name": "state_bytes_per_sensor", "value": round(per_slot, 1), "unit": "bytes/sensor/windowed rule",
         "note": f"per sensor a windowed rule holds state for ({len(windowed)} windowed rules); averaged over "
                 f"all sensors (rules keep state only for matching sensors sending their quantity): "
                 f"{per_sensor:.1f}; whole engine incl. health and anomaly: "
                 f"{engine.state_nbytes() / len(names):.0f} bytes/sensor (without anomaly)"},
        {"name": "jit_warm_up", "value": round(warm, 3), "unit": "s",
         "note": "first process() call in a fresh process: numba kernels loaded from the on-disk cache "
                 "(compiled on the very first run, several seconds)"},
    ]


if __name__ == "__main__":
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
