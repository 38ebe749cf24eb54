"""Channel outage: the SMTP receiver is down for a while (20 s; STADTWACHT_CHANNEL_OUTAGE_SECONDS=120 for the
issue's 2 min); its backlog arrives after recovery in order per alert, and the webhook is not delayed.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.reliability.harness import REF, RunProcess, alternating_stream, refs, report, write_flood_setup
from tests.support.kafka_topics import create_topics, producer
from tests.support.receivers import HttpReceiver, SmtpReceiver
from tests.support.service import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _arrivals(texts: list[str]) -> list[tuple[str, int]]:
    return [(a, int(s)) for t in texts for a, s in REF.findall(t)]


def test_smtp_down_gets_its_backlog_in_order_and_the_webhook_is_not_delayed(kafka_bootstrap, topic_prefix,
                                                                             tmp_path):
    outage_s = float(os.environ.get("STADTWACHT_CHANNEL_OUTAGE_SECONDS", "20"))
    smtp, http = SmtpReceiver(), HttpReceiver()
    smtp.stop()  # down from the start
    setup = write_flood_setup(tmp_path, topic_prefix, 2, [{"name": "hook", "url": http.url},
                                                          {"name": "mail", "url": smtp.url}], max_poll_records=1)
    create_topics(kafka_bootstrap, [setup.topic, setup.alerts_topic], partitions=2)
    proc = RunProcess(setup, kafka_bootstrap, tmp_path / "state").start()
    rounds = 9
    try:
        proc.wait_ready()
        prod = producer(kafka_bootstrap)
        t0 = time.time_ns() - 600 * 10**9
        down_at = time.monotonic()
        for key, value, _ in alternating_stream(list(setup.gauges), rounds, t0):
            prod.send(setup.topic, key=key, value=value)
        prod.flush()
        produced_at = time.monotonic()
        n_events = len(setup.gauges) * (rounds - 1)
        wait_until(lambda: sum(refs(http.texts()).values()) >= n_events, 30, what="the webhook deliveries")
        webhook_s = http.times[-1] - produced_at
        assert not smtp.messages
        time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
        mail_pending = proc.total("stadtwacht_outbox_depth")
        assert mail_pending >= 1
        smtp.start()
        up_at = time.monotonic()
        wait_until(lambda: set(refs(smtp.texts())) >= set(refs(http.texts())), 120, what="the SMTP backlog")
        backlog_s = smtp.times[-1] - up_at
        for name, texts in (("smtp", smtp.texts()), ("webhook", http.texts())):
            per_alert: dict[str, list[int]] = {}
            for alert_id, seq in _arrivals(texts):
                per_alert.setdefault(alert_id, []).append(seq)
            for alert_id, seqs in per_alert.items():
                assert seqs == sorted(seqs), f"{name}: {alert_id} out of order: {seqs}"
        assert max(http.times) < up_at  # every webhook delivery happened while SMTP was still down
        dups = sum(c - 1 for c in refs(smtp.texts()).values())
        assert proc.stop() == 0
    finally:
        proc.kill()
        smtp.stop()
        http.stop()
    report("channel_outage", outage_s=outage_s, alert_events=n_events, webhook_all_delivered_s=round(webhook_s, 2),
           smtp_outbox_depth_at_recovery=mail_pending, smtp_backlog_delivered_s=round(backlog_s, 2),
           smtp_messages=len(smtp.messages), smtp_duplicates=dups)
