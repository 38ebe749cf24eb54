"""CAP 1.2 messages: one OASIS Common Alerting Protocol document per alert event.

Mapping of hazard and level to CAP's urgency / severity / certainty / responseType
(levels above a table's last row use the last row; ``top_level`` forces it):

========  =====  =========  ========  =========  ===================
hazard    level  urgency    severity  certainty  responseType
========  =====  =========  ========  =========  ===================
flood     1      Expected   Minor     Observed   Monitor
flood     2      Expected   Moderate  Observed   Prepare
flood     3      Immediate  Severe    Observed   Prepare, Avoid
flood     >= 4   Immediate  Extreme   Observed   Prepare, Avoid
air       1      Expected   Minor     Observed   Monitor
air       2      Immediate  Moderate  Observed   Avoid
air       >= 3   Immediate  Severe    Observed   Avoid, Shelter
sensor    >= 1   Future     Minor     Observed   Assess
(any)     resolved: Past    Minor     Observed   AllClear
(lost)    resolved: Unknown (last)    Unknown    Monitor
========  =====  =========  ========  =========  ===================

"lost": a flood or air episode that ended because its sensor turned stale or faulty (a ``resolved``
record without a threshold, ``alerting.templates.measurement_lost``) is no all-clear: an ``Update``
with urgency and certainty Unknown, the severity of the episode's last level, responseType Monitor,
and a "Messausfall" / "Measurement lost" headline.

Times in the texts (``description``) are Europe/Berlin local time, as in the notifications; the
machine fields (``sent``, ``onset``) are CAP times. A rate-of-rise rule's value is a rate: with the
rules' aggregates (``aggregates``: rule name -> aggregate) its unit is per hour ("cm/h").

Categories: flood ``Met`` (CAP: "meteorological, inc. flood"), air ``Env`` and ``Health``,
sensor ``Infra``. ``Evacuate`` is never generated: ordering an evacuation is a human decision.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from lxml import etree

from alerting.errors import AlertingError
from alerting.record import AlertRecord
from alerting.templates import duration_text, is_rate, local_time, measurement_lost, rule_unit

__all__ = [
    "CAP_NS",
    "GRADES",
    "CapError",
    "Grade",
    "cap_filename",
    "cap_grade",
    "cap_identifier",
    "cap_message",
    "cap_time",
    "headline",
    "validate_cap",
    "write_cap",
    "xml_text",
]

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
_E = f"{{{CAP_NS}}}"


class CapError(AlertingError):
    """A record that cannot become a valid CAP message (carries the episode and the reason)."""

    def __init__(self, alert_id: str, seq: int, reason: str) -> None:
        super().__init__(f"CAP {alert_id}/{seq}: {reason}")
        self.alert_id = alert_id
        self.seq = seq
        self.reason = reason


class Grade(NamedTuple):
    """CAP urgency, severity, certainty and response types of one hazard level."""

    urgency: str
    severity: str
    certainty: str
    responses: tuple[str, ...]


#: Row k-1 grades level k; see the module docstring.
GRADES: dict[str, tuple[Grade, ...]] = {
    "flood": (
        Grade("Expected", "Minor", "Observed", ("Monitor",)),
        Grade("Expected", "Moderate", "Observed", ("Prepare",)),
        Grade("Immediate", "Severe", "Observed", ("Prepare", "Avoid")),
        Grade("Immediate", "Extreme", "Observed", ("Prepare", "Avoid")),
    ),
    "air": (
        Grade("Expected", "Minor", "Observed", ("Monitor",)),
        Grade("Immediate", "Moderate", "Observed", ("Avoid",)),
        Grade("Immediate", "Severe", "Observed", ("Avoid", "Shelter")),
    ),
    "sensor": (Grade("Future", "Minor", "Observed", ("Assess",)),),
}
_ALL_CLEAR = Grade("Past", "Minor", "Observed", ("AllClear",))
_CATEGORIES = {"flood": ("Met",), "air": ("Env", "Health"), "sensor": ("Infra",)}
_MSG_TYPE = {"firing": "Alert", "update": "Update", "resolved": "Update"}
_LANGUAGES = ("de-DE", "en-US")

_EVENT = {
    "flood": {"de": "Hochwasser", "en": "Flood"},
    "air": {"de": "Luftverschmutzung", "en": "Air pollution"},
    "sensor": {"de": "Sensorstörung", "en": "Sensor fault"},
}
_QUANTITY = {
    "water_level": ("Wasserstand", "water level"),
    "discharge": ("Abfluss", "discharge"),
    "pm10": ("Feinstaub PM10", "particulate matter PM10"),
    "pm2_5": ("Feinstaub PM2,5", "particulate matter PM2.5"),
    "no2": ("Stickstoffdioxid (NO₂)", "nitrogen dioxide (NO₂)"),
    "o3": ("Ozon (O₃)", "ozone (O₃)"),
    "so2": ("Schwefeldioxid (SO₂)", "sulphur dioxide (SO₂)"),
    "stale": ("keine Messwerte", "no readings"),
    "stuck": ("unveränderter Messwert", "stuck value"),
    "range": ("Messwert außerhalb des Messbereichs", "value out of range"),
    "anomaly": ("auffälliger Verlauf (Anomaliewert)", "anomalous readings (anomaly score)"),
}
# Instructions per hazard, indexed like GRADES (clamped); the all-clear has its own.
_INSTRUCTION = {
    "flood": (
        ("Pegelstände verfolgen, Ufer und Uferwege meiden.", "Follow river levels; keep away from banks."),
        (
            "Keller und Tiefgaragen in Ufernähe räumen, Wertsachen und Fahrzeuge in Sicherheit bringen.",
            "Clear basements and underground car parks near the river; move valuables and vehicles.",
        ),
        (
            "Ufer, Unterführungen und Keller meiden. Anweisungen der Einsatzkräfte folgen.",
            "Keep away from banks, underpasses and basements. Follow the instructions of emergency services.",
        ),
    ),
    "air": (
        (
            "Empfindliche Personen sollten längere Anstrengung im Freien verringern.",
            "Sensitive people should reduce prolonged exertion outdoors.",
        ),
        (
            "Anstrengung im Freien vermeiden; empfindliche Personen bleiben in Innenräumen.",
            "Avoid exertion outdoors; sensitive people should stay indoors.",
        ),
    ),
    "sensor": (
        (
            "Sensor prüfen; Messwerte in den genannten Bezirken sind eingeschränkt verlässlich.",
            "Check the sensor; readings for the districts named are of limited reliability.",
        ),
    ),
}
_ALL_CLEAR_INSTRUCTION = (
    "Keine besonderen Maßnahmen mehr erforderlich.",
    "No special measures required any more.",
)
_LOST_INSTRUCTION = (
    "Keine Entwarnung: Lage vor Ort prüfen; bis zur Klärung Vorsicht wie zuletzt gewarnt.",
    "Not an all-clear: check the situation on site; until then take the care last warned of.",
)

# Characters XML 1.0 forbids (C0 controls other than tab/newline/CR, surrogates, U+FFFE/FFFF).
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# CAP 1.2: sender and identifier must not contain spaces, commas, '<' or '&'.
_SENDER_BAD = re.compile(r"[\s,<&]")
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_HEADLINE_MAX = 160  # CAP recommends headlines under 160 characters


def xml_text(value: object) -> str:
    """The text of ``value`` with the characters XML 1.0 cannot carry removed."""
    return _XML_FORBIDDEN.sub("", str(value))


def cap_identifier(alert_id: str, seq: int) -> str:
    """The deterministic CAP identifier of one alert event (no spaces, commas, '<' or '&')."""
    return f"urn:stadtwacht:{quote(alert_id, safe=':-._~')}:{int(seq)}"


def cap_filename(alert_id: str, seq: int | None = None) -> str:
    """The file name of an event's message (``seq``) or of the episode's latest one (None)."""
    stem = quote(alert_id, safe="-_~") or "%"
    return f"{stem}.xml" if seq is None else f"{stem}-{int(seq)}.xml"


def cap_time(rfc3339: str) -> str:
    """An RFC 3339 time as CAP wants it: whole seconds and a numeric offset, UTC as ``-00:00``."""
    try:
        t = datetime.fromisoformat(rfc3339)
    except ValueError as e:
        raise ValueError(f"not an RFC 3339 time: {rfc3339!r}") from e
    offset = t.utcoffset()
    if offset is None:
        raise ValueError(f"time without offset: {rfc3339!r}")
    if offset % timedelta(minutes=1):
        raise ValueError(f"offset not in whole minutes: {rfc3339!r}")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes <= 0 else "+"  # CAP 1.2 §3.3.2: UTC MUST be written "-00:00"
    hh, mm = divmod(abs(minutes), 60)
    return f"{t.replace(microsecond=0, tzinfo=None).isoformat()}{sign}{hh:02d}:{mm:02d}"


def cap_grade(hazard: str, level: int, event: str, top_level: int | None = None) -> Grade:
    """Urgency, severity, certainty and responses for a hazard level (see the module table; an episode ended
    for want of a measurement is graded by ``cap_message``, which knows its last level)."""
    if event == "resolved":
        return _ALL_CLEAR
    rows = GRADES[hazard]
    if top_level is not None and level >= top_level:
        return rows[-1]
    return rows[min(max(level, 1), len(rows)) - 1]


def _number(value: float | None, lang: str) -> str:
    if value is None or not math.isfinite(value):
        return "k. A." if lang == "de" else "n/a"
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text.replace(".", ",") if lang == "de" else text


def _quantity_name(quantity: str, lang: str, rate: bool = False) -> str:
    names = _QUANTITY.get(quantity)
    name = quantity if names is None else names[0 if lang == "de" else 1]
    return f"{name} ({'Anstieg' if lang == 'de' else 'rise'})" if rate else name


def _clean_join(items: Sequence[str]) -> str:
    return ", ".join(xml_text(s) for s in items)


def headline(record: AlertRecord, lang: str) -> str:
    """A one-line summary in ``lang`` ("de" or "en"): what, how bad, where."""
    event = _EVENT.get(record.hazard, {"de": record.hazard, "en": record.hazard})[lang]
    where = _clean_join(record.district_names or record.districts)
    if measurement_lost(record):
        text = (f"Messausfall {event}, keine Entwarnung: {where}" if lang == "de"
                else f"Measurement lost, {event.lower()}, not an all-clear: {where}")
    elif record.event == "resolved":
        text = f"Entwarnung {event}: {where}" if lang == "de" else f"All clear, {event.lower()}: {where}"
    else:
        text = f"{event} – {xml_text(record.level_name)}: {where}"
    return text if len(text) <= _HEADLINE_MAX else text[: _HEADLINE_MAX - 1] + "…"


_TEXT = {
    "de": {
        "active": "{q}: {value} (Schwellwert {threshold}), Stufe {level} „{level_name}“ seit {since}.",
        "fallen": "{q}: {value} (unter {threshold} gefallen, Aufhebungswert von Stufe {previous}), "
        "Stufe {level} „{level_name}“ seit {since}.",
        "resolved": "Entwarnung: {q} {value}, wieder unter {threshold}. "
        "Die Warnung seit {since} ist aufgehoben.",
        "lost": "Messausfall: Die Warnung (zuletzt Stufe {previous} „{previous_name}“, seit {since}) endet, weil "
        "der Messwert fehlt oder die Sonde gestört ist; letzter Wert {q} {value}. Keine Entwarnung: ohne "
        "Messwert ist die Lage unbekannt.",
        "trend": "Stufe {trend} von {previous} auf {level}.",
        "up": "erhöht",
        "down": "gesenkt",
        "sensors": "Sensoren: {sensors}.",
    },
    "en": {
        "active": "{q}: {value} (threshold {threshold}), level {level} “{level_name}” since {since}.",
        "fallen": "{q}: {value} (fell below {threshold}, the clear value of level {previous}), "
        "level {level} “{level_name}” since {since}.",
        "resolved": "All clear: {q} {value}, back below {threshold}. The warning issued {since} is lifted.",
        "lost": "Measurement lost: the warning (last level {previous} “{previous_name}”, since {since}) ends "
        "because the reading is missing or the probe is faulty; last value {q} {value}. Not an all-clear: "
        "without a reading the situation is unknown.",
        "trend": "Level {trend} from {previous} to {level}.",
        "up": "raised",
        "down": "lowered",
        "sensors": "Sensors: {sensors}.",
    },
}


def _description(record: AlertRecord, previous: AlertRecord | None, lang: str, unit: str, since: str,
                 rate: bool = False) -> str:
    t = _TEXT[lang]
    if record.hazard == "sensor" and record.quantity == "stale":  # seconds without a reading: a span
        show = duration_text
    else:
        def show(v: float) -> str:  # a missing value has no unit ("k. A.", not "k. A. cm")
            text = _number(v, lang)
            return f"{text} {unit}" if unit and v is not None and math.isfinite(v) else text
    fields = {
        "q": _quantity_name(record.quantity, lang, rate),
        "value": show(record.value),
        "threshold": show(record.threshold),
        "level": record.level,
        "level_name": xml_text(record.level_name),
        "since": since,
        "previous": previous.level if previous is not None else "?",
        "previous_name": xml_text(previous.level_name) if previous is not None else "?",
    }
    if measurement_lost(record):
        parts = [t["lost"].format(**fields)]
    elif record.event == "resolved":
        parts = [t["resolved"].format(**fields)]
    else:
        fallen = previous is not None and record.level < previous.level and record.hazard != "sensor"
        parts = [t["fallen" if fallen else "active"].format(**fields)]
        if previous is not None and previous.level != record.level:
            trend = t["up"] if record.level > previous.level else t["down"]
            parts.append(t["trend"].format(trend=trend, previous=previous.level, level=record.level))
    parts.append(t["sensors"].format(sensors=_clean_join(record.sensors)))
    return " ".join(parts)


def _instruction(record: AlertRecord, lang: str, top_level: int | None) -> str:
    i = 0 if lang == "de" else 1
    if measurement_lost(record):
        return _LOST_INSTRUCTION[i]
    if record.event == "resolved":
        return _ALL_CLEAR_INSTRUCTION[i]
    rows = _INSTRUCTION[record.hazard]
    level = len(rows) if top_level is not None and record.level >= top_level else record.level
    return rows[min(max(level, 1), len(rows)) - 1][i]


def _earlier(record: AlertRecord, history: Sequence[AlertRecord]) -> list[AlertRecord]:
    by_seq = {r.seq: r for r in history if r.alert_id == record.alert_id and r.seq < record.seq}
    missing = [s for s in range(1, record.seq) if s not in by_seq]
    if missing:
        raise CapError(record.alert_id, record.seq, f"history lacks earlier events {missing}")
    return [by_seq[s] for s in range(1, record.seq)]


def _sub(parent: etree._Element, tag: str, text: object) -> etree._Element:
    el = etree.SubElement(parent, _E + tag)
    el.text = xml_text(text)
    return el


def _parameter(info: etree._Element, name: str, value: object) -> None:
    p = etree.SubElement(info, _E + "parameter")
    _sub(p, "valueName", name)
    _sub(p, "value", value)


def _polygons(entry: str | Sequence[str]) -> list[str]:
    return [entry] if isinstance(entry, str) else list(entry)


def cap_message(
    record: AlertRecord,
    history: Sequence[AlertRecord],
    polygons: Mapping[str, str | Sequence[str]],
    *,
    sender: str = "stadtwacht@stuttgart.example",
    exercise: bool = False,
    approximate_areas: bool = False,
    unit: str | None = None,
    top_level: int | None = None,
    aggregates: Mapping[str, str] | None = None,
) -> bytes:
    """One CAP 1.2 document (UTF-8 with declaration) for one alert event.

    ``history`` holds the episode's earlier events (others are ignored; every
    seq below ``record.seq`` must be there, for ``references``); ``polygons``
    maps district ids to CAP polygons ``"lat,lon lat,lon ..."`` (one string or
    several for a multi-part district); districts without one are left out of
    the geometry but stay in ``areaDesc``. ``top_level``: the highest level of
    the quantity's scale, graded with the table's last row. ``unit``: of the value and threshold (default:
    the quantity's, per hour for a rate-of-rise rule); ``aggregates``: rule name -> aggregate of the configured
    rules (a record names its rule only).
    """
    rid, seq = record.alert_id, record.seq
    if not sender or _SENDER_BAD.search(sender) or _XML_FORBIDDEN.search(sender):
        raise CapError(rid, seq, f"sender {sender!r} must not contain spaces, commas, '<' or '&'")
    if record.event not in _MSG_TYPE:
        raise CapError(rid, seq, f"unknown event {record.event!r}")
    if record.hazard not in GRADES:
        raise CapError(rid, seq, f"unknown hazard {record.hazard!r}")
    if seq < 1 or (record.event != "firing" and seq < 2):
        raise CapError(rid, seq, f"event {record.event!r} cannot have seq {seq}")
    if record.event != "resolved" and record.level < 1:
        raise CapError(rid, seq, f"event {record.event!r} with level {record.level}")
    earlier = _earlier(record, history)
    try:
        sent = cap_time(record.time)
        refs = [f"{sender},{cap_identifier(r.alert_id, r.seq)},{cap_time(r.time)}" for r in earlier]
        onset = cap_time(record.started_at)
    except ValueError as e:
        raise CapError(rid, seq, str(e)) from e
    unit = rule_unit(record, aggregates) if unit is None else unit
    previous = earlier[-1] if earlier else None
    if measurement_lost(record):  # no all-clear: the last severity stands, the rest is unknown
        last = cap_grade(record.hazard, previous.level, previous.event, top_level) if previous else None
        grade = Grade("Unknown", last.severity if last else "Unknown", "Unknown", ("Monitor",))
    else:
        grade = cap_grade(record.hazard, record.level, record.event, top_level)

    alert = etree.Element(_E + "alert", nsmap={None: CAP_NS})
    _sub(alert, "identifier", cap_identifier(rid, seq))
    _sub(alert, "sender", sender)
    _sub(alert, "sent", sent)
    _sub(alert, "status", "Exercise" if exercise else "Actual")
    _sub(alert, "msgType", _MSG_TYPE[record.event])
    _sub(alert, "scope", "Public")
    if refs:
        _sub(alert, "references", " ".join(refs))
    for language in _LANGUAGES:
        lang = language[:2]
        info = etree.SubElement(alert, _E + "info")
        _sub(info, "language", language)
        for category in _CATEGORIES[record.hazard]:
            _sub(info, "category", category)
        _sub(info, "event", _EVENT[record.hazard][lang])
        for response in grade.responses:
            _sub(info, "responseType", response)
        _sub(info, "urgency", grade.urgency)
        _sub(info, "severity", grade.severity)
        _sub(info, "certainty", grade.certainty)
        _sub(info, "onset", onset)
        _sub(info, "senderName", "Stadtwacht Stuttgart")
        _sub(info, "headline", headline(record, lang))
        since = local_time(record.started_at)
        rate = is_rate(record, aggregates)
        _sub(info, "description", _description(record, previous, lang, unit, since, rate))
        _sub(info, "instruction", _instruction(record, lang, top_level))
        for name, value in (
            ("alert_id", rid),
            ("seq", seq),
            ("event", record.event),
            ("hazard", record.hazard),
            ("quantity", record.quantity),
            ("level", record.level),
            ("level_name", record.level_name),
            ("value", "" if not math.isfinite(record.value) else repr(record.value)),
            ("threshold", "" if not math.isfinite(record.threshold) else repr(record.threshold)),
            ("unit", unit),
            ("rule", record.rule),
        ):
            _parameter(info, name, value)
        area = etree.SubElement(info, _E + "area")
        approx = {"de": " (ungefähr)", "en": " (approximate)"}[lang] if approximate_areas else ""
        _sub(area, "areaDesc", _clean_join(record.district_names or record.districts) + approx)
        for district in record.districts:
            for polygon in _polygons(polygons.get(district, ())):
                _sub(area, "polygon", polygon)
    return _DECLARATION + etree.tostring(alert, encoding="UTF-8", pretty_print=True)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".xml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _seq_of(path: Path) -> int:
    """The ``seq`` parameter of a message we wrote earlier (0 when unreadable)."""
    try:
        root = etree.parse(str(path)).getroot()
        xpath = "cap:info[1]/cap:parameter[cap:valueName='seq']/cap:value/text()"
        values = root.xpath(xpath, namespaces={"cap": CAP_NS})
        return int(values[0])
    except (OSError, etree.XMLSyntaxError, IndexError, ValueError):
        return 0


def write_cap(
    dir: Path,
    record: AlertRecord,
    history: Sequence[AlertRecord],
    polygons: Mapping[str, str | Sequence[str]],
    **kw,
) -> Path:
    """Write ``<alert_id>-<seq>.xml`` and refresh ``<alert_id>.xml`` atomically; returns the former.

    The latest file is not replaced by an older seq (a replayed event never
    rolls back what ``/cap/<alert_id>.xml`` serves).
    """
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    data = cap_message(record, history, polygons, **kw)
    path = dir / cap_filename(record.alert_id, record.seq)
    _atomic_write(path, data)
    latest = dir / cap_filename(record.alert_id)
    if not latest.exists() or _seq_of(latest) <= record.seq:
        _atomic_write(latest, data)
    return path


@lru_cache(maxsize=4)
def _schema(xsd_path: str, mtime_ns: int) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(xsd_path))


def validate_cap(xml: bytes, xsd_path: Path) -> list[str]:
    """Schema violations of a CAP document as ``"line N: message"`` strings (empty when valid)."""
    path = Path(xsd_path)
    schema = _schema(str(path), path.stat().st_mtime_ns)
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        doc = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as e:
        return [f"line {e.lineno}: not well-formed: {e.msg}"]
    if schema.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]
