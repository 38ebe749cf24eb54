"""The district layer: ids, names and geometries of a city's districts, from any official file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyproj
import shapely

from geodata.demo import DEMO_DISTRICTS, demo_geometries
from geodata.errors import LayerError

__all__ = ["CAP_MAX_POINTS", "DistrictLayer"]

log = logging.getLogger(__name__)

#: Upper bound of coordinate pairs (closing pair included) in a CAP ``<polygon>`` we produce.
CAP_MAX_POINTS = 100
_WGS84 = "EPSG:4326"


def _reproject(geoms: np.ndarray, src: str | pyproj.CRS, dst: str | pyproj.CRS) -> np.ndarray:
    """Geometries transformed vertex by vertex between two CRSs (x = lon/easting)."""
    tr = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Only the polygonal parts of a geometry (``make_valid`` may add lines and points)."""
    parts = [p for p in shapely.get_parts(geom) if shapely.get_type_id(p) in (3, 6)]
    if not parts:
        return shapely.MultiPolygon()
    return shapely.union_all(parts)


class DistrictLayer:
    """Districts in WGS84 (output, point mapping) and in a metric CRS (areas, overlaps, gaps).

    ``approximate`` is True for the built-in demo layer; every output derived from it says so.
    ``repaired`` lists the districts whose invalid geometry was repaired on load.
    """

    def __init__(self, ids: list[str], names: list[str], numbers: list[str], geometry: np.ndarray,
                 metric_geometry: np.ndarray, *, metric_crs: str = "EPSG:25832", approximate: bool = False,
                 source: str = "", repaired: list[str] | None = None) -> None:
        self._ids = tuple(ids)
        self._names = tuple(names)
        self.numbers = tuple(numbers)
        self.geometry = np.asarray(geometry, dtype=object)  # WGS84, x = lon
        self.metric_geometry = np.asarray(metric_geometry, dtype=object)
        self.metric_crs = metric_crs
        self.source = source
        self.repaired = list(repaired or [])
        self._approximate = approximate
        self._index = {d: i for i, d in enumerate(self._ids)}
        self._cap: dict[str, str] = {}

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, id_column: str = "id", name_column: str = "name",
                  metric_crs: str = "EPSG:25832", number_column: str = "") -> DistrictLayer:
        """Read a GeoJSON, GeoPackage or Shapefile in any CRS; ``LayerError`` lists every problem."""
        import geopandas as gpd

        path = str(path)
        try:
            gdf = gpd.read_file(path)
        except Exception as e:  # pyogrio raises DataSourceError and friends
            raise LayerError(path, [f"cannot read: {e}"]) from e
        problems: list[str] = []
        for col in (id_column, name_column, number_column):
            if col and col not in gdf.columns:
                problems.append(f"no column {col!r} (columns: {', '.join(map(str, gdf.columns))})")
        if gdf.crs is None:
            problems.append("no CRS (a Shapefile needs its .prj)")
        if problems:
            raise LayerError(path, problems)
        ids = ["" if v is None else str(v).strip() for v in gdf[id_column]]
        names = [str(v) if v is not None else d for v, d in zip(gdf[name_column], ids, strict=True)]
        numbers = [str(v) for v in gdf[number_column]] if number_column else [""] * len(ids)
        seen: dict[str, int] = {}
        for row, d in enumerate(ids):
            if not d:
                problems.append(f"feature {row}: empty id")
            elif d in seen:
                problems.append(f"duplicate id {d!r} (features {seen[d]} and {row})")
            else:
                seen[d] = row
        geoms = np.asarray(gdf.geometry.values, dtype=object)
        for row, g in enumerate(geoms):
            if g is None or shapely.is_empty(g):
                problems.append(f"feature {row} ({ids[row]}): empty geometry")
            elif shapely.get_type_id(g) not in (3, 6):
                problems.append(f"feature {row} ({ids[row]}): {g.geom_type} is not a polygon")
        if not ids:
            problems.append("no features")
        if problems:
            raise LayerError(path, problems)
        repaired: list[str] = []
        geoms = shapely.force_2d(geoms)
        for row in np.flatnonzero(~shapely.is_valid(geoms)):
            reason = shapely.is_valid_reason(geoms[row])
            geoms[row] = _polygonal(shapely.make_valid(geoms[row]))
            repaired.append(f"{ids[row]}: invalid geometry repaired ({reason})")
            log.warning("district layer %s: %s", path, repaired[-1])
        wgs84 = _reproject(geoms, gdf.crs, _WGS84)
        metric = _reproject(geoms, gdf.crs, metric_crs)
        # Reprojection may make a barely valid ring invalid: repair those too.
        for arr in (wgs84, metric):
            bad = np.flatnonzero(~shapely.is_valid(arr))
            arr[bad] = [_polygonal(shapely.make_valid(g)) for g in arr[bad]]
        return cls(ids, names, numbers, wgs84, metric, metric_crs=metric_crs, source=path, repaired=repaired)

    @classmethod
    def demo(cls, metric_crs: str = "EPSG:25832") -> DistrictLayer:
        """The built-in APPROXIMATE Stuttgart layer (see :mod:`geodata.demo`)."""
        metric = demo_geometries(metric_crs)
        wgs84 = _reproject(metric, metric_crs, _WGS84)
        return cls([d[0] for d in DEMO_DISTRICTS], [d[1] for d in DEMO_DISTRICTS],
                   [d[2] for d in DEMO_DISTRICTS], wgs84, metric, metric_crs=metric_crs,
                   approximate=True, source="built-in approximate demo layer")

    # -- lookups --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def approximate(self) -> bool:
        return self._approximate

    def index_of(self, district_id: str) -> int:
        """Position of a district id; ``KeyError`` for an unknown one."""
        return self._index[district_id]

    def name_of(self, district_id: str) -> str:
        return self._names[self._index[district_id]]

    def areas_m2(self) -> np.ndarray:
        return shapely.area(self.metric_geometry)

    # -- validation -----------------------------------------------------------------------------

    def check(self, overlap_tolerance_m2: float = 100.0, gap_tolerance_m2: float = 100.0) -> list[str]:
        """Problems for ``check-config``: repaired geometries, overlaps and gaps above the tolerances."""
        problems = list(self.repaired)
        g = self.metric_geometry
        tree = shapely.STRtree(g)
        a, b = tree.query(g, predicate="intersects")
        keep = a < b
        a, b = a[keep], b[keep]
        if a.size:
            areas = shapely.area(shapely.intersection(g[a], g[b]))
            for i, j, area in zip(a.tolist(), b.tolist(), areas.tolist(), strict=True):
                if area > overlap_tolerance_m2:
                    problems.append(f"districts {self._ids[i]} and {self._ids[j]} overlap by {area:.0f} m²")
        union = shapely.union_all(g)
        for part in shapely.get_parts(union):
            for k in range(shapely.get_num_interior_rings(part)):
                hole = shapely.polygons(shapely.get_interior_ring(part, k))
                if hole.area > gap_tolerance_m2:
                    c = _reproject(np.array([hole.representative_point()]), self.metric_crs, _WGS84)[0]
                    problems.append(f"gap of {hole.area:.0f} m² between districts near "
                                    f"lat {c.y:.5f}, lon {c.x:.5f}")
        return problems

    # -- outputs --------------------------------------------------------------------------------

    def cap_polygon(self, district_id: str) -> str:
        """A CAP ``<polygon>``: space-separated ``lat,lon`` pairs, closed, <= 100 pairs, simple.

        For a district of several parts the largest part is used (CAP areas may carry several
        polygons, but one is what most receivers draw); holes are dropped (a CAP polygon has none).
        """
        cached = self._cap.get(district_id)
        if cached is not None:
            return cached
        i = self._index[district_id]
        parts = shapely.get_parts(self.geometry[i])
        metric_parts = shapely.get_parts(self.metric_geometry[i])
        areas = shapely.area(metric_parts if len(metric_parts) == len(parts) else parts)
        largest = parts[int(np.argmax(areas))]
        shell = shapely.polygons(shapely.get_exterior_ring(largest))
        ring = _simplified_ring(shell, CAP_MAX_POINTS)
        text = " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in ring)
        self._cap[district_id] = text
        return text

    def geojson(self, levels: dict[str, dict] | None = None, tolerance_deg: float = 1e-4) -> dict:
        """A FeatureCollection of the districts (WGS84, simplified for the web) with current levels.

        ``levels`` maps a district id to properties merged into its feature (for example
        ``{"flood/water_level": 2}``); the collection's ``properties.approximate`` says whether
        the boundaries are the built-in approximate ones.
        """
        levels = levels or {}
        simple = shapely.set_precision(shapely.simplify(self.geometry, tolerance_deg, preserve_topology=True),
                                       1e-6)
        features = []
        for i, d in enumerate(self._ids):
            props = {"id": d, "name": self._names[i], "number": self.numbers[i], "approximate": self.approximate}
            props.update(levels.get(d, {}))
            features.append({"type": "Feature", "id": d, "properties": props,
                             "geometry": json.loads(shapely.to_geojson(simple[i]))})
        return {"type": "FeatureCollection", "features": features,
                "properties": {"approximate": self.approximate, "source": self.source}}


def _simplified_ring(shell: shapely.Polygon, max_points: int) -> list[tuple[float, float]]:
    """Exterior coordinates of a simplified, valid version of ``shell`` with at most ``max_points``."""
    candidate = shell
    tol = 0.0
    for _ in range(60):
        simple = shapely.set_precision(shapely.simplify(shell, tol, preserve_topology=True), 1e-6)
        if (shapely.get_type_id(simple) == 3 and simple.is_valid and not simple.is_empty
                and len(simple.exterior.coords) <= max_points):
            candidate = simple
            break
        tol = 1e-5 if tol == 0.0 else tol * 1.5
    else:  # never seen in practice: the convex hull is always simple
        hull = shapely.convex_hull(shell)
        while len((candidate := shapely.simplify(hull, tol)).exterior.coords) > max_points:
            tol *= 1.5
    return [(x, y) for x, y in candidate.exterior.coords]
