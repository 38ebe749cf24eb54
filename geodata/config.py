"""Configuration of districts, the sensor registry and the roll-up quorum: ``[geodata]``."""

from __future__ import annotations

from pathlib import Path

import msgspec

__all__ = ["GeodataConfig", "QuorumConfig", "validate"]


class QuorumConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How many sensors must agree before a district takes a sensor's level (``[geodata.quorum]``).

    A level passes when at least ``min_sensors`` sensors of the quantity in the district are at it, or
    when at least ``min_fraction`` of the district's sensors of that quantity are at it (the fraction
    rule needs two sensors at least: one untrusted sensor never decides alone unless min_sensors = 1).
    """

    #: Sensors at (or above) a level that always suffice to put the district at that level.
    min_sensors: int = 3
    #: Share of the district's sensors of the quantity at (or above) a level that suffices (0..1).
    min_fraction: float = 0.5
    #: Registry sensors flagged ``trusted`` (official stations, river gauges) count alone.
    trusted_count_alone: bool = True


class GeodataConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where the districts and the sensor registry come from and how levels roll up to districts."""

    #: District layer: GeoJSON, GeoPackage or Shapefile in any CRS (relative paths: to the config file).
    #: Empty = the built-in APPROXIMATE demo layer (Voronoi cells; every output says "approximate").
    #: Official layer: Stuttgart open data "Stadtbezirke" (attribute "Landeshauptstadt Stuttgart").
    districts: str = ""
    #: Attribute holding the district id (unique; used in alerts and the registry's impact lists).
    id_column: str = "id"
    #: Attribute holding the district name shown to people.
    name_column: str = "name"
    #: Attribute holding the official district number, carried in the page's district data (optional;
    #: empty = none; "districtNumber" in the Stuttgart layer of the shared data).
    number_column: str = ""
    #: Metric CRS for areas, overlaps and gaps (EPSG:25832 = ETRS89 / UTM 32N for Stuttgart).
    metric_crs: str = "EPSG:25832"
    #: Sensor registry CSV (sensor_id,name,hazard,lat,lon,impact[,trusted,overrides,comment]).
    #: Empty = the shipped Stuttgart registry (official LUBW air stations, example Neckar gauges).
    sensors: str = ""
    #: Overlaps between two districts larger than this (m²) are reported by check-config.
    overlap_tolerance_m2: float = 100.0
    #: Holes inside the union of all districts larger than this (m²) are reported by check-config.
    gap_tolerance_m2: float = 100.0
    quorum: QuorumConfig = msgspec.field(default_factory=QuorumConfig)


def validate(cfg: GeodataConfig, base_dir: Path | None = None) -> list[tuple[str, str]]:
    """Semantic problems as (key path, message); relative paths are resolved against ``base_dir``."""
    problems: list[tuple[str, str]] = []
    base = base_dir or Path.cwd()
    for key, value in (("geodata.districts", cfg.districts), ("geodata.sensors", cfg.sensors)):
        if value and not (base / value).exists():
            problems.append((key, f"file not found: {value}"))
    if cfg.districts:
        if not cfg.id_column:
            problems.append(("geodata.id_column", "must not be empty"))
        if not cfg.name_column:
            problems.append(("geodata.name_column", "must not be empty"))
    try:
        import pyproj

        crs = pyproj.CRS.from_user_input(cfg.metric_crs)
        units = {a.unit_name for a in crs.axis_info}
        if not crs.is_projected or not units <= {"metre", "meter"}:
            problems.append(("geodata.metric_crs", f"{cfg.metric_crs} is not a projected CRS in metres"))
    except Exception as e:  # pyproj raises CRSError and friends
        problems.append(("geodata.metric_crs", f"unknown CRS {cfg.metric_crs!r}: {e}"))
    for key, value in (("geodata.overlap_tolerance_m2", cfg.overlap_tolerance_m2),
                       ("geodata.gap_tolerance_m2", cfg.gap_tolerance_m2)):
        if value < 0:
            problems.append((key, "must be >= 0"))
    q = cfg.quorum
    if q.min_sensors < 1:
        problems.append(("geodata.quorum.min_sensors", "must be >= 1"))
    if not 0.0 < q.min_fraction <= 1.0:
        problems.append(("geodata.quorum.min_fraction", "must be in (0, 1]"))
    return problems
