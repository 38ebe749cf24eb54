"""End to end: ``stadtwacht demo`` (embedded Tansu, simulator, the real pipeline) driven in headless Chromium.

The demo runs as a subprocess at 3000x (the 30 h story in 36 s). The test waits for the flood wave to
turn Bad Cannstatt to the top flood level on the map, finds its alert in the list, logs in with the
token, acknowledges, and checks the ack through the API. It also checks the silent gauge is flagged
stale, the stuck citizen sensor never raises a district air alert in Feuerbach, the page loads nothing
but 127.0.0.1, and the demo exits 0 after ``--duration`` with its broker gone.

Screenshots go to ``tests/artifacts/e2e-*.png``; with ``STADTWACHT_UPDATE_SCREENSHOT=1`` the control-room
shot after the ack is also copied to ``docs/screenshot-control-room.png`` (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
DOCS_SCREENSHOT = REPO / "docs" / "screenshot-control-room.png"
TOKEN = "e2e-token-6f1c2a"
OPERATOR = "Erika Muster"
SPEED = 3000.0  # the 30 h story in 36 s
DURATION = 50.0  # wall seconds until the demo stops by itself (story plus a margin)

pytestmark = [pytest.mark.browser, pytest.mark.broker, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _json(url: str, token: str | None = None) -> dict:
    status, body = _get(url, token)
    assert status == 200, f"GET {url}: HTTP {status} {body[:200]!r}"
    return json.loads(body)


def _wait(what: str, check, timeout: float, proc: subprocess.Popen, interval: float = 0.3):
    """Poll ``check()`` until it returns something truthy; fail early if the demo died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"demo exited with {proc.returncode} while waiting for {what}")
        try:
            got = check()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))  # zombie = gone


@pytest.fixture
def demo(tmp_path: Path):
    """The ``stadtwacht demo`` subprocess; always stopped (SIGTERM, then SIGKILL) at teardown."""
    port = _free_port()
    state_dir = tmp_path / "state"
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    env = {**os.environ, "STADTWACHT_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "stadtwacht", "demo", "--speed", str(SPEED), "--port", str(port),
           "--duration", str(DURATION), "--state-dir", str(state_dir)]
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
    info = {"proc": proc, "port": port, "url": f"http://127.0.0.1:{port}", "state_dir": state_dir,
            "out": out, "err": err, "started": time.monotonic()}
    try:
        yield info
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for name in ("out", "err"):  # keep the logs beside the screenshots for a failed run
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copyfile(info[name], ARTIFACTS / f"e2e-demo.{name}.txt")


def test_demo_flood_alarm_ack_in_browser_and_clean_stop(demo, chromium) -> None:
    proc, url = demo["proc"], demo["url"]
    ARTIFACTS.mkdir(exist_ok=True)

    # -- the demo says where to look (and which broker it started) --
    banner = _wait("the demo's banner", lambda: (t := demo["out"].read_text()) and "control-room page" in t and t,
                   60, proc)
    assert f"control-room page  {url}/" in banner
    assert f"API token: {TOKEN}" in banner and "/metrics" in banner and "notifications.jsonl" in banner
    # the official Stadtbezirke when ../shared holds them, else the built-in approximate layer (a fresh clone)
    official = (REPO.parent / "shared" / "data" / "stuttgart" / "districts.geojson").is_file()
    assert ("districts          official Stadtbezirke (Landeshauptstadt Stuttgart" in banner) is official
    assert ("districts          built-in APPROXIMATE layer" in banner) is not official
    broker = _wait("the broker pid in the log",
                   lambda: re.search(r"embedded Tansu broker on \S+ \(pid (\d+)\)", demo["err"].read_text()), 30, proc)
    broker_pid = int(broker.group(1))
    assert _pid_alive(broker_pid)
    _wait("/healthz", lambda: _get(url + "/healthz")[0] == 200, 30, proc)
    state0 = _json(url + "/api/state")
    assert state0["approximate"] is not official
    alarm = state0["max_levels"]["flood"]
    assert alarm == 4, state0["max_levels"]  # Meldebeginn .. Hochwasseralarm of the example rule

    # -- the page, recording every request it makes --
    page = chromium.new_page(viewport={"width": 1440, "height": 1000}, locale="de-DE")
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url + "/")
    bc = page.locator('#districts path[data-district="bad-cannstatt"]')
    bc.wait_for(timeout=15_000)
    assert page.locator("#banner-exercise").is_visible()

    # -- the flood wave turns Bad Cannstatt to the alarm level on the map (live, over SSE) --
    page.wait_for_selector(f'#districts path[data-district="bad-cannstatt"][data-level="{alarm}"]', timeout=45_000)
    assert bc.get_attribute("fill") == "url(#alarm-hatch)"
    assert bc.get_attribute("data-colour") == "#6a176e"
    assert page.locator("#conn").get_attribute("data-state") == "live"
    coloured = page.locator('#districts path:not([data-level="0"])').count()
    assert coloured >= 4, "the flood should colour every riverside district the gauges threaten"

    # -- its alert in the list --
    def flood_alert() -> dict | None:
        alerts = _json(url + "/api/alerts", TOKEN)["alerts"]
        return next((a for a in alerts if a["hazard"] == "flood" and a.get("district") == "bad-cannstatt"
                     and a["level"] == alarm), None)

    alert = _wait("the Bad Cannstatt flood alert at the alarm level", flood_alert, 20, proc)
    row = page.locator(f'#alerts tr[data-alert-id="{alert["alert_id"]}"]')
    row.wait_for(timeout=10_000)
    text = row.inner_text()
    assert "Bad Cannstatt" in text and "Hochwasser" in text and "cm" in text, text
    page.screenshot(path=str(ARTIFACTS / "e2e-flood-alarm.png"), full_page=True)

    # -- log in and acknowledge; the ack is recorded through the API --
    ack = row.locator('button[data-action="ack"]')
    assert ack.is_disabled()
    page.fill("#login-operator", OPERATOR)
    page.fill("#login-token", TOKEN)
    page.click('#login-form button[type="submit"]')
    assert page.locator("#operator-name").inner_text() == OPERATOR
    ack.click()
    page.wait_for_selector(f'#alerts tr[data-alert-id="{alert["alert_id"]}"] .acked-by', timeout=10_000)
    acked = next(a for a in _json(url + "/api/alerts", TOKEN)["alerts"] if a["alert_id"] == alert["alert_id"])
    assert acked["acked_by"] == OPERATOR and acked["acked_at"], acked
    assert _get(url + "/api/alerts")[0] == 401  # the API needs the token
    # ages count on the pipeline's event clock (the story's), not the browser's wall clock 30 h ahead
    age = row.locator("td.age").inner_text()
    assert re.fullmatch(r"vor (\d+ s|\d+ min|\d+ h \d+ min)", age), age
    assert "steigend" in row.inner_text() or "fallend" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "e2e-acked.png"), full_page=True)

    # -- the silent gauge is flagged stale (story hour ~13 of 30) --
    def hofen_stale() -> bool:
        health = _json(url + "/api/state")["sensor_health"]
        return any(h["sensor_id"] == "pegel-hofen" and h["kind"] == "stale" for h in health)

    _wait("pegel-hofen flagged stale", hofen_stale, 40, proc)
    page.wait_for_selector('#health li[data-sensor-id="pegel-hofen"][data-kind="stale"]', timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "e2e-control-room.png"))
    page.screenshot(path=str(ARTIFACTS / "e2e-control-room-full.png"), full_page=True)

    # -- the end of the story: newest reading at the wall clock; nothing ever alarmed Feuerbach's air --
    def story_done() -> bool:
        m = re.search(rb"^stadtwacht_last_reading_timestamp_seconds (\S+)$", _get(url + "/metrics")[1], re.M)
        return bool(m) and float(m.group(1)) > time.time() - 120  # the story's last readings are "now"

    _wait("the end of the story", story_done, DURATION, proc)
    history = _json(url + "/api/alerts/history?limit=1000", TOKEN)["events"]
    feuerbach_air = [r for r in history if r["hazard"] == "air" and "feuerbach" in r["districts"]]
    assert feuerbach_air == [], feuerbach_air
    stale = [r for r in history if r["quantity"] == "stale" and "pegel-hofen" in r["sensors"]]
    assert stale, "pegel-hofen never raised a stale sensor alert"
    stuck = [r for r in history if r["quantity"] == "stuck" and "cs-feuerbach-4" in r["sensors"]]
    assert stuck, "the stuck citizen sensor cs-feuerbach-4 was never flagged stuck"
    bc_flood = [r for r in history if r["hazard"] == "flood" and "bad-cannstatt" in r["districts"]]
    assert max(r["level"] for r in bc_flood) == alarm
    assert bc_flood[0]["event"] == "resolved", "the wave falls back to an all-clear (history is newest first)"
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert str(broker_pid) in children, children  # the broker is the demo's own child
    page.screenshot(path=str(ARTIFACTS / "e2e-after-story.png"), full_page=True)

    # -- offline: every request of the page went to the demo itself --
    foreign = [u for u in requests if urlsplit(u).scheme != "data" and urlsplit(u).hostname != "127.0.0.1"]
    assert requests and foreign == [], foreign
    page.close()
    assert errors == [], errors

    # -- the demo stops by itself after --duration: exit 0, its broker gone --
    rc = proc.wait(timeout=max(5.0, DURATION + 40 - (time.monotonic() - demo["started"])))
    assert rc == 0, demo["err"].read_text()[-2000:]
    assert "demo finished" in demo["out"].read_text()
    gone_by = time.monotonic() + 5
    while _pid_alive(broker_pid) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not _pid_alive(broker_pid), f"the demo's Tansu broker (pid {broker_pid}) is still running"
    leftover = [c for c in children if _pid_alive(int(c))]
    assert leftover == [], f"children of the demo still running after it exited: {leftover}"

    if os.environ.get("STADTWACHT_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(ARTIFACTS / "e2e-acked.png", DOCS_SCREENSHOT)
