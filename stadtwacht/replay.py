"""``stadtwacht replay``: run recorded readings through the whole pipeline without Kafka.

Inputs: JSON Lines in the reading contract (one message per line: an object
or an array of readings) or sensor.community archive CSV (``.csv``/``.csv.gz``,
``;``-separated with ``sensor_id;sensor_type;location;lat;lon;timestamp;P1;...``).
Event time drives everything, so a month of history replays in seconds.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from ingest.batch import ReadingBatch
from ingest.community import community_sensor_id
from ingest.deadletter import DeadLetter
from ingest.decode import RawMessage
from ingest.quantities import QUANTITY_CODE
from ingest.sensor_index import SensorIndex
from stadtwacht.durations import parse_duration
from stadtwacht.errors import StadtwachtError
from stadtwacht.outputs import AlertOutputs
from stadtwacht.pipeline import Pipeline

__all__ = ["DRAIN_ATTEMPTS", "ReplayClock", "ReplaySummary", "drain_notifications", "is_archive_csv",
           "last_delivery_id", "read_archive_csv", "replay_files", "undelivered"]

log = logging.getLogger(__name__)

CHUNK = 20_000

#: After the replay, a channel whose first waiting notification failed this many times (retryably: refused for
#: now, timed out) is given up; the replay then exits 1 naming what was not delivered.
DRAIN_ATTEMPTS = 3
#: Real seconds between the attempts after the replay (doubling).
DRAIN_RETRY_S = 0.5
#: Longest the delivery after the replay waits for channels still taking notifications.
DRAIN_DEADLINE_S = 30.0


class ReplaySummary:
    def __init__(self) -> None:
        self.accepted = 0
        self.dead = 0
        self.records = 0
        self.dead_reasons: Counter[str] = Counter()  # reason -> readings dead-lettered for it
        self.cap_dir: Path | None = None
        self.cap_written = 0  # CAP messages written to cap_dir
        self.cap_missing = 0  # and those not written (each logged with its cause)

    def __str__(self) -> str:
        return (f"{self.accepted} readings accepted, {self.dead} dead-lettered, "
                f"{self.records} alert events")

    def problems(self, dead_letters_out: Path | None = None) -> list[str]:
        """Why the replay failed (empty when it did not): nothing accepted, CAP messages not written."""
        problems = []
        if self.accepted == 0:
            if self.dead:
                reasons = ", ".join(f"{r} {n}" for r, n in self.dead_reasons.most_common())
                where = f"see {dead_letters_out}" if dead_letters_out else "--dead-letters-out FILE says why"
                problems.append(f"no reading accepted: all {self.dead} dead-lettered ({reasons}; {where})")
            else:
                problems.append("no reading accepted: the input holds no readings")
        if self.cap_missing:
            problems.append(f"{self.cap_missing} of {self.cap_missing + self.cap_written} CAP messages not "
                            f"written to {self.cap_dir}")
        return problems


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def is_archive_csv(path: Path) -> bool:
    return ".csv" in path.suffixes


class ArchiveError(StadtwachtError):
    """A file taken for a sensor.community archive CSV that is not one, or a row of it that cannot be read."""


def read_archive_csv(path: Path, sensors: SensorIndex, chunk: int = CHUNK) -> Iterator[ReadingBatch]:
    """sensor.community archive rows as batches (P1 -> pm10, P2 -> pm2_5; ids ``sc-<sensor_id>``)."""
    with _open(path) as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8"), delimiter=";")
        try:
            header = next(reader, [])
            col = {name: i for i, name in enumerate(header)}
            missing = {"sensor_id", "lat", "lon", "timestamp", "P1", "P2"} - col.keys()
            if missing:
                raise ArchiveError(f"{path}: not a sensor.community archive CSV (no column {', '.join(sorted(missing))}"
                                   " in its first line; JSON Lines files are read by any other name)")
            rows: list[list[str]] = []
            line = 2
            for row in reader:
                rows.append(row)
                if len(rows) >= chunk:
                    yield _archive_batch(rows, col, sensors, path, line)
                    line += len(rows)
                    rows = []
            if rows:
                yield _archive_batch(rows, col, sensors, path, line)
        except UnicodeDecodeError as e:
            raise ArchiveError(f"{path}: not UTF-8 text ({e.reason})") from None


def _column(rows: list[list[str]], i: int, dtype: str, empty: str, path: Path, line: int) -> np.ndarray:
    """Column ``i`` parsed as ``dtype`` (``empty`` for a missing field); the first row it cannot read named."""
    texts = [r[i] if i < len(r) and r[i] else empty for r in rows]
    try:
        return np.array(texts, dtype=dtype)
    except ValueError:
        for k, text in enumerate(texts):
            try:
                np.array(text, dtype=dtype)
            except ValueError:
                what = "a number" if dtype == "float64" else "a date and time"
                raise ArchiveError(f"{path}: line {line + k}: {text!r} is not {what}") from None
        raise


def _archive_batch(rows: list[list[str]], col: dict[str, int], sensors: SensorIndex, path: Path,
                   line: int) -> ReadingBatch:
    ids = [community_sensor_id(r[col["sensor_id"]]) for r in rows]
    sensor = sensors.lookup(ids)
    lat, lon = (_column(rows, col[c], "float64", "nan", path, line) for c in ("lat", "lon"))
    has = np.isfinite(lat) & np.isfinite(lon)
    sensors.set_positions(sensor[has], lat[has], lon[has])
    stamps = [[r[col["timestamp"]].rstrip("Z").split("+")[0]] for r in rows]
    time_ns = _column(stamps, 0, "datetime64[ns]", "", path, line).astype(np.int64)
    parts = []
    for name, q in (("P1", "pm10"), ("P2", "pm2_5")):
        v = _column(rows, col[name], "float64", "nan", path, line)
        ok = np.isfinite(v)
        parts.append(ReadingBatch.from_columns(sensor[ok], np.full(ok.sum(), QUANTITY_CODE[q]), time_ns[ok], v[ok]))
    return ReadingBatch.concat(parts).sorted_by_time()


def _jsonl_messages(path: Path, chunk: int = CHUNK) -> Iterator[list[RawMessage]]:
    with _open(path) as f:
        batch: list[RawMessage] = []
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            batch.append(RawMessage(f"replay:{path.name}", 0, lineno, None, line))
            if len(batch) >= chunk:
                yield batch
                batch = []
        if batch:
            yield batch


def replay_files(pipeline: Pipeline, inputs: list[Path], outputs: AlertOutputs,
                 dead_out: IO[bytes] | None = None, progress: bool | None = None) -> ReplaySummary:
    """Run every input through the pipeline in order; alert records go to ``outputs``."""
    summary = ReplaySummary()
    if progress is None:
        progress = sys.stderr.isatty()
    total = sum(p.stat().st_size for p in inputs)
    with tqdm(total=total, unit="B", unit_scale=True, disable=not progress, desc="replay") as bar:
        for path in inputs:
            done = 0
            if is_archive_csv(path):
                size = path.stat().st_size
                for batch in read_archive_csv(path, pipeline.sensors):
                    n = len(batch)
                    result = pipeline.process_batch(batch)
                    _account(summary, result, n, outputs, dead_out)
                    step = min(size - done, max(1, size * n // 215_000))
                    bar.update(step)
                    done += step
            else:
                for messages in _jsonl_messages(path):
                    result = pipeline.process_messages(messages)
                    _account(summary, result, None, outputs, dead_out)
                    step = sum(len(m.value) + 1 for m in messages)
                    bar.update(step)
                    done += step
            bar.update(max(0, path.stat().st_size - done))
    outputs.emit(pipeline.tick())
    summary.cap_dir, summary.cap_written, summary.cap_missing = outputs.cap_dir, outputs.cap_written, outputs.cap_failed
    return summary


def _account(summary: ReplaySummary, result, n: int | None, outputs: AlertOutputs,
             dead_out: IO[bytes] | None) -> None:
    summary.accepted += result.accepted
    summary.dead += sum(d.readings for d in result.dead)
    summary.records += len(result.records)
    for d in result.dead:
        summary.dead_reasons[d.reason] += d.readings
    outputs.emit(result.records)
    if dead_out is not None:
        for d in result.dead:
            dead_out.write(_dead_line(d))


class ReplayClock:
    """The alert service's clock in a replay: the pipeline's event time (the archive's), plus what
    ``drain_notifications`` moved it on by after the archive was read (it stands still there otherwise)."""

    def __init__(self, event_ns: Callable[[], int]) -> None:
        self._event_ns = event_ns
        self.ahead_ns = 0

    def __call__(self) -> int:
        return self._event_ns() + self.ahead_ns


def drain_notifications(pipeline: Pipeline, clock: ReplayClock, attempts: int = DRAIN_ATTEMPTS,
                        deadline_s: float = DRAIN_DEADLINE_S) -> None:
    """Deliver what the replay left in the outbox, then stop the notifier; ``undelivered`` tells what did not go.

    Replay's alert clock stands still at the archive's last reading, so a retry the notifier scheduled after
    a failure never fell due, and stopping it waited its whole drain deadline (30 s) for nothing. Here the
    outbox is delivered from this thread: each round moves the clock on past the longest backoff
    (``[alerting] retry_max``), so every retry is due, and the rounds are ``DRAIN_RETRY_S`` (doubling) of real
    time apart. A channel is given up once its first waiting notification has failed ``attempts`` times
    (counting those during the replay), every channel after ``deadline_s``; a channel taking notifications
    gets every one that is due (``AlertService.deliver_pending``).
    """
    alerts = pipeline.alerts
    alerts.stop(deadline_s=0.0)  # the groups still waiting go into the outbox; the notifier threads stop
    skip_ns = parse_duration(pipeline.cfg.alerting.retry_max)
    channels = set(alerts.channel_labels)
    deadline = time.monotonic() + deadline_s
    wait_s = DRAIN_RETRY_S
    while True:
        clock.ahead_ns += skip_ns
        alerts.deliver_pending()
        heads: dict[str, dict] = {}
        for d in alerts.outbox("pending"):  # (in id order: each channel's first is the one it retries)
            if d["channel"] in channels:
                heads.setdefault(d["channel"], d)
        if all(d["attempts"] >= attempts for d in heads.values()) or time.monotonic() + wait_s > deadline:
            return
        time.sleep(wait_s)
        wait_s *= 2


def last_delivery_id(pipeline: Pipeline) -> int:
    """The newest notification delivery in the outbox (0 when none): those of a replay come after it."""
    return max((d["id"] for d in pipeline.alerts.outbox()), default=0)


def undelivered(pipeline: Pipeline, after_id: int) -> str | None:
    """What of the notifications queued after delivery ``after_id`` was not delivered, as one phrase."""
    queued = [d for d in pipeline.alerts.outbox() if d["id"] > after_id]
    missed = Counter((d["channel"], d["state"]) for d in queued if d["state"] != "sent")
    if not missed:
        return None
    labels = pipeline.alerts.channel_labels
    detail = ", ".join(f"{channel} ({labels.get(channel, '?')}) {n} {state}"
                       for (channel, state), n in sorted(missed.items()))
    return f"{missed.total()} of {len(queued)} notifications not delivered: {detail}"


def _dead_line(d: DeadLetter) -> bytes:
    import msgspec

    return msgspec.json.encode({
        "source": f"{d.topic}/{d.partition}/{d.offset}", "element": d.element, "reason": d.reason,
        "detail": d.detail, "readings": d.readings, "value": d.value.decode("utf-8", "replace"),
    }) + b"\n"
