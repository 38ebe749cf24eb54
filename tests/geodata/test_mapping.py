import csv
import gzip
import json
import logging

import numpy as np
import pytest
import shapely

from geodata.mapping import DistrictMapper, SensorDistricts
from geodata.registry import SensorRegistry
from ingest.sensor_index import SensorIndex
from tests.geodata.conftest import SHARED, require_shared, sjoin_index


def _random(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(9.0, 9.36, n), rng.uniform(48.66, 48.90, n)


def test_random_points_equal_sjoin(real_layer, real_mapper):
    lon, lat = _random(100_000, 1)
    got = real_mapper.map_points(lon, lat)
    assert got.dtype == np.int32
    assert (got >= 0).sum() > 20_000  # the test sees many districts, not only -1
    np.testing.assert_array_equal(got, sjoin_index(real_layer, lon, lat))


def test_demo_layer_equals_sjoin(demo_layer):
    lon, lat = _random(50_000, 2)
    np.testing.assert_array_equal(DistrictMapper(demo_layer, levels=9).map_points(lon, lat),
                                  sjoin_index(demo_layer, lon, lat))


def test_boundary_points_belong_to_no_district(real_layer, real_mapper):
    xy = shapely.get_coordinates(real_layer.geometry)  # every vertex lies on a boundary
    mid = (xy[:-1] + xy[1:]) / 2  # most edge midpoints are off the edge by round-off: either side
    lon = np.concatenate([xy[:, 0], mid[:, 0]])
    lat = np.concatenate([xy[:, 1], mid[:, 1]])
    got = real_mapper.map_points(lon, lat)
    assert (got[: len(xy)] == -1).all()
    np.testing.assert_array_equal(got, sjoin_index(real_layer, lon, lat))


@pytest.mark.parametrize(("lon", "lat"), [(np.nan, 48.78), (9.18, np.nan), (np.inf, 48.78),
                                          (-np.inf, -np.inf), (1e300, 1e300), (0.0, 0.0)])
def test_non_finite_and_far_points_are_outside(real_mapper, lon, lat):
    assert real_mapper.map_points(np.array([lon]), np.array([lat])).tolist() == [-1]


def test_snapshot_and_archive_sensors_equal_sjoin(real_layer, real_mapper):
    snap = json.loads(require_shared(SHARED / "sensor-community" / "snapshot-2026-03-08-sensors.json")
                      .read_text())
    lon = [s["longitude"] for s in snap]
    lat = [s["latitude"] for s in snap]
    archive = require_shared(SHARED / "sensor-community" / "stuttgart-sds011-2020-10-01_2020-11-21.csv.gz")
    seen = {}
    with gzip.open(archive, "rt") as f:
        for row in csv.DictReader(f, delimiter=";"):
            seen.setdefault(row["sensor_id"], (float(row["lon"]), float(row["lat"])))
            if len(seen) == 12:
                break
    assert len(seen) == 12
    lon += [p[0] for p in seen.values()]
    lat += [p[1] for p in seen.values()]
    lon, lat = np.array(lon), np.array(lat)
    got = real_mapper.map_points(lon, lat)
    np.testing.assert_array_equal(got, sjoin_index(real_layer, lon, lat))
    assert (got[-12:] >= 0).all()  # the archive's sensors are all in inner Stuttgart
    assert 90 <= (got[: len(snap)] >= 0).sum() <= 130  # about 107 of 489 inside the city


def test_sensor_districts_cache_moves_and_outside(demo_layer, caplog):
    sensors = SensorIndex(capacity=2)
    a = sensors.add("citizen-a", 48.7796, 9.1800)  # Mitte
    b = sensors.add("far-away", 48.0, 9.0)
    c = sensors.add("no-position")
    with caplog.at_level(logging.WARNING):
        sd = SensorDistricts(demo_layer, SensorRegistry.shipped(), sensors)
    mitte, cannstatt = demo_layer.index_of("mitte"), demo_layer.index_of("bad-cannstatt")
    assert sd.districts_of(np.array([a])).tolist() == [mitte]
    assert sd.districts_of(np.array([b, c])).tolist() == []
    assert sd.outside_ids() == ["far-away"]
    assert "far-away" in caplog.text and not sensors.moved[: len(sensors)].any()
    # the Plochingen gauge stands outside the city but speaks for the riverside districts
    gauge = sensors.get("pegel-plochingen")
    assert len(sd.districts_of(np.array([gauge]))) == 8 and sd.trusted[gauge]
    assert gauge in sd.sensors_of(cannstatt).tolist()
    # a moved sensor is re-mapped once; an unmoved one is not touched
    version = sd.version
    sd.update()
    assert sd.version == version
    caplog.clear()
    sensors.set_positions(np.array([a, b]), np.array([48.8067, 48.1]), np.array([9.2217, 9.0]))
    sd.update()
    assert sd.districts_of(np.array([a])).tolist() == [cannstatt]
    assert a in sd.sensors_of(cannstatt).tolist() and a not in sd.sensors_of(mitte).tolist()
    assert sd.outside_ids() == ["far-away"] and "far-away" not in caplog.text  # reported once only
    # new sensors are mapped on the next update, vectorised over all of them
    lon, lat = _random(1000, 3)
    idx = sensors.lookup([f"n{i}" for i in range(1000)])
    sensors.set_positions(idx, lat, lon)
    sd.update()
    np.testing.assert_array_equal(sd.district[idx], DistrictMapper(demo_layer).map_points(lon, lat))


def test_impact_polygon_file(tmp_path, demo_layer):
    import geopandas as gpd

    area = shapely.box(9.17, 48.77, 9.19, 48.79)  # around the Mitte point, touching neighbours
    gpd.GeoDataFrame(geometry=[area], crs="EPSG:4326").to_file(tmp_path / "area.geojson")
    (tmp_path / "reg.csv").write_text("sensor_id,name,hazard,lat,lon,impact\n"
                                      "g1,Gauge,flood,48.78,9.18,area.geojson\n")
    sensors = SensorIndex()
    sd = SensorDistricts(demo_layer, SensorRegistry.from_csv(tmp_path / "reg.csv"), sensors)
    got = {demo_layer.ids[d] for d in sd.districts_of(np.array([sensors.get("g1")]))}
    expected = {demo_layer.ids[i] for i in np.flatnonzero(shapely.intersects(demo_layer.geometry, area))}
    assert "mitte" in got and got == expected


def _pairs_reference(sd: SensorDistricts, sensor_idx: np.ndarray) -> list[tuple[int, int]]:
    """Plain per-sensor loop over the CSR arrays: what the vectorised gather must equal."""
    out = []
    for pos, s in enumerate(sensor_idx.tolist()):
        if 0 <= s < sd._s_ptr.size - 1:
            out.extend((pos, int(d)) for d in sd.pair_district[sd._s_ptr[s]:sd._s_ptr[s + 1]].tolist())
    return out


def test_pairs_of_and_districts_of_equal_a_plain_loop(demo_layer):
    sensors = SensorIndex()
    lon, lat = _random(500, 4)
    idx = sensors.lookup([f"s{i}" for i in range(500)])
    sensors.set_positions(idx, lat, lon)
    sd = SensorDistricts(demo_layer, SensorRegistry.shipped(), sensors)  # gauges speak for several districts
    rng = np.random.default_rng(5)
    gauge = sensors.get("pegel-plochingen")
    for query in (np.array([], np.int64), np.array([gauge]), np.array([gauge, gauge, 0]),
                  np.array([-1, len(sensors) + 7, gauge]),  # unknown indices speak for nothing
                  rng.integers(0, len(sensors), 2000)):
        pos, dist = sd.pairs_of(query)
        assert list(zip(pos.tolist(), dist.tolist(), strict=True)) == _pairs_reference(sd, query)
        expected = sorted({d for _, d in _pairs_reference(sd, query)})
        got = sd.districts_of(query)
        assert got.tolist() == expected and got.dtype == np.int32
