"""Fixtures for alerting tests (helpers live in alerting_helpers.py)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tests.support.receivers import HttpReceiver, SmtpReceiver


@pytest.fixture
def smtp():
    r = SmtpReceiver()
    yield r
    r.stop()


@pytest.fixture
def http():
    r = HttpReceiver()
    yield r
    r.stop()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()
