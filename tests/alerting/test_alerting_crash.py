"""Outbox crash semantics: SIGKILL the notifier process repeatedly; nothing lost, duplicates only in the window."""

from __future__ import annotations

import collections
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.service import AlertService
from tests.alerting.alerting_helpers import T0, S, level
from tests.alerting.notifier_proc import crash_config
from tests.support.receivers import HttpReceiver, SmtpReceiver

REF = re.compile(r"Ref: (\S+/\d+)")
SCRIPT = Path(__file__).with_name("notifier_proc.py")


def received(smtp: SmtpReceiver, http: HttpReceiver) -> dict[str, list[str]]:
    return {"mail": [r for b in smtp.bodies() for r in REF.findall(b)],
            "hook": [r for p in list(http.posts) for r in REF.findall(p["message"])]}


def outbox(db_path: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT d.channel, d.state, m.refs FROM deliveries d JOIN messages m ON m.id = d.message_id "
                      "ORDER BY d.id").fetchall()
    db.close()
    return [(c, s, refs.strip('[]"')) for c, s, refs in rows]


@pytest.mark.slow
def test_sigkill_loses_nothing_and_duplicates_only_in_the_send_record_window(tmp_path):
    # 60 webhook answers at >= 50 ms each take >= 3 s of sending, a process lives <= 0.25 s: at least 12 kills
    # whatever the machine's speed (at 10 ms a fast machine drained everything within 9)
    smtp, http = SmtpReceiver(), HttpReceiver(delay_s=0.05)
    state = tmp_path / "state"
    cfg = crash_config(smtp.url, http.url)
    svc = AlertService(cfg, state, {}, CollectorRegistry())
    for i in range(20):  # 20 districts x (firing, update, resolved) = 60 messages per channel
        d = f"d{i:02d}"
        svc.apply([level(d, 1, t=T0)])
        svc.apply([level(d, 2, t=T0 + S)])
        svc.apply([level(d, 0, t=T0 + 2 * S)])
    svc.close()
    db_path = state / "alerts.sqlite3"
    expected = collections.Counter((c, refs) for c, _, refs in outbox(db_path))
    rng = random.Random(5)
    kills = 0
    window: dict[tuple[str, str], int] = {}  # receptions seen while the row was still pending
    try:
        for _ in range(25):
            if all(s == "sent" for _, s, _ in outbox(db_path)):
                break
            proc = subprocess.Popen([sys.executable, str(SCRIPT), str(state), smtp.url, http.url],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout.readline().strip() == "started"
            time.sleep(rng.uniform(0.0, 0.25))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            kills += 1
            time.sleep(0.2)  # let the receivers finish requests already on the wire
            got = received(smtp, http)
            # sends that reached a receiver but whose 'sent' record did not commit before the kill
            for ch, st, refs in outbox(db_path):
                if st == "pending" and refs in got[ch]:
                    window[(ch, refs)] = got[ch].count(refs)
        # drain the rest without killing
        proc = subprocess.Popen([sys.executable, str(SCRIPT), str(state), smtp.url, http.url],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(s == "sent" for _, s, _ in outbox(db_path)):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        proc.stdout.close()
        time.sleep(0.2)
        got = received(smtp, http)
    finally:
        smtp.stop()
        http.stop()
    counts = collections.Counter((ch, r) for ch, refs in got.items() for r in refs)
    lost = [k for k in expected if counts[k] == 0]
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(f"\ncrash test: kills={kills} deliveries={sum(expected.values())} lost={len(lost)} "
          f"duplicates={duplicates} caught_between_send_and_record={len(window)}")
    assert kills >= 10
    assert lost == []
    # a delivery is received more than once only if a kill caught it sent but not recorded, and then
    # exactly once more per such kill: never a re-send of a delivery whose record had committed
    for key, n in counts.items():
        assert n - 1 == window.get(key, 0), key
    assert duplicates <= kills * 2  # at most one in-flight send per channel per kill
    # order per alert on each channel: seq 1, 2, 3
    for ch, refs in got.items():
        first_seen: dict[str, list[int]] = collections.defaultdict(list)
        for r in dict.fromkeys(refs):
            a, s = r.split("/")
            first_seen[a].append(int(s))
        assert all(v == [1, 2, 3] for v in first_seen.values()), ch
