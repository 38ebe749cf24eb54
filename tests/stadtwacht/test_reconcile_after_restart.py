"""An alert that ended while the process was away ends after the restart without a reading (never the one the
alert fired with, which would read as current: "Messwert 500 cm (unter 400 cm gefallen)")."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry

from alerting.templates import render_event_message
from ingest.decode import RawMessage
from stadtwacht.config import load_config
from stadtwacht.pipeline import Pipeline
from tests.reliability.harness import HIGH, LOW, reading, write_flood_setup

T0 = 1_750_000_000 * 10**9
H = 3600 * 10**9


def _pipeline(setup, state) -> Pipeline:
    cfg, problems = load_config(setup.config)
    assert not problems
    return Pipeline(cfg, CollectorRegistry(), state, sensors_path=str(setup.registry))


def _gauge(setup) -> str:
    return next(iter(setup.gauges))


def _fire_then_restart(tmp_path) -> tuple[Pipeline, str, object]:
    setup = write_flood_setup(tmp_path, "t", 1)
    first = _pipeline(setup, tmp_path / "state")
    (fired,) = first.process_messages([RawMessage("t.flood", 0, 0, b"k", reading(_gauge(setup), T0, HIGH))]).records
    first.alerts.close()
    return _pipeline(setup, tmp_path / "state"), fired.alert_id, setup


def test_an_alert_that_ended_during_the_downtime_ends_without_the_reading_it_fired_with(tmp_path):
    again, alert_id, setup = _fire_then_restart(tmp_path)
    rebuilt = [RawMessage("t.flood", 0, 0, b"k", reading(_gauge(setup), T0, HIGH)),
               RawMessage("t.flood", 0, 1, b"k", reading(_gauge(setup), T0 + H, LOW))]
    again.process_messages(rebuilt, deliver=False)  # the warm-up re-read: state only
    (ended,) = again.reconcile()
    assert (ended.alert_id, ended.event) == (alert_id, "resolved") and math.isnan(ended.value)
    _, body = render_event_message([(ended, 1)], sensor_names=again.alerts.sensor_names)
    assert "keine Überschreitung mehr im neu aufgebauten Lagebild" in body and f"{HIGH:.1f}" not in body
    assert f"Sensoren: Pegel mitte [{_gauge(setup)}]" in body  # the registry's name (wired by the pipeline)
    again.alerts.close()


def test_an_alert_the_rebuilt_picture_has_no_event_of_ends_without_a_reading(tmp_path):
    """The gauge was back to normal before the re-read window: the rebuilt picture has no event of the district,
    so the current reading is not known here; the all-clear says so instead of repeating 500 cm."""
    again, alert_id, setup = _fire_then_restart(tmp_path)
    again.process_messages([RawMessage("t.flood", 0, 5, b"k", reading(_gauge(setup), T0 + 5 * H, LOW))],
                           deliver=False)
    (ended,) = again.reconcile()
    assert (ended.alert_id, ended.event) == (alert_id, "resolved") and math.isnan(ended.value)
    title, body = render_event_message([(ended, 1)])
    assert title.startswith("ENTWARNUNG")
    assert "keine Überschreitung mehr im neu aufgebauten Lagebild (aktueller Messwert nicht bekannt)" in body
    assert f"{HIGH:.1f}" not in body
    again.alerts.close()
