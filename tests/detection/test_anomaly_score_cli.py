"""`stadtwacht anomaly-score` exits 1 with one line when it wrote no output or no row could be scored, 0 with a
count of the rows left out when only some could; in process through ``main(argv)``, on real files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detection.anomaly_score import score_csv
from stadtwacht.cli import main
from tests.support.streams import fill_stdout

START = np.datetime64("2024-03-01T00:00:00")


def _rows(n: int, start: int = 0) -> list[str]:
    """``n`` five-minute rows of a noisy daily cycle with a spike at row 300."""
    rng = np.random.default_rng(7)
    i = np.arange(start, start + n)
    v = 50 + 10 * np.sin(2 * np.pi * i / 288) + rng.normal(0, 1, n)
    v[(i == 300)] += 80
    stamps = [str(START + np.timedelta64(5 * k, "m")).replace("T", " ") for k in i]
    return [f"{t},{x:.3f}" for t, x in zip(stamps, v, strict=True)]


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("timestamp,value\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def _score(capsys, *argv) -> tuple[int, list[str]]:
    rc = main(["anomaly-score", *map(str, argv)])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_anomaly_score_that_works_exits_0_and_names_the_output(tmp_path, capsys):
    src, out = _csv(tmp_path / "series.csv", _rows(600)), tmp_path / "scored.csv"
    rc, err = _score(capsys, src, "-o", out)
    assert rc == 0
    assert err == [str(out)]
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score" and len(lines) == 601
    assert max(float(line.rsplit(",", 1)[1]) for line in lines[1:]) > 0.5  # the spike


@pytest.mark.parametrize(("bad", "first"), [
    (["2024-03-01 00:00:00,nan", "2024-03-01 00:05:00,inf"], "line 2: value 'nan' is not a finite number"),
    (["2024-03-01 00:00:00,", "2024-03-01 00:05:00,"], "line 2: value '' is not a finite number"),
    (["2024-03-01 00:00:00,n/a", "2024-03-01 00:05:00,-inf"], "line 2: value 'n/a' is not a finite number"),
    (["yesterday,1.0", "2024-03-01 00:05:00,inf"], "line 2: timestamp 'yesterday' is not a date and time"),
    (["2024-03-01 00:00:00 1.0", "2024-03-01 00:05:00,nan"], "line 2: not two comma-separated fields"),
], ids=["nan-inf", "empty", "not-a-number", "bad-time", "one-field"])
def test_anomaly_score_with_no_usable_row_exits_1_and_writes_nothing(tmp_path, capsys, bad, first):
    src, out = _csv(tmp_path / "bad.csv", bad), tmp_path / "scored.csv"
    rc, err = _score(capsys, src, "-o", out)
    assert rc == 1
    assert err == [f"stadtwacht anomaly-score: {src}: no row can be scored: all 2 rejected (first: {first})"]
    assert not out.exists()


def test_anomaly_score_of_a_header_only_csv_exits_1(tmp_path, capsys):
    src, out = _csv(tmp_path / "empty.csv", []), tmp_path / "scored.csv"
    rc, err = _score(capsys, src, "-o", out)
    assert rc == 1
    assert err == [f"stadtwacht anomaly-score: {src}: no rows to score (only the header)"]
    assert not out.exists()


def test_anomaly_score_of_another_csv_exits_1_in_one_line(tmp_path, capsys):
    src = tmp_path / "other.csv"
    src.write_text("time;level\n2024-03-01 00:00:00;1\n")
    rc, err = _score(capsys, src)
    assert rc == 1
    assert err == [f"stadtwacht anomaly-score: {src}: not a timestamp,value CSV (first line 'time;level')"]


def test_anomaly_score_leaves_unusable_rows_out_says_how_many_and_exits_0(tmp_path, capsys):
    good = _rows(600)
    clean = score_csv(_csv(tmp_path / "clean.csv", good), tmp_path / "clean.scored.csv")
    broken = [*good[:100], "2024-03-01 08:20:00,nan", "2024-03-01 08:20:00,", "garbage", *good[100:]]
    src, out = _csv(tmp_path / "gaps.csv", broken), tmp_path / "gaps.scored.csv"
    rc, err = _score(capsys, src, "-o", out)
    assert rc == 0
    assert err == [str(out), "anomaly-score: 3 of 603 rows rejected, not scored and left out of the output "
                             "(first: line 102: value 'nan' is not a finite number)"]
    # the detector never saw them: the other rows score as without them (a NaN made every later score NaN)
    assert out.read_text() == clean.read_text()


def test_anomaly_score_exits_1_when_standard_output_cannot_be_written(tmp_path, capsys, monkeypatch):
    fill_stdout(monkeypatch)
    rc, err = _score(capsys, _csv(tmp_path / "series.csv", _rows(50)), "-o", "-")
    assert rc == 1
    assert err == ["stadtwacht anomaly-score: [Errno 28] No space left on device: 'standard output'"]


def test_anomaly_score_exits_1_when_the_output_file_cannot_be_written(tmp_path, capsys):
    """Already so before: a guard that it stays so."""
    out = tmp_path / "missing-dir" / "scored.csv"
    rc, err = _score(capsys, _csv(tmp_path / "series.csv", _rows(50)), "-o", out)
    assert rc == 1
    assert err == [f"stadtwacht anomaly-score: [Errno 2] No such file or directory: '{out}'"]
