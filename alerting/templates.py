"""Message texts in German and English: what, where, how bad, since when, what to do, and Ref lines."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from alerting.record import AlertRecord
from ingest.quantities import UNITS

__all__ = [
    "clean",
    "duration_text",
    "is_rate",
    "local_time",
    "measurement_lost",
    "render_event_message",
    "render_followup_message",
    "rule_aggregates",
    "rule_unit",
]

_TZ = ZoneInfo("Europe/Berlin")
_TAG = re.compile(r"<[^>]*>?")
_BAD = re.compile(r"[<>&\"'`\\]")

_HAZARD = {
    "de": {"flood": "Hochwasser", "air": "Luftqualität", "sensor": "Sensorstörung"},
    "en": {"flood": "Flood", "air": "Air quality", "sensor": "Sensor fault"},
}
_EVENT = {
    "de": {"firing": "WARNUNG", "update": "AKTUALISIERUNG", "resolved": "ENTWARNUNG",
           "reminder": "ERINNERUNG (unbestätigt)", "escalation": "ESKALATION (unbestätigt)",
           "lost": "MESSAUSFALL"},
    "en": {"firing": "WARNING", "update": "UPDATE", "resolved": "ALL-CLEAR",
           "reminder": "REMINDER (not acknowledged)", "escalation": "ESCALATION (not acknowledged)",
           "lost": "MEASUREMENT LOST"},
}
_TREND = {"de": {1: "steigend", -1: "fallend", 0: "neu", "same": "unverändert"},
          "en": {1: "rising", -1: "easing", 0: "new", "same": "unchanged"}}
_ACTION = {
    "de": {
        ("flood", 1): "Pegel beobachten, Einsatzkräfte informieren.",
        ("flood", 2): "Uferbereiche meiden, Keller und Tiefgaragen räumen, Sandsäcke bereitstellen.",
        ("flood", 3): "Gefahrenbereich räumen, Katastrophenschutz einbinden, Bevölkerung warnen.",
        ("air", 1): "Empfindliche Personen: längere Anstrengung im Freien vermeiden.",
        ("air", 2): "Aufenthalt im Freien einschränken, Fenster geschlossen halten.",
        ("air", 3): "Aufenthalt im Freien vermeiden, Bevölkerung informieren.",
        ("sensor", 1): "Sensor prüfen; Messwerte der Station bis dahin nicht vertrauen.",
        ("resolved", 0): "Keine Maßnahmen mehr erforderlich.",
        ("lost", 0): "Keine Entwarnung: Lage vor Ort prüfen.",
    },
    "en": {
        ("flood", 1): "Watch the gauge, inform the response teams.",
        ("flood", 2): "Keep away from river banks, clear cellars and underground car parks, stage sandbags.",
        ("flood", 3): "Evacuate the danger zone, involve civil protection, warn the public.",
        ("air", 1): "Sensitive people: avoid prolonged exertion outdoors.",
        ("air", 2): "Limit time outdoors, keep windows closed.",
        ("air", 3): "Avoid staying outdoors, inform the public.",
        ("sensor", 1): "Check the sensor; do not trust its readings until then.",
        ("resolved", 0): "No further action needed.",
        ("lost", 0): "Not an all-clear: check the situation on site.",
    },
}
_LABELS = {
    "de": {"where": "Wo", "level": "Stufe", "value": "Messwert", "threshold": "Schwelle", "trend": "Tendenz",
           "since": "Seit", "action": "Empfehlung", "sensors": "Sensoren", "ack": "Bestätigen", "now": "Stand",
           "exercise": "ÜBUNG", "acked": "quittiert von {who} um {at}", "rate": "Anstieg",
           "fell": "unter {bound} gefallen: Aufhebungswert von Stufe {level}", "fell_0": "unter {bound} gefallen",
           "last_level": "zuletzt Stufe {level}", "was": "zuletzt", "no_reading": "kein Messwert", "na": "k. A.",
           "lost": "Die Warnung endet, weil der Messwert fehlt oder die Sonde gestört ist (letzter Wert {value})",
           "rebuilt": "keine Überschreitung mehr im neu aufgebauten Lagebild (aktueller Messwert nicht bekannt)"},
    "en": {"where": "Where", "level": "Level", "value": "Value", "threshold": "threshold", "trend": "Trend",
           "since": "Since", "action": "Recommended action", "sensors": "Sensors", "ack": "Acknowledge",
           "now": "As of", "exercise": "EXERCISE", "acked": "acknowledged by {who} at {at}", "rate": "Rise",
           "fell": "fell below {bound}: clear value of level {level}", "fell_0": "fell below {bound}",
           "last_level": "last level {level}", "was": "last", "no_reading": "no reading", "na": "n/a",
           "lost": "The warning ends because the reading is missing or the probe is faulty (last value {value})",
           "rebuilt": "no exceedance left in the rebuilt picture (current reading not known)"},
}

#: What a sensor fault's value and threshold are (its record's quantity is the fault kind).
_FAULT_MEASURE = {
    "de": {"stale": ("Messpause", "Grenze"), "stuck": ("Schwankungsbreite", "Grenze"),
           "range": ("Messwert", "Messbereichsgrenze"), "anomaly": ("Anomaliewert", "Schwelle")},
    "en": {"stale": ("no readings for", "limit"), "stuck": ("spread of values", "limit"),
           "range": ("value", "measuring range limit"), "anomaly": ("anomaly score", "threshold")},
}


def clean(text: str, limit: int = 200) -> str:
    """Outside text made inert: markup and control characters stripped, length bounded."""
    s = _BAD.sub("", _TAG.sub("", str(text)))
    s = "".join(ch for ch in s if unicodedata.category(ch)[0] != "C")
    return s.strip()[:limit]


def local_time(iso: str) -> str:
    """An RFC 3339 time for people: Europe/Berlin local time, "06.12.2026 20:30 CET"."""
    return datetime.fromisoformat(iso).astimezone(_TZ).strftime("%d.%m.%Y %H:%M %Z")


_time = local_time


def rule_aggregates(rules: Iterable[object]) -> dict[str, str]:
    """Rule name -> aggregate of configured rules (``detection.config.RuleConfig``: ``name``, ``aggregate``)."""
    return {r.name: r.aggregate for r in rules}


def is_rate(record: AlertRecord, aggregates: Mapping[str, str] | None = None) -> bool:
    """Whether the record's value and threshold are a rate of rise (its rule's aggregate is rate_per_hour)."""
    if record.hazard == "sensor":
        return False
    return aggregates is not None and aggregates.get(record.rule) == "rate_per_hour"


def rule_unit(record: AlertRecord, aggregates: Mapping[str, str] | None = None) -> str:
    """The unit of the record's value and threshold: the quantity's ("cm"), per hour for a rate ("cm/h")."""
    unit = UNITS.get(record.quantity, "")
    return f"{unit}/h" if unit and is_rate(record, aggregates) else unit


def measurement_lost(record: AlertRecord) -> bool:
    """A hazard episode that ended because its sensor turned stale or faulty, not because the value fell.

    Such a ``resolved`` record has no threshold (null; NaN in memory): the detection engine suppresses a faulty
    sensor's levels with a NaN boundary, while every fall below a clear value carries that value. Its message
    must never read as an all-clear."""
    t = record.threshold
    return record.event == "resolved" and record.hazard != "sensor" and (t is None or not math.isfinite(t))


def _action(lang: str, hazard: str, level: int, event: str) -> str:
    if event in ("resolved", "lost"):
        return _ACTION[lang][(event, 0)]
    table = _ACTION[lang]
    for lv in range(level, 0, -1):
        if (hazard, lv) in table:
            return table[(hazard, lv)]
    return ""


def _num(x: float) -> str:
    return f"{x:.1f}" if x == x else "-"


def _amount(lang: str, x: float | None, unit: str) -> str:
    """ "305.0 cm"; a missing value is "k. A." / "n/a", without a unit."""
    if x is None or not math.isfinite(x):
        return _LABELS[lang]["na"]
    return f"{x:.1f} {unit}" if unit else f"{x:.1f}"


def duration_text(seconds: float) -> str:
    """A span for people: "45 s", "17 min", "1 h 17 min", "2 d 3 h"."""
    if seconds != seconds:
        return "-"
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min" if s % 3600 >= 60 else f"{s // 3600} h"
    return f"{s // 86400} d {s % 86400 // 3600} h" if s % 86400 >= 3600 else f"{s // 86400} d"


def _measure(lang: str, rec: AlertRecord, prev: int, aggregates: Mapping[str, str] | None) -> str:
    """"Messwert 305.0 cm (Schwelle 300.0 cm)", "Anstieg 36.1 cm/h (Schwelle 30.0 cm/h)", a fall below the clear
    value of the level left ("Messwert 448.5 cm (unter 450.0 cm gefallen: Aufhebungswert von Stufe 4)"), a loss
    of measurement, or what a sensor fault measured ("Messpause 1 h 17 min ...")."""
    L = _LABELS[lang]
    fault = _FAULT_MEASURE[lang].get(rec.quantity) if rec.hazard == "sensor" else None
    if fault:
        fmt = {"stale": duration_text, "anomaly": "{:.2f}".format}.get(rec.quantity, _num)
        return f"{fault[0]} {fmt(rec.value)} ({fault[1]} {fmt(rec.threshold)})"
    unit = rule_unit(rec, aggregates)
    label = L["rate"] if is_rate(rec, aggregates) else L["value"]
    value = _amount(lang, rec.value, unit)
    if measurement_lost(rec):
        return L["lost"].format(value=value)
    if rec.event == "resolved" and not math.isfinite(rec.value):  # ended by a reconcile: see AlertService
        return L["rebuilt"]
    bound = _amount(lang, rec.threshold, unit)
    if rec.event == "resolved" or (rec.event == "update" and rec.level < prev):
        # the boundary of a fall is the clear value of the level left, not the threshold of the level now
        fell = L["fell"].format(bound=bound, level=prev) if prev > 0 else L["fell_0"].format(bound=bound)
        return f"{label} {value} ({fell})"
    return f"{label} {value} ({L['threshold']} {bound})"


def _sensor_label(sensor_id: str, names: Mapping[str, str] | None) -> str:
    name = names.get(sensor_id) if names else None
    sid = clean(sensor_id, 64)
    return f"{clean(name, 80)} [{sid}]" if name and name != sensor_id else sid


def _acked(lang: str, rec: AlertRecord, acks: Mapping[str, tuple[str, str]] | None) -> str:
    """ ", quittiert von Müller um 21:05" when the record's episode is acknowledged (the day too if not today's)."""
    ack = acks.get(rec.alert_id) if acks else None
    if not ack or not ack[0]:
        return ""
    who, at = ack
    try:
        when = datetime.fromisoformat(at).astimezone(_TZ)
        day = datetime.fromisoformat(rec.time).astimezone(_TZ).date()
    except (TypeError, ValueError):  # a time we cannot read: the name alone (a message is never lost over it)
        return f", {_LABELS[lang]['acked'].format(who=clean(who, 64), at='?')}"
    shown = when.strftime("%H:%M") if when.date() == day else when.strftime("%d.%m.%Y %H:%M")
    return ", " + _LABELS[lang]["acked"].format(who=clean(who, 64), at=shown)


def render_event_message(events: Sequence[tuple[AlertRecord, int]], language: str = "de",
                         exercise: bool = False, public_url: str = "", *,
                         aggregates: Mapping[str, str] | None = None,
                         acks: Mapping[str, tuple[str, str]] | None = None,
                         sensor_names: Mapping[str, str] | None = None,
                         unchanged: bool = False) -> tuple[str, str]:
    """(title, body) for a group of events of the same hazard, event and level; events are (record, prev_level).
    ``unchanged``: a reminder or escalation repeating the last event (its trend "unverändert", not "neu").

    ``aggregates``: rule name -> aggregate of the configured rules (a record names its rule only), so a
    rate-of-rise rule reads "Anstieg 36.1 cm/h". ``acks``: alert_id -> (operator, RFC 3339 time) of
    acknowledged episodes. ``sensor_names``: sensor id -> the registry's name ("Pegel Plochingen [pegel-7]";
    a sensor without one, a citizen sensor, by its id).
    A ``resolved`` event whose episode ended for want of a measurement (``measurement_lost``) is no all-clear:
    it is headed "MESSAUSFALL" / "MEASUREMENT LOST" and asks to check on site.
    """
    lang = language if language in _LABELS else "de"
    L = _LABELS[lang]
    first = events[0][0]
    hazard = _HAZARD[lang].get(first.hazard, clean(first.hazard))
    where = ", ".join(dict.fromkeys(clean(n) for r, _ in events for n in r.district_names))
    level_name = clean(first.level_name)
    prefix = f"[{L['exercise']}] " if exercise else ""
    lost = measurement_lost(first)  # a group is all lost or all cleared: the service groups them apart
    if lost:
        head = _EVENT[lang]["lost"]
        last = max(p for _, p in events)
        title = f"{prefix}{head}: {hazard} – {L['last_level'].format(level=last)} – {where}"[:250]
        level_line = f"{L['level']}: {L['was']} {last} – {L['no_reading']}"
    else:
        head = _EVENT[lang][first.event]
        title = f"{prefix}{head}: {hazard} – {level_name} – {where}"[:250]
        level_line = f"{L['level']}: {first.level} ({level_name})"
    lines = [f"{prefix}{head}: {hazard} ({clean(first.quantity)})", f"{L['where']}: {where}", level_line]
    for rec, prev in events:
        if unchanged:
            trend = _TREND[lang]["same"]
        else:
            trend = _TREND[lang][(rec.level > prev) - (rec.level < prev)] if rec.event != "firing" else _TREND[lang][0]
        sensors = ", ".join(_sensor_label(s, sensor_names) for s in rec.sensors[:10])
        lines.append(f"- {', '.join(clean(n) for n in rec.district_names)}: {_measure(lang, rec, prev, aggregates)}"
                     + (f", {L['trend']}: {trend}" if rec.hazard != "sensor" and not measurement_lost(rec) else "")
                     + (f", {L['sensors']}: {sensors}" if sensors else "")
                     + _acked(lang, rec, acks))
    lines.append(f"{L['since']}: {_time(min(r.started_at for r, _ in events))}")
    lines.append(f"{L['now']}: {_time(max(r.time for r, _ in events))}")
    action = _action(lang, first.hazard, first.level, "lost" if lost else first.event)
    if action:
        lines.append(f"{L['action']}: {action}")
    if public_url and first.event != "resolved":
        # one alert: its row on the page (the page scrolls to it and marks it); several: the page
        anchor = f"#alert-{first.alert_id}" if len({r.alert_id for r, _ in events}) == 1 else ""
        lines.append(f"{L['ack']}: {public_url.rstrip('/')}/{anchor}")
    lines.append("")
    lines.extend(f"Ref: {r.alert_id}/{r.seq}" for r, _ in events)
    return title, "\n".join(lines)


def render_followup_message(kind: str, record: AlertRecord, language: str = "de", exercise: bool = False,
                            public_url: str = "", *, aggregates: Mapping[str, str] | None = None,
                            acks: Mapping[str, tuple[str, str]] | None = None,
                            sensor_names: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(title, body) of a reminder or escalation for a still-firing, unacknowledged alert."""
    lang = language if language in _LABELS else "de"
    title, body = render_event_message([(record, record.level)], lang, exercise, public_url,
                                       aggregates=aggregates, acks=acks, sensor_names=sensor_names,
                                       unchanged=True)
    head = _EVENT[lang][kind]
    prefix = f"[{_LABELS[lang]['exercise']}] " if exercise else ""
    return f"{prefix}{head}: {title.removeprefix(prefix)}"[:250], f"{prefix}{head}\n{body}"
