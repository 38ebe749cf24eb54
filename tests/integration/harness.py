"""Helpers to run a real ``stadtwacht run`` process against the test broker and read what it did."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from prometheus_client.parser import text_string_to_metric_families

from stadtwacht.broker import free_port

REPO = Path(__file__).resolve().parents[2]


def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for n in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(n, partitions, 1)])
    finally:
        admin.close()


def write_config(path: Path, prefix: str, extra: str = "") -> Path:
    path.write_text(f"""
[kafka]
group_id = "{prefix}-group"
topics = ["{prefix}.flood", "{prefix}.air"]
community_topics = ["{prefix}.community"]
alerts_topic = "{prefix}.alerts"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_records = 500
{extra}
""", encoding="utf-8")
    return path


class ServiceProcess:
    """A ``stadtwacht run`` subprocess with its own HTTP port and state directory."""

    def __init__(self, config: Path, bootstrap: str, state_dir: Path, *args: str, env: dict | None = None,
                 log: Path | None = None) -> None:
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "stadtwacht", "run", "--config", str(config), "--bootstrap", bootstrap,
                    "--state-dir", str(state_dir), "--metrics-port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.log = log or state_dir.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                status, body = self.get("/readyz")
                last = json.loads(body)
                if status == 200:
                    return last
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready within {timeout}s: {last}\n{self.log.read_text()[-3000:]}")

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Samples as {(name, sorted label items): value}."""
        _, body = self.get("/metrics", timeout=5)
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def total(self, name: str, **match: str) -> float:
        return sum(v for (n, labels), v in self.metrics().items()
                   if n == name and all(dict(labels).get(k) == val for k, val in match.items()))

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"stadtwacht run exited with {self.proc.returncode}:\n"
                                 f"{self.log.read_text()[-4000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)

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


def read_topic(bootstrap: str, topic: str, expect: int | None = None, timeout: float = 30.0) -> list:
    """Every record of a topic (all partitions, from the beginning), via assign (no group)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout
        parts = None
        while parts is None and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
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
            batch = consumer.poll(timeout_ms=500)
            got = [m for msgs in batch.values() for m in msgs]
            records.extend(got)
            if got:
                idle_since = time.monotonic()
            done = all(consumer.position(tp) >= (consumer.highwater(tp) or 0) for tp in tps) and all(
                consumer.highwater(tp) is not None for tp in tps)
            if (expect is not None and len(records) >= expect and done) or (
                    expect is None and done and time.monotonic() - idle_since > 1.0):
                break
        return records
    finally:
        consumer.close()


def committed_vs_end(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """(committed offset, end offset) per partition; the end from the high watermark (Tansu-safe)."""
    out = {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    probe = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        for t in topics:
            for p in sorted(probe.partitions_for_topic(t) or []):
                tp = TopicPartition(t, p)
                probe.assign([tp])
                probe.seek(tp, 0)
                probe.poll(timeout_ms=500, max_records=1)
                end = probe.highwater(tp) or 0
                out[(t, p)] = (consumer.committed(tp) or 0, end)
    finally:
        consumer.close()
        probe.close()
    return out


def by_reason(records) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        reason = dict(r.headers).get("stadtwacht.reason", b"?").decode()
        counts[reason] += 1
    return dict(counts)
