"""Benchmark: sensor positions mapped to Stuttgart's 23 districts per second, against geopandas.sjoin."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

__all__ = ["run"]

_SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
_BBOX = (9.039, 48.692, 9.316, 48.866)  # Stuttgart, lon/lat


def _sjoin(layer, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    import geopandas as gpd

    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    dist = gpd.GeoDataFrame({"d": np.arange(len(layer))}, geometry=list(layer.geometry), crs="EPSG:4326")
    joined = gpd.sjoin(pts, dist, predicate="within", how="inner")
    out = np.full(len(lon), len(layer), dtype=np.int64)
    np.minimum.at(out, joined.index.to_numpy(), joined["d"].to_numpy())
    out[out == len(layer)] = -1
    return out


def run(quick: bool = False) -> list[dict]:
    """Figures ``district_map`` (points/s vs sjoin, with ``identical``) and ``district_map_build``."""
    from geodata.districts import DistrictLayer
    from geodata.mapping import DistrictMapper

    path = _SHARED / "stuttgart" / "districts.geojson"
    if not path.exists():
        print(f"district_map: skipped, {path} absent (shared data lives beside the repo)")
        return []
    layer = DistrictLayer.from_file(path)
    t = time.perf_counter()
    mapper = DistrictMapper(layer)
    build_s = time.perf_counter() - t
    n = 100_000 if quick else 1_000_000
    rng = np.random.default_rng(42)
    lon = rng.uniform(_BBOX[0], _BBOX[2], n)
    lat = rng.uniform(_BBOX[1], _BBOX[3], n)
    best = float("inf")
    for _ in range(3 if quick else 5):
        t = time.perf_counter()
        got = mapper.map_points(lon, lat)
        best = min(best, time.perf_counter() - t)
    t = time.perf_counter()
    ref = _sjoin(layer, lon, lat)  # includes building the point GeoDataFrame, as a user of sjoin must
    sjoin_s = time.perf_counter() - t
    rate, base = n / best, n / sjoin_s
    return [
        {"name": "district_map", "value": rate, "unit": "points/s", "baseline_value": base,
         "ratio": rate / base, "identical": bool(np.array_equal(got, ref)), "points": n,
         "inside": int((got >= 0).sum()), "boundary_cells": mapper.boundary_cells,
         "goal": ">= 5e6 points/s and >= 10x geopandas.sjoin",
         "attribution": "districts: Landeshauptstadt Stuttgart (dl-de/by-2.0)"},
        {"name": "district_map_build", "value": build_s, "unit": "s"},
    ]


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
