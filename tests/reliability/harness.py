"""Fault-injection harness: a `stadtwacht run` subprocess, a flood setup with known episodes, real receivers.

The setup: one trusted gauge ``pegel-<i>`` per district (impact list = that district) and one custom rule
(water level >= 400 cm is level 1), so a reading alternating 300/500 cm causes exactly one transition:
firing on every high, resolved on every low. Expected alert events are therefore known per district.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
REF = re.compile(r"Ref: ([0-9A-Za-z_.:-]+)/(\d+)")
#: Districts of the built-in layer used for gauges (one gauge each).
DISTRICTS = ["mitte", "nord", "ost", "sued", "west", "bad-cannstatt", "birkach", "botnang", "degerloch",
             "feuerbach", "hedelfingen", "moehringen", "muehlhausen", "muenster", "obertuerkheim", "plieningen",
             "sillenbuch", "stammheim", "untertuerkheim", "vaihingen", "wangen", "weilimdorf", "zuffenhausen"]
LOW, HIGH = 300.0, 500.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- setup files
@dataclass
class FloodSetup:
    """Config, registry and topic names of one test (unique prefix: tests share the broker)."""

    prefix: str
    config: Path
    registry: Path
    gauges: dict[str, str]  # sensor id -> district

    @property
    def topic(self) -> str:
        return f"{self.prefix}.flood"

    @property
    def alerts_topic(self) -> str:
        return f"{self.prefix}.alerts"

    @property
    def group(self) -> str:
        return f"{self.prefix}-group"


def write_flood_setup(workdir: Path, prefix: str, n_gauges: int, channels: list[dict] = (),
                      extra_kafka: str = "", extra: str = "", n_air: int = 0,
                      max_poll_records: int = 500, session_timeout_ms: int = 6000) -> FloodSetup:
    """Registry CSV + TOML: n gauges in distinct districts, the given channels all routed for flood >= 1."""
    workdir.mkdir(parents=True, exist_ok=True)
    gauges = {f"pegel-{i}": DISTRICTS[i % len(DISTRICTS)] for i in range(n_gauges)}
    rows = ["sensor_id,name,hazard,lat,lon,impact,trusted,overrides,comment"]
    rows += [f"{s},Pegel {d},flood,48.78,9.18,{d},true,," for s, d in gauges.items()]
    rows += [f"luft-{i},Luft {i},air,{48.70 + (i % 97) * 0.002:.4f},{9.10 + (i // 97) * 0.004:.4f},,true,,"
             for i in range(n_air)]
    registry = workdir / "sensors.csv"
    registry.write_text("\n".join(rows) + "\n", encoding="utf-8")
    chan_toml = "".join(
        f'\n[[alerting.channels]]\nname = "{c["name"]}"\n'
        + (f'url = "{c["url"]}"\n' if "url" in c else "")
        + (f'url_file = "{c["url_file"]}"\n' if "url_file" in c else "")
        + 'tags = ["ops"]\nmin_interval = "0s"\n' for c in channels)
    routes = '\n[[alerting.routes]]\nhazard = "flood"\nmin_level = 1\ntags = ["ops"]\n' if channels else ""
    config = workdir / "stadtwacht.toml"
    config.write_text(f"""
[kafka]
group_id = "{prefix}-group"
topics = ["{prefix}.flood"]
community_topics = []
alerts_topic = "{prefix}.alerts"
session_timeout_ms = {session_timeout_ms}
heartbeat_interval_ms = {max(300, session_timeout_ms // 6)}
max_poll_records = {max_poll_records}
{extra_kafka}

[alerting]
group_wait = "0s"
retry_initial = "1s"
retry_max = "2s"
{chan_toml}
{routes}

[[rules]]
name = "pegel-test"
quantity = "water_level"
sensors = ["pegel-*"]
window = "0s"
aggregate = "last"
levels = [400.0]
level_names = ["Warnung"]

[[rules]]
name = "pm10-test"
quantity = "pm10"
window = "0s"
aggregate = "last"
levels = [1000.0]
level_names = ["Test"]
{extra}
""", encoding="utf-8")
    return FloodSetup(prefix, config, registry, gauges)


def reading(sensor: str, t_ns: int, value: float, quantity: str = "water_level") -> bytes:
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ns // 1_000_000_000))
    return json.dumps({"sensor_id": sensor, "time": f"{t}.{t_ns % 1_000_000_000 // 1000:06d}Z",
                       "values": {quantity: value}}).encode()


def alternating_stream(gauges: list[str], rounds: int, t0_ns: int, step_s: int = 1):
    """Round r: every gauge reads LOW (even r) or HIGH (odd r) at t0 + r*step; yields (key, value, t_ns)."""
    for r in range(rounds):
        t = t0_ns + r * step_s * 1_000_000_000
        for g in gauges:
            yield g.encode(), reading(g, t, HIGH if r % 2 else LOW), t


def expected_events(setup: FloodSetup, rounds: int) -> dict[str, list[str]]:
    """District -> the event sequence the alternating stream must produce."""
    seq = [("firing" if r % 2 else "resolved") for r in range(1, rounds)]
    return {d: list(seq) for d in setup.gauges.values()}


# ----------------------------------------------------------------------------- Kafka helpers
def create_topics(bootstrap: str, names: list[str], partitions: int = 2, **admin_opts) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **admin_opts)
    try:
        for n in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(n, partitions, 1)])
    finally:
        admin.close()


def producer(bootstrap: str, **opts) -> KafkaProducer:
    return KafkaProducer(**{"bootstrap_servers": bootstrap, "linger_ms": 5, "acks": "all", **opts})


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0, idle_s: float = 1.5, **opts) -> list:
    """Every record of a topic from the beginning (assign, no group) until caught up and idle."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **opts)
    try:
        deadline = time.monotonic() + timeout
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        records: list = []
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            got = [m for msgs in consumer.poll(timeout_ms=300).values() for m in msgs]
            records.extend(got)
            if got:
                idle_since = time.monotonic()
            caught_up = all(consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp)
                            for tp in tps)
            if caught_up and time.monotonic() - idle_since > idle_s:
                break
        return records
    finally:
        consumer.close()


def alert_records(bootstrap: str, topic: str, **opts) -> list[dict]:
    return [json.loads(m.value) for m in read_topic(bootstrap, topic, **opts)]


def events_by_district(records: list[dict]) -> tuple[dict[str, list[str]], int]:
    """District -> event sequence (deduplicated by alert_id/seq, ordered by time then seq) and duplicate count."""
    seen: dict[tuple[str, int], dict] = {}
    dups = 0
    for r in records:
        key = (r["alert_id"], r["seq"])
        if key in seen:
            dups += 1
        seen[key] = r
    out: dict[str, list[tuple]] = defaultdict(list)
    for r in seen.values():
        for d in r["districts"]:
            out[d].append((r["time"], r["alert_id"], r["seq"], r["event"]))
    return {d: [e[3] for e in sorted(v)] for d, v in out.items()}, dups


# ----------------------------------------------------------------------------- receivers
class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 that can go down and come back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[Message] = []
        self.times: list[float] = []
        self._ctl: Controller | None = None
        self.start()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        self.times.append(time.monotonic())
        return "250 OK"

    def start(self) -> None:
        self._ctl = Controller(self, hostname="127.0.0.1", port=self.port)
        self._ctl.start()

    def stop(self) -> None:
        if self._ctl is not None:
            self._ctl.stop()
            self._ctl = None

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=stadtwacht@example.org&to=leitstelle@example.org&mode=insecure"

    def texts(self) -> list[str]:
        return [str(m["Subject"] or "") + "\n" + m.get_body(preferencelist=("plain",)).get_content()
                for m in list(self.messages)]


class HttpReceiver:
    """A json:// webhook receiver storing each POSTed document and its arrival time."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.times: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                outer.posts.append(json.loads(self.rfile.read(n)))
                outer.times.append(time.monotonic())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._srv.server_address[1]
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def texts(self) -> list[str]:
        return [str(p.get("title", "")) + "\n" + str(p.get("message", "")) for p in list(self.posts)]

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()


def refs(texts: list[str]) -> Counter:
    """(alert_id, seq) -> how many messages carried that Ref line."""
    return Counter((a, int(s)) for t in texts for a, s in REF.findall(t))


# ----------------------------------------------------------------------------- the process under test
class RunProcess:
    """A `stadtwacht run` subprocess with its own HTTP port and state directory."""

    def __init__(self, setup: FloodSetup, bootstrap: str, state_dir: Path, *, env: dict | None = None,
                 log: Path | None = None, port: int | None = None, config: Path | None = None) -> None:
        self.port = port or free_port()
        self.cmd = [sys.executable, "-m", "stadtwacht", "run", "--config", str(config or setup.config),
                    "--bootstrap", bootstrap, "--state-dir", str(state_dir), "--metrics-port", str(self.port),
                    "--sensors", str(setup.registry)]
        self.env = {**os.environ, **(env or {})}
        self.log = log or state_dir.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> RunProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str, timeout: float = 3.0, data: bytes | None = None, headers: dict | None = None,
            method: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers or {},
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError, ValueError):
                status, body = self.get("/readyz")
                last = json.loads(body)
                if status == 200:
                    return last
            time.sleep(0.2)
        raise AssertionError(f"not ready within {timeout}s: {last}\n{self.tail()}")

    def metrics(self) -> dict[tuple[str, tuple], float]:
        _, body = self.get("/metrics", timeout=5)
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def total(self, name: str, **match: str) -> float:
        return sum(v for (n, labels), v in self.metrics().items()
                   if n == name and all(dict(labels).get(k) == val for k, val in match.items()))

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"stadtwacht run exited with {self.proc.returncode}:\n{self.tail()}")

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_until(cond, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def results_file() -> Path | None:
    """Where tests append measured figures (env STADTWACHT_RELIABILITY_RESULTS), for docs/reliability.md."""
    p = os.environ.get("STADTWACHT_RELIABILITY_RESULTS")
    return Path(p) if p else None


def report(test: str, **figures) -> None:
    """Print measured figures (pytest -s shows them) and append them to the results file if asked."""
    line = json.dumps({"test": test, **figures})
    print("RELIABILITY", line)
    f = results_file()
    if f is not None:
        with f.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
