"""Readiness follows the broker: 503 before partitions are assigned and while the broker is gone, 200 between;
stadtwacht_broker_up 0 and the consumer lag unknown (NaN, not the last value) while it is gone.

Uses a dedicated embedded broker (the session broker is shared): it is stopped mid-test, and a new one is
started on the same port (Tansu keeps no data across a restart, so the topics are created again).
"""

from __future__ import annotations

import json
import math
import time

import pytest

from stadtwacht.broker import EmbeddedBroker
from tests.ops.support import WebhookReceiver, ops_config
from tests.support.kafka_topics import create_topics
from tests.support.service import ServiceProcess, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _readyz(service: ServiceProcess) -> tuple[int, dict] | None:
    try:
        status, body = service.get("/readyz")
    except OSError:  # not listening yet
        return None
    return status, json.loads(body)


def _lags(service: ServiceProcess) -> list[float]:
    return [v for (name, _), v in service.metrics().items() if name == "stadtwacht_consumer_lag"]


def _healthz_ok(service: ServiceProcess) -> bool:
    status, body = service.get("/healthz")
    return status == 200 and json.loads(body)["status"] == "alive"


def test_readyz_follows_partitions_and_broker(tmp_path, topic_prefix, broker_kind):
    if broker_kind != "tansu":
        pytest.skip("stops and restarts its own embedded Tansu broker: runs in the Tansu tier only")
    topics = [f"{topic_prefix}.flood", f"{topic_prefix}.air", f"{topic_prefix}.community"]
    broker = EmbeddedBroker(log_path=tmp_path / "tansu-1.log").start()
    port = broker.port
    service = None
    try:
        with WebhookReceiver() as hook:
            config = ops_config(tmp_path / "stadtwacht.toml", topic_prefix, hook.config_url())
            service = ServiceProcess(config, broker.bootstrap, tmp_path / "state", env=hook.secret_env(),
                                     log=tmp_path / "service.log").start()
            # HTTP starts before the consumer joins its group: alive, but not ready (no partition assigned)
            status, doc = wait_for(lambda: _readyz(service), 30, "HTTP up", service.check_alive)
            assert status == 503 and doc["ready"] is False
            assert doc["checks"]["partitions"] == {"ok": False, "assigned": [], "warming_up": [],
                                                   "partial_view": False}
            assert doc["checks"]["state_store"]["ok"] is True and doc["checks"]["outbox"]["ok"] is True
            assert _healthz_ok(service)

            create_topics(broker.bootstrap, topics)  # (Tansu may have auto-created them on the subscription)
            ready = service.wait_ready(timeout=60)
            assert ready["checks"]["broker"]["ok"] is True
            assert {a.rsplit("/", 1)[0] for a in ready["checks"]["partitions"]["assigned"]} == set(topics)
            assert ready["checks"]["partitions"]["partial_view"] is False  # the only member owns every partition
            assigned = len(ready["checks"]["partitions"]["assigned"])
            wait_for(lambda: len(_lags(service)) == assigned and not any(map(math.isnan, _lags(service))), 10,
                     "a consumer lag per assigned partition")

            broker.stop()
            lost = wait_for(lambda: (r := _readyz(service)) and r[0] == 503 and r[1], 45,
                            "/readyz 503 after the broker stopped", service.check_alive)
            assert lost["ready"] is False and lost["checks"]["broker"]["ok"] is False
            assert _healthz_ok(service), "liveness must not follow the broker (a restart would not help)"
            wait_for(lambda: service.total("stadtwacht_broker_up") == 0, 10, "stadtwacht_broker_up 0")
            for _ in range(5):  # and it stays 0 (no flapping between polls)
                assert service.total("stadtwacht_broker_up") == 0
                time.sleep(0.2)
            # the lag is unknown without fetch answers: NaN, not the last value (which would read "caught up")
            assert all(math.isnan(v) for v in _lags(service)) and len(_lags(service)) == assigned

            time.sleep(1.0)
            broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-2.log").start()
            create_topics(broker.bootstrap, topics)
            back = service.wait_ready(timeout=90)
            assert back["checks"]["broker"]["ok"] is True and back["checks"]["partitions"]["ok"] is True
            # the gauge is set once per poll round, /readyz asks the client live: allow a round or two
            wait_for(lambda: service.total("stadtwacht_broker_up") == 1, 10, "stadtwacht_broker_up 1")
            wait_for(lambda: not any(map(math.isnan, _lags(service))), 10, "the consumer lag known again")
            assert _healthz_ok(service)
    finally:
        if service is not None:
            assert service.stop() == 0, (tmp_path / "service.log").read_text()[-3000:]
        broker.stop()
