"""Real receivers on 127.0.0.1: aiosmtpd for mailto://, an http.server for json:// webhooks."""

from __future__ import annotations

import re
import time

from prometheus_client import CollectorRegistry

from alerting.config import AlertingConfig, ChannelConfig
from alerting.service import AlertService
from tests.alerting.alerting_helpers import S, level

REF = re.compile(r"Ref: (\S+)/(\d+)")


def wait_for(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def make(tmp_path, smtp, http, **kw):
    cfg = AlertingConfig(group_wait="0s", retry_initial="0.2s", retry_max="1s", channels=[
        ChannelConfig(name="mail", url=smtp.url, tags=["control-room"], min_interval="0s"),
        ChannelConfig(name="hook", url=http.url, tags=["control-room"]),
    ], **kw)
    return AlertService(cfg, tmp_path / "state", {}, CollectorRegistry())


def mail_refs(smtp):
    return [(a, int(s)) for body in smtp.bodies() for a, s in REF.findall(body)]


def hook_refs(http):
    return [(a, int(s)) for p in http.posts for a, s in REF.findall(p["message"])]


def test_smtp_and_webhook_receive_the_message(tmp_path, smtp, http):
    svc = make(tmp_path, smtp, http)
    svc.start()
    try:
        rec = svc.apply([level("mitte", 3, name="Mitte <script>x</script>")])[0]
        assert wait_for(lambda: len(smtp.messages) == 1 and len(http.posts) == 1)
    finally:
        svc.stop(5)
        svc.close()
    msg = smtp.messages[0]
    assert msg["Subject"].startswith("WARNUNG: Hochwasser")
    assert msg["To"] == "leitstelle@example.org"
    assert mail_refs(smtp) == [(rec.alert_id, 1)] == hook_refs(http)
    assert "<script>" not in smtp.bodies()[0] and "<script>" not in http.posts[0]["message"]
    assert http.posts[0]["title"] == msg["Subject"]
    assert http.posts[0]["type"] == "failure"


def test_down_channel_gets_backlog_in_order_and_does_not_delay_the_other(tmp_path, smtp, http):
    smtp.stop()  # the mail server is down from the start
    svc = make(tmp_path, smtp, http)
    svc.start()
    try:
        expected: list[tuple[str, int]] = []
        for step_no, lv in enumerate([1, 2, 3, 2, 0]):
            for d in ("mitte", "west"):
                for rec in svc.apply([level(d, lv, t=1_750_000_000 * S + step_no * S)]):
                    expected.append((rec.alert_id, rec.seq))
        # the webhook gets everything while the mail server is still down
        assert wait_for(lambda: len(hook_refs(http)) == len(expected))
        assert smtp.messages == []
        def mail_tried() -> bool:  # the mail worker has failed at least once against the closed port
            pending = [d for d in svc.outbox("pending") if d["channel"] == "mail"]
            return bool(pending) and max(d["attempts"] for d in pending) >= 1

        assert wait_for(mail_tried)
        smtp.start()
        assert wait_for(lambda: len(mail_refs(smtp)) == len(expected))
    finally:
        svc.stop(5)
        svc.close()
    for got in (mail_refs(smtp), hook_refs(http)):
        assert sorted(got) == sorted(expected)  # each event exactly once per channel
        for alert in {a for a, _ in expected}:
            assert [s for a, s in got if a == alert] == [1, 2, 3, 4, 5]  # in order per alert
    assert len(http.posts) == len(expected)  # the webhook was never re-sent to during the mail retries
    assert svc_state_all_sent(tmp_path)


def svc_state_all_sent(tmp_path) -> bool:
    import sqlite3
    db = sqlite3.connect(tmp_path / "state" / "alerts.sqlite3")
    states = {s for (s,) in db.execute("SELECT state FROM deliveries")}
    db.close()
    return states == {"sent"}
