"""A partial view (only some readings partitions owned, roll-up in memory) lowers or ends an alert only where it
reads every sensor that can hold the alert up (docs/reliability.md finding 10)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ingest.decode import RawMessage
from stadtwacht.config import load_config
from stadtwacht.pipeline import Pipeline
from tests.reliability.harness import HIGH, LOW, reading, write_flood_setup

T0 = 1_750_000_000 * 10**9
#: sensor -> (district, partition its readings come from; None: registered, never read)
GAUGES = {"pegel-a": ("mitte", 0), "pegel-b": ("mitte", 1), "pegel-c": ("nord", 1), "pegel-d": ("ost", 1),
          "pegel-e": ("ost", None)}


def _messages(value: float, t_ns: int, partitions: set[int], start: int) -> list[RawMessage]:
    return [RawMessage("t.flood", p, start + i, s.encode(), reading(s, t_ns, value))
            for i, (s, (_, p)) in enumerate(GAUGES.items()) if p in partitions]


def test_partial_view_ends_only_districts_it_reads_whole(tmp_path):
    setup = write_flood_setup(tmp_path, "t", 0)
    setup.registry.write_text("sensor_id,name,hazard,lat,lon,impact,trusted,overrides,comment\n" + "".join(
        f"{s},Pegel {s},flood,48.78,9.18,{d},true,,\n" for s, (d, _) in GAUGES.items()), encoding="utf-8")
    cfg, problems = load_config(setup.config)
    assert not problems
    pipeline = Pipeline(cfg, CollectorRegistry(), tmp_path / "state", sensors_path=str(setup.registry))
    fired = pipeline.process_messages(_messages(HIGH, T0, {0, 1}, 0)).records
    assert sorted(r.districts[0] for r in fired) == ["mitte", "nord", "ost"]

    # a restart that got partition 1 only: partition 0's sensor (pegel-a) is not seen
    pipeline.drop_partitions([("t.flood", 0)])
    pipeline.set_view([("t.flood", 1)])
    assert pipeline.partial_view
    ended = pipeline.process_messages(_messages(LOW, T0 + 10**9, {1}, 10)).records
    # nord: its one sensor is read here; mitte: pegel-a is on partition 0; ost: pegel-e was never read
    assert [(r.districts[0], r.event) for r in ended] == [("nord", "resolved")]
    assert pipeline.reconcile() == []
    assert sorted(a["district"] for a in pipeline.alerts.active()) == ["mitte", "ost"]

    pipeline.set_view(None)  # every partition owned again: the reconcile judges what was held back
    assert sorted((r.districts[0], r.event) for r in pipeline.reconcile()) == [("mitte", "resolved"),
                                                                            ("ost", "resolved")]
    pipeline.alerts.close()
