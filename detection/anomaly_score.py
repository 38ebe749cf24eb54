"""Anomaly scores for standalone ``timestamp,value`` series (the ``anomaly-score`` command and NAB runs)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detection.anomaly import AnomalyDetector
from detection.anomaly_config import AnomalyConfig
from stadtwacht.errors import StadtwachtError

__all__ = ["ScoredCsv", "SeriesError", "score_csv", "score_many", "score_series", "write_scores"]


class SeriesError(StadtwachtError):
    """A ``timestamp,value`` CSV with nothing to score: not that format, or no row with a time and a finite value."""


@dataclass(frozen=True, slots=True)
class ScoredCsv:
    """What ``write_scores`` wrote: the output and the input rows it left out."""

    path: Path
    rows: int  # data rows of the input (blank lines not counted)
    rejected: int  # of them without a date/time or a finite value: not scored, not in the output
    first_rejected: str  # "line N: why" of the first of them ("" when none)


def score_series(times_ns: np.ndarray, values: np.ndarray, config: AnomalyConfig | None = None) -> np.ndarray:
    """Online anomaly scores of one series in time order, as a fresh detector sees it."""
    return score_many([(times_ns, values)], config)[0]


def score_many(series: Sequence[tuple[np.ndarray, np.ndarray]],
               config: AnomalyConfig | None = None) -> list[np.ndarray]:
    """Scores of several independent series with one detector (series ``i`` is sensor ``i``), in one batch."""
    config = config or AnomalyConfig()
    detector = AnomalyDetector(config, capacity=max(len(series), 1))
    sizes = [len(t) for t, _ in series]
    sensor = np.repeat(np.arange(len(series), dtype=np.int32), sizes)
    time = np.concatenate([np.asarray(t, dtype=np.int64) for t, _ in series]) if series else np.zeros(0, np.int64)
    value = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in series]) if series else np.zeros(0)
    scores = detector.update(sensor, np.zeros(sensor.size, dtype=np.uint8), time, value)
    return np.split(scores, np.cumsum(sizes)[:-1])


def score_csv(input_path: Path, output_path: Path | None = None, config: AnomalyConfig | None = None) -> Path:
    """Write ``timestamp,value,anomaly_score`` for a ``timestamp,value`` CSV; returns the path written.

    Without ``output_path`` the result goes next to the input as ``<stem>.scored.csv``; an ``output_path``
    of ``-`` writes to standard output (and returns ``Path("-")``). Rows must be in time order. See
    ``write_scores`` for rows that cannot be scored.
    """
    return write_scores(input_path, output_path, config).path


def write_scores(input_path: Path, output_path: Path | None = None,
                 config: AnomalyConfig | None = None) -> ScoredCsv:
    """``score_csv``, telling which rows were left out.

    A row without a readable date/time or a finite value (empty, ``nan``, ``inf``, not a number) is left out
    of the scoring and of the output: fed to the detector it would turn every later score into NaN. Raises
    ``SeriesError`` (and writes nothing) when the input is not a ``timestamp,value`` CSV or no row is left.
    """
    input_path = Path(input_path)
    lines, stamps, raw_values, rejected = _read_rows(input_path)
    rows = len(lines) + len(rejected)
    times = _parse(stamps, "datetime64[ns]", np.datetime64("NaT"))
    values = _parse(raw_values, np.float64, np.nan)
    bad_time, bad_value = np.isnat(times), ~np.isfinite(values)
    for i in np.flatnonzero(bad_time | bad_value):
        why = (f"timestamp {stamps[i]!r} is not a date and time" if bad_time[i]
               else f"value {raw_values[i]!r} is not a finite number")
        rejected.append((lines[i], why))
    if rows == 0:
        raise SeriesError(f"{input_path}: no rows to score (only the header)")
    rejected.sort()
    first = f"line {rejected[0][0]}: {rejected[0][1]}" if rejected else ""
    if len(rejected) == rows:
        raise SeriesError(f"{input_path}: no row can be scored: all {rows} rejected (first: {first})")
    keep = ~(bad_time | bad_value)
    times, values = times[keep].astype(np.int64), values[keep]
    scores = score_series(times, values, config)
    stamps_out = np.datetime_as_string(times.astype("datetime64[ns]"), unit="s")
    out_lines = ["timestamp,value,anomaly_score"]
    scored = zip(stamps_out, values.tolist(), scores, strict=True)
    out_lines += [f"{t.replace('T', ' ')},{v:.10g},{s:.6f}" for t, v, s in scored]
    text = "\n".join(out_lines) + "\n"
    if output_path is not None and str(output_path) == "-":
        sys.stdout.write(text)
        try:  # a write error now, not at interpreter exit after the command said it was done
            sys.stdout.flush()
        except OSError as e:
            raise OSError(e.errno, e.strerror, "standard output") from e
        out = Path("-")
    else:
        out = Path(output_path) if output_path is not None else input_path.with_name(input_path.stem + ".scored.csv")
        out.write_text(text, encoding="utf-8")
    return ScoredCsv(out, rows, len(rejected), first)


def _read_rows(path: Path) -> tuple[list[int], list[str], list[str], list[tuple[int, str]]]:
    """Line numbers, timestamp and value texts of the data rows; the rows without two fields as rejected."""
    lines: list[int] = []
    stamps: list[str] = []
    values: list[str] = []
    rejected: list[tuple[int, str]] = []
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().strip()
            if first.split(",")[:2] != ["timestamp", "value"]:
                got = f"first line {first!r}" if first else "empty first line"
                raise SeriesError(f"{path}: not a timestamp,value CSV ({got})")
            for lineno, line in enumerate(f, start=2):
                if not line.strip():
                    continue
                fields = line.rstrip("\n").split(",")
                if len(fields) < 2:
                    rejected.append((lineno, "not two comma-separated fields"))
                    continue
                lines.append(lineno)
                stamps.append(fields[0])
                values.append(fields[1])
    except UnicodeDecodeError as e:
        raise SeriesError(f"{path}: not UTF-8 text ({e.reason})") from e
    return lines, stamps, values, rejected


def _parse(texts: list[str], dtype, missing) -> np.ndarray:
    """The texts as one array (as ``np.array(texts, dtype)``), ``missing`` where one cannot be read."""
    try:
        return np.array(texts, dtype=dtype)
    except (ValueError, OverflowError):
        return np.array([_parse_one(t, dtype, missing) for t in texts], dtype=dtype)


def _parse_one(text: str, dtype, missing):
    try:
        return np.array(text, dtype=dtype)[()]
    except (ValueError, OverflowError):
        return missing
