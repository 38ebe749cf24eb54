"""Ingest: raw kafka-python consumption vs consumption + strict decode + columnar batching.

Both read the same topic on the same embedded broker, alternately, best of
three, each timed from its first poll; the baseline is a bare kafka-python
consumer, the decoded side reads through the service's own consumer
(``bench.polls``: group joined and positioned before the clock starts). The
ratio is decode+batching throughput over raw throughput (goal: decode adds
<= 20 % to raw consume time, i.e. ratio >= 0.83). ``*_decode`` figures time the
decoder alone (no Kafka): the compiled columnar scanner against the msgspec
struct path it falls back to (``columnar = False``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from kafka import KafkaProducer

from bench.polls import raw_seconds, ready_consumer
from ingest.decode import RawMessage, ReadingDecoder
from ingest.sensor_index import SensorIndex
from stadtwacht.broker import EmbeddedBroker

SENSORS = 2000


def _reading(i: int) -> dict:
    return {"sensor_id": f"sensor-{i % SENSORS}", "time": f"2026-11-26T04:{(i // 60) % 60:02d}:{i % 60:02d}+01:00",
            "values": {"pm10": float(i % 97), "pm2_5": float(i % 41)}, "lat": 48.7 + (i % 100) * 1e-3,
            "lon": 9.1 + (i % 77) * 1e-3}


def produce(bootstrap: str, topic: str, messages: int, per_message: int, reading=None) -> int:
    """Write the topic: one reading per message (a JSON object) or ``per_message`` (an array); the readings."""
    reading = reading or _reading
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024,
                             max_request_size=8 * 1024 * 1024)
    n = 0
    for m in range(messages):
        if per_message == 1:
            value = json.dumps(reading(n)).encode()
        else:
            value = json.dumps([reading(n + j) for j in range(per_message)]).encode()
        n += per_message
        producer.send(topic, key=f"sensor-{m % SENSORS}".encode(), value=value)
    producer.flush()
    producer.close()
    return n


def consume_decoded(bootstrap: str, topic: str, total_messages: int) -> tuple[float, int]:
    """Seconds to read and decode every message through the service's own consumer (first poll to last
    message), and the readings decoded."""
    consumer = ready_consumer(bootstrap, topic)
    decoder = ReadingDecoder(SensorIndex())
    seen = readings = 0
    started = time.perf_counter()
    while seen < total_messages:
        batch = consumer.poll(timeout_ms=1000)
        seen += len(batch)
        if batch:
            readings += len(decoder.decode(batch).batch)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed, readings


def raw_rate_in_subprocess(bootstrap: str, topic: str, messages: int, readings: int, crc32c: bool) -> float:
    """Raw consume rate (readings/s, best of two) in a fresh process, with or without the crc32c extension.

    kafka-python verifies every record batch's CRC-32C; without the ``crc32c`` module
    it falls back to its pure-Python implementation.
    """
    block = "" if crc32c else "sys.modules['crc32c'] = None; "
    code = (f"import sys; {block}from bench.polls import raw_seconds; "
            f"print(min(raw_seconds({bootstrap!r}, {topic!r}, {messages}) for _ in range(2)))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=1800,
                         check=True)
    return readings / float(out.stdout.strip().splitlines()[-1])


def decode_only(messages: int, per_message: int, columnar: bool, rounds: int = 5) -> float:
    """Readings/s of ``ReadingDecoder.decode`` alone on prebuilt poll batches (best of ``rounds``, CPU time)."""
    values = [json.dumps(_reading(m) if per_message == 1 else [_reading(m * per_message + j)
                                                                 for j in range(per_message)]).encode()
              for m in range(messages)]
    batch = [RawMessage("bench", 0, i, None, v, -1) for i, v in enumerate(values)]
    decoder = ReadingDecoder(SensorIndex())
    decoder.columnar = columnar
    decoder.decode(batch)  # warm: sensors known, compiled code loaded
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        decoder.decode(batch)
        best = min(best, time.thread_time() - started)
    assert decoder.columnar_messages == (messages * (rounds + 1) if columnar else 0)
    return messages * per_message / best


def run(quick: bool = False) -> list[dict]:
    figures = []
    for name, messages, per in (("ingest_single_decode", 5000, 1), ("ingest_batch_decode", 200 if quick else 500, 100)):
        fast = decode_only(messages, per, columnar=True)
        struct = decode_only(messages, per, columnar=False)
        figures.append({"name": name, "value": fast, "unit": "readings/s", "baseline_value": struct,
                        "ratio": fast / struct, "messages": messages, "readings_per_message": per,
                        "note": "decoder alone, CPU time: compiled columnar scanner vs the msgspec struct path"})
    with EmbeddedBroker() as broker:
        for name, messages, per in (("ingest_single", 20_000 if quick else 100_000, 1),
                                    ("ingest_batch", 200 if quick else 2_000, 100)):
            topic = f"bench-{name}"
            n = produce(broker.bootstrap, topic, messages, per)
            rows = 2 * n  # two quantities per reading
            raw, dec = [], []
            for _ in range(2 if quick else 3):
                raw.append(raw_seconds(broker.bootstrap, topic, messages))
                t, got = consume_decoded(broker.bootstrap, topic, messages)
                assert got == rows, (got, rows)
                dec.append(t)
            raw_rate, dec_rate = n / min(raw), n / min(dec)
            figures.append({"name": name, "value": dec_rate, "unit": "readings/s", "baseline_value": raw_rate,
                            "ratio": dec_rate / raw_rate, "messages": messages, "readings_per_message": per,
                            "note": "value: consume through the service's consumer (compiled record pass) + decode "
                                    "+ batch; baseline: raw kafka-python consume; each reading carries pm10 and pm2_5"})
            with_ext = raw_rate_in_subprocess(broker.bootstrap, topic, messages, n, crc32c=True)
            without = raw_rate_in_subprocess(broker.bootstrap, topic, messages, n, crc32c=False)
            figures.append({"name": f"{name}_raw_crc32c", "value": with_ext, "unit": "readings/s",
                            "baseline_value": without, "ratio": with_ext / without,
                            "note": "raw kafka-python consume with the crc32c extension vs its pure-Python "
                                    "CRC-32C fallback (module made unimportable), fresh processes"})
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
