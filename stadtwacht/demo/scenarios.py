"""Demo scenarios for Stuttgart on one compressed story clock, shaped on public facts.

Every scenario is a function ``(start_ns, story_ns, ...) -> list[SimEvent]`` producing readings
in simulated time from ``start_ns`` (the story's first instant) to ``start_ns + story_ns``. The
simulator merges them, maps simulated time onto the wall clock and publishes them to Kafka.

The scenarios run side by side on one clock (a demo, not a season): a Neckar flood wave, a winter
inversion over the inner districts, an ozone afternoon at the Bad Cannstatt station, a stuck citizen
sensor in Feuerbach and a gauge that goes silent. Times of day inside the story are story hours, not
the wall clock's. The flood stages come from ``detection/default_rules.toml`` (EXAMPLE stages shaped
like Landkreis Esslingen's rule); gauge positions and gauge Hofen are examples, not official data.
"""

from __future__ import annotations

import csv
import datetime as _dt
import gzip
import io
import math
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "ARCHIVE_RELATIVE",
    "ARCHIVE_WINDOW_START",
    "DEFAULT_SPEED",
    "INNER_DISTRICTS",
    "OFFICIAL_DISTRICTS_RELATIVE",
    "SCENARIOS",
    "STORY_SIM_SECONDS",
    "STORY_WALL_SECONDS",
    "DemoSensor",
    "FloodStages",
    "SimEvent",
    "demo_sensors",
    "flood_stages",
    "flood_wave",
    "gauge_silent",
    "ozone_afternoon",
    "registry_csv",
    "story_events",
    "story_wall_seconds",
    "stuck_citizen_sensor",
    "winter_inversion",
]

HOUR_NS = 3_600_000_000_000
MINUTE_NS = 60_000_000_000

#: Simulated length of the whole story (30 h: the flood wave passes both gauges and falls back).
STORY_SIM_SECONDS = 30 * 3600
#: Default clock compression: 600 simulated seconds per wall second (10 min per second).
DEFAULT_SPEED = 600.0
#: Wall-clock length of the story at the default speed (the demo's duration should add a margin).
STORY_WALL_SECONDS = STORY_SIM_SECONDS / DEFAULT_SPEED

#: The inner districts of the winter inversion (ids of the district layers).
INNER_DISTRICTS: tuple[str, ...] = ("mitte", "nord", "ost", "sued", "west", "bad-cannstatt")

#: The shared sensor.community archive, relative to the ``shared`` folder beside the repository.
ARCHIVE_RELATIVE = Path("data/sensor-community/stuttgart-sds011-2020-10-01_2020-11-21.csv.gz")
#: The official Stadtbezirke layer (Landeshauptstadt Stuttgart, dl-de/by-2.0), relative to the same folder: its
#: ids, names and numbers are those of the built-in approximate layer, and every demo sensor lies in the same
#: district of both (tests/demo).
OFFICIAL_DISTRICTS_RELATIVE = Path("data/stuttgart/districts.geojson")
#: Start (UTC) of the archive window replayed as the inversion: the worst 30 h of PM10 in the archive
#: (median of the sensors about 41 µg/m³, a real November high-pressure episode; 5 of the 12 sensors report).
ARCHIVE_WINDOW_START = _dt.datetime(2020, 11, 10, 15, 0, tzinfo=_dt.UTC)


def story_wall_seconds(speed: float = DEFAULT_SPEED, story_s: float = STORY_SIM_SECONDS) -> float:
    """Wall-clock seconds the story takes at ``speed``."""
    return story_s / speed


class SimEvent(NamedTuple):
    """One simulated reading: event time, sensor, values, position and wire format."""

    time_ns: int  # simulated event time (ns since the epoch, UTC)
    sensor_id: str
    values: dict[str, float]
    lat: float | None
    lon: float | None
    format: str  # "contract" (reading contract JSON) | "community" (sensor.community push)
    gateway: str | None = None  # contract readings of one gateway and instant travel as one JSON array


@dataclass(frozen=True, slots=True)
class DemoSensor:
    """A row of the demo's sensor registry (``demo_sensors.csv``)."""

    sensor_id: str
    name: str
    hazard: str  # "flood" | "air"
    lat: float
    lon: float
    impact: str = ""  # empty: the containing district; else ';'-separated district ids
    trusted: bool = False  # official stations and gauges count alone in the district quorum
    comment: str = ""


@dataclass(frozen=True, slots=True)
class FloodStages:
    """Rising stages (cm) of the example flood rule and the level at which the alarm is lifted."""

    levels: tuple[float, ...]
    clear: tuple[float, ...]
    names: tuple[str, ...]

    @property
    def all_clear(self) -> float:
        """Below this the gauge is back to level 0."""
        return self.clear[0]


_BUILTIN_STAGES = FloodStages((330.0, 400.0, 480.0, 500.0), (330.0, 400.0, 480.0, 450.0),
                              ("Meldebeginn", "Vorwarnung", "Krisenstab", "Hochwasseralarm"))


def flood_stages(rules_path: Path | None = None) -> FloodStages:
    """The multi-stage water-level rule of the default detection rules (built-in values if absent)."""
    path = rules_path or Path(__file__).resolve().parents[2] / "detection" / "default_rules.toml"
    try:
        rules = tomllib.loads(path.read_text(encoding="utf-8")).get("rules", [])
    except (OSError, tomllib.TOMLDecodeError):
        return _BUILTIN_STAGES
    best = None
    for r in rules:
        usable = r.get("quantity") == "water_level" and r.get("aggregate", "last") in ("last", "mean", "max")
        if usable and (best is None or len(r.get("levels", ())) > len(best.get("levels", ()))):
            best = r
    if not best or not best.get("levels"):
        return _BUILTIN_STAGES
    levels = tuple(float(x) for x in best["levels"])
    clear = tuple(float(x) for x in best.get("clear", levels))
    names = tuple(best.get("level_names", [f"Stufe {i + 1}" for i in range(len(levels))]))
    return FloodStages(levels, clear, names)


# -- the sensors ---------------------------------------------------------------------------------------

#: Positions of the official LUBW/UBA air stations (public facts; ../shared/data/stuttgart/lubw-stations.json).
_LUBW = (
    ("224", "Stuttgart-Bad Cannstatt", 48.8088, 9.2297),
    ("300", "Stuttgart Arnulf-Klett-Platz", 48.7831, 9.1807),
    ("317", "Stuttgart Hohenheimer Straße", 48.7687, 9.1845),
    ("319", "Stuttgart Am Neckartor", 48.7881, 9.1910),
    ("10470", "Stuttgart Hauptstätter Straße", 48.7662, 9.1709),
)
#: The 12 SDS011 sensors of the shared sensor.community archive (esp8266/sensor id, lat, lon).
_ARCHIVE_SENSORS = (
    ("2199", 48.762, 9.168), ("2700", 48.796, 9.204), ("2912", 48.778, 9.166), ("6479", 48.788, 9.200),
    ("10963", 48.784, 9.190), ("12441", 48.804, 9.220), ("13083", 48.790, 9.198),
    ("21810", 48.788, 9.208), ("28589", 48.794, 9.190), ("30030", 48.780, 9.174),
    ("33381", 48.786, 9.166), ("33882", 48.7895, 9.1967),
)
#: Representative points of the inner districts (lat, lon): three synthetic citizen sensors sit around each.
_INNER_POINTS = {
    "mitte": (48.7796, 9.1800), "nord": (48.7967, 9.1764), "ost": (48.7771, 9.2076),
    "sued": (48.7531, 9.1326), "west": (48.7778, 9.1511), "bad-cannstatt": (48.8067, 9.2217),
}
_OFFSETS = ((0.0025, 0.0), (-0.0015, 0.0030), (-0.0015, -0.0030))  # ~250 m around the point
_FEUERBACH = (48.8031, 9.1499)

# The two gauges and the LUBW stations are the rows of geodata's shipped registry (tests check they agree).
GAUGE_PLOCHINGEN = DemoSensor("pegel-plochingen", "Pegel Plochingen (Neckar)", "flood", 48.7125, 9.4186,
                              "obertuerkheim;hedelfingen;untertuerkheim;wangen;ost;bad-cannstatt;muenster;muehlhausen",
                              True, "EXAMPLE: upstream of Stuttgart (outside the city); threatens every riverside "
                                    "district downstream")
GAUGE_STUTTGART = DemoSensor("pegel-stuttgart", "Pegel Stuttgart (Neckar)", "flood", 48.8047, 9.2136,
                             "bad-cannstatt;muenster;muehlhausen;ost", True,
                             "EXAMPLE: Bad Cannstatt; threatens the districts at and downstream of the gauge plus "
                             "Ost (Berg/Gaisburg bank opposite)")
GAUGE_HOFEN = DemoSensor("pegel-hofen", "Pegel Hofen (Neckar) – Demo", "flood", 48.8390, 9.2210, "muehlhausen", True,
                         "DEMO: example gauge that goes silent (stale) in the demo story")
STUCK_SENSOR = "cs-feuerbach-4"


def _inner_synthetic() -> list[tuple[str, str, float, float]]:
    out = []
    for d, district in enumerate(INNER_DISTRICTS):
        lat0, lon0 = _INNER_POINTS[district]
        for k, (dlat, dlon) in enumerate(_OFFSETS, start=1):
            out.append((str(90000 + 100 * (d + 1) + k), district, round(lat0 + dlat, 4), round(lon0 + dlon, 4)))
    return out


def demo_sensors() -> list[DemoSensor]:
    """Every sensor the demo publishes for, in registry order."""
    rows = [GAUGE_PLOCHINGEN, GAUGE_STUTTGART, GAUGE_HOFEN]
    rows += [DemoSensor(f"lubw-{i}", name, "air", lat, lon, "", True, f"official LUBW station (UBA {i})")
             for i, name, lat, lon in _LUBW]
    rows += [DemoSensor(f"sc-{i}", f"sensor.community {i}", "air", lat, lon, "",  False,
                        "DEMO: citizen SDS011 of the 2020 archive (sensor.community contributors, ODbL)")
             for i, lat, lon in _ARCHIVE_SENSORS]
    rows += [DemoSensor(f"sc-{i}", f"Bürgersensor {district} {i}", "air", lat, lon, "", False,
                        "DEMO: synthetic citizen sensor")
             for i, district, lat, lon in _inner_synthetic()]
    lat0, lon0 = _FEUERBACH
    for k, (dlat, dlon) in enumerate((*_OFFSETS, (0.0005, 0.0012)), start=1):
        faulty = "; faulty: stuck near 200 µg/m³" if f"cs-feuerbach-{k}" == STUCK_SENSOR else ""
        rows.append(DemoSensor(f"cs-feuerbach-{k}", f"Bürgersensor Feuerbach {k}", "air",
                               round(lat0 + dlat, 4), round(lon0 + dlon, 4), "", False,
                               f"DEMO: synthetic citizen sensor (reading contract with lat/lon){faulty}"))
    return rows


def registry_csv() -> str:
    """The demo registry as CSV text in geodata's format (``sensor_id,name,hazard,lat,lon,impact,trusted,...``)."""
    buf = io.StringIO()
    buf.write("# stadtwacht demo registry: geodata's shipped Stuttgart rows plus the demo's sensors.\n"
              "# Generated by stadtwacht.demo.scenarios.registry_csv(); gauges are EXAMPLES, citizen sensors DEMO.\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["sensor_id", "name", "hazard", "lat", "lon", "impact", "trusted", "overrides", "comment"])
    for s in demo_sensors():
        w.writerow([s.sensor_id, s.name, s.hazard, f"{s.lat:.4f}", f"{s.lon:.4f}", s.impact,
                    "true" if s.trusted else "false", "", s.comment])
    return buf.getvalue()


_SENSOR = {s.sensor_id: s for s in demo_sensors()}


def _contract(t: int, sid: str, values: dict[str, float], gateway: str | None = None) -> SimEvent:
    s = _SENSOR[sid]
    return SimEvent(t, sid, values, s.lat, s.lon, "contract", gateway)


def _grid(start_ns: int, story_ns: int, step_ns: int) -> Iterator[tuple[int, float]]:
    """(time, story hours) every ``step_ns`` from the start to the end inclusive."""
    for k in range(story_ns // step_ns + 1):
        yield start_ns + k * step_ns, k * step_ns / HOUR_NS


# -- (a) flood wave ------------------------------------------------------------------------------------

def _hydrograph(h: float, onset_h: float, peak_h: float, base: float, peak: float, k: float = 4.0) -> float:
    """A gamma-shaped flood wave: ``base`` until the onset, ``peak`` at ``peak_h``, slow recession."""
    if h <= onset_h:
        return base
    x = (h - onset_h) / (peak_h - onset_h)
    return base + (peak - base) * x**k * math.exp(k * (1.0 - x))


def flood_wave(start_ns: int, story_ns: int, stages: FloodStages | None = None,
               travel_h: float = 5.0, step_ns: int = 15 * MINUTE_NS) -> list[SimEvent]:
    """A Neckar flood wave: Plochingen rises through every stage, Stuttgart follows ``travel_h`` later.

    Peaks 30 cm above the top stage (cf. Plochingen's 5.29 m in June 2013, a ~30-year flood) and falls
    below the all-clear level well before the story ends. Gauges report every 15 minutes.
    """
    st = stages or flood_stages()
    base, peak = 150.0, st.levels[-1] + 30.0
    onset, peak_h = 1.0, 10.0
    out = []
    for t, h in _grid(start_ns, story_ns, step_ns):
        up = _hydrograph(h, onset, peak_h, base, peak)
        down = _hydrograph(h, onset + travel_h, peak_h + travel_h, base + 10.0, peak - 5.0)
        out.append(_contract(t, GAUGE_PLOCHINGEN.sensor_id, {"water_level": round(up, 1)}))
        out.append(_contract(t, GAUGE_STUTTGART.sensor_id, {"water_level": round(down, 1)}))
    return out


# -- (e) gauge goes silent -----------------------------------------------------------------------------

def gauge_silent(start_ns: int, story_ns: int, silent_from_h: float = 12.0,
                 step_ns: int = 15 * MINUTE_NS) -> list[SimEvent]:
    """Gauge Hofen reports a calm level every 15 min, then goes silent for the rest of the story."""
    out = []
    for t, h in _grid(start_ns, story_ns, step_ns):
        if h >= silent_from_h:
            break
        level = 170.0 + 6.0 * math.sin(2 * math.pi * h / 12.5) + 0.5 * math.sin(7.0 * h)
        out.append(_contract(t, GAUGE_HOFEN.sensor_id, {"water_level": round(level, 1)}))
    return out


# -- (b) winter inversion --------------------------------------------------------------------------------

def _inversion_factor(h: float, story_h: float) -> float:
    """PM build-up under the inversion: 1 outside, up to ~5 at the peak, breaking up near the end."""
    build = 1.0 / (1.0 + math.exp(-(h - 0.3 * story_h) / 2.0))
    breakup = 1.0 / (1.0 + math.exp((h - 0.85 * story_h) / 1.0))
    rush = 1.0 + 0.25 * math.exp(-((h % 24.0) - 8.0) ** 2 / 4.0) + 0.2 * math.exp(-((h % 24.0) - 18.0) ** 2 / 4.0)
    return (1.0 + 4.0 * build * breakup) * rush


def _no2_profile(h: float, story_h: float, peak: float) -> float:
    """NO2 at a traffic station: ~55 background, rising over the inversion to ``peak`` around 0.6 of the story."""
    bump = math.exp(-((h - 0.6 * story_h) / (0.08 * story_h)) ** 2)
    return 55.0 * _inversion_factor(h, story_h) ** 0.4 + (peak - 90.0) * bump


def _read_archive(path: Path, start: _dt.datetime, hours: float) -> dict[str, list[tuple[float, float, float]]]:
    """Archive rows in ``[start, start + hours)``: per sensor id, (hours since start, P1, P2)."""
    end = start + _dt.timedelta(hours=hours)
    lo, hi = start.strftime("%Y-%m-%dT%H:%M:%S"), end.strftime("%Y-%m-%dT%H:%M:%S")
    out: dict[str, list[tuple[float, float, float]]] = {}
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        header = next(f).rstrip("\n").split(";")
        i_id, i_ts, i_p1, i_p2 = (header.index(c) for c in ("sensor_id", "timestamp", "P1", "P2"))
        for line in f:
            row = line.rstrip("\n").split(";")
            ts = row[i_ts]
            if ts < lo:
                continue
            if ts >= hi:
                break  # the archive is sorted by time
            try:
                p1, p2 = float(row[i_p1]), float(row[i_p2])
            except ValueError:
                continue
            t = _dt.datetime.fromisoformat(ts).replace(tzinfo=_dt.UTC)
            out.setdefault(row[i_id], []).append(((t - start).total_seconds() / 3600.0, p1, p2))
    return out


def winter_inversion(start_ns: int, story_ns: int, shared_dir: Path | None = None,
                     seed: int = 7) -> list[SimEvent]:
    """A winter inversion: PM10/PM2.5 of citizen sensors and NO2 of the LUBW stations over the inner districts.

    With ``shared_dir`` holding the sensor.community archive, the archive sensors reporting in its worst
    30 h (10-11 Nov 2020: 2700, 10963, 13083, 28589, 33882; 13083 stuck near 190 as in reality) replay
    their real readings; the others, and all of them without the archive, are synthetic (13083 stuck).
    The synthetic sensors of the inner districts follow the
    inversion curve; LUBW NO2 1-h means rise above 200 µg/m³ at Am Neckartor, Arnulf-Klett-Platz and
    Hohenheimer Straße (39. BImSchV limit value).
    """
    rng = np.random.default_rng(seed)
    story_h = story_ns / HOUR_NS
    out: list[SimEvent] = []
    archive = shared_dir / ARCHIVE_RELATIVE if shared_dir else None
    if archive is not None and archive.exists():
        rows = _read_archive(archive, ARCHIVE_WINDOW_START, story_h)
        for sid, series in rows.items():
            if f"sc-{sid}" not in _SENSOR:
                continue
            for h, p1, p2 in series:
                out.append(SimEvent(start_ns + int(h * HOUR_NS), f"sc-{sid}",
                                    {"pm10": p1, "pm2_5": p2}, None, None, "community"))
    else:
        rows = {}
    for sid, _lat, _lon in _ARCHIVE_SENSORS:  # archive sensors silent in the window (or no archive): synthetic
        if sid not in rows:
            out += _synthetic_pm(f"sc-{sid}", start_ns, story_ns, rng, stuck=190.0 if sid == "13083" else None)
    for sid, _district, _lat, _lon in _inner_synthetic():
        out += _synthetic_pm(f"sc-{sid}", start_ns, story_ns, rng)
    peaks = {"lubw-319": 245.0, "lubw-300": 225.0, "lubw-317": 215.0, "lubw-10470": 185.0, "lubw-224": 120.0}
    for t, h in _grid(start_ns, story_ns, 10 * MINUTE_NS):
        for sid, peak in peaks.items():
            no2 = _no2_profile(h, story_h, peak) * (1.0 + 0.03 * rng.standard_normal())
            pm10 = 18.0 * _inversion_factor(h, story_h) * (1.0 + 0.08 * rng.standard_normal())
            out.append(_contract(t, sid, {"no2": round(max(no2, 1.0), 1), "pm10": round(max(pm10, 1.0), 1)},
                                 gateway="lubw"))
    return out


def _synthetic_pm(sid: str, start_ns: int, story_ns: int, rng: np.random.Generator,
                  stuck: float | None = None, step_ns: int = 5 * MINUTE_NS) -> list[SimEvent]:
    """A citizen PM sensor every 5 min (community format): the inversion curve with sensor noise."""
    story_h = story_ns / HOUR_NS
    scale = rng.uniform(0.85, 1.15)
    out = []
    for t, h in _grid(start_ns, story_ns, step_ns):
        if stuck is not None:
            pm10 = stuck * (1.0 + 0.005 * rng.standard_normal())
            pm25 = pm10 * 0.35
        else:
            pm10 = max(1.0, 15.0 * scale * _inversion_factor(h, story_h) * (1.0 + 0.12 * rng.standard_normal()))
            pm25 = pm10 * rng.uniform(0.55, 0.75)
        out.append(SimEvent(t, sid, {"pm10": round(pm10, 2), "pm2_5": round(pm25, 2)}, None, None, "community"))
    return out


# -- (c) ozone afternoon ---------------------------------------------------------------------------------

def ozone_afternoon(start_ns: int, story_ns: int, peak: float = 255.0, peak_h: float = 9.0,
                    seed: int = 11) -> list[SimEvent]:
    """A summer afternoon at the Bad Cannstatt station: O3 climbs past 180 and 240 µg/m³ and falls back.

    (Ozone peaks in summer afternoons; the demo puts this afternoon into the same compressed story.)
    """
    rng = np.random.default_rng(seed)
    out = []
    for t, h in _grid(start_ns, story_ns, 10 * MINUTE_NS):
        o3 = 60.0 + (peak - 60.0) * math.exp(-((h - peak_h) / 3.0) ** 2) + 2.0 * rng.standard_normal()
        out.append(_contract(t, "lubw-224", {"o3": round(max(o3, 1.0), 1)}, gateway="lubw"))
    return out


# -- (d) stuck citizen sensor ------------------------------------------------------------------------------

def stuck_citizen_sensor(start_ns: int, story_ns: int, stuck_at: float = 200.0, seed: int = 13,
                         step_ns: int = 5 * MINUTE_NS) -> list[SimEvent]:
    """Four citizen sensors in Feuerbach (reading contract with lat/lon); one is stuck near 200 µg/m³.

    Its three neighbours read ordinary 10–30 µg/m³, so the district quorum must keep Feuerbach calm.
    """
    rng = np.random.default_rng(seed)
    out = []
    for t, h in _grid(start_ns, story_ns, step_ns):
        for k in range(1, 5):
            sid = f"cs-feuerbach-{k}"
            if sid == STUCK_SENSOR:
                pm10 = stuck_at * (1.0 + 0.004 * rng.standard_normal())
            else:
                pm10 = (18.0 + 6.0 * math.sin(2 * math.pi * (h - 2.0 * k) / 24.0)) * (
                    1.0 + 0.15 * rng.standard_normal())
            out.append(_contract(t, sid, {"pm10": round(max(pm10, 1.0), 1)}, gateway="citizen-feuerbach"))
    return out


#: Scenario name -> function ``(start_ns, story_ns, **opts) -> list[SimEvent]``.
SCENARIOS: dict[str, Callable[..., list[SimEvent]]] = {
    "flood": flood_wave,
    "inversion": winter_inversion,
    "ozone": ozone_afternoon,
    "stuck": stuck_citizen_sensor,
    "silent-gauge": gauge_silent,
}


def story_events(start_ns: int, story_ns: int = STORY_SIM_SECONDS * 1_000_000_000,
                 scenarios: tuple[str, ...] | None = None, shared_dir: Path | None = None) -> list[SimEvent]:
    """All events of the chosen scenarios (default: all), sorted by simulated time."""
    names = scenarios or tuple(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    events: list[SimEvent] = []
    for name in names:
        if name == "inversion":
            events += winter_inversion(start_ns, story_ns, shared_dir=shared_dir)
        else:
            events += SCENARIOS[name](start_ns, story_ns)
    events.sort(key=lambda e: e.time_ns)
    return events
