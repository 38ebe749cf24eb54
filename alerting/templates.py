"""Message texts in German and English: what, where, how bad, since when, what to do, and Ref lines."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from alerting.record import AlertRecord
from ingest.quantities import UNITS

__all__ = ["clean", "duration_text", "render_event_message", "render_followup_message"]

_TZ = ZoneInfo("Europe/Berlin")
_TAG = re.compile(r"<[^>]*>?")
_BAD = re.compile(r"[<>&\"'`\\]")

_HAZARD = {
    "de": {"flood": "Hochwasser", "air": "Luftqualität", "sensor": "Sensorstörung"},
    "en": {"flood": "Flood", "air": "Air quality", "sensor": "Sensor fault"},
}
_EVENT = {
    "de": {"firing": "WARNUNG", "update": "AKTUALISIERUNG", "resolved": "ENTWARNUNG",
           "reminder": "ERINNERUNG (unbestätigt)", "escalation": "ESKALATION (unbestätigt)"},
    "en": {"firing": "WARNING", "update": "UPDATE", "resolved": "ALL-CLEAR",
           "reminder": "REMINDER (not acknowledged)", "escalation": "ESCALATION (not acknowledged)"},
}
_TREND = {"de": {1: "steigend", -1: "fallend", 0: "neu"}, "en": {1: "rising", -1: "easing", 0: "new"}}
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
    },
}
_LABELS = {
    "de": {"where": "Wo", "level": "Stufe", "value": "Messwert", "threshold": "Schwelle", "trend": "Tendenz",
           "since": "Seit", "action": "Empfehlung", "sensors": "Sensoren", "ack": "Bestätigen", "now": "Stand",
           "exercise": "ÜBUNG", "acked": "Bestätigt von"},
    "en": {"where": "Where", "level": "Level", "value": "Value", "threshold": "threshold", "trend": "Trend",
           "since": "Since", "action": "Recommended action", "sensors": "Sensors", "ack": "Acknowledge",
           "now": "As of", "exercise": "EXERCISE", "acked": "Acknowledged by"},
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


def _time(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(_TZ).strftime("%d.%m.%Y %H:%M %Z")


def _action(lang: str, hazard: str, level: int, event: str) -> str:
    if event == "resolved":
        return _ACTION[lang][("resolved", 0)]
    table = _ACTION[lang]
    for lv in range(level, 0, -1):
        if (hazard, lv) in table:
            return table[(hazard, lv)]
    return ""


def _num(x: float) -> str:
    return f"{x:.1f}" if x == x else "-"


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


def _measure(lang: str, rec: AlertRecord, unit: str) -> str:
    """"Messwert 305.0 cm (Schwelle 300.0 cm)", or what a sensor fault measured ("Messpause 1 h 17 min ...")."""
    fault = _FAULT_MEASURE[lang].get(rec.quantity) if rec.hazard == "sensor" else None
    if fault:
        fmt = {"stale": duration_text, "anomaly": "{:.2f}".format}.get(rec.quantity, _num)
        return f"{fault[0]} {fmt(rec.value)} ({fault[1]} {fmt(rec.threshold)})"
    u = f" {unit}" if unit else ""
    L = _LABELS[lang]
    return f"{L['value']} {_num(rec.value)}{u} ({L['threshold']} {_num(rec.threshold)}{u})"


def render_event_message(events: Sequence[tuple[AlertRecord, int]], language: str = "de",
                         exercise: bool = False, public_url: str = "") -> tuple[str, str]:
    """(title, body) for a group of events of the same hazard, event and level; events are (record, prev_level)."""
    lang = language if language in _LABELS else "de"
    L = _LABELS[lang]
    first = events[0][0]
    hazard = _HAZARD[lang].get(first.hazard, clean(first.hazard))
    names = [clean(n) for r, _ in events for n in r.district_names]
    where = ", ".join(dict.fromkeys(names))
    level_name = clean(first.level_name)
    prefix = f"[{L['exercise']}] " if exercise else ""
    title = f"{prefix}{_EVENT[lang][first.event]}: {hazard} – {level_name} – {where}"[:250]
    lines = [f"{prefix}{_EVENT[lang][first.event]}: {hazard} ({clean(first.quantity)})",
             f"{L['where']}: {where}",
             f"{L['level']}: {first.level} ({level_name})"]
    unit = UNITS.get(first.quantity, "")
    for rec, prev in events:
        trend = _TREND[lang][(rec.level > prev) - (rec.level < prev)] if rec.event != "firing" else _TREND[lang][0]
        sensors = ", ".join(clean(s, 64) for s in rec.sensors[:10])
        lines.append(f"- {', '.join(clean(n) for n in rec.district_names)}: {_measure(lang, rec, unit)}"
                     + (f", {L['trend']}: {trend}" if rec.hazard != "sensor" else "")
                     + (f", {L['sensors']}: {sensors}" if sensors else ""))
    lines.append(f"{L['since']}: {_time(min(r.started_at for r, _ in events))}")
    lines.append(f"{L['now']}: {_time(max(r.time for r, _ in events))}")
    action = _action(lang, first.hazard, first.level, first.event)
    if action:
        lines.append(f"{L['action']}: {action}")
    if public_url and first.event != "resolved":
        lines.append(f"{L['ack']}: {public_url.rstrip('/')}/")
    lines.append("")
    lines.extend(f"Ref: {r.alert_id}/{r.seq}" for r, _ in events)
    return title, "\n".join(lines)


def render_followup_message(kind: str, record: AlertRecord, language: str = "de", exercise: bool = False,
                            public_url: str = "") -> tuple[str, str]:
    """(title, body) of a reminder or escalation for a still-firing, unacknowledged alert."""
    lang = language if language in _LABELS else "de"
    title, body = render_event_message([(record, record.level)], lang, exercise, public_url)
    head = _EVENT[lang][kind]
    prefix = f"[{_LABELS[lang]['exercise']}] " if exercise else ""
    return f"{prefix}{head}: {title.removeprefix(prefix)}"[:250], f"{prefix}{head}\n{body}"
