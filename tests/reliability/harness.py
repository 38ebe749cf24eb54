"""Fault-injection harness: a `stadtwacht run` subprocess, a flood setup with known episodes, real receivers.

The setup: one trusted gauge ``pegel-<i>`` per district (impact list = that district) and one custom rule
(water level >= 400 cm is level 1), so a reading alternating 300/500 cm causes exactly one transition:
firing on every high, resolved on every low. Expected alert events are therefore known per district.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tests.support.kafka_topics import read_topic
from tests.support.service import ServiceProcess

REF = re.compile(r"Ref: ([0-9A-Za-z_.:-]+)/(\d+)")
#: Districts of the built-in layer used for gauges (one gauge each).
DISTRICTS = ["mitte", "nord", "ost", "sued", "west", "bad-cannstatt", "birkach", "botnang", "degerloch",
             "feuerbach", "hedelfingen", "moehringen", "muehlhausen", "muenster", "obertuerkheim", "plieningen",
             "sillenbuch", "stammheim", "untertuerkheim", "vaihingen", "wangen", "weilimdorf", "zuffenhausen"]
LOW, HIGH = 300.0, 500.0


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


def in_process_runner(bootstrap: str, prefix: str, workdir: Path, client: str, values: list[bytes],
                      district_topic: bool = False, more_topics: tuple[str, ...] = (), connect: bool = True):
    """(setup, Runner, metrics registry): an in-process runner on a one-gauge flood setup (``client`` as the
    readings consumer, optionally with a district topic) whose readings topic already holds ``values``."""
    from stadtwacht.config import load_config
    from stadtwacht.metrics import new_registry
    from stadtwacht.pipeline import Pipeline
    from stadtwacht.runner import Runner
    from tests.support.kafka_topics import create_topics, producer

    districts = f'\ndistrict_topic = "{prefix}.districts"' if district_topic else ""
    setup = write_flood_setup(workdir, prefix, 1, extra_kafka=f'client = "{client}"{districts}')
    create_topics(bootstrap, [setup.topic, setup.alerts_topic, *([f"{prefix}.districts"] if district_topic else []),
                              *more_topics], partitions=1)
    cfg, problems = load_config(setup.config)
    assert not problems and cfg.kafka.client == client
    prod = producer(bootstrap)
    for v in values:
        prod.send(setup.topic, key=b"pegel-0", value=v)
    prod.flush()
    prod.close()
    registry = new_registry()
    return setup, Runner(Pipeline(cfg, registry, workdir / "state", sensors_path=str(setup.registry)),
                         bootstrap, connect=connect), registry


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


#: What `run` logs when it owns only some readings partitions (a partial view: docs/reliability.md finding 10).
PARTIAL_VIEW_LOG = "rolls up districts in memory"


def refs(texts: list[str]) -> Counter:
    """(alert_id, seq) -> how many messages carried that Ref line."""
    return Counter((a, int(s)) for t in texts for a, s in REF.findall(t))


# ----------------------------------------------------------------------------- the process under test
class RunProcess(ServiceProcess):
    """``stadtwacht run`` on a flood setup (its config unless given, and its sensor registry)."""

    def __init__(self, setup: FloodSetup, bootstrap: str, state_dir: Path, *, env: dict | None = None,
                 log: Path | None = None, port: int | None = None, config: Path | None = None) -> None:
        super().__init__(config or setup.config, bootstrap, state_dir, "--sensors", str(setup.registry),
                         env=env, log=log, port=port)


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
