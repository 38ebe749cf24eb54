"""The /api/state document the control-room page renders (districts, alerts, health, timeline)."""

from __future__ import annotations

import datetime as _dt

import msgspec

from stadtwacht.pipeline import Pipeline

__all__ = ["build_state"]


def _rfc3339(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.UTC).isoformat(timespec="seconds")


def build_state(pipeline: Pipeline, language: str = "de") -> dict:
    """A JSON-ready snapshot; read under the pipeline lock."""
    levels: dict[str, dict[str, int]] = {d: {"flood": 0, "air": 0, "sensor": 0} for d in pipeline.layer.ids}
    health = []
    for lv in pipeline.rollup.current():
        cur = levels.setdefault(lv.district, {"flood": 0, "air": 0, "sensor": 0})
        cur[lv.hazard] = max(cur.get(lv.hazard, 0), lv.level)
        if lv.hazard == "sensor":
            health.extend({"sensor_id": s, "district": lv.district, "kind": lv.quantity,
                           "since": _rfc3339(lv.time_ns)} for s in lv.sensors)
    alerts = pipeline.alerts.active()
    timeline = [msgspec.to_builtins(r) for r in pipeline.alerts.history(100)]
    max_levels: dict[str, int] = {}
    for info in pipeline.engine.rule_info:
        max_levels[info.hazard] = max(max_levels.get(info.hazard, 0), len(info.level_names) - 1)
    return {
        "generated_at": _rfc3339(pipeline.clock_ns()),
        "exercise": pipeline.exercise,
        "approximate": bool(pipeline.layer.approximate),
        "language": language,
        "districts": pipeline.layer.geojson({d: {"levels": lv} for d, lv in levels.items()}),
        "alerts": alerts,
        "timeline": timeline,
        "sensor_health": sorted(health, key=lambda h: (h["district"], h["sensor_id"])),
        "unmapped_sensors": pipeline.mapping.outside_ids() if hasattr(pipeline.mapping, "outside_ids") else [],
        "max_levels": max_levels,
    }
