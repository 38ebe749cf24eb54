from pathlib import Path

import pytest

from geodata.errors import RegistryError
from geodata.registry import SensorRegistry
from ingest.sensor_index import SensorIndex

HEADER = "sensor_id,name,hazard,lat,lon,impact,trusted,overrides\n"


def test_shipped_registry():
    reg = SensorRegistry.shipped()
    assert [s.sensor_id for s in reg.sensors if s.hazard == "air"] == [
        "lubw-224", "lubw-300", "lubw-317", "lubw-319", "lubw-10470"]
    gauge = reg.get("pegel-plochingen")
    assert gauge.trusted and gauge.impact_ids[:2] == ("obertuerkheim", "hedelfingen") and len(gauge.impact_ids) == 8
    assert reg.get("pegel-stuttgart").impact_ids[0] == "bad-cannstatt"
    station = reg.get("lubw-319")
    assert station.impact_ids == () and (station.lat, station.lon) == (48.7881, 9.191)


def test_register_puts_positions_into_the_index():
    sensors = SensorIndex()
    idx = SensorRegistry.shipped().register(sensors)
    assert len(idx) == 7 and sensors.registered[idx].all()
    assert sensors.lat[sensors.get("pegel-stuttgart")] == 48.8047


@pytest.mark.parametrize(("rows", "line", "message"), [
    ("a,A,air,48.7,9.1,,,\na,B,air,48.7,9.1,,,\n", 3, "duplicate sensor_id 'a' (first on line 2)"),
    ("a,A,fire,48.7,9.1,,,\n", 2, "hazard 'fire'"),
    ("a,A,air,north,9.1,,,\n", 2, "lat 'north' is not a number"),
    ("a,A,air,48.7,200,,,\n", 2, "lon '200' is not a number in [-180, 180]"),
    ("# comment\n\na,A,air,48.7,9.1,,maybe,\n", 4, "trusted 'maybe'"),
    ("a,A,air,48.7,9.1,,,threshold=3\n", 2, "override 'threshold=3'"),
    ("a,A,air,48.7,9.1\n", 2, "5 fields, the header has 8"),
    (",A,air,48.7,9.1,,,\n", 2, "empty sensor_id"),
    ("a,A,flood,48.7,9.1,areas/missing.geojson,,\n", 2, "impact polygon file not found"),
])
def test_errors_carry_line_numbers(tmp_path: Path, rows, line, message):
    path = tmp_path / "reg.csv"
    path.write_text(HEADER + rows)
    with pytest.raises(RegistryError) as err:
        SensorRegistry.from_csv(path)
    assert any(ln == line and message in msg for ln, msg in err.value.problems), err.value.problems
    assert f"reg.csv:{line}:" in str(err.value)


def test_all_errors_are_collected_and_header_checked(tmp_path: Path):
    path = tmp_path / "reg.csv"
    path.write_text(HEADER + "a,A,fire,48.7,9.1,,,\nb,B,air,x,9.1,,,\n")
    with pytest.raises(RegistryError) as err:
        SensorRegistry.from_csv(path)
    assert [ln for ln, _ in err.value.problems] == [2, 3]
    path.write_text("sensor_id,name,lat,lon,colour\n")
    with pytest.raises(RegistryError, match=r"missing column.*hazard, impact"):
        SensorRegistry.from_csv(path)


def test_overrides_trusted_and_unknown_districts(tmp_path: Path):
    path = tmp_path / "reg.csv"
    path.write_text(HEADER + "g,Gauge,flood,48.7,9.1,mitte;atlantis,yes,flood-stage.alarm=480;x.y=1\n")
    reg = SensorRegistry.from_csv(path)
    g = reg.get("g")
    assert g.trusted and g.overrides == {"flood-stage.alarm": "480", "x.y": "1"}
    assert reg.check_districts(("mitte", "nord")) == [(2, "g: unknown district id(s) in impact: atlantis")]
