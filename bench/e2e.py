"""End to end: Kafka to alert decision with the real Pipeline, against raw consumption of the same topic.

A pre-filled topic of PM10 readings (``bench.data``) is read twice, alternately,
best of N, each timed from its first poll: by a bare kafka-python consumer
(the baseline) and by the service's own kafka-python consumer (``bench.polls``,
group joined and positioned before the clock starts) feeding
``stadtwacht.pipeline.Pipeline.process_messages`` (decode,
detection with all default rules, district mapping and roll-up, durable alert
decisions in SQLite) plus ``Pipeline.tick`` per poll, as the runner does (its
start-up ``gc.freeze`` included). The Kafka hand-on (dead letters, alerts topic)
and the offset commit are not in it.

``catchup_10m`` is the time the same pipeline takes to work off a backlog of
10 M readings (100-reading messages, 2,000 sensors, about 1.3 GB in the
in-memory broker), produced before it starts: measured, not extrapolated
(``BENCH_QUICK`` extrapolates it from the e2e rate and says so).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.data import Stream, batch_messages, pm10_stream, produce, single_messages
from bench.polls import bare_consumer, raw_seconds, ready_consumer

__all__ = ["run"]


def consume_service(bootstrap: str, topic: str, n_messages: int) -> float:
    """Seconds for the service's consumer alone, no processing (timed as ``raw_seconds``): the baseline with
    stadtwacht's own consumer, reported beside the e2e figure."""
    consumer = ready_consumer(bootstrap, topic)
    seen = 0
    started = time.perf_counter()
    while seen < n_messages:
        seen += len(consumer.poll(timeout_ms=1000))
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def new_pipeline(state_dir: Path):
    """The Pipeline with the built-in Stuttgart configuration (all default rules, demo districts)."""
    from stadtwacht.config import load_config
    from stadtwacht.metrics import new_registry
    from stadtwacht.pipeline import Pipeline

    cfg, problems = load_config(None)
    assert not problems, problems
    return Pipeline(cfg, new_registry(), state_dir)


def consume_pipeline(bootstrap: str, topic: str, n_messages: int, profile: str | None = None) -> tuple[
        float, int, int]:
    """Seconds to read and fully process every message (first poll to last message, as ``raw_seconds``)
    through the service's consumer; readings accepted; alert records decided."""
    from stadtwacht.runner import freeze_startup_heap

    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        consumer = ready_consumer(bootstrap, topic)
        new_pipeline(Path(tmp) / "warm-up").process_messages(_first_messages(bootstrap, topic))  # kernels, untimed
        pipe = new_pipeline(Path(tmp) / "state")
        freeze_startup_heap()  # as Runner.run does once the service is built
        seen = accepted = records = 0
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        started = time.perf_counter()
        while seen < n_messages:
            batch = consumer.poll(timeout_ms=1000)
            if not batch:
                continue
            seen += len(batch)
            offsets: dict[tuple[str, int], int] = {}
            for m in batch:
                offsets[(m.topic, m.partition)] = m.offset + 1
            result = pipe.process_messages(batch, deliver=True, offsets=offsets)
            accepted += result.accepted
            records += len(result.records) + len(pipe.tick())
        elapsed = time.perf_counter() - started
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
        consumer.close()
        pipe.alerts.close()
    return elapsed, accepted, records


def _first_messages(bootstrap: str, topic: str, n: int = 20) -> list:
    """A few messages of the topic, to load the compiled kernels before the clock starts."""
    from ingest.decode import RawMessage

    consumer = bare_consumer(bootstrap, topic)
    try:
        return [RawMessage(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                for msgs in consumer.poll(timeout_ms=5000, max_records=n).values() for m in msgs]
    finally:
        consumer.close()


def catch_up(bootstrap: str, n: int, n_sensors: int, chunk: int = 500_000) -> tuple[float, int]:
    """Produce a backlog of ``n`` readings (in chunks, to bound this process's memory), then time the pipeline
    working it off; (seconds, readings accepted)."""
    from kafka import KafkaProducer

    stream = pm10_stream(n_sensors, n)
    topic = "bench-catchup"
    produce(bootstrap, topic, [])  # creates the topic
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1024 * 1024,
                             max_request_size=8 * 1024 * 1024)
    messages = 0
    for a in range(0, n, chunk):
        part = Stream(stream.sensor[a:a + chunk], stream.time_ns[a:a + chunk], stream.value[a:a + chunk],
                      stream.lat, stream.lon)
        for key, value, ts in batch_messages(part):
            producer.send(topic, key=key, value=value, timestamp_ms=ts)
            messages += 1
    producer.flush()
    producer.close()
    seconds, accepted, _ = consume_pipeline(bootstrap, topic, messages)
    return seconds, accepted


def run(quick: bool = False) -> list[dict]:
    """Figures e2e (100-reading messages), e2e_single, catchup_10m."""
    from stadtwacht.broker import EmbeddedBroker

    figures = []
    rounds = 2 if quick else 7  # rounds are short (well under a second each); the backlog below is the long part
    n_sensors = 2_000
    with EmbeddedBroker() as broker:
        e2e_batch_rate = None
        for name, n, batched in (("e2e", 50_000 if quick else 500_000, True),
                                 ("e2e_single", 10_000 if quick else 100_000, False)):
            stream = pm10_stream(n_sensors, n)
            msgs = batch_messages(stream) if batched else single_messages(stream)
            topic = f"bench-{name}"
            produce(broker.bootstrap, topic, msgs)
            raw, full, service = [], [], []
            accepted = records = 0
            for _ in range(rounds):
                raw.append(raw_seconds(broker.bootstrap, topic, len(msgs)))
                s, accepted, records = consume_pipeline(broker.bootstrap, topic, len(msgs))
                full.append(s)
                service.append(consume_service(broker.bootstrap, topic, len(msgs)))
            raw_rate, rate = len(stream) / min(raw), accepted / min(full)
            service_rate = len(stream) / min(service)
            # each round's pipeline against the raw run just before it: how far the ratio swings on this machine
            paired = sorted(accepted / f / (len(stream) / r) for r, f in zip(raw, full, strict=True))
            if batched:
                e2e_batch_rate = rate
            figures.append({"name": name, "value": rate, "unit": "readings/s", "baseline_value": raw_rate,
                            "ratio": rate / raw_rate, "readings": len(stream), "accepted": accepted,
                            "alert_records": records, "readings_per_message": 100 if batched else 1,
                            "sensors": n_sensors, "service_consumer_rate": service_rate,
                            "ratio_to_service_consumer": rate / service_rate, "ratio_per_round": paired,
                            "note": "value: the service's kafka-python consumer (records located by its compiled pass) "
                                    "+ Pipeline.process_messages (decode, all default rules, mapping, roll-up, "
                                    "SQLite alert decisions) + tick; "
                                    "baseline: raw kafka-python consume of the same topic; goal ratio >= 0.8; "
                                    f"value and baseline are the best of {rounds} alternating rounds; each round's "
                                    f"ratio to the raw run before it: {paired[0]:.2f}–{paired[-1]:.2f}, median "
                                    f"{statistics.median(paired):.2f}; "
                                    "service_consumer_rate: the service's consumer alone, no processing"})
        if quick and e2e_batch_rate:
            figures.append({"name": "catchup_10m", "value": 10_000_000 / e2e_batch_rate, "unit": "s",
                            "extrapolated": True,
                            "note": f"quick run: 10 M readings / measured e2e rate ({e2e_batch_rate:.0f} "
                                    "readings/s); the full run measures it on a real 10 M backlog"})
        elif not quick:
            seconds, accepted = catch_up(broker.bootstrap, 10_000_000, n_sensors)
            figures.append({"name": "catchup_10m", "value": seconds, "unit": "s", "extrapolated": False,
                            "readings": 10_000_000, "accepted": accepted, "rate": accepted / seconds,
                            "note": "a 10 M-reading backlog (100-reading messages, 2,000 sensors, one partition) "
                                    "worked off by one process: consume + Pipeline.process_messages + tick"})
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
