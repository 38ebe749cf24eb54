"""Fixtures of the geodata tests: the shared real district layer (skipped when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest

from geodata.districts import DistrictLayer
from geodata.mapping import DistrictMapper

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
DISTRICTS = SHARED / "stuttgart" / "districts.geojson"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data {path} absent (it lives beside the repo, never in it)")
    return path


@pytest.fixture(scope="session")
def real_layer() -> DistrictLayer:
    return DistrictLayer.from_file(require_shared(DISTRICTS), number_column="districtNumber")


@pytest.fixture(scope="session")
def real_mapper(real_layer) -> DistrictMapper:
    return DistrictMapper(real_layer)


@pytest.fixture(scope="session")
def demo_layer() -> DistrictLayer:
    return DistrictLayer.demo()


def sjoin_index(layer: DistrictLayer, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The reference: geopandas.sjoin(predicate="within"), first district on overlaps, -1 for none."""
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    dist = gpd.GeoDataFrame({"d": np.arange(len(layer))}, geometry=list(layer.geometry), crs="EPSG:4326")
    joined = gpd.sjoin(pts, dist, predicate="within", how="inner")
    out = np.full(len(lon), len(layer), dtype=np.int64)
    np.minimum.at(out, joined.index.to_numpy(), joined["d"].to_numpy())
    out[out == len(layer)] = -1
    return out


@pytest.fixture(scope="session")
def demo_mapper(demo_layer) -> DistrictMapper:
    return DistrictMapper(demo_layer)
