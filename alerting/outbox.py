"""The notifier: one worker thread per channel drains that channel's outbox rows in order, with backoff.

A delivery row is marked 'sent' right after its send returns; a kill between the two is the only way a
channel can see a message twice. A failing channel only ever blocks its own queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from alerting.channels import Channel
from alerting.metrics import AlertingMetrics
from alerting.sqlite_store import SqliteAlertStore

__all__ = ["Notifier", "RetryPolicy"]

log = logging.getLogger("stadtwacht.alerting.outbox")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: initial, doubling up to maximum; give up after max_age."""

    initial_ns: int = 1_000_000_000
    maximum_ns: int = 300_000_000_000
    max_age_ns: int = 86_400_000_000_000

    def delay_ns(self, attempts: int) -> int:
        return min(self.maximum_ns, self.initial_ns * (2 ** max(0, min(attempts - 1, 40))))


class Notifier:
    """Per-channel workers over the outbox in the state file."""

    def __init__(self, db_path: Path, channels: Mapping[str, Channel], metrics: AlertingMetrics,
                 policy: RetryPolicy, clock: Callable[[], int]) -> None:
        self._db_path, self._channels, self._metrics = db_path, dict(channels), metrics
        self._policy, self._clock = policy, clock
        for ch in self._channels.values():  # every series from the start: increase() misses a first 0 -> 1
            for outcome in ("success", "retry", "failed", "expired"):
                metrics.notifications.labels(ch.label, outcome)
        self._wake = {name: threading.Event() for name in self._channels}
        self._send_locks = {name: threading.Lock() for name in self._channels}  # one sender per channel
        self._stop = threading.Event()
        self._drain_deadline: float | None = None
        self._threads: list[threading.Thread] = []

    def wake(self) -> None:
        """New outbox rows were committed."""
        for ev in self._wake.values():
            ev.set()

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for name in self._channels:
            t = threading.Thread(target=self._run, args=(name,), name=f"notifier-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, deadline_s: float) -> None:
        """Let every worker drain what it can until the deadline, then stop."""
        self._drain_deadline = time.monotonic() + deadline_s
        self._stop.set()
        self.wake()
        for t in self._threads:
            t.join(max(0.0, self._drain_deadline - time.monotonic()) + 0.5)
        self._threads = []

    def deliver_once(self, store: SqliteAlertStore, name: str) -> bool:
        """Try the head of one channel's queue; True when something was attempted and more may follow."""
        with self._send_locks[name]:
            return self._deliver_head(store, name)

    def _deliver_head(self, store: SqliteAlertStore, name: str) -> bool:
        ch = self._channels[name]
        d = store.next_delivery(name)
        if d is None:
            return False
        now = self._clock()
        if d.next_ns > now:
            return False
        if now - d.created_ns > self._policy.max_age_ns:
            with store.transaction():
                store.mark_delivery(d.id, "expired", d.attempts, 0, "gave up after max_retry_age", now)
            self._metrics.notifications.labels(ch.label, "expired").inc()
            self._metrics.outbox_depth.set(store.outbox_depth())
            log.error("channel %s: delivery %d expired (refs %s)", name, d.id, ", ".join(d.refs))
            return True
        outcome = ch.send(d.title, d.body, d.notify_type)
        now = self._clock()
        if outcome.ok:
            with store.transaction():
                store.mark_delivery(d.id, "sent", d.attempts + 1, 0, "", now)
            self._metrics.notifications.labels(ch.label, "success").inc()
            self._metrics.outbox_depth.set(store.outbox_depth())
            if d.reading_ns:
                self._metrics.latency.observe(max(0.0, (now - d.reading_ns) / 1e9))
            return True
        attempts = d.attempts + 1
        if outcome.retryable:
            with store.transaction():
                store.mark_delivery(d.id, "pending", attempts, now + self._policy.delay_ns(attempts),
                                    outcome.error, now)
            self._metrics.notifications.labels(ch.label, "retry").inc()
            log.warning("channel %s: send failed (attempt %d), will retry: %s", name, attempts, outcome.error)
            return False
        with store.transaction():
            store.mark_delivery(d.id, "failed", attempts, 0, outcome.error, now)
        self._metrics.notifications.labels(ch.label, "failed").inc()
        self._metrics.outbox_depth.set(store.outbox_depth())
        log.error("channel %s: permanent failure: %s", name, outcome.error)
        return True

    def _run(self, name: str) -> None:
        store = SqliteAlertStore(self._db_path)
        try:
            while True:
                stopping = self._stop.is_set()
                if stopping and (self._drain_deadline is None or time.monotonic() >= self._drain_deadline):
                    return
                try:
                    progressed = self.deliver_once(store, name)
                except Exception:  # keep the worker alive; the row stays pending
                    log.exception("channel %s: notifier error", name)
                    progressed = False
                if progressed:
                    continue
                if stopping:
                    # Draining: give a failing channel its next retry only if it falls before the deadline.
                    d = store.next_delivery(name)
                    if d is None or (d.next_ns - self._clock()) / 1e9 > (self._drain_deadline or 0) - time.monotonic():
                        return
                wait_s = 0.5
                d = store.next_delivery(name)
                if d is not None:
                    wait_s = min(0.5, max(0.0, (d.next_ns - self._clock()) / 1e9))
                self._wake[name].wait(wait_s)
                self._wake[name].clear()
        finally:
            store.close()
