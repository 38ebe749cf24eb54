"""End-to-end latency: reading published -> notification accepted by a loopback webhook, under steady load.

A real ``stadtwacht.app.Service`` (consumer group, pipeline, runner, alerting
with its outbox and apprise) consumes a topic fed at a steady 2,000 readings/s
of ordinary PM10 readings (single-reading messages, 2,000 sensors). Four times
a second a river gauge's reading flips between above and below the test rule's
level (window "0s", quorum 1, group_wait "0s"), so every flip is one alert
event (firing, then resolved) and one notification to a ``json://`` channel
served on 127.0.0.1 by this benchmark. The load generator and the webhook run in
a child process, as producers and receivers do in real use (in the service's own
process they would compete with it for the GIL). The i-th notification answers
the i-th flip; latency = webhook receive time - publish time of that reading. Flips start
after ``SETTLE_S`` of background load, once the service has read the backlog that
built up while it joined the group: the figures are of the steady state.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np

from bench.data import sensor_ids

__all__ = ["run"]

RATE = 2_000  # background readings per second
FLIPS_PER_S = 4
SETTLE_S = 3.0  # background load before the first flip (group join, first fetches, warm caches)
GAUGE = "pegel-latenz"
GAUGE_POS = (48.7758, 9.1829)  # Stuttgart-Mitte

_CONFIG = """
[kafka]
topics = ["{topic}"]
community_topics = []
group_id = "bench-latency"
alerts_topic = "{topic}.alerts"
poll_timeout_ms = 50

[geodata.quorum]
min_sensors = 1

[alerting]
group_wait = "0s"
group_rules = []
repeat_interval = ""
retry_initial = "100ms"

[[alerting.channels]]
name = "webhook"
url = "json://127.0.0.1:{port}/hook"
tags = ["bench"]

[[rules]]
name = "pm10-24h"
quantity = "pm10"
window = "24h"
aggregate = "mean"
levels = [50.0]
level_names = ["Grenzwertüberschreitung"]

[[rules]]
name = "latency-gauge"
quantity = "water_level"
sensors = ["pegel-*"]
window = "0s"
aggregate = "last"
levels = [500.0]
level_names = ["Test"]
"""


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[float]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Hook.received.append(time.time())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _drive(conn) -> None:
    """The load generator and the webhook, in their own process (as producers and receivers are in real use).

    Sends its webhook port, waits for (bootstrap, topic, seconds), produces, then sends back the publish
    times of the flips, the webhook receive times and the background rate achieved.
    """
    from kafka import KafkaProducer

    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    conn.send(hook.server_address[1])
    bootstrap, topic, seconds = conn.recv()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    ids = sensor_ids(RATE)
    rng = np.random.default_rng(3)
    published: list[float] = []
    high = False
    start = time.time()
    tick = 1.0 / (RATE // 100)  # send in slices of 100 readings, 20 slices per second
    next_flip = start + SETTLE_S
    sent = 0
    k = 0
    try:
        while time.time() - start < SETTLE_S + seconds:
            slot = start + k * tick
            delay = slot - time.time()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            stamp = _rfc3339(now)
            for j in range(100):
                i = (k * 100 + j) % RATE
                doc = {"sensor_id": ids[i], "time": stamp, "values": {"pm10": float(rng.integers(5, 40))},
                       "lat": 48.70 + (i % 100) * 0.0015, "lon": 9.10 + (i // 100) * 0.007}
                producer.send(topic, key=ids[i].encode(), value=json.dumps(doc).encode())
            sent += 100
            if now >= next_flip:
                high = not high
                t = time.time()
                doc = {"sensor_id": GAUGE, "time": _rfc3339(t), "values": {"water_level": 600.0 if high
                                                                          else 300.0},
                       "lat": GAUGE_POS[0], "lon": GAUGE_POS[1]}
                producer.send(topic, key=GAUGE.encode(), value=json.dumps(doc).encode())
                producer.flush()
                published.append(t)
                next_flip += 1.0 / FLIPS_PER_S
            k += 1
        producer.flush()
        achieved = sent / (time.time() - start)
        wait_until = time.time() + 15
        while len(_Hook.received) < len(published) and time.time() < wait_until:
            time.sleep(0.1)
    finally:
        producer.close()
        hook.shutdown()
    conn.send((published, list(_Hook.received), achieved))


def run(quick: bool = False) -> list[dict]:
    """Figures latency_p50 and latency_p99 (ms), with the flips sent and answered."""
    import multiprocessing

    from kafka.admin import KafkaAdminClient, NewTopic

    from stadtwacht.app import Service
    from stadtwacht.broker import EmbeddedBroker, free_port
    from stadtwacht.config import load_config

    seconds = 10 if quick else 60  # of flips, after SETTLE_S
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    driver = ctx.Process(target=_drive, args=(child_conn,), daemon=True)
    driver.start()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        topic = "bench-latency"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(topic, 1, 1), NewTopic(f"{topic}.alerts", 1, 1)])
        admin.close()
        path = Path(tmp) / "stadtwacht.toml"
        if not conn.poll(60):
            raise RuntimeError("the load generator did not start")
        path.write_text(_CONFIG.format(topic=topic, port=conn.recv()))
        cfg, problems = load_config(path)
        assert not problems, problems
        service = Service(cfg, broker.bootstrap, Path(tmp) / "state", port=free_port())
        stop = threading.Event()
        worker = threading.Thread(target=service.run, args=(stop,), daemon=True)
        worker.start()
        deadline = time.time() + 60
        while not service.health.assigned and time.time() < deadline:
            time.sleep(0.1)
        try:
            conn.send((broker.bootstrap, topic, seconds))
            if not conn.poll(SETTLE_S + seconds + 60):
                raise RuntimeError("the load generator did not report back")
            published, got, achieved = conn.recv()
        finally:
            stop.set()
            worker.join(30)
            driver.join(10)
            if driver.is_alive():
                driver.terminate()
    n = min(len(got), len(published))
    lat_ms = (np.array(got[:n]) - np.array(published[:n])) * 1000
    common = {"flips": len(published), "notifications": len(got), "readings_per_s": round(achieved),
              "seconds": seconds}
    if not n:
        return [{"name": "latency_p50", "value": float("nan"), "unit": "ms", **common,
                 "note": "no notification arrived"}]
    note = ("reading published -> notification accepted by a loopback json:// webhook, real Service, steady "
            f"{RATE} readings/s background (single-reading messages); goal p99 <= 250 ms")
    return [
        {"name": "latency_p50", "value": float(np.percentile(lat_ms, 50)), "unit": "ms", **common, "note": note},
        {"name": "latency_p99", "value": float(np.percentile(lat_ms, 99)), "unit": "ms", **common,
         "max_ms": float(lat_ms.max()), "note": note},
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
