"""Every instance's alert records read back from the alerts topic: the log, and one timeline out of two."""

from __future__ import annotations

from alerting.record import AlertRecord, encode_record
from stadtwacht.alert_log import AlertLog, merge_history

S = 1_000_000_000


def _rec(alert_id: str, seq: int, minute: int, event: str = "update") -> AlertRecord:
    return AlertRecord(alert_id=alert_id, seq=seq, event=event, hazard="flood", quantity="water_level", level=1,
                       level_name="Stufe 1", districts=["ost"], district_names=["Ost"], sensors=["pegel-1"],
                       value=420.0, threshold=400.0, rule="pegel", started_at="2026-11-28T10:00:00.000+00:00",
                       time=f"2026-11-28T10:{minute:02d}:00.000+00:00")


def test_each_record_is_taken_once_and_kept_by_episode():
    log = AlertLog()
    a1, a2, b1 = _rec("a", 1, 0, "firing"), _rec("a", 2, 5), _rec("b", 1, 3, "firing")
    assert log.take(encode_record(a1)) == a1
    assert log.take(encode_record(b1)) == b1
    assert log.take(encode_record(a2)) == a2
    assert log.take(encode_record(a1)) is None  # published again (a replayed batch): not a new event
    assert log.take(None) is None and log.take(b"{not json") is None and log.take(b'{"alert_id": "x"}') is None
    assert log.episode_records("a") == [a1, a2] and log.episode_records("nope") == []
    assert log.recent(10) == [a2, b1, a1] and log.recent(1) == [a2]


def test_it_forgets_the_least_recently_changed_episodes_and_the_oldest_records():
    log = AlertLog(max_recent=3, max_episodes=2)
    for r in (_rec("a", 1, 0, "firing"), _rec("b", 1, 1, "firing"), _rec("a", 2, 2), _rec("c", 1, 3, "firing")):
        log.take(encode_record(r))
    assert log.episode_records("b") == []  # changed least recently
    assert [r.seq for r in log.episode_records("a")] == [1, 2] and len(log.episode_records("c")) == 1
    assert [(r.alert_id, r.seq) for r in log.recent(10)] == [("c", 1), ("a", 2), ("b", 1)]


def test_two_timelines_merge_newest_first_with_each_event_once():
    here = [_rec("a", 2, 9), _rec("a", 1, 1, "firing")]
    there = [_rec("b", 1, 5, "firing"), _rec("a", 2, 9), _rec("b", 2, 5)]
    merged = merge_history(here, there, 10)
    assert [(r.alert_id, r.seq) for r in merged] == [("a", 2), ("b", 2), ("b", 1), ("a", 1)]
    assert merge_history(here, there, 2) == merged[:2]
