"""Helpers for alerting tests: level builders, fake clock, file channels (receivers: ``tests.support.receivers``)."""

from __future__ import annotations

import json

from alerting.config import AlertingConfig, ChannelConfig, RouteConfig
from geodata.levels import DistrictLevel

T0 = 1_750_000_000_000_000_000  # 2025-06-15T15:06:40Z
S = 1_000_000_000


def level(district: str, lv: int, *, hazard: str = "flood", quantity: str = "water_level", t: int = T0,
          value: float | None = None, name: str | None = None, sensors: tuple[str, ...] = ("pegel-1",),
          level_name: str | None = None) -> DistrictLevel:
    """A DistrictLevel for tests (names default to the id title-cased)."""
    names = {0: "normal", 1: "Vorwarnung", 2: "Warnung", 3: "Unwetter", 4: "Extrem"}
    return DistrictLevel(district=district, district_name=name or district.title(), hazard=hazard,
                         quantity=quantity, rule="static", level=lv,
                         level_name=level_name or names.get(lv, f"L{lv}"),
                         value=100.0 * lv + 5 if value is None else value, threshold=100.0 * lv,
                         sensors=sensors if lv else (), time_ns=t)


class FakeClock:
    """An injectable ns clock that only moves when told."""

    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


def file_config(tmp_path, **kw) -> AlertingConfig:
    """Three file channels (control room, civil protection, environment office) and the issue's routes."""
    chans = [ChannelConfig(name="leitstelle", url=f"file://{tmp_path}/leitstelle.jsonl", tags=["control-room"]),
             ChannelConfig(name="kats", url=f"file://{tmp_path}/kats.jsonl", tags=["kats"]),
             ChannelConfig(name="umwelt", url=f"file://{tmp_path}/umwelt.jsonl", tags=["environment"])]
    routes = [RouteConfig(hazard="flood", min_level=3, tags=["control-room", "kats"]),
              RouteConfig(hazard="flood", min_level=1, max_level=2, tags=["control-room"],
                          escalate_after="10m", escalate_tags=["kats"]),
              RouteConfig(hazard="air", min_level=1, max_level=1, tags=["environment"]),
              RouteConfig(hazard="air", min_level=2, tags=["environment", "control-room"])]
    base = {"channels": chans, "routes": routes, "group_wait": "30s", "repeat_interval": "1h"}
    base.update(kw)
    return AlertingConfig(**base)


def read_file_channel(tmp_path, name: str) -> list[dict]:
    p = tmp_path / f"{name}.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]
