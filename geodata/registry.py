"""The sensor registry: known sensors (official stations, river gauges) with positions and impact areas.

CSV columns (header required, ``#`` lines are comments, UTF-8):

``sensor_id``  unique id as it appears in readings (required)
``name``       label for people
``hazard``     ``flood`` or ``air`` (what the sensor watches; informational)
``lat,lon``    WGS84 position in degrees (required)
``impact``     empty = the district containing the sensor; ``id;id;...`` = these districts (a Neckar
               gauge lists the riverside districts downstream); or a path (relative to the CSV) to a
               GeoJSON/GPKG/Shapefile whose polygons mark the area: every district they overlap
``trusted``    optional ``true``/``false`` (default false): an official station or gauge that may
               raise a district level alone (see ``[geodata.quorum] trusted_count_alone``)
``overrides``  optional ``rule.key=value;...`` per-sensor rule overrides, passed on to detection as strings
``comment``    optional free text
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geodata.errors import RegistryError
from ingest.sensor_index import SensorIndex

__all__ = ["SHIPPED_REGISTRY", "RegisteredSensor", "SensorRegistry"]

#: The Stuttgart registry shipped with the package.
SHIPPED_REGISTRY = Path(__file__).with_name("stuttgart_sensors.csv")

_REQUIRED = ("sensor_id", "name", "hazard", "lat", "lon", "impact")
_OPTIONAL = ("trusted", "overrides", "comment")
_HAZARDS = ("flood", "air")
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}
_POLYGON_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp")


@dataclass(frozen=True, slots=True)
class RegisteredSensor:
    """One registry row; ``impact_ids`` / ``impact_path`` empty means "the containing district"."""

    sensor_id: str
    name: str
    hazard: str
    lat: float
    lon: float
    impact_ids: tuple[str, ...] = ()
    impact_path: str = ""  # absolute path of a polygon file
    trusted: bool = False
    overrides: dict[str, str] = field(default_factory=dict)
    comment: str = ""
    line: int = 0  # line in the CSV, for error messages


class SensorRegistry:
    """The registry's sensors by id, in file order."""

    def __init__(self, sensors: list[RegisteredSensor], source: str = "") -> None:
        self.sensors = list(sensors)
        self.source = source
        self._by_id = {s.sensor_id: s for s in self.sensors}

    def __len__(self) -> int:
        return len(self.sensors)

    def __contains__(self, sensor_id: str) -> bool:
        return sensor_id in self._by_id

    def get(self, sensor_id: str) -> RegisteredSensor | None:
        return self._by_id.get(sensor_id)

    @classmethod
    def empty(cls) -> SensorRegistry:
        return cls([], source="")

    @classmethod
    def shipped(cls) -> SensorRegistry:
        """The Stuttgart registry shipped with the package (LUBW stations, example Neckar gauges)."""
        return cls.from_csv(SHIPPED_REGISTRY)

    @classmethod
    def from_csv(cls, path: str | Path) -> SensorRegistry:
        """Parse a registry CSV; ``RegistryError`` lists every problem with its line number."""
        path = Path(path)
        problems: list[tuple[int, str]] = []
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RegistryError(str(path), [(0, f"cannot read: {e}")]) from e
        lines = ["" if ln.lstrip().startswith("#") else ln for ln in text.splitlines()]
        reader = csv.reader(lines)
        header: list[str] | None = None
        sensors: list[RegisteredSensor] = []
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip() for c in row]
                missing = [c for c in _REQUIRED if c not in header]
                unknown = [c for c in header if c not in _REQUIRED + _OPTIONAL]
                if missing:
                    problems.append((line, f"missing column(s): {', '.join(missing)}"))
                if unknown:
                    problems.append((line, f"unknown column(s): {', '.join(unknown)}"))
                if missing:
                    break
                continue
            if len(row) != len(header):
                problems.append((line, f"{len(row)} fields, the header has {len(header)}"))
                continue
            rec = {k: v.strip() for k, v in zip(header, row, strict=True)}
            sensor = _parse_row(rec, line, path.parent, problems)
            if sensor is None:
                continue
            if sensor.sensor_id in seen:
                problems.append((line, f"duplicate sensor_id {sensor.sensor_id!r} (first on line "
                                       f"{seen[sensor.sensor_id]})"))
                continue
            seen[sensor.sensor_id] = line
            sensors.append(sensor)
        if header is None:
            problems.append((1, "empty registry: no header"))
        if problems:
            raise RegistryError(str(path), problems)
        return cls(sensors, source=str(path))

    def check_districts(self, district_ids: tuple[str, ...] | list[str]) -> list[tuple[int, str]]:
        """Impact lists naming districts the layer does not have, as (line, message)."""
        known = set(district_ids)
        out = []
        for s in self.sensors:
            bad = [d for d in s.impact_ids if d not in known]
            if bad:
                out.append((s.line, f"{s.sensor_id}: unknown district id(s) in impact: {', '.join(bad)}"))
        return out

    def register(self, sensors: SensorIndex) -> np.ndarray:
        """Put every registry sensor with its position into the dense index; their indices in file order."""
        return np.array([sensors.add(s.sensor_id, s.lat, s.lon, registered=True) for s in self.sensors],
                        dtype=np.int32)


def _parse_row(rec: dict[str, str], line: int, base: Path,
               problems: list[tuple[int, str]]) -> RegisteredSensor | None:
    n = len(problems)
    sid = rec["sensor_id"]
    if not sid:
        problems.append((line, "empty sensor_id"))
    hazard = rec["hazard"]
    if hazard not in _HAZARDS:
        problems.append((line, f"hazard {hazard!r} is not one of {', '.join(_HAZARDS)}"))
    coords = []
    for key, limit in (("lat", 90.0), ("lon", 180.0)):
        try:
            v = float(rec[key])
            if not -limit <= v <= limit:
                raise ValueError
            coords.append(v)
        except ValueError:
            problems.append((line, f"{key} {rec[key]!r} is not a number in [-{limit:g}, {limit:g}]"))
    trusted = _TRUE.get(rec.get("trusted", "").lower())
    if trusted is None:
        problems.append((line, f"trusted {rec['trusted']!r} is not true/false"))
    overrides: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rec.get("overrides", "").split(";"))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or "." not in key:
            problems.append((line, f"override {item!r} is not rule.key=value"))
        else:
            overrides[key.strip()] = value.strip()
    impact = rec["impact"]
    impact_ids: tuple[str, ...] = ()
    impact_path = ""
    if impact.lower().endswith(_POLYGON_SUFFIXES) or "/" in impact:
        p = Path(impact) if Path(impact).is_absolute() else base / impact
        if not p.exists():
            problems.append((line, f"impact polygon file not found: {impact}"))
        impact_path = str(p)
    elif impact:
        impact_ids = tuple(d.strip() for d in impact.split(";") if d.strip())
    if len(problems) > n:
        return None
    return RegisteredSensor(sid, rec["name"] or sid, hazard, coords[0], coords[1], impact_ids, impact_path,
                            bool(trusted), overrides, rec.get("comment", ""), line)
