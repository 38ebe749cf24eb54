"""Page test of the control-room page alone, in real headless Chromium.

A small real HTTP server started by the test serves ``stadtwacht/web/`` plus a fixed ``/api/state``
document built here (and pushed again over ``/events``) and records the POSTs the page makes. This
tests the page against the documented data contract; the end-to-end test with the real pipeline is
the lead's.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "stadtwacht" / "web"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
TOKEN = "demo-token-123"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


def _alert(alert_id: str, hazard: str, quantity: str, level: int, name: str, districts: list[str],
           names: list[str], sensors: list[str], value: float, threshold: float, rule: str, trend: str,
           started: str) -> dict:
    return {"alert_id": alert_id, "seq": 3, "event": "update", "hazard": hazard, "quantity": quantity,
            "level": level, "level_name": name, "districts": districts, "district_names": names,
            "sensors": sensors, "value": value, "threshold": threshold, "rule": rule, "started_at": started,
            "time": started, "acked_by": None, "acked_at": None, "silenced": False, "trend": trend}


def _state() -> dict:
    from geodata.districts import DistrictLayer

    layer = DistrictLayer.demo()
    flood = {"bad-cannstatt": 4, "muenster": 4, "muehlhausen": 4, "ost": 4, "wangen": 3, "untertuerkheim": 3,
             "hedelfingen": 2, "obertuerkheim": 1}
    air = {"mitte": 1, "nord": 1, "ost": 1, "bad-cannstatt": 2}
    levels = {d: {"levels": {"flood": flood.get(d, 0), "air": air.get(d, 0),
                             "sensor": 1 if d == "muehlhausen" else 0}} for d in layer.ids}
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    earlier = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3 * 3600 - 125))
    alerts = [
        _alert("flood-bad-cannstatt-1", "flood", "water_level", 4, "Hochwasseralarm",
               ["bad-cannstatt", "muenster", "muehlhausen", "ost"], ["Bad Cannstatt", "Münster", "Mühlhausen", "Ost"],
               ["pegel-stuttgart"], 512.0, 500.0, "neckar-pegel-beispiel", "rising", earlier),
        _alert("air-mitte-no2-1", "air", "no2", 1, "Grenzwertüberschreitung", ["mitte", "nord", "ost"],
               ["Mitte", "Nord", "Ost"], ["lubw-319", "lubw-300"], 231.4, 200.0, "no2-1h", "steady", earlier),
    ]
    timeline = [{k: v for k, v in a.items() if k not in ("acked_by", "acked_at", "silenced", "trend")}
                for a in alerts]
    return {"generated_at": now, "exercise": True, "approximate": True, "language": "de",
            "districts": layer.geojson(levels), "alerts": alerts, "timeline": timeline,
            "sensor_health": [{"sensor_id": "pegel-hofen", "sensor_name": "Pegel Hofen (Neckar) – Demo",
                               "district": "muehlhausen", "kind": "stale", "since": now},
                              {"sensor_id": "cs-feuerbach-4", "district": "feuerbach", "kind": "stuck", "since": now}],
            "max_levels": {"flood": 4, "air": 2, "sensor": 1}}


class PageServer:
    """Serves the static page, a fixed state (replaceable: pushed over SSE) and records POSTs."""

    def __init__(self, state: dict) -> None:
        self.state = state
        self.version = 1
        self.posts: list[dict] = []
        self.closing = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Security-Policy",
                                 "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/api/state":
                    return self._send(200, json.dumps(outer.state).encode(), "application/json")
                if path == "/events":
                    return self._events()
                if path == "/api/silences":  # the page lists them when logged in
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                        return self._send(401, b'{"error": "unauthorized"}', "application/json")
                    return self._send(200, b'{"silences": []}', "application/json")
                name = "index.html" if path == "/" else path.lstrip("/")
                f = (WEB / name).resolve()
                if WEB not in f.parents or not f.is_file():
                    return self._send(404, b"not found", "text/plain")
                ctype = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                         ".css": "text/css; charset=utf-8"}.get(f.suffix, "application/octet-stream")
                self._send(200, f.read_bytes(), ctype)

            def _events(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = 0
                try:
                    while not outer.closing.is_set():
                        if outer.version != seen:
                            seen = outer.version
                            self.wfile.write(b"event: state\ndata: " + json.dumps(outer.state).encode() + b"\n\n")
                        else:
                            self.wfile.write(b": keep-alive\n\n")
                        self.wfile.flush()
                        outer.closing.wait(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rec = {"path": self.path, "authorization": self.headers.get("Authorization"),
                       "body": json.loads(body or b"null")}
                outer.posts.append(rec)
                if rec["authorization"] != f"Bearer {TOKEN}":
                    return self._send(401, b'{"error": "unauthorized"}', "application/json")
                if "remote" in self.path:  # alerting/api.py: an alert another instance decides
                    return self._send(202, b'{"forwarded": "x"}', "application/json")
                if self.path == "/api/silences" and "remote" in json.dumps(rec["body"]):  # sharing it failed
                    return self._send(201, json.dumps({"silence": {"id": "s1"}, "shared": False, "warning": (
                        "done on this instance only: sharing it failed")}).encode(), "application/json")
                status = 201 if self.path == "/api/silences" else 200
                self._send(status, b'{"ok": true}', "application/json")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def push(self, state: dict) -> None:
        self.state = state
        self.version += 1

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def browser_page():
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian chromium not installed (tests/setup-system.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            yield page, errors
        finally:
            browser.close()


def test_page_flood_alarm_ack_silence_and_live_update(browser_page) -> None:
    page, errors = browser_page
    state = _state()
    with PageServer(state) as srv:
        page.goto(srv.url + "/")
        bc = page.locator('#districts path[data-district="bad-cannstatt"]')
        bc.wait_for()
        page.wait_for_selector('#districts path[data-district="bad-cannstatt"][data-level="4"]')
        # the alarm colour: the top level of the hazard is hatched alarm purple; level 0 elsewhere is neutral
        assert bc.get_attribute("fill") == "url(#alarm-hatch)"
        assert bc.get_attribute("data-colour") == "#6a176e"
        assert page.locator('#districts path[data-district="vaihingen"]').get_attribute("data-level") == "0"
        assert page.locator('#labels text[data-label="bad-cannstatt"]').text_content().endswith("Stufe 4")
        assert page.locator("#banner-exercise").is_visible()
        assert page.locator("#banner-approximate").is_visible()
        assert page.locator("#districts path").count() == 23

        row = page.locator('#alerts tr[data-alert-id="flood-bad-cannstatt-1"]')
        assert row.is_visible()
        assert "Bad Cannstatt" in row.inner_text() and "512" in row.inner_text()
        assert "steigend" in row.inner_text()
        ack = row.locator('button[data-action="ack"]')
        assert ack.is_disabled()  # not logged in
        assert page.locator("#health li").count() == 2
        # a registered sensor by its name and id, a citizen sensor (no name) by its id
        hofen = page.locator('#health li[data-sensor-id="pegel-hofen"]')
        assert hofen.locator(".sensor-name").inner_text().strip() == "Pegel Hofen (Neckar) – Demo"
        assert hofen.locator("code").inner_text() == "pegel-hofen"
        assert page.locator('#health li[data-sensor-id="cs-feuerbach-4"] .sensor-name').count() == 0

        # a wrong token: the API answers 401 and the page says so
        page.fill("#login-operator", "Erika Muster")
        page.fill("#login-token", "wrong")
        page.click('#login-form button[type="submit"]')
        page.wait_for_selector("#error:not([hidden])")  # the silences list, asked for at login, is refused
        assert "401" in page.locator("#error").inner_text()
        assert ack.is_disabled()  # logged out again

        page.fill("#login-operator", "Erika Muster")
        page.fill("#login-token", TOKEN)
        page.click('#login-form button[type="submit"]')
        assert page.locator("#operator-name").inner_text() == "Erika Muster"
        row.locator('button[data-action="ack"]').click()
        page.wait_for_selector('#alerts tr[data-alert-id="flood-bad-cannstatt-1"] .acked-by')
        acks = [p for p in srv.posts if p["authorization"] == f"Bearer {TOKEN}"]
        assert acks == [{"path": "/api/alerts/flood-bad-cannstatt-1/ack", "authorization": f"Bearer {TOKEN}",
                         "body": {"operator": "Erika Muster", "level": 4}}]  # the level it saw: 409 if it rose

        page.select_option("#silence-duration", "6h")
        page.locator('#alerts tr[data-alert-id="air-mitte-no2-1"] button[data-action="silence"]').click()
        page.wait_for_selector('#alerts tr[data-alert-id="air-mitte-no2-1"] .silenced-tag')
        sil = srv.posts[-1]
        assert sil["path"] == "/api/silences" and sil["authorization"] == f"Bearer {TOKEN}"
        assert sil["body"]["districts"] == ["mitte", "nord", "ost"] and sil["body"]["hazard"] == "air"
        assert sil["body"]["duration"] == "6h" and sil["body"]["created_by"] == "Erika Muster"

        # hazard selector recolours the map
        page.click('#hazard-select label:has(input[value="air"])')
        page.wait_for_selector('#districts path[data-district="bad-cannstatt"][data-level="2"]')
        assert page.locator('#districts path[data-district="mitte"]').get_attribute("data-level") == "1"
        page.click('#hazard-select label:has(input[value="flood"])')

        # a new alert over SSE appears live and is announced (aria-live)
        new = _state()
        new["alerts"][0]["acked_by"] = "Erika Muster"
        new["alerts"].append(_alert("air-bad-cannstatt-o3-1", "air", "o3", 2, "Alarmschwelle", ["bad-cannstatt"],
                                    ["Bad Cannstatt"], ["lubw-224"], 247.0, 240.0, "o3-1h", "rising",
                                    new["generated_at"]))
        srv.push(new)
        page.wait_for_selector('#alerts tr[data-alert-id="air-bad-cannstatt-o3-1"]')
        assert "Bad Cannstatt" in page.locator("#announcer").inner_text()
        assert page.locator("#alert-count").inner_text() == "3"
        assert page.locator("#conn").get_attribute("data-state") == "live"

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "control-room.png"), full_page=True)

        # English
        page.click("#lang-toggle")
        assert page.locator("#alerts-heading").inner_text().startswith("Active alerts")
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.locator("#conn-text").inner_text() == "Live"
        page.screenshot(path=str(ARTIFACTS / "control-room-en.png"), full_page=True)
    assert [e for e in errors if "401" not in e] == []


def test_page_greys_out_districts_another_instance_watches(browser_page) -> None:
    """Scale-out: a district another instance decides is unknown here, never shown as normal."""
    page, errors = browser_page
    state = _state()
    elsewhere = ["vaihingen", "moehringen"]
    state["elsewhere"] = elsewhere
    for f in state["districts"]["features"]:
        f["properties"]["watched"] = f["properties"]["id"] not in elsewhere
    with PageServer(state) as srv:
        page.goto(srv.url + "/")
        page.wait_for_selector('#districts path[data-district="vaihingen"][data-watched="false"]')
        vaihingen = page.locator('#districts path[data-district="vaihingen"]')
        assert vaihingen.get_attribute("data-level") is None
        assert vaihingen.get_attribute("fill") == "#9a9a9a"
        assert page.locator('#labels text[data-label="vaihingen"]').text_content().endswith("?")
        assert page.locator('#districts path[data-district="ost"]').get_attribute("data-watched") == "true"
        banner = page.locator("#banner-elsewhere")
        assert banner.is_visible() and "21 von 23" in banner.inner_text()
        assert "andere Instanz" in page.locator("#legend").inner_text()
        page.click("#lang-toggle")
        assert "21 of 23" in banner.inner_text()
        srv.push(_state())  # the instance took every district over: the banner goes
        page.wait_for_selector('#districts path[data-district="vaihingen"][data-watched="true"]')
        assert not banner.is_visible()
    assert errors == []


def test_page_sensor_faults_say_what_was_measured(browser_page) -> None:
    """A stale gauge shows its silence as a span and an anomaly its score; neither has a trend."""
    page, errors = browser_page
    state = _state()
    since = state["alerts"][0]["started_at"]
    faults = [_alert("sensor-hofen-1", "sensor", "stale", 1, "veraltet", ["muehlhausen"], ["Mühlhausen"],
                     ["pegel-hofen"], 4651.7, 4500.0, "sensor-stale", "rising", since),
              _alert("sensor-anomaly-1", "sensor", "anomaly", 1, "Anomalie", ["nord"], ["Nord"], ["sc-28589"],
                     1.0, 0.47, "anomaly", "rising", since)]
    state["alerts"] += faults
    state["timeline"] = [{k: v for k, v in a.items() if k not in ("acked_by", "acked_at", "silenced", "trend")}
                         for a in faults]
    def text(locator) -> str:  # the threshold sits on a line of its own
        return " ".join(locator.inner_text().split())

    with PageServer(state) as srv:
        page.goto(srv.url + "/")
        stale = page.locator('#alerts tr[data-alert-id="sensor-hofen-1"]')
        stale.wait_for()
        assert text(stale.locator("td.value")) == "Messpause 1 h 17 min (Grenze 1 h 15 min)"
        assert stale.locator("td.trend").inner_text() == "–"
        anomaly = page.locator('#alerts tr[data-alert-id="sensor-anomaly-1"]')
        assert text(anomaly.locator("td.value")) == "Anomaliewert 1,00 (Schwelle 0,47)"
        assert page.locator('#timeline li[data-alert-id="sensor-hofen-1"]').inner_text().endswith(
            "Mühlhausen – Messpause 1 h 17 min")
        # a hazard keeps its unit and trend
        flood = page.locator('#alerts tr[data-alert-id="flood-bad-cannstatt-1"]')
        assert text(flood.locator("td.value")) == "512 cm (Schwelle 500)"
        assert "steigend" in flood.locator("td.trend").inner_text()
        page.click("#lang-toggle")
        assert text(stale.locator("td.value")) == "no readings for 1 h 17 min (limit 1 h 15 min)"
    assert errors == []


def test_page_shows_districts_another_instance_decides_from_its_changelog(browser_page) -> None:
    """Scale-out with the changelog read: the other instance's districts keep their colours, its alerts are
    listed (acknowledged and silenced through this instance as well) and the banner says so."""
    page, errors = browser_page
    state = _state()
    state["elsewhere"], state["elsewhere_shown"] = ["vaihingen", "bad-cannstatt"], True
    remote = state["alerts"][0]
    remote.update(alert_id="flood-remote-1", remote=True)
    state["alerts"].append({**remote, "alert_id": "flood-remote-2", "districts": []})  # a broken row
    with PageServer(state) as srv:
        page.goto(srv.url + "/")
        page.wait_for_selector('#districts path[data-district="bad-cannstatt"][data-level="4"]')
        assert page.locator('#districts path[data-district="vaihingen"]').get_attribute("data-level") == "0"
        banner = page.locator("#banner-elsewhere")
        assert banner.is_visible() and "entscheidet 21 von 23" in banner.inner_text()
        assert "andere Instanz" not in page.locator("#legend").inner_text()  # no district is unknown here
        assert "Stummschaltungen gelten auf allen Instanzen" in banner.inner_text()
        row = page.locator('#alerts tr[data-alert-id="flood-remote-1"]')
        assert "entscheidet eine andere Instanz" in row.inner_text()
        page.fill("#login-operator", "Erika Muster")
        page.fill("#login-token", TOKEN)
        page.click('#login-form button[type="submit"]')
        row.locator('button[data-action="ack"]').click()
        page.wait_for_selector('#alerts tr[data-alert-id="flood-remote-1"] .acked-by')
        assert "Quittierung weitergeleitet" in page.locator("#action-status").inner_text()
        assert srv.posts[-1]["path"] == "/api/alerts/flood-remote-1/ack"
        row.locator('button[data-action="silence"]').click()  # shared by the API with every instance
        page.wait_for_selector('#alerts tr[data-alert-id="flood-remote-1"] .silenced-tag')
        assert srv.posts[-1]["path"] == "/api/silences"
        assert srv.posts[-1]["body"]["districts"] == remote["districts"]  # that district, never the whole city
        assert "this instance only" in page.locator("#error").inner_text()  # the broker did not take it
        posts = len(srv.posts)
        page.locator('#alerts tr[data-alert-id="flood-remote-2"] button[data-action="silence"]').click()
        page.wait_for_function("document.getElementById('error').textContent.includes('unbekannt')")
        assert len(srv.posts) == posts  # no silence without a district: it would cover the whole city
    assert errors == []
