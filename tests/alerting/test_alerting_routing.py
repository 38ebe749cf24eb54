"""Routing table: hazard/level/district/event to channel tags."""

from __future__ import annotations

import pytest

from alerting.config import RouteConfig
from alerting.episodes import step
from alerting.routing import Router
from tests.alerting.alerting_helpers import level

CHANNELS = {"leitstelle": ("control-room",), "kats": ("kats",), "umwelt": ("environment",),
            "cannstatt-ov": ("local-cannstatt",)}
ROUTES = [
    RouteConfig(hazard="flood", districts=["bad-cannstatt"], tags=["local-cannstatt"], **{"continue_": True}),
    RouteConfig(hazard="flood", min_level=3, tags=["control-room", "kats"]),
    RouteConfig(hazard="flood", min_level=1, max_level=2, tags=["control-room"]),
    RouteConfig(hazard="air", min_level=1, max_level=1, tags=["environment"]),
    RouteConfig(hazard="air", min_level=2, tags=["environment", "control-room"]),
    RouteConfig(hazard="sensor", events=["firing"], tags=["environment"]),
]

TABLE = [
    ("mitte", "flood", 3, ("control-room", "kats")),
    ("mitte", "flood", 4, ("control-room", "kats")),
    ("mitte", "flood", 1, ("control-room",)),
    ("bad-cannstatt", "flood", 3, ("control-room", "kats", "local-cannstatt")),
    ("mitte", "air", 1, ("environment",)),
    ("mitte", "air", 2, ("control-room", "environment")),
    ("mitte", "sensor", 1, ("environment",)),
]


@pytest.mark.parametrize(("district", "hazard", "lv", "tags"), TABLE)
def test_routing_table(district, hazard, lv, tags):
    router = Router(ROUTES, CHANNELS)
    q = {"flood": "water_level", "air": "pm10", "sensor": "stuck"}[hazard]
    _, rec = step(None, level(district, lv, hazard=hazard, quantity=q))
    assert router.tags_for(rec) == tags


def test_event_filter_and_channels_for():
    router = Router(ROUTES, CHANNELS)
    ep, _ = step(None, level("mitte", 1, hazard="sensor", quantity="stuck"))
    _, upd = step(ep, level("mitte", 2, hazard="sensor", quantity="stuck"))
    assert router.tags_for(upd) == ()
    assert router.channels_for(["kats", "control-room"]) == ["leitstelle", "kats"]


def test_no_routes_means_everyone():
    router = Router([], CHANNELS)
    _, rec = step(None, level("mitte", 1))
    assert set(router.tags_for(rec)) == {"control-room", "kats", "environment", "local-cannstatt"}
