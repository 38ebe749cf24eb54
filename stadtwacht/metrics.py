"""Pipeline metrics (ingest, detection, broker), created on an injected registry.

Alerting registers its own instruments (notifications, outbox, active alerts,
latency) on the same registry; see ``alerting/metrics.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    gc_collector,
    platform_collector,
    process_collector,
)

from stadtwacht import __version__

__all__ = ["PipelineMetrics", "new_registry"]


def new_registry() -> CollectorRegistry:
    """A fresh registry with the process and Python collectors (never the global default)."""
    registry = CollectorRegistry(auto_describe=True)
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    return registry


@dataclass
class PipelineMetrics:
    readings_accepted: Counter
    messages_consumed: Counter
    dead_letter_messages: Counter
    dead_letter_readings: Counter
    consumer_lag: Gauge
    assigned_partitions: Gauge
    batch_seconds: Histogram
    detections: Counter
    district_level: Gauge
    broker_up: Gauge
    last_reading: Gauge
    warming_up: Gauge
    partial_view: Gauge
    outbox_oldest: Gauge
    rereads: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> PipelineMetrics:
        info = Info("stadtwacht_build", "stadtwacht build information", registry=registry)
        info.info({"version": __version__})
        metrics = cls(
            readings_accepted=Counter("stadtwacht_readings_accepted", "Readings accepted by ingest",
                                      ["quantity"], registry=registry),
            messages_consumed=Counter("stadtwacht_messages_consumed", "Kafka messages consumed from a readings topic "
                                      "(once: a re-read after a restart or rebalance is not counted again)",
                                      ["topic"], registry=registry),
            dead_letter_messages=Counter("stadtwacht_dead_letter_messages",
                                         "Messages (or batch elements) sent to a dead-letter topic",
                                         ["reason"], registry=registry),
            dead_letter_readings=Counter("stadtwacht_dead_letter_readings",
                                         "Readings sent to a dead-letter topic", ["reason"],
                                         registry=registry),
            consumer_lag=Gauge("stadtwacht_consumer_lag", "Messages behind the partition's high watermark",
                               ["topic", "partition"], registry=registry),
            assigned_partitions=Gauge("stadtwacht_assigned_partitions",
                                      "Partitions of the topic this process reads (0 for every configured topic "
                                      "it reads nothing of: summed over replicas, 0 means nobody watches it)",
                                      ["topic"], registry=registry),
            batch_seconds=Histogram("stadtwacht_batch_seconds", "Processing time of one poll batch",
                                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                             1, 2.5, 5, 10, 30, 60),
                                    registry=registry),
            detections=Counter("stadtwacht_detections", "Detection level transitions",
                               ["hazard", "kind", "level"], registry=registry),
            district_level=Gauge("stadtwacht_district_level", "Current level per district and hazard",
                                 ["district", "hazard"], registry=registry),
            broker_up=Gauge("stadtwacht_broker_up", "1 while the last broker poll succeeded, 0 while it fails "
                            "(NaN before the first attempt: the kernels compile first)", registry=registry),
            last_reading=Gauge("stadtwacht_last_reading_timestamp_seconds",
                               "Event time of the newest accepted reading", registry=registry),
            warming_up=Gauge("stadtwacht_warming_up",
                             "1 while partitions are re-read to rebuild detection state (alerts held back)",
                             registry=registry),
            partial_view=Gauge("stadtwacht_partial_view",
                               "1 while this process owns only some readings partitions and rolls up districts "
                               "in memory (no district topic): all-clears of districts with sensors elsewhere wait",
                               registry=registry),
            # the value is read at scrape time: the service sets a function (see app.Service)
            outbox_oldest=Gauge("stadtwacht_outbox_oldest_seconds",
                                "Age of the oldest notification still waiting in the outbox (0 when empty)",
                                registry=registry),
            rereads=Counter("stadtwacht_rereads", "Times every partition was re-read from its last commit because "
                            "a batch's records were not acknowledged by the broker (cause=delivery) or a broker "
                            "request failed while the batch was processed (cause=broker)", ["cause"],
                            registry=registry),
        )
        # unknown until the first connect or poll: a start compiling kernels for minutes is not a broker outage
        metrics.broker_up.set(float("nan"))
        for cause in ("delivery", "broker"):  # 0 from the start: an increase() over a first re-read counts it
            metrics.rereads.labels(cause)
        return metrics
