"""The /api/state document the control-room page renders (districts, alerts, health, timeline)."""

from __future__ import annotations

import datetime as _dt

import msgspec

from stadtwacht.pipeline import Pipeline

__all__ = ["build_state"]


def _rfc3339(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.UTC).isoformat(timespec="seconds")


def _trend(pipeline: Pipeline, alert_id: str) -> str:
    """Rising, falling or steady: the level (then the value) of the episode's last event against the one before."""
    recs = pipeline.alerts.episode_records(alert_id)
    if len(recs) < 2:
        return "rising"  # a new episode: up from level 0
    a, b = recs[-2], recs[-1]
    diff = (b.level > a.level) - (b.level < a.level) or (b.value > a.value) - (b.value < a.value)
    return {1: "rising", -1: "falling"}.get(diff, "steady")


def _page_alert(pipeline: Pipeline, a: dict) -> dict:
    """An active alert in the page's shape: the alert record's district lists and a trend added."""
    district = a.get("district")
    return {**a, "districts": a.get("districts", [district] if district else []),
            "district_names": a.get("district_names", [a.get("district_name") or district] if district else []),
            "trend": a.get("trend") or _trend(pipeline, a["alert_id"])}


def _sensor_name(pipeline: Pipeline, sensor_id: str) -> str | None:
    """The registry's name for people (None: not registered, e.g. a citizen sensor)."""
    reg = pipeline.registry.get(sensor_id)
    return reg.name if reg is not None and reg.name != sensor_id else None


def build_state(pipeline: Pipeline, language: str = "de") -> dict:
    """A JSON-ready snapshot; read under the pipeline lock."""
    levels: dict[str, dict[str, int]] = {d: {"flood": 0, "air": 0, "sensor": 0} for d in pipeline.layer.ids}
    watched = pipeline.watched_districts
    health = []
    for lv in pipeline.rollup.current():
        cur = levels.setdefault(lv.district, {"flood": 0, "air": 0, "sensor": 0})
        cur[lv.hazard] = max(cur.get(lv.hazard, 0), lv.level)
        if lv.hazard == "sensor":
            health.extend({"sensor_id": s, "sensor_name": _sensor_name(pipeline, s), "district": lv.district,
                           "district_name": lv.district_name, "kind": lv.quantity,
                           "since": _rfc3339(lv.time_ns)} for s in lv.sensors)
    alerts = [_page_alert(pipeline, a) for a in pipeline.alerts.active()]
    # with several instances: what the others decide, from their episode changelog (once read to its end,
    # a district with no episode there is known to be at level 0)
    city = pipeline.city_view if watched is not None else None
    shown = city is not None and city.caught_up
    if city is not None:
        for ep in city.episodes(skip=watched):
            cur = levels.setdefault(ep.district, {"flood": 0, "air": 0, "sensor": 0})
            cur[ep.hazard] = max(cur.get(ep.hazard, 0), ep.level)
            if ep.hazard == "sensor":
                health.extend({"sensor_id": s, "sensor_name": _sensor_name(pipeline, s), "district": ep.district,
                               "district_name": ep.district_name, "kind": ep.quantity,
                               "since": _rfc3339(ep.started_ns), "remote": True} for s in ep.sensors)
        alerts += [_page_alert(pipeline, a) for a in pipeline.remote_alerts()]
    timeline = [msgspec.to_builtins(r) for r in pipeline.alert_history(100)]
    max_levels: dict[str, int] = {}
    for info in pipeline.engine.rule_info:
        max_levels[info.hazard] = max(max_levels.get(info.hazard, 0), len(info.level_names) - 1)
    return {
        "generated_at": _rfc3339(pipeline.clock_ns()),
        # the pipeline's event-time clock (newest reading): alert ages count on it, as stale detection does;
        # in the demo it is the story's compressed clock, in service the wall clock give or take the latency
        "now": _rfc3339(pipeline.now_ns()),
        "exercise": pipeline.exercise,
        "approximate": bool(pipeline.layer.approximate),
        "language": language,
        # watched: the page knows the district's levels (decided here, or read from the deciding instance)
        "districts": pipeline.layer.geojson({d: {"levels": lv, "watched": watched is None or d in watched or shown}
                                             for d, lv in levels.items()}),
        # with several instances (district topic): the districts another instance decides; "elsewhere_shown":
        # their levels and alerts are shown from that instance's changelog (acknowledgements are forwarded)
        "elsewhere": [] if watched is None else [d for d in pipeline.layer.ids if d not in watched],
        "elsewhere_shown": shown,
        "alerts": alerts,
        "timeline": timeline,
        "sensor_health": sorted(health, key=lambda h: (h["district"], h["sensor_id"])),
        "unmapped_sensors": pipeline.mapping.outside_ids() if hasattr(pipeline.mapping, "outside_ids") else [],
        "max_levels": max_levels,
    }
