"""Assembly of a running service (``run`` and ``demo``): pipeline, Kafka loop, HTTP, signals."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import IO

from alerting.api import AlertApi
from alerting.errors import StateStoreError
from stadtwacht.config import Config, ConfigError, Problem
from stadtwacht.http import HttpServer, StateFeed
from stadtwacht.metrics import new_registry
from stadtwacht.pipeline import Pipeline
from stadtwacht.runner import Health, Runner
from stadtwacht.state_view import build_state

__all__ = ["Service", "api_token", "install_signal_handlers"]

log = logging.getLogger(__name__)


def api_token(cfg: Config, generate: bool = False) -> str | None:
    """The API token from the environment or a file (never from the TOML itself)."""
    token = os.environ.get(cfg.http.api_token_env, "").strip()
    if not token and cfg.http.api_token_file:
        try:
            token = Path(cfg.http.api_token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError([Problem("", None, "http.api_token_file", f"cannot read {cfg.http.api_token_file}: "
                                                                         f"{e.strerror}")]) from None
    if not token and generate:
        token = secrets.token_urlsafe(18)
    return token or None


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT finish the current batch, commit and flush, then exit."""
    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("signal %d: finishing the batch, committing, flushing notifications", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def lock_state_dir(state_dir: Path) -> IO[str]:
    """One service per state directory: a second would share the first's outbox and episodes (notifications
    twice or lost). The lock goes with the process: a crash or kill releases it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    f = (state_dir / "service.lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise StateStoreError(str(state_dir), f"another stadtwacht service uses it (pid {holder}); give each "
                                              f"its own --state-dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class Service:
    """One stadtwacht process: consume, detect, alert, and serve HTTP on one port."""

    def __init__(self, cfg: Config, bootstrap: str, state_dir: Path, *, port: int | None = None,
                 districts: str | None = None, sensors: str | None = None, notify: list[str] = (),
                 exercise: bool = False, token: str | None = None, topics: list[str] | None = None) -> None:
        self.cfg = cfg
        self._state_lock = lock_state_dir(Path(state_dir))
        self.registry = new_registry()
        self.health = Health()
        self.pipeline = Pipeline(cfg, self.registry, state_dir, districts_path=districts, sensors_path=sensors,
                                 extra_channels=list(notify), exercise=exercise)
        self.token = token
        self.lock = threading.RLock()
        self.feed = StateFeed(lambda: build_state(self.pipeline, cfg.alerting.language), self.lock)
        self.pipeline.alerts.listeners.append(lambda record: self.feed.changed())
        self.api = AlertApi(self.pipeline.alerts, token or "", lock=self.lock, on_change=self.feed.changed,
                            remote=self.pipeline.remote_alerts, forward_ack=self._forward_ack,
                            share_silence=self._share_silence, history=self.pipeline.alert_history)
        self.runner = Runner(self.pipeline, bootstrap, self.health, topics=topics, on_change=self.feed.changed,
                             connect=False)
        self.runner.lock = self.lock
        self.pipeline.metrics.outbox_oldest.set_function(
            lambda: self.pipeline.alerts.outbox_status()["oldest_pending_age_s"])
        self.http = HttpServer(cfg.http.host, cfg.http.port if port is None else port, self.registry, self.api,
                               self.feed, self.readiness, self.pipeline.cap_dir,
                               self.pipeline.feed_records, cfg.http.max_body_bytes,
                               cfg.alerting.public_url)

    def _forward_ack(self, alert_id: str, operator: str, level: int | None):
        city = self.pipeline.city_view
        return city.forward_ack(alert_id, operator, level) if city is not None else None

    def _share_silence(self, silence_id: str) -> bool | None:
        """With several instances: a silence created or deleted here goes to the others; None: no others."""
        city = self.pipeline.city_view
        if city is None:
            return None
        city.share_silence(silence_id, self.pipeline.alerts.silence_by_id(silence_id))
        return True

    def readiness(self) -> tuple[bool, dict]:
        now = time.time()
        h = self.health
        consumer = self.runner.consumer
        broker_ok = now - h.last_poll_ok < 30 and consumer is not None and consumer.connected()
        store_ok, store_detail = self.pipeline.alerts.store_writable()
        outbox = self.pipeline.alerts.outbox_status()
        # a batch whose records were not delivered: the loop re-reads it from its last commit until they are,
        # reading nothing new. An output topic the brokers will not take records on (start-up check) is listed
        # but leaves the process ready until a record for it fails: readiness also routes the page and the API,
        # which an operator must not lose over a missing dead-letter topic while alerts still go out.
        delivery_ok = not h.delivery_error
        checks = {
            "broker": {"ok": broker_ok, "last_poll_ok_age_s": round(now - h.last_poll_ok, 1) if h.last_poll_ok
                       else None, "last_error": h.last_poll_error or None},
            "partitions": {"ok": bool(h.assigned), "assigned": [f"{t}/{p}" for t, p in h.assigned],
                           "warming_up": [f"{t}/{p}" for t, p in h.warming], "partial_view": h.partial_view},
            "delivery": {"ok": delivery_ok, "missing_topics": dict(h.missing_topics),
                         "failing_topics": list(h.delivery_topics) if h.delivery_error else [],
                         "last_error": h.delivery_error or None,
                         "last_error_age_s": round(now - h.delivery_failed_at, 1) if h.delivery_error else None},
            "state_store": {"ok": store_ok, "detail": store_detail},
            "outbox": outbox,
        }
        ready = (broker_ok and bool(h.assigned) and delivery_ok and store_ok and outbox.get("ok", True)
                 and not h.stopping)
        return ready, {"checks": checks}

    def run(self, stop: threading.Event) -> None:
        self.http.start()
        # host:port without a scheme: the log filter cuts every URL to scheme://host (credentials), port included
        log.info("HTTP on %s:%d (metrics /metrics, health /healthz /readyz, page /)", self.cfg.http.host,
                 self.http.port)
        try:
            self.runner.run(stop)
        finally:
            self.http.stop()
            self._state_lock.close()
