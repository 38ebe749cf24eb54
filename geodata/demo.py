"""The built-in APPROXIMATE Stuttgart district layer, generated from public facts (no licensed file).

Voronoi cells of the 23 Stadtbezirke's representative points, clipped to an outline (the points'
convex hull buffered until the total area is 207.2 km², cut to the city's bounding box). Boundaries
are invented: good enough for ``make demo`` and tests, never for real alerts.
"""

from __future__ import annotations

import numpy as np
import pyproj
import shapely

__all__ = ["DEMO_DISTRICTS", "TOTAL_AREA_KM2", "demo_geometries"]

#: (id, name, number, lat, lon, area km²) of the 23 Stadtbezirke, numbers 01–23 in this order.
DEMO_DISTRICTS: tuple[tuple[str, str, str, float, float, float], ...] = (
    ("mitte", "Mitte", "01", 48.7796, 9.1800, 3.8),
    ("nord", "Nord", "02", 48.7967, 9.1764, 6.8),
    ("ost", "Ost", "03", 48.7771, 9.2076, 9.0),
    ("sued", "Süd", "04", 48.7531, 9.1326, 9.5),
    ("west", "West", "05", 48.7778, 9.1511, 18.7),
    ("bad-cannstatt", "Bad Cannstatt", "06", 48.8067, 9.2217, 15.7),
    ("birkach", "Birkach", "07", 48.7283, 9.2032, 3.1),
    ("botnang", "Botnang", "08", 48.7785, 9.1231, 2.1),
    ("degerloch", "Degerloch", "09", 48.7444, 9.1800, 8.0),
    ("feuerbach", "Feuerbach", "10", 48.8031, 9.1499, 11.5),
    ("hedelfingen", "Hedelfingen", "11", 48.7561, 9.2198, 7.2),
    ("moehringen", "Möhringen", "12", 48.7267, 9.1519, 15.0),
    ("muehlhausen", "Mühlhausen", "13", 48.8453, 9.2262, 9.1),
    ("muenster", "Münster", "14", 48.8267, 9.2025, 2.2),
    ("obertuerkheim", "Obertürkheim", "15", 48.7721, 9.2807, 5.4),
    ("plieningen", "Plieningen", "16", 48.7114, 9.1995, 13.2),
    ("sillenbuch", "Sillenbuch", "17", 48.7420, 9.2223, 7.5),
    ("stammheim", "Stammheim", "18", 48.8505, 9.1548, 4.3),
    ("untertuerkheim", "Untertürkheim", "19", 48.7830, 9.2533, 6.1),
    ("vaihingen", "Vaihingen", "20", 48.7344, 9.0888, 20.8),
    ("wangen", "Wangen", "21", 48.7731, 9.2387, 3.5),
    ("weilimdorf", "Weilimdorf", "22", 48.8104, 9.1061, 12.6),
    ("zuffenhausen", "Zuffenhausen", "23", 48.8346, 9.1695, 12.0),
)
TOTAL_AREA_KM2 = 207.2
#: Bounding box of the city (lon min, lat min, lon max, lat max).
_BBOX = (9.039, 48.692, 9.316, 48.866)


def demo_geometries(metric_crs: str = "EPSG:25832") -> np.ndarray:
    """Polygons in ``metric_crs``, one per entry of ``DEMO_DISTRICTS`` (same order)."""
    to_metric = pyproj.Transformer.from_crs("EPSG:4326", metric_crs, always_xy=True)
    lon = np.array([d[4] for d in DEMO_DISTRICTS])
    lat = np.array([d[3] for d in DEMO_DISTRICTS])
    x, y = to_metric.transform(lon, lat)
    points = shapely.points(x, y)
    bx, by = to_metric.transform(np.array([_BBOX[0], _BBOX[2], _BBOX[2], _BBOX[0]]),
                                 np.array([_BBOX[1], _BBOX[1], _BBOX[3], _BBOX[3]]))
    bbox = shapely.polygons(np.column_stack([bx, by]))
    hull = shapely.convex_hull(shapely.multipoints(points))
    target = TOTAL_AREA_KM2 * 1e6
    lo, hi = 0.0, 10_000.0  # buffer distance in metres, found by bisection
    for _ in range(40):
        mid = (lo + hi) / 2
        if shapely.intersection(shapely.buffer(hull, mid, quad_segs=16), bbox).area < target:
            lo = mid
        else:
            hi = mid
    outline = shapely.intersection(shapely.buffer(hull, (lo + hi) / 2, quad_segs=16), bbox)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(points), extend_to=outline,
                                                       ordered=True))
    return shapely.make_valid(shapely.intersection(cells, outline))
