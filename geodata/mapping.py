"""Sensor positions to districts: a vectorised point-in-polygon index and a per-sensor cache.

Semantics equal ``geopandas.sjoin(points, districts, predicate="within")`` on the layer's WGS84
geometries: a point belongs to a district when it lies in the district's interior. A point exactly on
a boundary (shared edge, vertex, outer border) is within no district and maps to -1, as with sjoin;
where districts overlap (a faulty layer) the one listed first wins.
"""

from __future__ import annotations

import logging

import numpy as np
import shapely

from geodata.districts import DistrictLayer
from geodata.registry import SensorRegistry
from ingest.sensor_index import SensorIndex

__all__ = ["DistrictMapper", "SensorDistricts"]

log = logging.getLogger(__name__)

_MIXED = -2  # grid cell touched by some district boundary: points in it get an exact test


class DistrictMapper:
    """Maps lon/lat arrays to district indices through a quadtree-built raster with exact edge tests.

    The layer's bounding box is divided into ``2**levels`` x ``2**levels`` cells. A cell that no
    district boundary touches lies wholly inside one district (or outside all) and answers by lookup;
    points in the few cells a boundary crosses are tested exactly with ``shapely.contains_xy`` against
    the districts intersecting that cell.
    """

    def __init__(self, layer: DistrictLayer, levels: int = 11) -> None:
        self.layer = layer
        geoms = layer.geometry
        shapely.prepare(geoms)
        x0, y0, x1, y1 = shapely.total_bounds(geoms)
        pad_x, pad_y = (x1 - x0) * 0.01 + 1e-9, (y1 - y0) * 0.01 + 1e-9
        self.x0, self.y0 = x0 - pad_x, y0 - pad_y
        n = 1 << levels
        self.n = n
        self.dx = (x1 - x0 + 2 * pad_x) / n
        self.dy = (y1 - y0 + 2 * pad_y) / n
        self._geoms = geoms
        self.grid, self._cand_ptr, self._cand = self._build(geoms, levels)

    def _boxes(self, ix: np.ndarray, iy: np.ndarray, size: int) -> np.ndarray:
        """Cell boxes at a level of ``size`` fine cells per side, widened by a hair against rounding."""
        ex, ey = self.dx * 1e-6, self.dy * 1e-6
        return shapely.box(self.x0 + ix * size * self.dx - ex, self.y0 + iy * size * self.dy - ey,
                           self.x0 + (ix + 1) * size * self.dx + ex, self.y0 + (iy + 1) * size * self.dy + ey)

    def _build(self, geoms: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        segments, seg_district = _segments(geoms)
        edge_tree = shapely.STRtree(segments)
        self._area_tree = shapely.STRtree(geoms)
        grid = np.full((1, 1), _MIXED, dtype=np.int16)
        pairs: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64), np.empty(0, np.int64))
        hit = np.zeros(0, dtype=bool)
        for level in range(1, levels + 1):
            grid = np.repeat(np.repeat(grid, 2, axis=0), 2, axis=1)
            size = 1 << (levels - level)
            iy, ix = np.nonzero(grid == _MIXED)
            pairs = edge_tree.query(self._boxes(ix, iy, size), predicate="intersects")
            hit = np.zeros(iy.size, dtype=bool)
            hit[pairs[0]] = True
            # Untouched by any boundary: the whole cell shares its centre's district.
            calm = np.flatnonzero(~hit)
            cx = self.x0 + (ix[calm] + 0.5) * size * self.dx
            cy = self.y0 + (iy[calm] + 0.5) * size * self.dy
            p, d = self._containing(cx, cy)
            value = np.full(calm.size, len(geoms), dtype=np.int64)
            np.minimum.at(value, p, d)
            value[value == len(geoms)] = -1
            grid[iy[calm], ix[calm]] = value
        # Candidates of each boundary cell (CSR over mixed cells in row-major order): the districts
        # whose edges cross it, plus any containing its centre (only differs in overlapping layers).
        iy, ix = np.nonzero(grid == _MIXED)
        mixed_id = np.full(grid.shape, -1, dtype=np.int64)
        mixed_id[iy, ix] = np.arange(iy.size)
        box, seg = pairs  # the last level's boxes: the cells still mixed are those with a hit
        box = (np.cumsum(hit) - 1)[box]
        p, d = self._containing(self.x0 + (ix + 0.5) * self.dx, self.y0 + (iy + 0.5) * self.dy)
        key = np.unique(np.concatenate([box * len(geoms) + seg_district[seg], p * len(geoms) + d]))
        cell, dist = key // len(geoms), key % len(geoms)
        ptr = np.zeros(iy.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(cell, minlength=iy.size), out=ptr[1:])
        self._mixed_id = np.pad(mixed_id, 1, constant_values=-1).ravel()
        return np.pad(grid, 1, constant_values=-1).ravel(), ptr, dist.astype(np.int32)

    def _containing(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(point, district) pairs of points in district interiors, tested per district."""
        p, d = self._area_tree.query(shapely.points(x, y))  # bounding boxes only: cheap
        keep = np.zeros(p.size, dtype=bool)
        for k in np.unique(d).tolist():
            rows = np.flatnonzero(d == k)
            keep[rows] = shapely.contains_xy(self._geoms[k], x[p[rows]], y[p[rows]])
        return p[keep], d[keep]

    @property
    def boundary_cells(self) -> int:
        return int(self._cand_ptr.size - 1)

    def map_points(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """District index (int32) of each point, -1 outside every district (NaN positions too)."""
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        w = self.n + 2  # the grid carries a border of -1 cells; NaN and far points are clipped onto it
        fx = lon - (self.x0 - self.dx)
        fx *= 1.0 / self.dx
        np.fmax(fx, 0.0, out=fx)  # fmax turns NaN into 0: the border
        np.fmin(fx, w - 1, out=fx)
        fy = lat - (self.y0 - self.dy)
        fy *= 1.0 / self.dy
        np.fmax(fy, 0.0, out=fy)
        np.fmin(fy, w - 1, out=fy)
        cell = fy.astype(np.int32)
        cell *= w
        cell += fx.astype(np.int32)
        out = self.grid[cell].astype(np.int32)
        edge = np.flatnonzero(out == _MIXED)
        if edge.size:
            out[edge] = self._exact(lon[edge], lat[edge], self._mixed_id[cell[edge]])
        return out

    def _exact(self, x: np.ndarray, y: np.ndarray, mixed: np.ndarray) -> np.ndarray:
        """Exact interior test of boundary-cell points against their cells' candidate districts."""
        start, stop = self._cand_ptr[mixed], self._cand_ptr[mixed + 1]
        counts = stop - start
        point = np.repeat(np.arange(x.size), counts)
        offset = np.arange(point.size) - np.repeat(np.cumsum(counts) - counts, counts)
        dist = self._cand[np.repeat(start, counts) + offset]
        hit = np.zeros(point.size, dtype=bool)
        for d in np.unique(dist).tolist():
            rows = np.flatnonzero(dist == d)
            hit[rows] = shapely.contains_xy(self._geoms[d], x[point[rows]], y[point[rows]])
        result = np.full(x.size, np.iinfo(np.int32).max, dtype=np.int64)
        np.minimum.at(result, point[hit], dist[hit])
        result[result == np.iinfo(np.int32).max] = -1
        return result.astype(np.int32)


def _segments(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every boundary edge as its own two-point line (a fast index for box tests), with its district."""
    lines = shapely.get_parts(shapely.boundary(geoms))
    coords, line = shapely.get_coordinates(lines, return_index=True)
    same = line[1:] == line[:-1]
    pairs = np.stack([coords[:-1][same], coords[1:][same]], axis=1)
    district = shapely.get_parts(shapely.boundary(geoms), return_index=True)[1]
    return shapely.linestrings(pairs), district[line[:-1][same]]


class SensorDistricts:
    """Which districts each sensor's readings speak for, cached per sensor.

    A registry sensor with an impact list (or impact polygon) speaks for those districts wherever it
    stands; any other sensor for the district containing it. Sensors outside every district without an
    impact list are logged once, listed in ``outside_ids()`` and kept out of district roll-ups. Call
    ``update()`` after positions change (new sensors, ``SensorIndex.moved``); it maps only those.
    """

    def __init__(self, layer: DistrictLayer, registry: SensorRegistry, sensors: SensorIndex,
                 mapper: DistrictMapper | None = None) -> None:
        from geodata.errors import RegistryError

        self.layer = layer
        self.sensors = sensors
        self.mapper = mapper or DistrictMapper(layer)
        bad = registry.check_districts(layer.ids)
        if bad:
            raise RegistryError(registry.source, bad)
        idx = registry.register(sensors)
        self._fixed: dict[int, np.ndarray] = {}
        trusted = []
        for i, s in zip(idx.tolist(), registry.sensors, strict=True):
            if s.impact_ids:
                self._fixed[i] = np.array(sorted({layer.index_of(d) for d in s.impact_ids}), dtype=np.int32)
            elif s.impact_path:
                self._fixed[i] = _districts_under(layer, s.impact_path)
            if s.trusted:
                trusted.append(i)
        self._trusted_idx = np.array(trusted, dtype=np.int64)
        self.trusted = np.zeros(0, dtype=bool)
        self.district = np.zeros(0, dtype=np.int32)  # containing district; -1 outside, -2 no position
        self._has_fixed = np.zeros(0, dtype=bool)
        self._reported = np.zeros(0, dtype=bool)
        self._outside: set[int] = set()
        self._n = 0
        self.version = 0
        self.pair_sensor = np.empty(0, np.int32)
        self.pair_district = np.empty(0, np.int32)
        self._s_ptr = np.zeros(1, np.int64)
        self._d_ptr = np.zeros(len(layer) + 1, np.int64)
        self._d_sensor = np.empty(0, np.int32)
        self.update()

    def _grow(self, n: int) -> None:
        old = self.district.size
        if n <= old:
            return
        size = max(n, 2 * old, 64)
        for name, fill in (("trusted", False), ("district", -2), ("_has_fixed", False), ("_reported", False)):
            a = getattr(self, name)
            b = np.full(size, fill, dtype=a.dtype)
            b[:old] = a
            setattr(self, name, b)
        self.trusted[self._trusted_idx] = True
        self._has_fixed[list(self._fixed)] = True

    def update(self) -> None:
        """Map sensors that are new since the last call or flagged ``moved`` (and clear the flag)."""
        n = len(self.sensors)
        self._grow(n)
        todo_mask = self.sensors.moved[:n].copy()
        todo_mask[self._n:] = True
        todo = np.flatnonzero(todo_mask)
        self._n = n
        if not todo.size:
            return
        lat, lon = self.sensors.lat[todo], self.sensors.lon[todo]
        d = self.mapper.map_points(lon, lat)
        d[np.isnan(lat) | np.isnan(lon)] = -2
        self.sensors.moved[todo] = False
        self.district[todo] = d
        out = todo[(d == -1) & ~self._has_fixed[todo]]
        self._outside.difference_update(todo.tolist())
        self._outside.update(out.tolist())
        first = out[~self._reported[out]]
        if first.size:
            self._reported[first] = True
            log.warning("%d sensor(s) outside every district, kept out of district alerts: %s",
                        first.size, ", ".join(self.sensors.ids(first)))
        self._rebuild(n)

    def _rebuild(self, n: int) -> None:
        plain = np.flatnonzero((self.district[:n] >= 0) & ~self._has_fixed[:n])
        s_parts = [plain] + [np.full(v.size, k) for k, v in self._fixed.items() if k < n]
        d_parts = [self.district[plain]] + [v for k, v in self._fixed.items() if k < n]
        s = np.concatenate(s_parts).astype(np.int32)
        d = np.concatenate(d_parts).astype(np.int32)
        order = np.lexsort((d, s))
        self.pair_sensor, self.pair_district = s[order], d[order]
        self._s_ptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(self.pair_sensor, minlength=n), out=self._s_ptr[1:])
        by_d = np.lexsort((self.pair_sensor, self.pair_district))
        self._d_sensor = self.pair_sensor[by_d]
        self._d_ptr = np.zeros(len(self.layer) + 1, np.int64)
        np.cumsum(np.bincount(self.pair_district, minlength=len(self.layer)), out=self._d_ptr[1:])
        self.version += 1

    def districts_of(self, sensor_idx: np.ndarray) -> np.ndarray:
        """The distinct district indices the given sensors speak for."""
        _, district = self.pairs_of(sensor_idx)
        return np.unique(district) if district.size else np.empty(0, np.int32)

    def pairs_of(self, sensor_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (position in ``sensor_idx``, district) a sensor speaks for: one CSR gather, no Python loop.

        Sensors beyond the mapped ones (and negative indices) speak for none.
        """
        return _gather(self._s_ptr, self.pair_district, sensor_idx)

    def sensors_of_many(self, districts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (position in ``districts``, sensor) pair: ``sensors_of`` of each district, concatenated."""
        return _gather(self._d_ptr, self._d_sensor, districts)

    def sensors_of(self, district: int) -> np.ndarray:
        """Dense indices of the sensors speaking for a district (sorted)."""
        return self._d_sensor[self._d_ptr[district]:self._d_ptr[district + 1]]

    def outside_ids(self) -> list[str]:
        """Sensors currently outside every district (for the control-room page)."""
        return self.sensors.ids(np.array(sorted(self._outside), dtype=np.int64))


def _gather(ptr: np.ndarray, values: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows ``idx`` of (``ptr``, ``values``) as (position in ``idx``, value); unknown rows are empty."""
    idx = np.asarray(idx, dtype=np.int64).ravel()
    pos = np.flatnonzero((idx >= 0) & (idx < ptr.size - 1))
    start = ptr[idx[pos]]
    counts = ptr[idx[pos] + 1] - start
    total = int(counts.sum())
    if not total:
        return np.empty(0, np.int64), values[:0]
    ends = np.cumsum(counts)
    gather = np.arange(total, dtype=np.int64) + np.repeat(start - (ends - counts), counts)
    return np.repeat(pos, counts), values[gather]


def _districts_under(layer: DistrictLayer, path: str) -> np.ndarray:
    """Districts overlapping the polygons of an impact file by more than 1 m²."""
    import geopandas as gpd

    from geodata.errors import RegistryError

    try:
        gdf = gpd.read_file(path)
        area = shapely.union_all(gdf.to_crs(layer.metric_crs).geometry.values)
    except Exception as e:  # unreadable file or missing CRS
        raise RegistryError(path, [(0, f"impact polygon file unusable: {e}")]) from e
    overlap = shapely.area(shapely.intersection(layer.metric_geometry, area))
    return np.flatnonzero(overlap > 1.0).astype(np.int32)
