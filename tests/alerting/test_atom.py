"""Atom feed of active alerts: well-formed Atom 1.0, one entry per episode linking its CAP message."""

from __future__ import annotations

import re
from datetime import datetime

from lxml import etree

from alerting.atom import ATOM_NS, CAP_MEDIA_TYPE, atom_feed
from alerting.cap import cap_identifier
from alerting.record import AlertRecord

NS = {"a": ATOM_NS}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")


def record(alert_id: str, seq: int, time: str, **kw) -> AlertRecord:
    fields = dict(
        alert_id=alert_id,
        seq=seq,
        event="firing" if seq == 1 else "update",
        hazard="air",
        quantity="no2",
        level=seq,
        level_name=f"Stufe {seq}",
        districts=["mitte"],
        district_names=["Mitte"],
        sensors=["s1"],
        value=410.0,
        threshold=400.0,
        rule="no2-3h",
        started_at="2026-03-08T09:00:00+01:00",
        time=time,
    )
    fields.update(kw)
    return AlertRecord(**fields)


ACTIVE = [
    record("air-a", 1, "2026-03-08T10:00:00+01:00"),
    record("air-a", 2, "2026-03-08T11:30:00.5+01:00"),
    record("flood-b", 1, "2026-03-08T10:45:00Z", hazard="flood", quantity="water_level"),
]


def feed(active=ACTIVE, **kw) -> etree._Element:
    return etree.fromstring(atom_feed(active, base_url="https://stadtwacht.example/", **kw))


def test_one_entry_per_episode_with_latest_event():
    root = feed()
    assert root.tag == f"{{{ATOM_NS}}}feed"
    ids = root.xpath("a:entry/a:id/text()", namespaces=NS)
    # newest first: 10:45Z is later than 11:30.5+01:00 (10:30:00.5Z)
    assert ids == [cap_identifier("flood-b", 1), cap_identifier("air-a", 2)]
    hrefs = root.xpath("a:entry/a:link[@rel='alternate']/@href", namespaces=NS)
    assert hrefs == ["https://stadtwacht.example/cap/flood-b.xml", "https://stadtwacht.example/cap/air-a.xml"]
    assert set(root.xpath("a:entry/a:link/@type", namespaces=NS)) == {CAP_MEDIA_TYPE}


def test_required_atom_elements_present():
    root = feed()
    for path in ("a:id", "a:title", "a:updated", "a:author/a:name", "a:link[@rel='self']"):
        assert len(root.xpath(path, namespaces=NS)) == 1, path
    for entry in root.xpath("a:entry", namespaces=NS):
        for path in ("a:id", "a:title", "a:updated", "a:summary", "a:link"):
            assert entry.xpath(f"{path}/text()|{path}/@href", namespaces=NS), path
    times = root.xpath("//a:updated/text()|//a:published/text()", namespaces=NS)
    assert times and all(RFC3339.match(t) for t in times)
    # feed updated = newest entry (11:30+01:00 = 10:30Z is older than 10:45Z)
    assert root.xpath("a:updated/text()", namespaces=NS) == ["2026-03-08T10:45:00Z"]


def test_explicit_updated_and_empty_feed():
    root = feed([], updated="2026-03-08T12:00:00+01:00")
    assert root.xpath("a:entry", namespaces=NS) == []
    assert root.xpath("a:updated/text()", namespaces=NS) == ["2026-03-08T11:00:00Z"]
    empty = feed([])
    assert datetime.fromisoformat(empty.xpath("a:updated/text()", namespaces=NS)[0]).tzinfo is not None


def test_hostile_text_is_escaped():
    nasty = record("x", 1, "2026-03-08T10:00:00Z", district_names=["<b>&amp;\x00\"'</b>"])
    raw = atom_feed([nasty], base_url="https://h.example")
    assert b"<b>" not in raw
    title = etree.fromstring(raw).xpath("a:entry/a:title/text()", namespaces=NS)[0]
    assert "<b>&amp;\"'</b>" in title


def test_many_episodes_each_once():
    active = [record(f"ep-{i}", s, f"2026-03-08T10:{i:02d}:{s:02d}Z") for i in range(20) for s in (1, 2, 3)]
    root = feed(list(reversed(active)))
    ids = root.xpath("a:entry/a:id/text()", namespaces=NS)
    assert len(ids) == 20 == len(set(ids))
    assert all(i.endswith(":3") for i in ids)
