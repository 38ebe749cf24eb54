"""Where alert records go besides the channels: the alerts topic, a JSON Lines file, CAP 1.2 files."""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING

from alerting.cap import CapError, cap_filename, write_cap
from alerting.record import AlertRecord, encode_record
from ingest.kafka_io import send_checked

if TYPE_CHECKING:
    from kafka import KafkaProducer

    from stadtwacht.pipeline import Pipeline

__all__ = ["AlertOutputs"]

log = logging.getLogger(__name__)


class AlertOutputs:
    """Hands alert records to the alerts topic (keyed by alert_id), a JSONL stream and the CAP directory."""

    def __init__(self, pipeline: Pipeline, producer: KafkaProducer | None = None, topic: str = "",
                 jsonl: IO[bytes] | None = None, cap_dir: Path | None = None) -> None:
        self.pipeline = pipeline
        self.producer = producer
        self.topic = topic
        self.jsonl = jsonl
        self.cap_dir = cap_dir if cap_dir is not None else pipeline.cap_dir
        self._polygons: dict[str, list[str] | str] = {}
        # the loop writes its own events, the city view's reader the others' (and those of an episode taken
        # over while they arrive): one writer at a time, so an older event never replaces the latest message
        self._cap_lock = threading.Lock()
        self._later: queue.Queue[AlertRecord] = queue.Queue()
        self._writer: threading.Thread | None = None
        #: CAP messages written and not written (logged) since start; replay's exit code reflects the latter
        self.cap_written = 0
        self.cap_failed = 0

    def emit(self, records: list[AlertRecord]) -> list:
        """Send (not flush) the records to the alerts topic, write the JSONL and CAP outputs; the delivery
        futures of the sends."""
        futures = []
        for r in records:
            data = encode_record(r)
            if self.producer is not None:
                futures.append(send_checked(self.producer, self.topic, key=r.alert_id.encode(), value=data))
            if self.jsonl is not None:
                self.jsonl.write(data + b"\n")
            if self.cap_dir is not None:
                self._write_cap(r)
        return futures

    def write_cap_once(self, r: AlertRecord) -> None:
        """The CAP message of a record read back from the alerts topic (another instance's, usually), unless
        it is written already."""
        if self.cap_dir is not None and not (self.cap_dir / cap_filename(r.alert_id, r.seq)).exists():
            self._write_cap(r)

    def write_cap_later(self, r: AlertRecord) -> None:
        """``write_cap_once`` on a thread of its own: the city view's reader hands over what it reads back and
        reads on. A new replica reads the whole alerts topic at start, about 1 ms of writing (two fsyncs) per
        message, and its whole-city view waits for that reader. Messages still queued at exit are written at
        the next start (the topic is read again; what is written already is skipped)."""
        if self.cap_dir is None:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_queued, name="cap-writer", daemon=True)
            self._writer.start()
        self._later.put(r)

    def wait_written(self) -> None:
        """Until every message handed to ``write_cap_later`` is written (or its failure logged)."""
        self._later.join()

    def _write_queued(self) -> None:
        while True:
            r = self._later.get()
            try:
                self.write_cap_once(r)
            except Exception:  # an extra output: never stop the writer
                log.exception("CAP message for %s/%d not written", r.alert_id, r.seq)
            finally:
                self._later.task_done()

    def _history(self, r: AlertRecord) -> list[AlertRecord]:
        """The episode's records known here (its CAP ``references``): this instance's and, with several
        instances, those read back from the alerts topic (the events of an episode taken over from another)."""
        history = self.pipeline.alerts.episode_records(r.alert_id)
        city = self.pipeline.city_view
        return history if city is None else history + city.alert_log.episode_records(r.alert_id)

    def _write_cap(self, r: AlertRecord) -> None:
        layer = self.pipeline.layer
        for d in r.districts:
            if d not in self._polygons:
                try:
                    self._polygons[d] = layer.cap_polygon(d)
                except KeyError:
                    self._polygons[d] = []
        try:
            with self._cap_lock:
                write_cap(self.cap_dir, r, self._history(r), self._polygons, exercise=self.pipeline.exercise,
                          approximate_areas=layer.approximate, aggregates=self.pipeline.alerts.rule_aggregates,
                          top_level=self.pipeline.top_level(r.hazard, r.quantity))
            self.cap_written += 1
        except (CapError, OSError) as e:  # CAP is an extra output: never block the alert itself
            self.cap_failed += 1
            log.error("CAP message for %s/%d not written: %s", r.alert_id, r.seq, e)

