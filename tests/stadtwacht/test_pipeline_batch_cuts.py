"""A gauge flapping inside one poll batch (a catch-up) yields the same alert events as reading by reading."""

from __future__ import annotations

import json
import time

from prometheus_client import CollectorRegistry

from ingest.decode import RawMessage
from stadtwacht.config import load_config
from stadtwacht.pipeline import Pipeline

LEVELS = [300.0, 410.0, 300.0, 410.0, 300.0]  # Pegel Stuttgart: normal, Vorwarnung, normal, Vorwarnung, normal


def _events(tmp_path, cut: bool) -> list[tuple[str, str, int]]:
    cfg, problems = load_config(None)
    assert not problems
    pipeline = Pipeline(cfg, CollectorRegistry(), tmp_path)
    t0 = int(time.time()) - 3600
    readings = [{"sensor_id": "pegel-stuttgart", "values": {"water_level": v},
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 600 * k))}
                for k, v in enumerate(LEVELS)]
    chunks = [[r] for r in readings] if cut else [readings]
    records = []
    for offset, chunk in enumerate(chunks):
        msg = RawMessage("readings", 0, offset, b"pegel-stuttgart", json.dumps(chunk).encode())
        records += pipeline.process_messages([msg]).records
    return [(r.districts[0], r.event, r.level) for r in records if r.hazard == "flood"]


def test_transitions_inside_one_batch_are_all_announced(tmp_path):
    one_batch = _events(tmp_path / "batch", cut=False)
    assert one_batch == _events(tmp_path / "cut", cut=True)
    cannstatt = [(event, level) for district, event, level in one_batch if district == "bad-cannstatt"]
    assert cannstatt == [("firing", 2), ("resolved", 0), ("firing", 2), ("resolved", 0)]
