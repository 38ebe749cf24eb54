"""Subprocess body for the crash test: run the notifier over an existing state dir until killed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prometheus_client import CollectorRegistry

from alerting.config import AlertingConfig, ChannelConfig
from alerting.service import AlertService


def crash_config(mail_url: str, hook_url: str) -> AlertingConfig:
    """The configuration shared by the test (which fills the outbox) and this process (which drains it)."""
    return AlertingConfig(group_wait="0s", repeat_interval="", retry_initial="0.1s", retry_max="0.5s", channels=[
        ChannelConfig(name="mail", url=mail_url, tags=["all"], min_interval="0s"),
        ChannelConfig(name="hook", url=hook_url, tags=["all"]),
    ])


if __name__ == "__main__":
    state, mail_url, hook_url = sys.argv[1:4]
    svc = AlertService(crash_config(mail_url, hook_url), Path(state), {}, CollectorRegistry())
    svc.start()
    print("started", flush=True)
    while True:
        time.sleep(1)
