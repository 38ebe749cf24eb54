"""Synthetic PM10 feeds shared by the end-to-end, latency and peer benchmarks.

Hourly PM10 readings (as LUBW publishes hourly means) at exact hour boundaries
with integer values: with one reading per hour the 24 h window of stadtwacht
(24 one-hour buckets) and an exact sliding 24 h window hold the same readings,
and integer sums make "mean >= 50" exact, so independent implementations of
the job must report exactly the same exceedance transitions.
"""

from __future__ import annotations

import json
import time

import numpy as np

__all__ = ["HOUR_NS", "Stream", "batch_messages", "pm10_stream", "produce", "sensor_ids", "single_messages"]

HOUR_NS = 3_600_000_000_000
_BBOX = (9.10, 48.72, 9.25, 48.83)  # inside Stuttgart, lon/lat


class Stream:
    """Readings in event-time order: sensor number, time (ns), value; plus each sensor's position."""

    def __init__(self, sensor: np.ndarray, time_ns: np.ndarray, value: np.ndarray, lat: np.ndarray,
                 lon: np.ndarray) -> None:
        self.sensor, self.time_ns, self.value, self.lat, self.lon = sensor, time_ns, value, lat, lon

    def __len__(self) -> int:
        return int(self.sensor.shape[0])


def sensor_ids(n: int) -> list[str]:
    return [f"pm-{i:06d}" for i in range(n)]


def pm10_stream(n_sensors: int, n_readings: int, seed: int = 11, end_ns: int | None = None) -> Stream:
    """Hourly readings of ``n_sensors`` sensors ending an hour before ``end_ns`` (default: now)."""
    rng = np.random.default_rng(seed)
    hours = -(-n_readings // n_sensors)
    end = (end_ns or time.time_ns()) // HOUR_NS * HOUR_NS - HOUR_NS
    start = end - hours * HOUR_NS
    sensor = np.tile(np.arange(n_sensors, dtype=np.int64), hours)[:n_readings]
    hour = np.repeat(np.arange(hours, dtype=np.int64), n_sensors)[:n_readings]
    base = rng.integers(25, 60, n_sensors)
    period = rng.integers(20, 60, n_sensors)
    amp = rng.integers(5, 30, n_sensors)
    wave = np.round(amp[sensor] * np.sin(2 * np.pi * hour / period[sensor]))
    value = np.clip(base[sensor] + wave + rng.integers(-8, 9, n_readings), 0, 400).astype(np.float64)
    lon = rng.uniform(_BBOX[0], _BBOX[2], n_sensors)
    lat = rng.uniform(_BBOX[1], _BBOX[3], n_sensors)
    return Stream(sensor, start + hour * HOUR_NS, value, lat, lon)


def _rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 1_000_000_000))


def _docs(stream: Stream, ids: list[str]) -> list[dict]:
    lat, lon = stream.lat.tolist(), stream.lon.tolist()
    return [{"sensor_id": ids[s], "time": _rfc3339(t), "values": {"pm10": v}, "lat": lat[s], "lon": lon[s]}
            for s, t, v in zip(stream.sensor.tolist(), stream.time_ns.tolist(), stream.value.tolist(), strict=True)]


def single_messages(stream: Stream) -> list[tuple[bytes, bytes, int]]:
    """One message per reading: (key = sensor id, JSON value, timestamp ms = event time)."""
    ids = sensor_ids(int(stream.sensor.max()) + 1)
    return [(d["sensor_id"].encode(), json.dumps(d).encode(), t // 1_000_000)
            for d, t in zip(_docs(stream, ids), stream.time_ns.tolist(), strict=True)]


def batch_messages(stream: Stream, per: int = 100) -> list[tuple[bytes, bytes, int]]:
    """Gateway messages: JSON arrays of ``per`` consecutive readings (key = gateway, timestamp = newest)."""
    ids = sensor_ids(int(stream.sensor.max()) + 1)
    docs = _docs(stream, ids)
    times = stream.time_ns.tolist()
    return [(f"gw-{i // per % 16}".encode(), json.dumps(docs[i:i + per]).encode(),
             times[min(i + per, len(docs)) - 1] // 1_000_000) for i in range(0, len(docs), per)]


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes, int]], partitions: int = 1) -> None:
    """Write messages to a fresh topic (created with ``partitions``) and wait until all are acknowledged."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024,
                             max_request_size=8 * 1024 * 1024)
    for key, value, ts in messages:
        producer.send(topic, key=key, value=value, timestamp_ms=ts)
    producer.flush()
    producer.close()
