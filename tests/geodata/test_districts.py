from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geodata.demo import DEMO_DISTRICTS, TOTAL_AREA_KM2
from geodata.districts import CAP_MAX_POINTS, DistrictLayer
from geodata.errors import LayerError
from geodata.mapping import DistrictMapper
from tests.geodata.conftest import DISTRICTS, require_shared


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:25832"])
@pytest.mark.parametrize(("driver", "suffix"), [("GeoJSON", ".geojson"), ("GPKG", ".gpkg"),
                                                ("ESRI Shapefile", ".shp")])
def test_layer_loads_in_any_crs_and_format(tmp_path: Path, crs, driver, suffix, real_layer):
    # Shapefile field names stop at 10 characters: the number column is configurable for that
    src = gpd.read_file(require_shared(DISTRICTS)).to_crs(crs).rename(columns={"districtNumber": "nr"})
    path = tmp_path / f"districts{suffix}"
    src.to_file(path, driver=driver)
    layer = DistrictLayer.from_file(path, "id", "name", number_column="nr")
    assert layer.ids == real_layer.ids
    assert layer.names == real_layer.names
    assert layer.numbers[0] == "01"
    assert not layer.approximate
    assert abs(layer.areas_m2().sum() / 1e6 - 207.2) < 0.1
    # WGS84 geometry is the same wherever it came from (up to reprojection round-off)
    sym = shapely.area(shapely.symmetric_difference(layer.metric_geometry, real_layer.metric_geometry))
    assert sym.max() < 1.0  # m²


def test_missing_columns_and_duplicate_ids_are_reported(tmp_path: Path):
    gdf = gpd.GeoDataFrame({"id": ["a", "a", ""], "name": ["A", "B", "C"]},
                           geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1), shapely.box(2, 0, 3, 1)],
                           crs="EPSG:4326")
    path = tmp_path / "bad.geojson"
    gdf.to_file(path)
    with pytest.raises(LayerError, match="no column 'slug'"):
        DistrictLayer.from_file(path, id_column="slug")
    with pytest.raises(LayerError) as err:
        DistrictLayer.from_file(path)
    assert any("duplicate id 'a'" in p for p in err.value.problems)
    assert any("empty id" in p for p in err.value.problems)


def test_check_reports_overlap_gap_and_repair(tmp_path: Path):
    bowtie = shapely.Polygon([(9.10, 48.70), (9.12, 48.72), (9.12, 48.70), (9.10, 48.72)])
    # "c" has a hole nobody fills: a gap; "b" overlaps "a" by 0.002° x 0.02° (~3 km²)
    a = shapely.box(9.0, 48.7, 9.05, 48.75)
    b = shapely.box(9.048, 48.7, 9.08, 48.75)
    c = shapely.box(9.0, 48.75, 9.08, 48.80).difference(shapely.box(9.03, 48.76, 9.05, 48.78))
    gdf = gpd.GeoDataFrame({"id": ["a", "b", "c", "d"], "name": list("ABCD")},
                           geometry=[a, b, c, bowtie], crs="EPSG:4326")
    path = tmp_path / "faulty.gpkg"
    gdf.to_file(path, driver="GPKG")
    layer = DistrictLayer.from_file(path)
    problems = layer.check(overlap_tolerance_m2=100, gap_tolerance_m2=100)
    assert any(p.startswith("d: invalid geometry repaired") for p in problems)
    assert any("a and b overlap" in p for p in problems)
    assert any(p.startswith("gap of") for p in problems)
    assert layer.geometry[3].is_valid
    assert not layer.check(overlap_tolerance_m2=1e9, gap_tolerance_m2=1e9)[1:]  # only the repair remains


def test_real_layer_has_no_overlaps_or_gaps(real_layer):
    assert real_layer.check() == []


def test_demo_layer_covers_each_point_in_its_own_district(demo_layer):
    lat = np.array([d[3] for d in DEMO_DISTRICTS])
    lon = np.array([d[4] for d in DEMO_DISTRICTS])
    assert DistrictMapper(demo_layer).map_points(lon, lat).tolist() == list(range(23))
    assert demo_layer.approximate
    assert abs(demo_layer.areas_m2().sum() / 1e6 - TOTAL_AREA_KM2) < 0.1 * TOTAL_AREA_KM2
    assert demo_layer.check() == []
    assert demo_layer.ids[5] == "bad-cannstatt" and demo_layer.names[5] == "Bad Cannstatt"


def test_representative_points_lie_in_their_real_districts(real_layer, real_mapper):
    lat = np.array([d[3] for d in DEMO_DISTRICTS])
    lon = np.array([d[4] for d in DEMO_DISTRICTS])
    got = [real_layer.ids[i] for i in real_mapper.map_points(lon, lat)]
    assert got == [d[0] for d in DEMO_DISTRICTS]


def _check_cap(layer: DistrictLayer, district: str) -> None:
    text = layer.cap_polygon(district)
    pairs = [tuple(map(float, p.split(","))) for p in text.split(" ")]
    assert 4 <= len(pairs) <= CAP_MAX_POINTS
    assert pairs[0] == pairs[-1]
    lat, lon = np.array(pairs).T
    assert (lat > 48.6).all() and (lat < 48.9).all() and (lon > 9.0).all() and (lon < 9.4).all()
    poly = shapely.Polygon(list(zip(lon, lat, strict=True)))
    assert poly.is_valid and poly.exterior.is_simple
    # a fair likeness of the district: most of the polygon lies inside it
    original = layer.geometry[layer.index_of(district)]
    assert poly.intersection(original).area > 0.9 * original.area


def test_cap_polygons_of_real_districts(real_layer):
    for d in real_layer.ids:
        _check_cap(real_layer, d)


def test_cap_polygons_of_demo_districts(demo_layer):
    for d in demo_layer.ids:
        _check_cap(demo_layer, d)


def test_geojson_carries_levels_and_approximate_flag(demo_layer):
    fc = demo_layer.geojson({"mitte": {"air/pm10": 2}})
    assert fc["type"] == "FeatureCollection" and fc["properties"]["approximate"] is True
    assert len(fc["features"]) == 23
    mitte = fc["features"][0]
    assert mitte["properties"]["id"] == "mitte" and mitte["properties"]["air/pm10"] == 2
    assert "air/pm10" not in fc["features"][1]["properties"]
    geom = shapely.from_geojson(__import__("json").dumps(mitte["geometry"]))
    assert geom.is_valid and 9.1 < geom.centroid.x < 9.3  # lon first, WGS84
