"""Prometheus instruments of the alerting stage, created on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AlertingMetrics"]

_LATENCY_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class AlertingMetrics:
    """The alerting stage's metrics; channel labels are redacted (service + host), never URLs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "stadtwacht_notifications", "Notification send attempts by channel (service://host) and outcome "
            "(success, retry, failed, expired).", ["channel", "outcome"], registry=registry)
        self.outbox_depth = Gauge("stadtwacht_outbox_depth", "Outbox deliveries not yet sent.", registry=registry)
        self.channels_unusable = Gauge(
            "stadtwacht_channels_unusable", "Configured channels that cannot send: their URL's secret (${VAR} or "
            "url_file) could not be resolved at start (the log names them).", registry=registry)
        self.active_alerts = Gauge("stadtwacht_active_alerts", "Active alert episodes by hazard and level.",
                                   ["hazard", "level"], registry=registry)
        self.alert_events = Counter("stadtwacht_alert_events", "Alert events by event (firing, update, resolved).",
                                    ["event"], registry=registry)
        self.latency = Histogram(
            "stadtwacht_notification_latency_seconds",
            "Time from the triggering reading's event time to the notification sent.",
            buckets=_LATENCY_BUCKETS, registry=registry)
        self._active_seen: set[tuple[str, str]] = set()

    def set_active(self, counts: dict[tuple[str, int], int]) -> None:
        """Replace the active-alert gauge (labels that dropped to zero are set to 0, not left stale)."""
        now = {(h, str(lv)): n for (h, lv), n in counts.items()}
        for key in self._active_seen - now.keys():
            self.active_alerts.labels(*key).set(0)
        for key, n in now.items():
            self.active_alerts.labels(*key).set(n)
        self._active_seen |= now.keys()
