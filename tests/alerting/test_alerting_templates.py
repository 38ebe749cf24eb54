"""Message templates: both languages, Ref lines, grouping, markup stripped."""

from __future__ import annotations

from dataclasses import replace

import pytest

from alerting.episodes import step
from alerting.templates import clean, render_event_message, render_followup_message
from tests.alerting.alerting_helpers import T0, S, level


def _rec(district, lv, **kw):
    return step(None, level(district, lv, **kw))[1]


@pytest.mark.parametrize(("lang", "words"), [
    ("de", ["WARNUNG", "Hochwasser", "Wo: Mitte", "Stufe: 3 (Unwetter)", "Messwert 305.0 cm", "Schwelle 300.0 cm",
            "Seit: 15.06.2025 17:06 CEST", "Empfehlung: Gefahrenbereich räumen"]),
    ("en", ["WARNING", "Flood", "Where: Mitte", "Level: 3 (Unwetter)", "Value 305.0 cm", "threshold 300.0 cm",
            "Since: 15.06.2025 17:06 CEST", "Recommended action: Evacuate"]),
])
def test_languages(lang, words):
    rec = _rec("mitte", 3)
    title, body = render_event_message([(rec, 0)], lang)
    for w in words:
        assert w in title + "\n" + body, w
    assert body.splitlines()[-1] == f"Ref: {rec.alert_id}/1"


def test_grouped_message_has_one_ref_per_event():
    recs = [_rec(d, 2, t=T0 + i * S) for i, d in enumerate(["mitte", "west", "ost"])]
    title, body = render_event_message([(r, 0) for r in recs], "de")
    assert "Mitte, West, Ost" in title
    refs = [line for line in body.splitlines() if line.startswith("Ref: ")]
    assert refs == [f"Ref: {r.alert_id}/1" for r in recs]


def test_sensors_are_named_as_the_registry_names_them():
    """A gauge by its registry name and id; a sensor without a name (a citizen sensor) by its id; names are
    outside text, so markup in them is stripped."""
    rec = _rec("mitte", 3, sensors=("pegel-7", "cs-1", "pegel-8"))
    names = {"pegel-7": "Pegel Plochingen", "pegel-8": "<b>Pegel Wendlingen</b>"}
    _, body = render_event_message([(rec, 0)], "de", sensor_names=names)
    assert "Sensoren: Pegel Plochingen [pegel-7], cs-1, Pegel Wendlingen [pegel-8]" in body
    _, body = render_followup_message("reminder", rec, "de", sensor_names=names)
    assert "Pegel Plochingen [pegel-7]" in body
    assert "Sensoren: pegel-7, cs-1, pegel-8" in render_event_message([(rec, 0)], "de")[1]


def test_trend_and_all_clear():
    ep, _ = step(None, level("mitte", 2))
    ep, up = step(ep, level("mitte", 3, t=T0 + S))
    _, body = render_event_message([(up, 2)], "de")
    assert "Tendenz: steigend" in body and body.endswith(f"Ref: {up.alert_id}/2")
    ep, down = step(ep, level("mitte", 1, t=T0 + 2 * S))
    assert "Trend: easing" in render_event_message([(down, 3)], "en")[1]
    _, res = step(ep, level("mitte", 0, t=T0 + 3 * S))
    title, body = render_event_message([(res, 1)], "de")
    assert title.startswith("ENTWARNUNG") and "Keine Maßnahmen" in body


def test_exercise_and_followups():
    rec = _rec("mitte", 2)
    title, body = render_followup_message("reminder", rec, "en", exercise=True)
    assert title.startswith("[EXERCISE] REMINDER") and body.endswith(f"Ref: {rec.alert_id}/1")


HOSTILE = [
    ('<script>alert(1)</script>Mitte', "alert(1)Mitte"),
    ('<img src=x onerror="x()">West', "West"),
    ("Ost\x00\x1b[31m", "Ost[31m"),
    ("a & b \"c\" 'd'", "a  b c d"),
    ("x" * 500, "x" * 200),
]


@pytest.mark.parametrize(("raw", "expected"), HOSTILE)
def test_clean(raw, expected):
    assert clean(raw) == expected


def test_no_markup_reaches_the_message():
    rec = _rec("mitte", 2, name="<b onclick=evil()>Mitte</b>", sensors=("<script>s1</script>",))
    title, body = render_event_message([(rec, 0)], "de")
    assert "<" not in title + body and ">" not in title + body


@pytest.mark.parametrize(("quantity", "value", "threshold", "lang", "line"), [
    ("stale", 4651.7, 4500.0, "de", "- Mitte: Messpause 1 h 17 min (Grenze 1 h 15 min), Sensoren: pegel-1"),
    ("stale", 4651.7, 4500.0, "en", "- Mitte: no readings for 1 h 17 min (limit 1 h 15 min), Sensors: pegel-1"),
    ("anomaly", 1.0, 0.47, "de", "- Mitte: Anomaliewert 1.00 (Schwelle 0.47), Sensoren: pegel-1"),
    ("stuck", 37.0, 46.8, "de", "- Mitte: Schwankungsbreite 37.0 (Grenze 46.8), Sensoren: pegel-1"),
    ("range", 1999.9, 1999.9, "en", "- Mitte: value 1999.9 (measuring range limit 1999.9), Sensors: pegel-1"),
])
def test_sensor_faults_say_what_was_measured_without_a_trend(quantity, value, threshold, lang, line):
    rec = step(None, replace(level("mitte", 1, hazard="sensor", quantity=quantity, value=value),
                             threshold=threshold))[1]
    _, body = render_event_message([(rec, 0)], lang)
    assert line in body.splitlines(), body


def test_a_hazard_line_keeps_value_threshold_unit_and_trend():
    _, body = render_event_message([(_rec("mitte", 3), 0)], "de")
    assert "- Mitte: Messwert 305.0 cm (Schwelle 300.0 cm), Tendenz: neu, Sensoren: pegel-1" in body.splitlines()


def test_the_acknowledge_link_leads_to_the_alert_on_the_page():
    """With ``public_url``: one alert's message links to its row (``#alert-<id>``), a grouped one to the page; an
    all-clear has nothing to acknowledge."""
    one = _rec("mitte", 3)
    _, body = render_event_message([(one, 0)], "de", public_url="https://leitstelle.example/lage/")
    assert f"Bestätigen: https://leitstelle.example/lage/#alert-{one.alert_id}" in body.splitlines()
    two = [one, _rec("west", 3, t=T0 + S)]
    _, body = render_event_message([(r, 0) for r in two], "en", public_url="https://leitstelle.example")
    assert "Acknowledge: https://leitstelle.example/" in body.splitlines()
    _, res = step(step(None, level("mitte", 1))[0], level("mitte", 0, t=T0 + S))
    assert "Bestätigen" not in render_event_message([(res, 1)], "de", public_url="https://leitstelle.example")[1]
