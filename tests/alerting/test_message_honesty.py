"""Notification and CAP texts tell an operator what happened: a silent gauge is no all-clear, a rate is a rate,
a fall names the boundary it fell below, acknowledgements are mentioned, times are local, a missing value has no
unit. Records as the pipeline emits them (a faulty sensor ends its episode with a null threshold)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import msgspec
import pytest
from lxml import etree

import alerting.templates as tpl
from alerting.atom import atom_feed
from alerting.cap import CAP_NS, cap_message, validate_cap
from alerting.record import AlertRecord

XSD = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cap" / "CAP-v1.2.xsd"
NS = {"cap": CAP_NS}
RATE = {"neckar-pegel-anstieg": "rate_per_hour", "neckar-pegel-beispiel": "last"}
NAMES = {0: "normal", 1: "Meldebeginn", 2: "Vorwarnung", 3: "Krisenstab", 4: "Hochwasseralarm"}


def rec(seq: int, event: str, level: int, value: float, threshold: float, *, rule: str = "neckar-pegel-beispiel",
        hazard: str = "flood", quantity: str = "water_level", district: str = "bad-cannstatt",
        name: str = "Bad Cannstatt", alert_id: str = "flood-abc", minute: int = 0) -> AlertRecord:
    return AlertRecord(alert_id=alert_id, seq=seq, event=event, hazard=hazard, quantity=quantity, level=level,
                       level_name=NAMES[level], districts=[district], district_names=[name],
                       sensors=["pegel-stuttgart"], value=value, threshold=threshold, rule=rule,
                       started_at="2026-12-06T19:30:07.000+00:00",
                       time=f"2026-12-06T{20 + minute // 60:02d}:{minute % 60:02d}:07.000+00:00")


# the episode of a gauge rising to "Hochwasseralarm" and then going silent (stale): the engine suppresses its
# level with a NaN boundary, the last value stays
EPISODE = [rec(1, "firing", 2, 402.0, 400.0), rec(2, "update", 3, 483.0, 480.0, minute=30),
           rec(3, "update", 4, 512.0, 500.0, minute=60)]
LOST = rec(4, "resolved", 0, 512.0, math.nan, minute=140)
CLEARED = rec(4, "resolved", 0, 320.0, 330.0, minute=140)


def cap_root(record: AlertRecord, history: list[AlertRecord], **kw) -> etree._Element:
    xml = cap_message(record, history, {}, **kw)
    if XSD.is_file():
        assert validate_cap(xml, XSD) == []
    return etree.fromstring(xml)


def texts(root: etree._Element, path: str) -> list[str]:
    return root.xpath(path + "/text()", namespaces=NS)


# -- 1. a gauge that goes silent is no all-clear --------------------------------------------------------------

def test_only_a_hazard_episode_ended_without_threshold_is_a_loss_of_measurement():
    assert tpl.measurement_lost(LOST)
    assert not tpl.measurement_lost(CLEARED)
    assert not tpl.measurement_lost(rec(3, "update", 4, 512.0, math.nan))
    assert not tpl.measurement_lost(msgspec.structs.replace(LOST, hazard="sensor", quantity="stale"))
    # as read back from the alerts topic: JSON null
    wire = json.loads(msgspec.json.encode(LOST))
    assert wire["threshold"] is None
    assert tpl.measurement_lost(msgspec.json.decode(json.dumps(wire), type=AlertRecord))


@pytest.mark.parametrize(("lang", "title", "wanted", "unwanted"), [
    ("de", "MESSAUSFALL: Hochwasser – zuletzt Stufe 4 – Bad Cannstatt",
     ["Stufe: zuletzt 4 – kein Messwert",
      "- Bad Cannstatt: Die Warnung endet, weil der Messwert fehlt oder die Sonde gestört ist (letzter Wert "
      "512.0 cm), Sensoren: pegel-stuttgart",
      "Empfehlung: Keine Entwarnung: Lage vor Ort prüfen."],
     ["ENTWARNUNG", "Keine Maßnahmen", "normal", "Schwelle", "Tendenz", "- cm"]),
    ("en", "MEASUREMENT LOST: Flood – last level 4 – Bad Cannstatt",
     ["Level: last 4 – no reading",
      "- Bad Cannstatt: The warning ends because the reading is missing or the probe is faulty (last value "
      "512.0 cm), Sensors: pegel-stuttgart",
      "Recommended action: Not an all-clear: check the situation on site."],
     ["ALL-CLEAR", "No further action", "normal", "threshold", "Trend", "- cm"]),
])
def test_a_silent_gauge_is_reported_as_a_loss_of_measurement_not_an_all_clear(lang, title, wanted, unwanted):
    got_title, body = tpl.render_event_message([(LOST, 4)], lang)
    assert got_title == title
    lines = body.splitlines()
    for w in wanted:
        assert w in lines, (w, body)
    for u in unwanted:
        assert u not in got_title + body, (u, body)
    assert lines[-1] == "Ref: flood-abc/4"


def test_a_real_all_clear_stays_an_all_clear():
    title, body = tpl.render_event_message([(CLEARED, 1)], "de")
    assert title.startswith("ENTWARNUNG: Hochwasser – normal – Bad Cannstatt")
    assert "Empfehlung: Keine Maßnahmen mehr erforderlich." in body


def test_cap_of_a_silent_gauge_is_an_update_with_unknown_urgency_keeping_the_last_severity():
    root = cap_root(LOST, EPISODE, top_level=4)
    assert texts(root, "cap:msgType") == ["Update"]
    assert texts(root, "cap:info/cap:responseType") == ["Monitor", "Monitor"]
    assert texts(root, "cap:info/cap:urgency") == ["Unknown", "Unknown"]
    assert texts(root, "cap:info/cap:certainty") == ["Unknown", "Unknown"]
    assert texts(root, "cap:info/cap:severity") == ["Extreme", "Extreme"]  # level 4 of 4
    assert texts(root, "cap:info/cap:headline") == ["Messausfall Hochwasser, keine Entwarnung: Bad Cannstatt",
                                                    "Measurement lost, flood, not an all-clear: Bad Cannstatt"]
    de, en = texts(root, "cap:info/cap:description")
    assert de.startswith("Messausfall: Die Warnung (zuletzt Stufe 4 „Hochwasseralarm“, seit 06.12.2026 20:30 CET) "
                         "endet, weil der Messwert fehlt oder die Sonde gestört ist; letzter Wert Wasserstand 512 cm. "
                         "Keine Entwarnung"), de
    assert en.startswith("Measurement lost: the warning (last level 4 “Hochwasseralarm”"), en
    for text in (de, en, *texts(root, "cap:info/cap:instruction")):
        assert "Entwarnung:" not in text.replace("Keine Entwarnung", "")
        assert "aufgehoben" not in text and "All clear" not in text and "k. A." not in text
    assert "Lage vor Ort prüfen" in texts(root, "cap:info/cap:instruction")[0]
    # the severity of the last level, whatever it was (here 3: Severe)
    assert texts(cap_root(LOST, [*EPISODE[:2], msgspec.structs.replace(EPISODE[2], level=3)]),
                 "cap:info/cap:severity") == ["Severe", "Severe"]


def test_cap_of_a_real_all_clear_stays_an_all_clear():
    root = cap_root(CLEARED, EPISODE)
    assert texts(root, "cap:info/cap:urgency") == ["Past", "Past"]
    assert texts(root, "cap:info[1]/cap:responseType") == ["AllClear"]
    assert texts(root, "cap:info[1]/cap:headline") == ["Entwarnung Hochwasser: Bad Cannstatt"]


def test_atom_entry_of_a_silent_gauge_says_measurement_lost():
    feed = etree.fromstring(atom_feed([LOST], base_url="https://stadtwacht.example"))
    title = feed.xpath("//a:entry/a:title/text()", namespaces={"a": "http://www.w3.org/2005/Atom"})
    assert title == ["Messausfall Hochwasser, keine Entwarnung: Bad Cannstatt"]


# -- 2. the rate-of-rise rule is a rate -----------------------------------------------------------------------

RISING = rec(1, "firing", 1, 36.12, 30.0, rule="neckar-pegel-anstieg")


@pytest.mark.parametrize(("lang", "line"), [
    ("de", "- Bad Cannstatt: Anstieg 36.1 cm/h (Schwelle 30.0 cm/h), Tendenz: neu, Sensoren: pegel-stuttgart"),
    ("en", "- Bad Cannstatt: Rise 36.1 cm/h (threshold 30.0 cm/h), Trend: new, Sensors: pegel-stuttgart"),
])
def test_a_rate_of_rise_is_shown_in_cm_per_hour(lang, line):
    _, body = tpl.render_event_message([(RISING, 0)], lang, aggregates=RATE)
    assert line in body.splitlines(), body
    _, body = tpl.render_followup_message("reminder", RISING, lang, aggregates=RATE)
    same = {"de": "Tendenz: unverändert", "en": "Trend: unchanged"}[lang]  # a reminder repeats: nothing is new
    assert line.replace({"de": "Tendenz: neu", "en": "Trend: new"}[lang], same) in body.splitlines(), body


def test_without_the_rules_aggregates_a_rate_is_shown_as_a_level():
    """The mapping is what tells a rate from a level: the service passes the configured rules' (replay below)."""
    assert "Messwert 36.1 cm (Schwelle 30.0 cm)" in tpl.render_event_message([(RISING, 0)], "de")[1]


def test_cap_of_a_rate_of_rise_is_in_cm_per_hour():
    root = cap_root(RISING, [], aggregates=RATE)
    de, en = texts(root, "cap:info/cap:description")
    assert de.startswith("Wasserstand (Anstieg): 36,12 cm/h (Schwellwert 30 cm/h), Stufe 1 „Meldebeginn“"), de
    assert en.startswith("water level (rise): 36.12 cm/h (threshold 30 cm/h)"), en
    assert texts(root, "cap:info/cap:parameter[cap:valueName='unit']/cap:value") == ["cm/h", "cm/h"]


# -- 3. a fall names the clear value it fell below ------------------------------------------------------------

EASED = rec(4, "update", 2, 448.5, 450.0, minute=120)


@pytest.mark.parametrize(("lang", "line"), [
    ("de", "- Bad Cannstatt: Messwert 448.5 cm (unter 450.0 cm gefallen: Aufhebungswert von Stufe 4), "
           "Tendenz: fallend, Sensoren: pegel-stuttgart"),
    ("en", "- Bad Cannstatt: Value 448.5 cm (fell below 450.0 cm: clear value of level 4), Trend: easing, "
           "Sensors: pegel-stuttgart"),
])
def test_a_fall_names_the_clear_value_of_the_level_left(lang, line):
    _, body = tpl.render_event_message([(EASED, 4)], lang)
    assert line in body.splitlines(), body
    assert "(Schwelle 450.0 cm)" not in body and "(threshold 450.0 cm)" not in body


def test_a_rise_still_shows_the_threshold_of_the_level_reached():
    _, body = tpl.render_event_message([(EPISODE[2], 3)], "de")
    assert "- Bad Cannstatt: Messwert 512.0 cm (Schwelle 500.0 cm), Tendenz: steigend" in body


def test_cap_of_a_fall_names_the_clear_value():
    root = cap_root(EASED, EPISODE)
    de, en = texts(root, "cap:info/cap:description")
    assert de.startswith("Wasserstand: 448,5 cm (unter 450 cm gefallen, Aufhebungswert von Stufe 4), "
                         "Stufe 2 „Vorwarnung“"), de
    assert "Stufe gesenkt von 4 auf 2." in de
    assert en.startswith("water level: 448.5 cm (fell below 450 cm, the clear value of level 4), level 2"), en


# -- 4. acknowledgements are mentioned ------------------------------------------------------------------------

@pytest.mark.parametrize(("lang", "event", "prev", "said"), [
    ("de", EASED, 4, ", quittiert von Müller um 21:45"),
    ("en", EASED, 4, ", acknowledged by Müller at 21:45"),
    ("de", CLEARED, 1, ", quittiert von Müller um 21:45"),
])
def test_messages_of_an_acknowledged_episode_say_who_acknowledged_when(lang, event, prev, said):
    acks = {"flood-abc": ("Müller", "2026-12-06T20:45:30.000+00:00")}
    _, body = tpl.render_event_message([(event, prev)], lang, acks=acks)
    line = next(li for li in body.splitlines() if li.startswith("- Bad Cannstatt"))
    assert line.endswith(said), line
    # another day's acknowledgement shows the date; other episodes none
    acks = {"flood-abc": ("<b>Müller</b>", "2026-12-05T20:45:30.000+00:00"), "flood-x": ("Y", "")}
    _, body = tpl.render_event_message([(event, prev)], lang, acks=acks)
    assert "05.12.2026 21:45" in body and "<" not in body
    _, body = tpl.render_event_message([(event, prev)], lang, acks={"flood-abc": ("Müller", "gestern")})
    assert "Müller" in body  # an unreadable time never costs the message


# -- 5. people read local times, a missing value has no unit --------------------------------------------------

def test_cap_description_shows_local_time_and_machine_fields_stay_cap_times():
    root = cap_root(EPISODE[0], [])
    de, en = texts(root, "cap:info/cap:description")
    assert "seit 06.12.2026 20:30 CET." in de and "since 06.12.2026 20:30 CET." in en
    assert "T19:30" not in de + en and "-00:00" not in de + en
    assert texts(root, "cap:info/cap:onset") == ["2026-12-06T19:30:07-00:00"] * 2
    summer = cap_root(msgspec.structs.replace(EPISODE[0], started_at="2026-06-06T19:30:07+00:00"), [])
    assert "seit 06.06.2026 21:30 CEST." in texts(summer, "cap:info[1]/cap:description")[0]


def test_a_missing_value_has_no_unit():
    blank = rec(2, "update", 3, math.nan, math.nan, minute=30)
    de, en = texts(cap_root(blank, EPISODE[:1]), "cap:info/cap:description")
    assert "Wasserstand: k. A. (Schwellwert k. A.)" in de and "k. A. cm" not in de
    assert "water level: n/a (threshold n/a)" in en and "n/a cm" not in en
    _, body = tpl.render_event_message([(blank, 2)], "de")
    assert "Messwert k. A. (Schwelle k. A.)" in body and "- cm" not in body


# -- end to end: `stadtwacht replay` of a gauge that rises fast, eases, rises and goes silent ------------------

def _readings(levels: list[float], start: int, extra: int) -> list[dict]:
    """pegel-stuttgart every 15 minutes from 2026-12-06 ``start`` h UTC; pegel-plochingen ``extra`` readings more
    (the event-time clock moves on while pegel-stuttgart is silent, until it is stale)."""
    out = []
    for i in range(len(levels) + extra):
        t = f"2026-12-{6 + (start + i // 4) // 24:02d}T{(start + i // 4) % 24:02d}:{i % 4 * 15:02d}:00+00:00"
        if i < len(levels):
            out.append({"sensor_id": "pegel-stuttgart", "time": t, "values": {"water_level": levels[i]}})
        out.append({"sensor_id": "pegel-plochingen", "time": t, "values": {"water_level": 300.0}})
    return out


def _jsonl(path: Path, readings: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in readings), encoding="utf-8")
    return path


def test_replay_of_a_gauge_going_silent_at_its_top_level(tmp_path, capsys):
    from stadtwacht.cli import main

    # one input file per phase (each is read as its own batch): a fast rise below the first stage (the
    # rate-of-rise rule alone) that levels off; then a rise to "Hochwasseralarm", a fall to "Vorwarnung", up
    # again, and pegel-stuttgart goes silent
    rise = _jsonl(tmp_path / "rise.jsonl", _readings([200, 209, 218, 227, 236, 245, 254] + [256] * 6, 12, 0))
    flood = _jsonl(tmp_path / "flood.jsonl",
                   _readings([330, 340, 400, 410, 480, 490, 505, 512, 470, 448.5, 470, 490, 512], 18, 16))
    notes, alerts, cap = tmp_path / "notes.jsonl", tmp_path / "alerts.jsonl", tmp_path / "cap"
    rc = main(["replay", "--log-level", "CRITICAL", str(rise), str(flood), "--state-dir", str(tmp_path / "state"),
               "--alerts-out", str(alerts), "--cap-dir", str(cap), "--notify", f"file://{notes}"])
    capsys.readouterr()
    assert rc == 0
    records = [msgspec.json.decode(line, type=AlertRecord) for line in alerts.read_bytes().splitlines()]
    mine = [r for r in records if r.districts == ["bad-cannstatt"] and r.hazard == "flood"]
    by_rule = {r.rule for r in mine}
    assert by_rule >= {"neckar-pegel-anstieg", "neckar-pegel-beispiel"}, mine
    end = mine[-1]
    assert end.event == "resolved" and math.isnan(end.threshold) and end.value == 512.0
    messages = [json.loads(line) for line in notes.read_text(encoding="utf-8").splitlines()]
    bodies = "\n".join(m["title"] + "\n" + m["body"] for m in messages)
    assert re.search(r"Anstieg \d+\.\d cm/h \(Schwelle 30\.0 cm/h\)", bodies), bodies
    assert "Messwert 448.5 cm (unter 450.0 cm gefallen: Aufhebungswert von Stufe 4)" in bodies
    # the last flood message (never grouped with an all-clear, e.g. the rate episode's)
    last_flood = [m for m in messages if "Hochwasser" in m["title"]][-1]
    assert last_flood["title"].startswith("MESSAUSFALL"), last_flood
    assert " – zuletzt Stufe 4 – " in last_flood["title"], last_flood
    assert ("- Bad Cannstatt: Die Warnung endet, weil der Messwert fehlt oder die Sonde gestört ist (letzter Wert "
            "512.0 cm), Sensoren: Pegel Stuttgart (Neckar) [pegel-stuttgart]") in last_flood["body"].splitlines()
    lost = etree.parse(str(cap / f"{end.alert_id}-{end.seq}.xml")).getroot()
    assert texts(lost, "cap:info/cap:urgency") == ["Unknown", "Unknown"]
    assert "AllClear" not in texts(lost, "cap:info/cap:responseType")
    rate = next(r for r in mine if r.rule == "neckar-pegel-anstieg" and r.event == "firing")
    rate_cap = etree.parse(str(cap / f"{rate.alert_id}-{rate.seq}.xml")).getroot()
    assert texts(rate_cap, "cap:info/cap:parameter[cap:valueName='unit']/cap:value") == ["cm/h", "cm/h"]
    if XSD.is_file():
        for f in cap.glob("*.xml"):
            assert validate_cap(f.read_bytes(), XSD) == [], f
