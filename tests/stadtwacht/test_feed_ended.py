"""The CAP Atom feed keeps an ended alert's last message for a day: CAP messages carry no expiry, so a reader
that polls the feed would otherwise never learn that an alert it saw is over (all-clear or measurement lost)."""

from __future__ import annotations

from lxml import etree
from prometheus_client import CollectorRegistry

from alerting.atom import ATOM_NS, atom_feed
from alerting.cap import cap_identifier
from ingest.decode import RawMessage
from stadtwacht.config import load_config
from stadtwacht.pipeline import Pipeline
from tests.reliability.harness import HIGH, LOW, reading, write_flood_setup

T0 = 1_750_000_000 * 10**9
H = 3600 * 10**9


def _entries(records) -> list[tuple[str, str]]:
    feed = etree.fromstring(atom_feed(records, base_url="http://127.0.0.1:1"))
    a = f"{{{ATOM_NS}}}"
    return [(e.findtext(a + "id"), e.findtext(a + "summary")) for e in feed.iter(a + "entry")]


def test_an_ended_alert_stays_in_the_feed_for_a_day_with_its_all_clear(tmp_path):
    setup = write_flood_setup(tmp_path, "t", 2)
    cfg, problems = load_config(setup.config)
    assert not problems
    now = [T0]
    pipeline = Pipeline(cfg, CollectorRegistry(), tmp_path / "state", sensors_path=str(setup.registry),
                        clock_ns=lambda: now[0])
    a, b = setup.gauges

    def read(offset: int, hours: float, value_a: float) -> list:
        """Both gauges every 10 min up to ``hours`` (b stays high): the records of the last step."""
        records = []
        while now[0] < T0 + int(hours * H):
            now[0] += H // 6
            wobble = (offset % 7) * 1.3  # a live gauge, not a stuck one
            msgs = [RawMessage("t.flood", 0, offset + i, g.encode(), reading(g, now[0], v + wobble))
                    for i, (g, v) in enumerate(((a, value_a), (b, HIGH)))]
            offset += 2
            records += pipeline.process_messages(msgs).records
        return records

    now[0] -= H // 6
    fired, other = read(0, 0, HIGH)
    (ended,) = read(10, 1, LOW)
    assert (ended.alert_id, ended.event) == (fired.alert_id, "resolved")
    entries = _entries(pipeline.feed_records())
    assert sorted(i for i, _ in entries) == sorted([cap_identifier(fired.alert_id, 2),
                                                    cap_identifier(other.alert_id, 1)])
    assert any(s.endswith("event 2: resolved)") for _, s in entries)
    read(100, 25.5, LOW)  # a day after the all-clear (event time): only the active alert is left
    assert [i for i, _ in _entries(pipeline.feed_records())] == [cap_identifier(other.alert_id, 1)]
    pipeline.alerts.close()
