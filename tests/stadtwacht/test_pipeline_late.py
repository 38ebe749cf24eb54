"""Late readings: one dead letter per message (not per reading), and never counted as accepted."""

from __future__ import annotations

import json
import time

from prometheus_client import CollectorRegistry

from ingest.decode import RawMessage
from stadtwacht.config import load_config
from stadtwacht.pipeline import Pipeline


def _message(offset: int, sensor: str, times_s: list[int]) -> RawMessage:
    body = [{"sensor_id": sensor, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
             "values": {"pm10": 20.0}, "lat": 48.78, "lon": 9.18} for t in times_s]
    return RawMessage("readings", 0, offset, sensor.encode(), json.dumps(body).encode())


def test_late_readings_are_one_dead_letter_per_message_and_not_accepted(tmp_path):
    cfg, problems = load_config(None)
    assert not problems
    registry = CollectorRegistry()
    pipeline = Pipeline(cfg, registry, tmp_path)
    now = int(time.time()) - 60
    pipeline.process_messages([_message(0, "s1", [now]), _message(1, "s2", [now])])
    old = [now - 3600 - k for k in range(5)]  # an hour behind each sensor's newest reading: beyond the 10 min
    result = pipeline.process_messages([_message(2, "s1", old), _message(3, "s2", [old[0], now + 1])])

    late = [d for d in result.dead if d.reason == "late"]
    assert [(d.offset, d.readings) for d in late] == [(2, 5), (3, 1)]
    assert "and 4 more readings" in late[0].detail
    assert result.accepted == 1
    accepted = registry.get_sample_value("stadtwacht_readings_accepted_total", {"quantity": "pm10"})
    assert accepted == 3  # two first readings and the one on time; the six late ones are dead letters
    dead = registry.get_sample_value("stadtwacht_dead_letter_readings_total", {"reason": "late"})
    assert dead == 6
