"""Helpers of the integration tests: the run configuration on unique topics (Kafka and process helpers live in
``tests.support``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_config"]


def write_config(path: Path, prefix: str, extra: str = "") -> Path:
    path.write_text(f"""
[kafka]
group_id = "{prefix}-group"
topics = ["{prefix}.flood", "{prefix}.air"]
community_topics = ["{prefix}.community"]
alerts_topic = "{prefix}.alerts"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_records = 500
{extra}
""", encoding="utf-8")
    return path
