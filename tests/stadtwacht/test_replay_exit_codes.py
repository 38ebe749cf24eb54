"""`stadtwacht replay` exits 1 when its outputs failed or no reading was accepted, 0 otherwise (a script relies
on it); in process through ``main(argv)``, on real files in tmp_path, no broker."""

from __future__ import annotations

import errno
import json
import re
import time
from pathlib import Path

import pytest

import stadtwacht.outputs
from stadtwacht.cli import main
from tests.support.receivers import HttpReceiver
from tests.support.streams import fill_stdout

# pegel-stuttgart (shipped registry) rising from 300 to 540 cm every 15 minutes: crosses the flood levels
READINGS = [{"sensor_id": "pegel-stuttgart", "time": f"2025-11-26T{4 + i // 4:02d}:{i % 4 * 15:02d}:00+01:00",
             "values": {"water_level": 300.0 + 20 * i}} for i in range(13)]
GARBAGE = ["not json", '{"sensor_id": "pegel-stuttgart"}']


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _good(tmp_path: Path) -> Path:
    return _jsonl(tmp_path / "readings.jsonl", [json.dumps(r) for r in READINGS])


def _replay(capsys, *argv) -> tuple[int, list[str]]:
    rc = main(["replay", "--log-level", "CRITICAL", *map(str, argv)])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_replay_that_works_exits_0_and_says_only_its_summary(tmp_path, capsys):
    alerts = tmp_path / "alerts.jsonl"
    rc, err = _replay(capsys, _good(tmp_path), "--alerts-out", alerts, "--cap-dir", tmp_path / "cap")
    assert rc == 0
    events = len(alerts.read_text().splitlines())
    assert events > 0
    assert err == [f"replay: 13 readings accepted, 0 dead-lettered, {events} alert events"]
    assert len(list((tmp_path / "cap").glob("flood-*-*.xml"))) == events


def test_replay_with_some_readings_rejected_exits_0_and_counts_them(tmp_path, capsys):
    src = _jsonl(tmp_path / "mixed.jsonl", [json.dumps(r) for r in READINGS] + GARBAGE)
    rc, err = _replay(capsys, src)
    assert rc == 0
    assert len(err) == 1 and err[0].startswith("replay: 13 readings accepted, 2 dead-lettered, ")


def test_replay_with_every_reading_rejected_exits_1(tmp_path, capsys):
    src = _jsonl(tmp_path / "bad.jsonl", GARBAGE)
    dead = tmp_path / "dead.jsonl"
    rc, err = _replay(capsys, src, "--dead-letters-out", dead)
    assert rc == 1
    assert err == ["replay: 0 readings accepted, 2 dead-lettered, 0 alert events",
                   f"stadtwacht replay: no reading accepted: all 2 dead-lettered (malformed 2; see {dead})"]
    assert len(dead.read_text().splitlines()) == 2  # the dead letters are still written

    rc, err = _replay(capsys, src)
    assert rc == 1
    assert err[-1] == ("stadtwacht replay: no reading accepted: all 2 dead-lettered "
                       "(malformed 2; --dead-letters-out FILE says why)")


def test_replay_of_an_input_without_readings_exits_1(tmp_path, capsys):
    rc, err = _replay(capsys, _jsonl(tmp_path / "empty.jsonl", []))
    assert rc == 1
    assert err[-1] == "stadtwacht replay: no reading accepted: the input holds no readings"


def test_replay_exits_1_when_cap_messages_cannot_be_written(tmp_path, capsys):
    not_a_dir = tmp_path / "cap"
    not_a_dir.write_text("a file where the CAP directory should be")
    alerts = tmp_path / "alerts.jsonl"
    rc, err = _replay(capsys, _good(tmp_path), "--alerts-out", alerts, "--cap-dir", not_a_dir)
    assert rc == 1
    events = len(alerts.read_text().splitlines())
    assert err[-1] == f"stadtwacht replay: {events} of {events} CAP messages not written to {not_a_dir}"


def test_replay_cap_files_of_an_earlier_run_do_not_count_as_written(tmp_path, capsys, monkeypatch):
    src, cap = _good(tmp_path), tmp_path / "cap"
    assert _replay(capsys, src, "--cap-dir", cap)[0] == 0
    assert any(cap.glob("flood-*-*.xml"))  # the same alert ids and seqs as the next run's

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stadtwacht.outputs, "write_cap", full_disk)
    rc, err = _replay(capsys, src, "--cap-dir", cap)
    assert rc == 1
    assert err[-1].startswith("stadtwacht replay: ") and err[-1].endswith(f"CAP messages not written to {cap}")


def test_replay_exits_1_when_a_notify_channel_fails(tmp_path, capsys):
    rc, err = _replay(capsys, _good(tmp_path), "--notify", "foo://bar")  # apprise rejects the URL: permanent
    assert rc == 1
    assert re.fullmatch(r"stadtwacht replay: (\d+) of \1 notifications not delivered: notify-1 \(foo://\) \1 failed",
                        err[-1]), err

    sink = tmp_path / "notified.jsonl"
    rc, err = _replay(capsys, _good(tmp_path), "--notify", f"file://{sink}")
    assert rc == 0, err
    assert sink.read_text().strip()


def test_replay_exits_1_when_standard_output_cannot_be_written(tmp_path, capsys, monkeypatch):
    fill_stdout(monkeypatch)
    rc, err = _replay(capsys, _good(tmp_path), "--alerts-out", "-")
    assert rc == 1
    assert err[-1] == "stadtwacht replay: [Errno 28] No space left on device: 'standard output'"


@pytest.mark.parametrize("option", ["--alerts-out", "--dead-letters-out"])
def test_replay_exits_1_when_an_output_file_cannot_be_opened(tmp_path, capsys, option):
    """Already so before: a guard that it stays so."""
    target = tmp_path / "missing-dir" / "out.jsonl"
    rc, err = _replay(capsys, _good(tmp_path), option, target)
    assert rc == 1
    assert err[-1] == f"stadtwacht replay: [Errno 2] No such file or directory: '{target}'"


_ARCHIVE_HEADER = "sensor_id;sensor_type;location;lat;lon;timestamp;P1;durP1;ratioP1;P2;durP2;ratioP2\n"


@pytest.mark.parametrize(("rows", "message"), [
    ("a,b\n1,2\n", "not a sensor.community archive CSV (no column P1, P2, lat, lon, sensor_id, timestamp"),
    (_ARCHIVE_HEADER + "1;SDS011;2;48.7;9.1;2020-01-01T00:00:00;12;;;3;;\n"
     "1;SDS011;2;48.7;9.1;yesterday;12;;;3;;\n", "line 3: 'yesterday' is not a date and time"),
    (_ARCHIVE_HEADER + "1;SDS011;2;48.7;9.1;2020-01-01T00:00:00;abc;;;3;;\n", "line 2: 'abc' is not a number"),
])
def test_a_csv_that_is_no_archive_is_refused_in_one_line(tmp_path, capsys, rows, message):
    """A .csv is taken for a sensor.community archive: one that is not, or a row it cannot read, is named
    (it was a traceback, and the exit code 0)."""
    src = tmp_path / "in.csv"
    src.write_text(rows, encoding="utf-8")
    rc, err = _replay(capsys, src)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"stadtwacht replay: {src}: ") and message in err[0], err


def test_replay_gives_up_a_notification_refused_for_now_within_seconds_and_exits_1(tmp_path, capsys,
                                                                                   compiled_kernels):
    """A receiver answering 503 (a retryable failure): replay tries again a few times, waiting in real time, then
    exits 1 naming what was not delivered. Before, it waited the notifier's whole 30 s stop deadline: replay's
    alert clock is the archive's event time, which stands still after the last reading, so no retry fell due."""
    receiver = HttpReceiver(status=503)
    try:
        started = time.monotonic()
        rc, err = _replay(capsys, _good(tmp_path), "--notify", receiver.url)
        took = time.monotonic() - started
    finally:
        receiver.stop()
    assert rc == 1
    assert took < 12, f"replay took {took:.1f} s"
    assert re.fullmatch(r"stadtwacht replay: (\d+) of \1 notifications not delivered: notify-1 \(json://[^)]*\) \1 "
                        r"pending", err[-1]), err
    assert len(receiver.posts) >= 3  # tried again (stadtwacht.replay.DRAIN_ATTEMPTS), not given up at once
