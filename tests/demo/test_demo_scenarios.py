"""The demo scenarios: shapes the story promises (flood stages, travel time, stuck sensor, quorum sizes)."""

from __future__ import annotations

import csv
import itertools
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from stadtwacht.demo import scenarios as sc

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
STORY_NS = sc.STORY_SIM_SECONDS * 1_000_000_000
START = 1_790_000_000 * 1_000_000_000


def _series(events: list[sc.SimEvent], sensor: str, quantity: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(e.time_ns, e.values[quantity]) for e in events if e.sensor_id == sensor and quantity in e.values]
    t, v = np.array(rows).T
    return t, v


def _levels_with_hysteresis(values: np.ndarray, stages: sc.FloodStages) -> list[int]:
    """Reference: level k while value >= levels[k-1]; once at k it only drops when value < clear[k-1]."""
    out, cur = [], 0
    for v in values:
        up = sum(v >= lv for lv in stages.levels)
        while cur > up and v < stages.clear[cur - 1]:
            cur -= 1
        cur = max(cur, up)
        out.append(cur)
    return out


def test_flood_stages_match_default_rules() -> None:
    stages = sc.flood_stages()
    assert stages.levels == (330.0, 400.0, 480.0, 500.0)
    assert stages.clear[-1] == 450.0
    assert len(stages.names) == 4


@pytest.mark.parametrize("gauge", ["pegel-plochingen", "pegel-stuttgart"])
def test_flood_wave_crosses_every_stage_in_order_and_clears(gauge: str) -> None:
    stages = sc.flood_stages()
    events = sc.flood_wave(START, STORY_NS, stages)
    _, v = _series(events, gauge, "water_level")
    levels = _levels_with_hysteresis(v, stages)
    changes = [b for a, b in itertools.pairwise(levels) if a != b]
    top = len(stages.levels)
    # up through 1, 2, ..., top one stage at a time, then strictly down to 0
    assert changes[:top] == list(range(1, top + 1))
    falling = changes[top:]
    assert falling == sorted(set(falling), reverse=True) and falling[-1] == 0
    # the alarm is lifted only below its clear level (450 cm), not when falling below 500 cm
    drop = next(i for i in range(1, len(levels)) if levels[i - 1] == top and levels[i] < top)
    assert v[drop] < stages.clear[-1] <= v[drop - 1]
    assert any(stages.clear[-1] <= x < stages.levels[-1] for x in v[drop - 8:drop])
    assert v[-1] < stages.all_clear
    assert v.max() > stages.levels[-1]


def test_upstream_gauge_peaks_about_five_hours_earlier() -> None:
    events = sc.flood_wave(START, STORY_NS)
    t_up, v_up = _series(events, "pegel-plochingen", "water_level")
    t_dn, v_dn = _series(events, "pegel-stuttgart", "water_level")
    lag_h = (t_dn[v_dn.argmax()] - t_up[v_up.argmax()]) / 3.6e12
    assert 4.5 <= lag_h <= 5.5
    # and the upstream gauge reaches the first stage earlier too
    first = sc.flood_stages().levels[0]
    assert t_up[np.argmax(v_up >= first)] < t_dn[np.argmax(v_dn >= first)]


def test_stuck_sensor_is_constant_within_two_percent_and_neighbours_are_not() -> None:
    events = sc.stuck_citizen_sensor(START, STORY_NS)
    _, v = _series(events, sc.STUCK_SENSOR, "pm10")
    assert len(v) >= 20
    assert np.all(np.abs(v / 200.0 - 1.0) <= 0.02)
    for k in (1, 2, 3):
        _, n = _series(events, f"cs-feuerbach-{k}", "pm10")
        assert n.max() < 50.0  # healthy neighbours stay far below the PM10 limit: no quorum for 200
        assert n.std() / n.mean() > 0.05  # and they are not stuck themselves


def test_gauge_goes_silent_and_stays_silent() -> None:
    events = sc.gauge_silent(START, STORY_NS, silent_from_h=12.0)
    t = np.array([e.time_ns for e in events])
    assert len(t) > 10
    assert t.max() < START + 12 * sc.HOUR_NS
    assert START + STORY_NS - t.max() > 10 * sc.HOUR_NS


def test_ozone_crosses_180_then_240_and_falls_back() -> None:
    events = sc.ozone_afternoon(START, STORY_NS)
    _t, v = _series(events, "lubw-224", "o3")
    # 1-h rolling mean as the rule computes it (readings every 10 minutes)
    mean = np.convolve(v, np.ones(6) / 6, mode="valid")
    assert mean.max() >= 240.0
    t180, t240 = np.argmax(mean >= 180.0), np.argmax(mean >= 240.0)
    assert t180 < t240
    assert mean[-1] < 180.0


@pytest.mark.parametrize("shared", [False, True], ids=["synthetic", "archive"])
def test_inversion_no2_above_limit_and_pm_on_inner_districts(shared: bool) -> None:
    if shared and not (SHARED / sc.ARCHIVE_RELATIVE).exists():
        pytest.skip("../shared/data (sensor.community archive) is absent: archive replay not tested")
    events = sc.winter_inversion(START, STORY_NS, shared_dir=SHARED.resolve() if shared else None)
    assert all(START <= e.time_ns <= START + STORY_NS for e in events)
    _, no2 = _series(events, "lubw-319", "no2")
    assert np.convolve(no2, np.ones(6) / 6, mode="valid").max() > 200.0
    community = [e for e in events if e.format == "community"]
    assert {e.sensor_id for e in community} >= {f"sc-{i}" for i, _, _ in sc._ARCHIVE_SENSORS}
    assert all(e.sensor_id.startswith("sc-") and e.lat is None for e in community)
    if shared:  # the real archive's fault comes along: 13083 stuck near 190
        _, stuck = _series(events, "sc-13083", "pm10")
        assert len(stuck) > 100 and 150 < np.median(stuck) < 230
    else:  # synthetic PM10 of the inner districts climbs past the daily-mean limit
        _, pm = _series(events, "sc-90101", "pm10")
        assert pm.max() > 50.0 and pm[:12].mean() < 30.0


def test_registry_has_three_citizen_sensors_per_inner_district() -> None:
    per = Counter(s.comment.startswith("DEMO: synthetic") and s.name.split()[1] for s in sc.demo_sensors())
    for d in sc.INNER_DISTRICTS:
        assert per[d] >= 3, d


def test_inner_citizen_sensors_lie_in_their_district_of_both_layers() -> None:
    import pyproj
    import shapely

    from geodata.demo import DEMO_DISTRICTS, demo_geometries

    geoms = demo_geometries()
    ids = [d[0] for d in DEMO_DISTRICTS]
    to_metric = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:25832", always_xy=True)
    layers = [("demo", geoms, ids, to_metric)]
    official = SHARED / "data" / "stuttgart" / "districts.geojson"
    if official.exists():
        import geopandas as gpd

        g = gpd.read_file(official)
        layers.append(("official", g.geometry.values, list(g["id"]), None))
    for sid, district, lat, lon in sc._inner_synthetic():
        for name, layer, layer_ids, tr in layers:
            x, y = tr.transform(lon, lat) if tr else (lon, lat)
            inside = [layer_ids[i] for i in range(len(layer)) if shapely.contains_xy(layer[i], x, y)]
            assert inside == [district], (sid, name, inside)


def test_demo_registry_file_is_current_and_loads_with_geodata() -> None:
    from geodata.registry import SensorRegistry

    path = REPO / "stadtwacht" / "demo" / "demo_sensors.csv"
    assert path.read_text(encoding="utf-8") == sc.registry_csv(), "regenerate with scenarios.registry_csv()"
    reg = SensorRegistry.from_csv(path)
    published = {e.sensor_id for e in sc.story_events(START, STORY_NS)}
    assert published <= {s.sensor_id for s in reg.sensors}
    assert all(reg.get(s).trusted for s in published if s.startswith(("lubw-", "pegel-")))


def test_demo_registry_repeats_the_shipped_rows() -> None:
    shipped = REPO / "geodata" / "stuttgart_sensors.csv"
    if not shipped.exists():
        pytest.skip("geodata/stuttgart_sensors.csv not present")
    demo = {s.sensor_id: s for s in sc.demo_sensors()}
    with shipped.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    for r in rows:
        s = demo[r["sensor_id"]]
        assert (s.lat, s.lon, s.impact, s.trusted) == (float(r["lat"]), float(r["lon"]), r["impact"],
                                                       r["trusted"] == "true"), r["sensor_id"]


def test_story_is_sorted_and_air_gateways_batch() -> None:
    events = sc.story_events(START, STORY_NS, shared_dir=None)
    t = [e.time_ns for e in events]
    assert t == sorted(t)
    by_gateway = defaultdict(set)
    for e in events:
        if e.gateway:
            by_gateway[e.gateway].add(e.sensor_id)
    assert len(by_gateway["lubw"]) == 5
    assert sc.story_wall_seconds() == pytest.approx(sc.STORY_WALL_SECONDS) == 180.0
    with pytest.raises(ValueError, match="unknown scenario"):
        sc.story_events(START, STORY_NS, scenarios=("tsunami",))
