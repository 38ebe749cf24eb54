"""Episode state machine: level sequences become firing/update/resolved events with seq 1, 2, ..."""

from __future__ import annotations

import pytest

from alerting.episodes import alert_id_for, step
from tests.alerting.alerting_helpers import T0, S, level

CASES = [
    # (levels applied in order, expected (event, seq, level) per emitted record)
    ([0], []),
    ([1], [("firing", 1, 1)]),
    ([1, 1, 1], [("firing", 1, 1)]),
    ([1, 2, 3, 2, 0], [("firing", 1, 1), ("update", 2, 2), ("update", 3, 3), ("update", 4, 2),
                       ("resolved", 5, 0)]),
    ([2, 0, 0, 1], [("firing", 1, 2), ("resolved", 2, 0), ("firing", 1, 1)]),
    ([3, 3, 0], [("firing", 1, 3), ("resolved", 2, 0)]),
]


@pytest.mark.parametrize(("levels", "expected"), CASES)
def test_sequences(levels, expected):
    ep, got, ids = None, [], []
    for i, lv in enumerate(levels):
        ep, rec = step(ep, level("mitte", lv, t=T0 + i * S))
        if rec is not None:
            got.append((rec.event, rec.seq, rec.level))
            ids.append(rec.alert_id)
        if rec is not None and rec.event == "resolved":
            ep = None  # the service drops a resolved episode from the active set
    assert got == expected
    # one id per episode: ids only change after a resolved event
    episodes = [[]]
    for (event, _, _), i in zip(got, ids, strict=True):
        episodes[-1].append(i)
        if event == "resolved":
            episodes.append([])
    assert all(len(set(e)) <= 1 for e in episodes)


def test_alert_id_is_stable_and_distinct():
    a = alert_id_for(("mitte", "flood", "water_level"), T0)
    assert a == alert_id_for(("mitte", "flood", "water_level"), T0)
    assert a != alert_id_for(("mitte", "flood", "water_level"), T0 + 1)
    assert a != alert_id_for(("west", "flood", "water_level"), T0)
    assert a.startswith("flood-")


def test_record_fields_and_rfc3339():
    ep, rec = step(None, level("mitte", 2, t=T0, value=212.5))
    assert rec.started_at == "2025-06-15T15:06:40.000+00:00"
    assert rec.districts == ["mitte"] and rec.district_names == ["Mitte"]
    assert rec.value == 212.5 and rec.threshold == 200.0 and rec.sensors == ["pegel-1"]
    ep, rec2 = step(ep, level("mitte", 0, t=T0 + 60 * S))
    assert rec2.event == "resolved" and rec2.started_at == rec.started_at
    assert rec2.time == "2025-06-15T15:07:40.000+00:00"
    assert rec2.sensors == ["pegel-1"]  # keeps who triggered it when the roll-up sends none
