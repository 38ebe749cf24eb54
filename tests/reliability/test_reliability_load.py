"""Overload and soak, RSS sampled from /proc, nothing lost.

Soak: ten times Stuttgart's realistic load (2,000 sensors every 60 s, ~333 readings/s) for a while, 20 readings
to a message, produced with kafka-python. CI: 60 s; env STADTWACHT_SOAK_MINUTES (e.g. 30).

Burst: the pipeline's capacity is measured first with the burst's own message shape (20 readings to a message,
lz4-compressed, each gateway of 500 sensors on one partition; the pipeline frozen while the backlog is produced,
then the drain timed; 500-reading messages measured alongside, for the record), then ten times that capacity
arrives *during* the burst window, counted from the broker's acknowledgements (first to last of a burst message):
nothing is produced ahead of the window. A Python producer cannot do that (~1.4 M readings/s here): the burst
uses confluent-kafka's producer (librdkafka) and skips without it. In production the producers run elsewhere;
here they share two cores with the pipeline, so during the burst window (only) every thread of the pipeline runs
at nice 19: it keeps consuming with what CPU is left, and the producer and the broker get the CPU they need.
Afterwards the stream goes on at the soak rate until the backlog is gone. If fewer than ten times capacity
arrived (a busy machine), the test still asserts everything else and then ends as XFAIL naming the factor
reached. CI: 5 s of burst (50 s of capacity's worth of backlog); env STADTWACHT_BURST_SECONDS (e.g. 120:
15-20 min of catch-up on two cores, ~2 GB in an in-memory Tansu).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from tests.reliability.harness import RunProcess, report, write_flood_setup
from tests.support.kafka_topics import create_topics, producer
from tests.support.service import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SENSORS = 2000
SOAK_RATE = SENSORS * 10 // 60  # readings per second
SOAK_PER_MESSAGE = 20
BURST_PER_MESSAGE = 20  # the shape of the burst and of the capacity it is measured against
COMPARE_PER_MESSAGE = 500  # capacity also measured with this shape, for the record
GATEWAY_SENSORS = 500  # sensors behind one gateway: its messages always go to the same partition
BURST_FACTOR = 10
TICK_S = 0.05
TIME_SLOT = b"@" * 20  # same length as an encoded time, "2026-11-23T09:00:00Z"
PARTITIONS = 2


class Feed:
    """Gateway messages cut from pre-encoded templates: sensor i's n-th reading at t0 + n*60s/10; cheap to send fast.

    Every message carries ``per`` consecutive sensors of one round (2,000 is a multiple of ``per``), so a message
    is its template with the round's time put in; readings stay distinct (sensor, time) across the whole run.
    A sensor always goes to the same partition (as a gateway keyed by its id would): unkeyed, a sensor's rounds
    would spread over partitions consumed at different speeds, and rounds read out of order are dead-lettered
    as late.
    """

    def __init__(self, t0_ns: int) -> None:
        self.t0 = t0_ns
        self.n = 0  # readings produced so far
        self._templates: dict[int, list[bytes]] = {}
        self._round = (-1, b"")

    def templates(self, per: int) -> list[bytes]:
        if per not in self._templates:
            assert SENSORS % per == 0
            slot = TIME_SLOT.decode()
            self._templates[per] = [
                ("[" + ",".join(f'{{"sensor_id":"luft-{i}","time":"{slot}","values":{{"pm10":{10 + i % 7}}}}}'
                                for i in range(k, k + per)) + "]").encode()
                for k in range(0, SENSORS, per)]
        return self._templates[per]

    def stamp(self, rnd: int) -> bytes:
        if self._round[0] != rnd:
            t = self.t0 + rnd * 6_000_000_000
            self._round = (rnd, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t // 10**9)).encode())
        return self._round[1]

    def messages(self, count: int, per: int) -> list[tuple[int, bytes]]:
        """The next ``count // per`` messages of ``per`` readings each, with their partition."""
        assert self.n % per == 0 and GATEWAY_SENSORS % per == 0, "switch shapes only at a multiple of both"
        tpl = self.templates(per)
        out = []
        for _ in range(count // per):
            rnd, i = divmod(self.n, SENSORS)
            out.append((i // GATEWAY_SENSORS % PARTITIONS, tpl[i // per].replace(TIME_SLOT, self.stamp(rnd))))
            self.n += per
        return out


class Observed:
    """The process under test sampled once a second from a thread: RSS (kB) and readings accepted."""

    def __init__(self, proc: RunProcess) -> None:
        self.proc = proc
        self.rss: list[tuple[float, int]] = []
        self.accepted: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Observed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.proc.alive():
                self.rss.append((time.monotonic(), self.proc.rss_kb()))
                with contextlib.suppress(OSError):
                    self.accepted.append((time.monotonic(), accepted(self.proc)))
            self._stop.wait(1.0)


def accepted(proc: RunProcess) -> float:
    return proc.total("stadtwacht_readings_accepted_total")


def accepted_no_dead_letters(proc: RunProcess) -> float:
    """Readings accepted; fails at once when anything was dead-lettered (the stream is all valid)."""
    m = proc.metrics()
    dead = {dict(labels).get("reason"): v for (n, labels), v in m.items()
            if n == "stadtwacht_dead_letter_readings_total"}
    assert not any(dead.values()), f"valid readings dead-lettered: {dead}"
    return sum(v for (n, _), v in m.items() if n == "stadtwacht_readings_accepted_total")


Messages = list[tuple[int, bytes]]  # (partition, value)


def paced(feed: Feed, send: Callable[[Messages, int, bool], None], rate: Callable[[float], tuple[float, bool]],
          until: Callable[[float], bool], per: int, tick: Callable[[], None] = lambda: None) -> None:
    """Produce whole messages at ``rate(now) -> (readings/s, in burst)`` until ``until(now)``; no drift over time."""
    owed, last, was_burst = 0.0, time.monotonic(), False
    while not until(now := time.monotonic()):
        r, burst = rate(now)
        if burst != was_burst:  # a phase boundary: what is owed belongs to the phase before
            owed, was_burst = 0.0, burst
        owed += r * (now - last)
        last = now
        whole = int(owed) // per * per
        if whole:
            send(feed.messages(whole, per), per, burst)
            owed -= whole
        tick()
        time.sleep(max(0.0, TICK_S - (time.monotonic() - now)))


def renice(pid: int, nice: int) -> int:
    """Set the nice value of every thread of a process (Linux nice is per thread); returns the old one."""
    old = os.getpriority(os.PRIO_PROCESS, pid)
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
    return old


def rss_figures(obs: Observed, warm_from: float, warm_to: float, after: float) -> dict:
    warm = [kb for t, kb in obs.rss if warm_from <= t < warm_to]
    later = [kb for t, kb in obs.rss if t >= after]
    growth = (max(later) - min(warm)) / min(warm) if warm and later else None
    return {"rss_warm_kb": min(warm) if warm else None, "rss_end_kb": obs.rss[-1][1],
            "rss_peak_kb": max(kb for _, kb in obs.rss),
            "rss_growth_after_warmup": round(growth, 3) if growth is not None else None}


def test_soak_at_ten_times_realistic_load_keeps_memory_flat_and_loses_nothing(kafka_bootstrap, topic_prefix,
                                                                               tmp_path, broker_kind):
    if broker_kind == "apache" and not os.environ.get("STADTWACHT_SOAK_MINUTES"):
        pytest.skip("runs in the Tansu pass")
    soak_s = float(os.environ.get("STADTWACHT_SOAK_MINUTES", "1")) * 60
    setup = write_flood_setup(tmp_path, topic_prefix, 1, n_air=SENSORS, max_poll_records=200,
                              extra='\n[detection.health]\nstale_min = "24h"\n')
    create_topics(kafka_bootstrap, [setup.topic, setup.alerts_topic], partitions=PARTITIONS)
    prod = producer(kafka_bootstrap, acks=1, batch_size=256 * 1024, linger_ms=20)
    feed = Feed(time.time_ns() - 2 * 86400 * 10**9)
    proc = RunProcess(setup, kafka_bootstrap, tmp_path / "state").start()
    obs = Observed(proc)

    def send(msgs: Messages, per: int, burst: bool) -> None:
        for partition, m in msgs:
            prod.send(setup.topic, value=m, partition=partition)

    try:
        proc.wait_ready()
        obs.start()
        start = time.monotonic()
        paced(feed, send, lambda now: (SOAK_RATE, False), lambda now: now - start >= soak_s, SOAK_PER_MESSAGE)
        prod.flush()
        ended = time.monotonic()
        wait_until(lambda: accepted(proc) >= feed.n, 120, interval=0.5, what="the stream to be consumed",
                   alive=proc.check_alive)
        drained = time.monotonic()
        assert accepted(proc) == feed.n
        assert proc.total("stadtwacht_dead_letter_readings_total") == 0
        assert proc.stop() == 0
    finally:
        obs.stop()
        proc.kill()
        prod.close(timeout=5)
    figures = rss_figures(obs, start + min(20, soak_s / 4), start + soak_s / 2, start + soak_s / 2)
    report("soak", rate_readings_s=SOAK_RATE, soak_s=soak_s, readings=feed.n,
           consumed_after_stream_end_s=round(drained - ended, 1), **figures)
    assert figures["rss_peak_kb"] < 1_500_000
    if soak_s >= 600:
        assert figures["rss_growth_after_warmup"] < 0.10


def test_burst_at_ten_times_capacity_keeps_memory_bounded_loses_nothing_and_catches_up(
        kafka_bootstrap, topic_prefix, tmp_path, broker_kind):
    if broker_kind == "apache" and not os.environ.get("STADTWACHT_BURST_SECONDS"):
        pytest.skip("runs in the Tansu pass")
    ck = pytest.importorskip("confluent_kafka", reason="the 10x burst needs confluent-kafka's producer "
                             "(a Python producer tops out near 2x the pipeline's capacity)")
    burst_s = float(os.environ.get("STADTWACHT_BURST_SECONDS", "5"))
    setup = write_flood_setup(tmp_path, topic_prefix, 1, n_air=SENSORS, max_poll_records=200,
                              extra='\n[detection.health]\nstale_min = "24h"\n')
    create_topics(kafka_bootstrap, [setup.topic, setup.alerts_topic], partitions=PARTITIONS)
    prod = ck.Producer({"bootstrap.servers": kafka_bootstrap, "acks": 1, "linger.ms": 20, "batch.size": 1_000_000,
                        "compression.type": "lz4", "queue.buffering.max.kbytes": 1024 * 1024,
                        "message.max.bytes": 4_000_000, "log_level": 3})
    feed = Feed(time.time_ns() - 10 * 86400 * 10**9)  # 120 s of burst are ~30 h of rounds
    acked = {"readings": 0, "burst": 0, "first": None, "last": None}
    errors: list[str] = []
    proc = RunProcess(setup, kafka_bootstrap, tmp_path / "state").start()
    obs = Observed(proc)

    def send(msgs: Messages, per: int, burst: bool) -> None:
        """Produce; a delivery report only on each partition's last message of the call, counting the call's
        readings for that partition: less Python per message. (A failed message without a report of its own still
        shows: accepted == produced is asserted at the end.)"""
        def delivered(n: int):
            def report(err, _msg) -> None:
                if err is not None:
                    errors.append(str(err))
                    return
                acked["readings"] += n
                if burst:
                    now = time.monotonic()
                    acked["first"] = acked["first"] or now
                    acked["last"] = now
                    acked["burst"] += n
            return report

        last = {p: i for i, (p, _) in enumerate(msgs)}
        count = {p: 0 for p in last}
        for i, (partition, m) in enumerate(msgs):
            count[partition] += per
            while True:
                try:
                    if last[partition] == i:
                        prod.produce(setup.topic, m, partition=partition, on_delivery=delivered(count[partition]))
                    else:
                        prod.produce(setup.topic, m, partition=partition)
                    break
                except BufferError:  # librdkafka's queue is full: serve delivery reports, then retry
                    prod.poll(0.005)
        prod.poll(0)

    def capacity(readings: int, per: int) -> float:
        """Readings/s while the pipeline drains a backlog of messages of ``per`` readings.

        The pipeline is frozen (SIGSTOP) while the backlog is produced, well within its session timeout, so the
        whole backlog is timed, not whatever was left of it after the producer's flush.
        """
        a0 = accepted(proc)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            send(feed.messages(readings, per), per, False)
            assert prod.flush(60) == 0
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        t0 = time.monotonic()
        wait_until(lambda: accepted(proc) >= feed.n, 180, interval=0.05, what=f"the {per}-reading backlog")
        return (feed.n - a0) / (time.monotonic() - t0)

    try:
        proc.wait_ready()
        obs.start()
        # 1. capacity with the burst's message shape (after a warm-up: JIT kernels, first assignment)
        send(feed.messages(20_000, BURST_PER_MESSAGE), BURST_PER_MESSAGE, False)
        prod.flush(60)
        wait_until(lambda: accepted(proc) >= feed.n, 120, interval=0.2, what="the warm-up readings")
        capacity_large = capacity(1_000_000, COMPARE_PER_MESSAGE)
        cap = capacity(200_000, BURST_PER_MESSAGE)
        burst_rate = BURST_FACTOR * cap
        # 2. the soak rate for 10 s, the burst, the soak rate again until the backlog is gone
        start = time.monotonic()
        burst_from, burst_to = start + 10, start + 10 + burst_s
        marks: dict[str, int] = {}

        def rate(now: float) -> tuple[float, bool]:
            if burst_from <= now < burst_to:
                if "burst_from" not in marks:
                    marks["burst_from"], marks["nice"] = feed.n, renice(proc.pid, 19)
                return burst_rate, True
            if now >= burst_to and "burst_to" not in marks:
                marks["burst_to"] = feed.n
                renice(proc.pid, marks["nice"])
            return SOAK_RATE, False

        checked = [0.0]

        def caught_up(now: float) -> bool:  # asks /metrics at most 4 times a second
            if "burst_to" not in marks or now - checked[0] < 0.25:
                return False
            assert now < burst_to + 15 * burst_s + 300, "no catch-up after the burst"
            checked[0] = now
            return accepted_no_dead_letters(proc) >= marks["burst_to"]

        paced(feed, send, rate, caught_up, BURST_PER_MESSAGE, tick=lambda: proc.check_alive())
        caught_at = time.monotonic()
        assert prod.flush(60) == 0
        wait_until(lambda: accepted(proc) >= feed.n, 120, interval=0.5, what="the stream's tail",
                   alive=proc.check_alive)
        assert not errors, errors[:5]
        assert acked["readings"] == feed.n  # every reading the test made reached the broker
        assert accepted(proc) == feed.n  # ... and was accepted: nothing lost, nothing doubled
        assert proc.total("stadtwacht_dead_letter_readings_total") == 0
        assert proc.stop() == 0
    finally:
        obs.stop()
        proc.kill()
        prod.flush(10)
        (tmp_path / "rss.json").write_text(json.dumps({"rss": obs.rss, "accepted": obs.accepted}))
    burst_readings = marks["burst_to"] - marks["burst_from"]
    span = acked["last"] - acked["first"]
    arrival = burst_readings / span if span > 0 else 0.0
    backlog = max((marks["burst_to"] - n for t, n in obs.accepted if t >= burst_to), default=None)
    figures = rss_figures(obs, start, burst_from, burst_from)
    report("burst", capacity_readings_s=round(cap), readings_per_message=BURST_PER_MESSAGE,
           capacity_500_per_message_readings_s=round(capacity_large), burst_s=burst_s,
           burst_target_readings_s=round(burst_rate), burst_readings=burst_readings,
           burst_arrival_readings_s=round(arrival), burst_factor=round(arrival / cap, 2),
           burst_ack_span_s=round(span, 2), backlog_after_burst_readings=backlog,
           backlog_json_mb=round(backlog * 76 / 1e6) if backlog else None, readings=feed.n,
           catch_up_after_burst_s=round(caught_at - burst_to, 1), soak_rate_readings_s=SOAK_RATE, **figures)
    assert figures["rss_peak_kb"] < 1_500_000, figures
    # Did ten times capacity really arrive? A precondition of the test, not a figure of stadtwacht: on a machine too
    # busy to produce it, everything above still held, but only for the burst that did arrive -- said, not hidden.
    if arrival < 0.98 * burst_rate:
        pytest.xfail(f"the burst reached {arrival:.0f} readings/s = {arrival / cap:.1f}x capacity ({cap:.0f}/s), "
                     "not 10x: machine too busy (producer, broker and pipeline share its cores)")
