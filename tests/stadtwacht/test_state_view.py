"""The page's state document says which districts another instance decides (scale-out), never "normal" for them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from stadtwacht.config import load_config
from stadtwacht.pipeline import Pipeline
from stadtwacht.state_view import build_state


def test_districts_decided_elsewhere_are_marked_not_watched(tmp_path):
    cfg, problems = load_config(None)
    assert not problems
    pipeline = Pipeline(cfg, CollectorRegistry(), tmp_path)
    try:
        whole = build_state(pipeline)
        assert whole["elsewhere"] == []
        assert all(f["properties"]["watched"] for f in whole["districts"]["features"])

        pipeline.watched_districts = {"mitte", "nord"}  # what a district stage owning some partitions sets
        part = build_state(pipeline)
        ids = pipeline.layer.ids
        assert part["elsewhere"] == [d for d in ids if d not in ("mitte", "nord")]
        watched = {f["properties"]["id"]: f["properties"]["watched"] for f in part["districts"]["features"]}
        assert watched == {d: d in ("mitte", "nord") for d in ids}
    finally:
        pipeline.alerts.close()


def test_configured_district_layer_and_number_column_reach_the_page(tmp_path, shared_data):
    import msgspec

    cfg, _ = load_config(None)
    geo = msgspec.structs.replace(cfg.geodata, districts=str(shared_data / "stuttgart" / "districts.geojson"),
                                  number_column="districtNumber")
    pipeline = Pipeline(msgspec.structs.replace(cfg, geodata=geo), CollectorRegistry(), tmp_path)
    try:
        state = build_state(pipeline)
        assert state["approximate"] is False
        props = {f["properties"]["id"]: f["properties"] for f in state["districts"]["features"]}
        assert (props["mitte"]["number"], props["zuffenhausen"]["number"]) == ("01", "23")
    finally:
        pipeline.alerts.close()
