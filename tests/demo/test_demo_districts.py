"""Which district layer ``stadtwacht demo`` maps onto."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from stadtwacht.config import Config
from stadtwacht.demo import run
from stadtwacht.demo.scenarios import OFFICIAL_DISTRICTS_RELATIVE


def test_given_layer_then_configured_layer_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "shared_dir", lambda: tmp_path)
    cfg = Config()
    assert run.demo_districts(cfg, "given.geojson") == ("given.geojson", "given.geojson")
    configured = msgspec.structs.replace(cfg, geodata=msgspec.structs.replace(cfg.geodata, districts="cfg.gpkg"))
    assert run.demo_districts(configured, None) == ("cfg.gpkg", "cfg.gpkg")


def test_official_layer_from_shared_else_the_built_in_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "shared_dir", lambda: None)
    path, named = run.demo_districts(Config(), None)
    assert path is None and "built-in APPROXIMATE" in named
    monkeypatch.setattr(run, "shared_dir", lambda: tmp_path)
    assert run.demo_districts(Config(), None)[0] is None  # a shared folder without the layer
    layer = tmp_path / OFFICIAL_DISTRICTS_RELATIVE
    layer.parent.mkdir(parents=True)
    layer.write_text("{}")
    path, named = run.demo_districts(Config(), None)
    assert path == str(layer) and "Landeshauptstadt Stuttgart, dl-de/by-2.0" in named


def test_the_official_layer_loads_with_the_demo_ids(shared_data: Path) -> None:
    from geodata.districts import DistrictLayer

    official = DistrictLayer.from_file(shared_data / "stuttgart" / "districts.geojson",
                                       number_column="districtNumber")
    demo = DistrictLayer.demo()
    assert (official.ids, official.names, official.numbers) == (demo.ids, demo.names, demo.numbers)
    assert not official.approximate
