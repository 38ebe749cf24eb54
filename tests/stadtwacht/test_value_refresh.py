"""A gauge that keeps rising at its top level: the control room sees the reading now, not the one the alert fired
with (page and API, reminders), and is not notified of every new reading."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from ingest.decode import RawMessage
from stadtwacht.config import load_config
from stadtwacht.pipeline import Pipeline
from tests.reliability.harness import reading, write_flood_setup

T0 = 1_750_000_000 * 10**9
MIN = 60 * 10**9


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def test_an_alert_shows_the_current_reading_while_its_level_holds(tmp_path):
    out = tmp_path / "ops.jsonl"
    setup = write_flood_setup(tmp_path, "t", 1, channels=[{"name": "ops", "url": f"file://{out}"}])
    cfg, problems = load_config(setup.config)
    assert not problems
    clock = _Clock()
    pipeline = Pipeline(cfg, CollectorRegistry(), tmp_path / "state", sensors_path=str(setup.registry),
                        clock_ns=clock, alert_clock_ns=clock)
    gauge = next(iter(setup.gauges))

    def read(minute: int, value: float, offset: int) -> list:
        clock.now = T0 + minute * MIN
        msg = RawMessage("t.flood", 0, offset, gauge.encode(), reading(gauge, T0 + minute * MIN, value))
        records = pipeline.process_messages([msg]).records
        pipeline.alerts.deliver_pending()
        return records

    assert [r.event for r in read(0, 450.0, 0)] == ["firing"]
    for i, minute in enumerate(range(2, 32, 2), 1):  # rising at the same level, one reading every 2 min
        assert read(minute, 450.0 + 10 * minute, i) == []  # no new event, nothing announced
        (alert,) = pipeline.alerts.active()
        assert alert["level"] == 1
    # value_refresh (5 min): the value shown is at most one refresh behind the newest reading (750 cm at 30)
    assert alert["value"] == 750.0 and alert["value_at"] == "2025-06-15T15:36:40.000+00:00"
    assert alert["time"] == "2025-06-15T15:06:40.000+00:00"  # the last event's time is still the firing's
    assert [m["title"].split(":")[0] for m in _messages(out)] == ["WARNUNG"]
    # a reminder (repeat_interval 4 h) tells the reading as of its time, not the firing's 450 cm
    read(4 * 60 + 1, 800.0, 100)
    pipeline.tick()
    pipeline.alerts.deliver_pending()
    reminder = _messages(out)[-1]
    assert reminder["title"].startswith("ERINNERUNG"), reminder
    assert "Messwert 800.0 cm (Schwelle 400.0 cm)" in reminder["body"]
    assert "Stand: 15.06.2025 21:07 CEST" in reminder["body"]
    pipeline.alerts.close()


def _messages(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
