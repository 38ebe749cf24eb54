"""The control-room page against a real HTTP server, alert API and AlertService (fake clock, no broker), in headless
Chromium: an acknowledgement is cleared on the page when the level rises, the silence button silences up to the
row's level (a rise breaks through), and the active silences are listed and can be lifted."""

from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from alerting.api import AlertApi
from alerting.config import AlertingConfig
from alerting.episodes import rfc3339
from alerting.service import AlertService
from stadtwacht.http import HttpServer, StateFeed
from stadtwacht.state_view import _page_alert
from tests.alerting.alerting_helpers import T0, FakeClock
from tests.alerting.test_alerting_operator import Inbox, flood

TOKEN = "page-token-1"
M = 60 * 10**9

pytestmark = [pytest.mark.browser]


@pytest.fixture
def desk(tmp_path):
    clock = FakeClock()
    duty = Inbox("duty")
    svc = AlertService(AlertingConfig(group_wait="0s", group_rules=[], routes=[], repeat_interval="4h"),
                       tmp_path / "state", {"bad-cannstatt": "Bad Cannstatt"}, CollectorRegistry(), clock=clock,
                       channels={"duty": duty})
    lock = threading.RLock()
    square = [[[9.20, 48.80], [9.25, 48.80], [9.25, 48.82], [9.20, 48.82], [9.20, 48.80]]]

    def state() -> dict:
        alerts = [_page_alert(SimpleNamespace(alerts=svc), a) for a in svc.active()]
        level = max((a["level"] for a in alerts), default=0)
        return {"generated_at": rfc3339(clock.now), "now": rfc3339(clock.now), "exercise": False,
                "approximate": False, "language": "de", "elsewhere": [], "elsewhere_shown": False,
                "districts": {"type": "FeatureCollection", "features": [
                    {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square},
                     "properties": {"id": "bad-cannstatt", "name": "Bad Cannstatt",
                                    "levels": {"flood": level, "air": 0, "sensor": 0}}}]},
                "alerts": alerts, "timeline": [], "sensor_health": [], "unmapped_sensors": [],
                "max_levels": {"flood": 4}}

    feed = StateFeed(state, lock)
    api = AlertApi(svc, TOKEN, lock=lock, on_change=feed.changed)
    server = HttpServer("127.0.0.1", 0, CollectorRegistry(), api, feed, lambda: (True, {}), None,
                        svc.active_records).start()

    def level(lv: int, minute: float) -> None:
        with lock:
            clock.now = T0 + int(minute * M)
            svc.apply([flood(lv, minute)])
            svc.deliver_pending()
        feed.changed()

    yield SimpleNamespace(svc=svc, duty=duty, clock=clock, level=level, url=f"http://127.0.0.1:{server.port}")
    server.stop()
    svc.close()


def test_page_ack_cleared_by_a_rise_silence_up_to_the_level_and_lift(desk, chromium):
    desk.level(1, 0)
    aid = desk.svc.active()[0]["alert_id"]
    page = chromium.new_page(locale="de-DE")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(desk.url + "/")
    row = page.locator(f'#alerts tr[data-alert-id="{aid}"]')
    row.wait_for(timeout=10_000)
    assert page.locator("#silences-block").is_hidden()  # not logged in: no list
    page.fill("#login-operator", "Müller")
    page.fill("#login-token", TOKEN)
    page.click('#login-form button[type="submit"]')
    page.wait_for_selector("#silences-block:not([hidden]) #no-silences:not([hidden])", timeout=10_000)

    # acknowledge and silence at Meldebeginn (level 1)
    row.locator('button[data-action="ack"]').click()
    row.locator(".acked-by").wait_for(timeout=10_000)
    row.locator('button[data-action="silence"]').click()
    item = page.locator("#silences li")
    item.wait_for(timeout=10_000)
    assert "bis Stufe 1" in item.inner_text() and "Bad Cannstatt" in item.inner_text()
    [sil] = desk.svc.silences()
    assert sil["max_level"] == 1 and sil["created_by"] == "Müller"
    assert [t.split(" – ")[0] for t, _ in desk.duty.got] == ["WARNUNG: Hochwasser"]

    # Hochwasseralarm: the acknowledgement no longer holds, the silence does not cover it
    desk.level(4, 30)
    page.wait_for_selector(f'#alerts tr[data-alert-id="{aid}"][data-level="4"]', timeout=10_000)
    assert row.locator(".acked-by").count() == 0
    assert row.locator('button[data-action="ack"]').is_enabled()
    assert row.locator('button[data-action="silence"]').count() == 1  # not silenced
    assert "quittiert" not in row.inner_text()
    assert desk.duty.got[-1][0].startswith("AKTUALISIERUNG: Hochwasser – Hochwasseralarm")

    # lift the silence from the list
    item.locator("button[data-unsilence]").click()
    page.wait_for_selector("#no-silences:not([hidden])", timeout=10_000)
    assert page.locator("#silences li").count() == 0
    assert desk.svc.silences() == []
    assert errors == [], errors
    page.close()


def test_a_notification_link_opens_the_page_at_its_alert(desk, chromium):
    """A message about one alert links to its row (``public_url/#alert-<id>``): the page marks that row, and only
    that one, and scrolls it into view."""
    from alerting.templates import render_event_message

    desk.level(2, 0)
    (first,) = desk.svc.history()
    _, body = render_event_message([(first, 0)], public_url=desk.url)
    link = next(line for line in body.splitlines() if line.startswith("Bestätigen: ")).removeprefix("Bestätigen: ")
    assert link == f"{desk.url}/#alert-{first.alert_id}"
    with desk.svc._lock:  # a second alert, in another district, listed above it
        desk.svc.apply([replace(flood(4, 1), district="muenster", district_name="Münster")])
    page = chromium.new_page(locale="de-DE", viewport={"width": 700, "height": 240})
    page.goto(link)
    row = page.locator(f'#alerts tr[data-alert-id="{first.alert_id}"]')
    row.wait_for(timeout=10_000)
    assert "linked" in row.get_attribute("class")
    assert page.locator("#alerts tr.linked").count() == 1
    assert row.is_visible() and page.evaluate(
        "(r => { const b = r.getBoundingClientRect(); return b.top >= 0 && b.bottom <= innerHeight; })"
        f'(document.getElementById("alert-{first.alert_id}"))')
