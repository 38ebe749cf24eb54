from pathlib import Path

import msgspec
import pytest

from geodata.config import GeodataConfig, QuorumConfig, validate


def test_defaults_are_valid():
    assert validate(GeodataConfig()) == []


@pytest.mark.parametrize(("cfg", "key"), [
    (GeodataConfig(districts="nope.geojson"), "geodata.districts"),
    (GeodataConfig(sensors="missing.csv"), "geodata.sensors"),
    (GeodataConfig(metric_crs="EPSG:4326"), "geodata.metric_crs"),
    (GeodataConfig(metric_crs="EPSG:999999"), "geodata.metric_crs"),
    (GeodataConfig(overlap_tolerance_m2=-1), "geodata.overlap_tolerance_m2"),
    (GeodataConfig(gap_tolerance_m2=-1), "geodata.gap_tolerance_m2"),
    (GeodataConfig(quorum=QuorumConfig(min_sensors=0)), "geodata.quorum.min_sensors"),
    (GeodataConfig(quorum=QuorumConfig(min_fraction=0.0)), "geodata.quorum.min_fraction"),
    (GeodataConfig(quorum=QuorumConfig(min_fraction=1.5)), "geodata.quorum.min_fraction"),
])
def test_problems_name_the_key(cfg, key, tmp_path: Path):
    assert key in [k for k, _ in validate(cfg, tmp_path)]


def test_relative_paths_resolve_against_base_dir(tmp_path: Path):
    (tmp_path / "reg.csv").write_text("x")
    assert validate(GeodataConfig(sensors="reg.csv"), tmp_path) == []


def test_unknown_keys_are_rejected():
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"districts": "", "quorum": {"min_sensor": 2}}, GeodataConfig)
    cfg = msgspec.convert({"quorum": {"min_sensors": 2}}, GeodataConfig)
    assert cfg.quorum.min_sensors == 2
