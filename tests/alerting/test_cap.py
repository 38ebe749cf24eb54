"""CAP 1.2 output: every message validates against the OASIS schema, references grow, text is escaped."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from alerting.cap import (
    CAP_NS,
    CapError,
    cap_filename,
    cap_grade,
    cap_identifier,
    cap_message,
    cap_time,
    validate_cap,
    write_cap,
)
from alerting.record import AlertRecord

CAP_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cap"
XSD = CAP_DIR / "CAP-v1.2.xsd"
NS = {"cap": CAP_NS}
CAP_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
SQUARE = "48.80,9.20 48.81,9.20 48.81,9.21 48.80,9.21 48.80,9.20"

QUANTITY = {"flood": "water_level", "air": "no2", "sensor": "stuck"}


@pytest.fixture(scope="module")
def xsd() -> Path:
    if not XSD.is_file():
        pytest.skip(f"CAP schema not found at {XSD} (needs the shared data folder beside the repo)")
    return XSD


def episode(hazard: str, levels: list[int], *, alert_id: str = "ep-1") -> list[AlertRecord]:
    """Records of one episode: firing at levels[0], updates for the rest, then the all-clear."""
    base = AlertRecord(
        alert_id=alert_id,
        seq=1,
        event="firing",
        hazard=hazard,
        quantity=QUANTITY[hazard],
        level=levels[0],
        level_name=f"Stufe {levels[0]}",
        districts=["bad-cannstatt", "muenster"],
        district_names=["Bad Cannstatt", "Münster"],
        sensors=["gauge-17", "gauge-18"],
        value=512.5,
        threshold=500.0,
        rule="neckar-level",
        started_at="2026-03-08T10:00:00.000+00:00",
        time="2026-03-08T10:00:00.000+00:00",
    )
    out = [base]
    for i, level in enumerate([*levels[1:], 0], start=2):
        event = "update" if level else "resolved"
        time = f"2026-03-08T{10 + i:02d}:15:30.250+00:00"
        out.append(
            msgspec.structs.replace(base, seq=i, event=event, level=level, level_name=f"L{level}", time=time)
        )
    return out


def parse(xml: bytes) -> etree._Element:
    return etree.fromstring(xml)


def texts(root: etree._Element, path: str) -> list[str]:
    return root.xpath(path + "/text()", namespaces=NS)


CASES = [
    (hazard, event, exercise)
    for hazard in ("flood", "air", "sensor")
    for event in ("firing", "update", "resolved")
    for exercise in (False, True)
]


@pytest.mark.parametrize(("hazard", "event", "exercise"), CASES)
def test_message_validates_and_maps_event(xsd, hazard, event, exercise):
    records = episode(hazard, [1, 3])  # firing, update, resolved
    record = next(r for r in records if r.event == event)
    xml = cap_message(record, records, {"bad-cannstatt": SQUARE}, exercise=exercise)
    assert validate_cap(xml, xsd) == []
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = parse(xml)
    assert texts(root, "cap:status") == ["Exercise" if exercise else "Actual"]
    assert texts(root, "cap:msgType") == ["Alert" if event == "firing" else "Update"]
    assert texts(root, "cap:identifier") == [cap_identifier("ep-1", record.seq)]
    assert texts(root, "cap:info/cap:language") == ["de-DE", "en-US"]
    urgency = texts(root, "cap:info/cap:urgency")
    responses = texts(root, "cap:info[1]/cap:responseType")
    if event == "resolved":
        assert urgency == ["Past", "Past"]
        assert responses == ["AllClear"]
    else:
        assert "Past" not in urgency
        assert "AllClear" not in responses
    assert texts(root, "cap:info/cap:parameter[cap:valueName='seq']/cap:value") == [str(record.seq)] * 2
    # one polygon: muenster has none and is left out of the geometry, not of the description
    assert len(texts(root, "cap:info/cap:area/cap:polygon")) == 2
    assert texts(root, "cap:info/cap:area/cap:areaDesc") == ["Bad Cannstatt, Münster"] * 2


@pytest.mark.parametrize(
    ("hazard", "level", "event", "expected"),
    [
        ("flood", 1, "firing", ("Expected", "Minor", "Observed")),
        ("flood", 2, "update", ("Expected", "Moderate", "Observed")),
        ("flood", 3, "update", ("Immediate", "Severe", "Observed")),
        ("flood", 4, "update", ("Immediate", "Extreme", "Observed")),
        ("flood", 9, "update", ("Immediate", "Extreme", "Observed")),
        ("air", 1, "firing", ("Expected", "Minor", "Observed")),
        ("air", 3, "update", ("Immediate", "Severe", "Observed")),
        ("sensor", 1, "firing", ("Future", "Minor", "Observed")),
        ("flood", 0, "resolved", ("Past", "Minor", "Observed")),
    ],
)
def test_grade_table(hazard, level, event, expected):
    assert cap_grade(hazard, level, event)[:3] == expected


def test_top_level_gets_the_top_grade():
    rec = episode("flood", [3])[0]
    root = parse(cap_message(rec, [], {}, top_level=3))
    assert texts(root, "cap:info/cap:severity") == ["Extreme", "Extreme"]
    assert texts(root, "cap:info/cap:urgency") == ["Immediate", "Immediate"]
    assert cap_grade("flood", 3, "update")[1] == "Severe"  # without top_level


def test_references_list_all_earlier_messages_and_grow(xsd):
    records = episode("flood", [1, 2, 3, 4, 2])
    seen: list[str] = []
    for i, rec in enumerate(records):
        # history shuffled, another episode mixed in: only this episode's earlier events count
        noise = episode("air", [1], alert_id="other")
        history = list(reversed(records)) + noise
        root = parse(cap_message(rec, history, {}))
        refs = " ".join(texts(root, "cap:references")).split()
        assert len(refs) == i
        assert refs == seen
        for ref, earlier in zip(refs, records, strict=False):
            sender, identifier, sent = ref.split(",")
            assert sender == "stadtwacht@stuttgart.example"
            assert identifier == cap_identifier(earlier.alert_id, earlier.seq)
            assert sent == cap_time(earlier.time)
        seen.append(
            f"stadtwacht@stuttgart.example,{texts(root, 'cap:identifier')[0]},{texts(root, 'cap:sent')[0]}"
        )
        assert validate_cap(etree.tostring(root), xsd) == []


def test_missing_history_is_an_error():
    records = episode("flood", [1, 2])
    with pytest.raises(CapError) as err:
        cap_message(records[2], [records[0]], {})
    assert err.value.alert_id == "ep-1" and err.value.seq == 3 and "[2]" in err.value.reason


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-03-08T11:00:00Z", "2026-03-08T11:00:00-00:00"),
        ("2026-03-08T11:00:00.999+00:00", "2026-03-08T11:00:00-00:00"),
        ("2026-03-08T12:00:00+01:00", "2026-03-08T12:00:00+01:00"),
        ("2026-07-01T05:30:00-05:00", "2026-07-01T05:30:00-05:00"),
        ("2026-07-01T17:15:00+05:45", "2026-07-01T17:15:00+05:45"),
    ],
)
def test_times_carry_numeric_offsets(xsd, given, expected):
    assert cap_time(given) == expected
    rec = msgspec.structs.replace(episode("air", [1])[0], time=given, started_at=given)
    xml = cap_message(rec, [], {})
    root = parse(xml)
    assert texts(root, "cap:sent") == [expected]
    for t in [*texts(root, "cap:sent"), *texts(root, "cap:info/cap:onset")]:
        assert CAP_TIME.match(t)
    assert validate_cap(xml, xsd) == []


@pytest.mark.parametrize("bad", ["2026-03-08T11:00:00", "yesterday"])
def test_time_without_offset_is_rejected(bad):
    rec = msgspec.structs.replace(episode("air", [1])[0], time=bad)
    with pytest.raises(CapError, match="time"):
        cap_message(rec, [], {})


HOSTILE = "<script>alert('x')</script> & \"Zuffenhausen\"\x00\x07\x1b\ufffe, Nord"


def test_hostile_strings_are_escaped_and_validate(xsd):
    rec = msgspec.structs.replace(
        episode("flood", [4])[0],
        alert_id="ep 1,<&>",
        district_names=[HOSTILE],
        districts=["x&y"],
        sensors=["s<1>", "s,2 \x01"],
        level_name="]]> &amp;",
        rule="r\x0c",
    )
    xml = cap_message(rec, [], {"x&y": SQUARE + "\x02"}, approximate_areas=True)
    assert validate_cap(xml, xsd) == []
    assert b"<script>" not in xml
    root = parse(xml)
    clean = "<script>alert('x')</script> & \"Zuffenhausen\", Nord"
    assert texts(root, "cap:info/cap:area/cap:areaDesc") == [f"{clean} (ungefähr)", f"{clean} (approximate)"]
    assert texts(root, "cap:info/cap:area/cap:polygon") == [SQUARE, SQUARE]
    identifier = texts(root, "cap:identifier")[0]
    assert not re.search(r"[\s,<&]", identifier)
    assert texts(root, "cap:info[1]/cap:parameter[cap:valueName='alert_id']/cap:value") == ["ep 1,<&>"]
    assert "s<1>, s,2" in texts(root, "cap:info[1]/cap:description")[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=40), sensor=st.text(max_size=20))
def test_any_text_yields_a_valid_message(xsd, name, sensor):
    rec = msgspec.structs.replace(
        episode("air", [2])[0], district_names=[name], sensors=[sensor], level_name=name
    )
    assert validate_cap(cap_message(rec, [], {}), xsd) == []


@pytest.mark.parametrize("sender", ["a b", "a,b", "a<b", "a&b", ""])
def test_sender_with_restricted_characters_is_rejected(sender):
    with pytest.raises(CapError, match="sender"):
        cap_message(episode("air", [1])[0], [], {}, sender=sender)


def test_multi_part_district_gets_one_polygon_per_part(xsd):
    rec = episode("flood", [2])[0]
    xml = cap_message(rec, [], {"bad-cannstatt": [SQUARE, SQUARE], "muenster": SQUARE})
    assert validate_cap(xml, xsd) == []
    assert len(texts(parse(xml), "cap:info[1]/cap:area/cap:polygon")) == 3


@pytest.mark.parametrize("name", sorted(p.name for p in (CAP_DIR / "examples").glob("*.xml")) or ["none"])
def test_spec_examples_validate(xsd, name):
    assert validate_cap((CAP_DIR / "examples" / name).read_bytes(), xsd) == []


def test_validator_reports_errors(xsd):
    xml = cap_message(episode("air", [1])[0], [], {})
    broken = xml.replace(b"-00:00</sent>", b"Z</sent>").replace(b"<status>Actual", b"<status>Bogus")
    errors = validate_cap(broken, xsd)
    assert len(errors) == 2 and any("sent" in e for e in errors) and any("status" in e for e in errors)
    assert validate_cap(b"<alert", xsd)[0].startswith("line 1: not well-formed")


def test_write_cap_keeps_latest_and_per_event_files(tmp_path, xsd):
    records = episode("flood", [1, 3])
    for rec in records:
        path = write_cap(tmp_path, rec, records, {}, exercise=True)
        assert path.name == f"ep-1-{rec.seq}.xml"
        assert validate_cap(path.read_bytes(), xsd) == []
    latest = tmp_path / cap_filename("ep-1")
    assert latest.read_bytes() == (tmp_path / "ep-1-3.xml").read_bytes()
    write_cap(tmp_path, records[1], records, {})  # a replayed older event does not roll "latest" back
    assert latest.read_bytes() == (tmp_path / "ep-1-3.xml").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ep-1-1.xml",
        "ep-1-2.xml",
        "ep-1-3.xml",
        "ep-1.xml",
    ]


def test_file_names_are_safe():
    assert cap_filename("../../etc/passwd") == "..%2F..%2Fetc%2Fpasswd.xml"
    assert "/" not in cap_filename("a/b", 3)


def test_a_silent_sensor_says_how_long_it_has_been_silent(xsd):
    records = episode("sensor", [1])
    stale = [msgspec.structs.replace(r, quantity="stale", value=4651.7, threshold=4500.0) for r in records]
    xml = cap_message(stale[0], stale, {"bad-cannstatt": SQUARE})
    assert validate_cap(xml, xsd) == []
    root = parse(xml)
    de, en = texts(root, "cap:info/cap:description")
    assert de.startswith("keine Messwerte: 1 h 17 min (Schwellwert 1 h 15 min), Stufe 1")
    assert en.startswith("no readings: 1 h 17 min (threshold 1 h 15 min), level 1")
