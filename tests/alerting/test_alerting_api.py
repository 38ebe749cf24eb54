"""HTTP API handlers: bearer auth, size limit, ack, lists, silences; no secret in any output."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from alerting.api import MAX_BODY, AlertApi
from alerting.config import AlertingConfig, ChannelConfig
from alerting.episodes import Episode
from alerting.errors import AckOutdatedError
from alerting.service import AlertService
from alerting.store import Silence
from tests.alerting.alerting_helpers import FakeClock, level

TOKEN = "t0ken-for-tests"
SECRET = "pa55w0rd-XYZ"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def setup(tmp_path, caplog):
    caplog.set_level("DEBUG")
    cfg = AlertingConfig(group_wait="0s", channels=[
        ChannelConfig(name="mail", url="mailto://ops:${SMTP_PASS}@127.0.0.1:9?to=a@example.org&from=s@example.org"
                      "&mode=insecure",
                      tags=["control-room"]),
        ChannelConfig(name="hook", url="json://user:${HOOK_TOKEN}@127.0.0.1:9/h", tags=["control-room"]),
    ])
    reg = CollectorRegistry()
    svc = AlertService(cfg, tmp_path / "state", {"mitte": "Mitte"}, reg, clock=FakeClock(),
                       environ={"SMTP_PASS": SECRET, "HOOK_TOKEN": SECRET})
    yield svc, AlertApi(svc, TOKEN), reg
    svc.close()


def call(api, method, path, body=b"", headers=AUTH):
    status, hdrs, out = api.handle(method, path, dict(headers), body)
    assert hdrs["Content-Type"].startswith("application/json")
    return status, json.loads(out)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}, {"authorization": "Bearer "}])
def test_unauthorized(setup, headers):
    _, api, _ = setup
    for method, path in [("GET", "/api/alerts"), ("POST", "/api/alerts/x/ack"), ("GET", "/api/silences"),
                         ("DELETE", "/api/silences/x")]:
        assert call(api, method, path, headers=headers)[0] == 401


def test_body_limit(setup):
    _, api, _ = setup
    assert call(api, "POST", "/api/silences", b"{" + b" " * MAX_BODY + b"}")[0] == 413


def test_ack_flow(setup):
    svc, api, _ = setup
    a = svc.apply([level("mitte", 2)])[0].alert_id
    status, out = call(api, "GET", "/api/alerts")
    assert status == 200 and out["alerts"][0]["alert_id"] == a and out["alerts"][0]["acked_by"] is None
    status, out = call(api, "POST", f"/api/alerts/{a}/ack", json.dumps({"operator": "Müller"}).encode(),
                       headers={"authorization": f"bearer {TOKEN}"})
    assert status == 200 and out["alert"]["acked_by"] == "Müller"
    assert call(api, "GET", "/api/alerts")[1]["alerts"][0]["acked_by"] == "Müller"
    assert call(api, "POST", "/api/alerts/nope-123/ack", b'{"operator": "x"}')[0] == 404
    assert call(api, "POST", f"/api/alerts/{a}/ack", b'{"operator": ""}')[0] == 400
    assert call(api, "POST", f"/api/alerts/{a}/ack", b'{"op": "x"}')[0] == 400
    assert call(api, "POST", f"/api/alerts/{a}/ack", b"not json")[0] == 400
    assert call(api, "GET", f"/api/alerts/{a}/ack")[0] == 405
    status, out = call(api, "GET", "/api/alerts/history?limit=5")
    assert status == 200 and out["events"][0]["alert_id"] == a and out["events"][0]["seq"] == 1
    assert call(api, "GET", "/api/nothing")[0] == 404


def test_silences_api(setup):
    svc, api, _ = setup
    status, out = call(api, "POST", "/api/silences",
                       json.dumps({"districts": ["mitte"], "duration": "2h", "comment": "Wartung"}).encode())
    assert status == 201
    sid = out["silence"]["id"]
    assert out["silence"]["ends"] is not None
    assert [s["id"] for s in call(api, "GET", "/api/silences")[1]["silences"]] == [sid]
    svc.apply([level("mitte", 3)])
    assert svc.outbox() == []  # silenced: recorded, not notified
    assert call(api, "POST", "/api/silences", b'{"duration": "soon"}')[0] == 400
    assert call(api, "POST", "/api/silences", b'{"hazard": "fire"}')[0] == 400
    assert call(api, "DELETE", f"/api/silences/{sid}")[0] == 200
    assert call(api, "DELETE", f"/api/silences/{sid}")[0] == 404


@pytest.mark.parametrize(("body", "error"), [
    ({}, "city-wide silence is refused"),  # no scope matches every alert of the city, until removed
    ({"hazard": "flood", "duration": "2h"}, "city-wide silence is refused"),
    ({"districts": ["nowhere"]}, "unknown district(s): nowhere"),
    ({"districts": ["mitte"], "duration": "0s"}, "duration must be positive"),
])
def test_a_silence_that_would_hide_more_or_less_than_meant_is_refused(setup, body, error):
    _, api, _ = setup
    status, out = call(api, "POST", "/api/silences", json.dumps(body).encode())
    assert status == 400 and error in out["error"], out
    assert call(api, "GET", "/api/silences")[1]["silences"] == []


def test_silences_set_and_removed_are_logged(setup, caplog):
    _, api, _ = setup
    body = {"districts": ["mitte"], "duration": "2h", "comment": "Wartung", "created_by": "Erika Muster"}
    sid = call(api, "POST", "/api/silences", json.dumps(body).encode())[1]["silence"]["id"]
    call(api, "DELETE", f"/api/silences/{sid}")
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and sid in r.getMessage()]
    assert len(logged) == 2, logged
    assert "'Erika Muster'" in logged[0] and "['mitte']" in logged[0] and "Wartung" in logged[0]
    assert logged[1] == f"silence {sid} removed"


def test_secrets_never_in_api_metrics_or_logs(setup, caplog):
    svc, api, reg = setup
    a = svc.apply([level("mitte", 3)])[0].alert_id
    svc.deliver_pending()  # both channels point at a closed port: failures get logged and counted
    call(api, "POST", f"/api/alerts/{a}/ack", b'{"operator": "x"}')
    outputs = [api.handle("GET", p, AUTH, b"")[2].decode() for p in ("/api/alerts", "/api/alerts/history",
                                                                      "/api/silences")]
    metrics = generate_latest(reg).decode()
    assert 'channel="mailto://127.0.0.1",outcome="retry"' in metrics
    assert 'channel="json://127.0.0.1",outcome="retry"' in metrics
    errors = " ".join(o["channel"] + str(o) for o in svc.outbox())
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("stadtwacht"))
    assert "channel mail" in ours and "channel hook" in ours
    for text in [*outputs, metrics, caplog.text, errors, ours, repr(svc.channel_labels)]:
        assert SECRET not in text
    for text in [*outputs, metrics, errors, ours]:
        assert "ops:" not in text and "user:" not in text and ":9/h" not in text


def test_lock_and_on_change(setup):
    import threading
    svc, _, _ = setup
    changes = []
    lock = threading.RLock()
    api = AlertApi(svc, TOKEN, lock=lock, on_change=lambda: changes.append(1))
    a = svc.apply([level("mitte", 2)])[0].alert_id
    assert call(api, "GET", "/api/alerts")[0] == 200 and changes == []
    assert call(api, "POST", f"/api/alerts/{a}/ack", b'{"operator": "x"}')[0] == 200 and changes == [1]
    assert call(api, "POST", "/api/alerts/unknown/ack", b'{"operator": "x"}')[0] == 404 and changes == [1]


def test_empty_token_rejects_everything(setup):
    svc, _, _ = setup
    api = AlertApi(svc, "")
    assert call(api, "GET", "/api/alerts", headers={"Authorization": "Bearer "})[0] == 401


def test_an_acknowledgement_of_an_alert_decided_elsewhere_is_forwarded(setup):
    """Several instances: an id this instance does not know goes to the forwarder; 202 when it took it, 404 when
    it knows none either, 503 when sending failed; the list shows the other instances' alerts too."""
    svc, _, _ = setup
    sent: list[tuple[str, str]] = []
    remote = [{"alert_id": "flood-elsewhere", "remote": True}]

    def forward(alert_id, operator, level):
        if alert_id == "broken":
            raise OSError("broker down")
        if level is not None and level < 2:  # the owner's alert (as last seen here) is at level 2
            raise AckOutdatedError(alert_id, level, 2, "Alarm")
        sent.append((alert_id, operator) if level is None else (alert_id, operator, level))
        return alert_id == "flood-elsewhere"

    api = AlertApi(svc, TOKEN, remote=lambda: remote, forward_ack=forward)
    status, out = call(api, "POST", "/api/alerts/flood-elsewhere/ack", b'{"operator": "Schmidt"}')
    assert status == 202 and out["forwarded"] == "flood-elsewhere"
    assert call(api, "POST", "/api/alerts/nowhere/ack", b'{"operator": "Schmidt"}')[0] == 404
    assert call(api, "POST", "/api/alerts/broken/ack", b'{"operator": "Schmidt"}')[0] == 503
    assert sent == [("flood-elsewhere", "Schmidt"), ("nowhere", "Schmidt")]
    assert call(api, "POST", "/api/alerts/flood-elsewhere/ack", b'{"operator": " "}')[0] == 400  # checked first
    # the level the operator saw goes with it; a level the alert has risen above since is refused (409)
    status, out = call(api, "POST", "/api/alerts/flood-elsewhere/ack", b'{"operator": "Schmidt", "level": 1}')
    assert status == 409 and out["level"] == 2 and "rose to 2 (Alarm) since level 1" in out["error"]
    assert call(api, "POST", "/api/alerts/flood-elsewhere/ack", b'{"operator": "Schmidt", "level": 2}')[0] == 202
    assert sent[-1] == ("flood-elsewhere", "Schmidt", 2)
    del sent[2:]
    svc.apply([level("mitte", 2)])
    alerts = call(api, "GET", "/api/alerts")[1]["alerts"]
    assert [a.get("remote", False) for a in alerts] == [False, True]
    # a local alert is acknowledged here, never forwarded
    local = alerts[0]["alert_id"]
    assert call(api, "POST", f"/api/alerts/{local}/ack", b'{"operator": "Schmidt"}')[0] == 200
    assert sent == [("flood-elsewhere", "Schmidt"), ("nowhere", "Schmidt")]


def test_silences_are_shared_with_the_other_instances(setup):
    """Several instances: a silence created or deleted here is handed on (the answer says whether that worked:
    the silence holds here either way); one shared by another instance is stored, also covering its alerts."""
    svc, _, _ = setup
    shared: list[str] = []
    broker_up = [True]

    def share(silence_id):
        if not broker_up[0]:
            raise OSError("broker down")
        shared.append(silence_id)
        return True

    api = AlertApi(svc, TOKEN, share_silence=share)
    status, out = call(api, "POST", "/api/silences", b'{"districts": ["mitte"]}')
    sid = out["silence"]["id"]
    assert status == 201 and out["shared"] is True and shared == [sid]
    broker_up[0] = False
    status, out = call(api, "DELETE", f"/api/silences/{sid}")
    assert status == 200 and out["shared"] is False and "this instance only" in out["warning"]
    assert call(api, "GET", "/api/silences")[1]["silences"] == []  # deleted here all the same
    assert call(api, "DELETE", f"/api/silences/{sid}")[0] == 404 and shared == [sid]  # nothing to hand on
    assert svc.unshared_silences({sid}) == [(sid, None)]  # the deletion: shared once the broker takes it
    single = AlertApi(svc, TOKEN, share_silence=lambda i: None)  # no other instance: nothing to say
    assert "shared" not in call(single, "POST", "/api/silences", b'{"districts": ["nord"]}')[1]

    elsewhere = Silence(id="from-b", districts=("ost",), sensors=(), hazard="flood", starts_ns=0, ends_ns=0,
                        comment="Wartung", created_by="Schmidt", source="api")
    assert svc.take_shared_silence("from-b", elsewhere) and not svc.take_shared_silence("from-b", elsewhere)
    assert svc.silence_by_id("from-b") == elsewhere
    ost = Episode(alert_id="flood-ost", district="ost", district_name="Ost", hazard="flood", quantity="water_level",
                  level=1, level_name="Vorwarnung", seq=1, started_ns=0, last_ns=0, value=1.0, threshold=1.0,
                  rule="pegel", sensors=("pegel-1",))
    assert svc.is_silenced(ost) and not svc.is_silenced(replace(ost, hazard="air"))
    assert svc.take_shared_silence("from-b", None) and svc.silence_by_id("from-b") is None
    assert not svc.take_shared_silence("from-b", None)
