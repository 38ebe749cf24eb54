"""The benchmark harness runs in quick mode and writes the documented JSON shape; the report renders it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import END, START, render, replace_block

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared" / "data"


def test_quick_harness_run_writes_figures_with_machine_details(tmp_path):
    if not (SHARED / "stuttgart" / "districts.geojson").exists():
        pytest.skip("../shared/data/stuttgart/districts.geojson absent (shared data lives beside the repo)")
    out = tmp_path / "results.json"
    env = {**os.environ, "BENCH_QUICK": "1", "BENCH_ONLY": "district_map", "BENCH_OUT": str(out)}
    proc = subprocess.run([sys.executable, "-m", "bench"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    assert {"python", "platform", "cpus"} <= set(doc["machine"])
    names = [f["name"] for f in doc["figures"]]
    assert "district_map" in names, doc["notes"]
    for f in doc["figures"]:
        assert isinstance(f["name"], str) and isinstance(f["unit"], str)
        assert isinstance(f["value"], int | float)
        if "ratio" in f:
            assert isinstance(f["baseline_value"], int | float)
    table = render(doc)
    assert "`district_map`" in table and "| figure | value |" in table


DOC = {"date": "2026-11-26T07:00:00+00:00", "quick": False, "notes": ["e2e: 40 s"],
       "machine": {"python": "3.11.7", "cpus": 2, "cpu_model": "Test CPU", "memory_kb": 25165824},
       "figures": [
           {"name": "e2e", "value": 512345.6, "unit": "readings/s", "baseline_value": 600000.0, "ratio": 0.854,
            "note": "goal | 0.8"},
           {"name": "catchup_10m", "value": 19.52, "unit": "s", "extrapolated": True},
           {"name": "latency_p99", "value": float("nan"), "unit": "ms"},
       ]}


@pytest.mark.parametrize(("name", "row"), [
    ("e2e", "| `e2e` | 512 k | readings/s | 600 k | 0.854 | goal \\| 0.8 |"),
    ("catchup_10m", "| `catchup_10m` | 19.52 | s | – | – | extrapolated: True |"),
    ("latency_p99", "| `latency_p99` | – | ms | – | – |  |"),
])
def test_rows_render(name, row):
    assert row in render(DOC).splitlines()


def test_replace_block_keeps_the_markers_and_the_rest(tmp_path):
    text = f"# Benchmarks\n\nintro\n\n{START}\nold table\n{END}\n\nafter\n"
    new = replace_block(text, render(DOC))
    assert new.startswith("# Benchmarks\n\nintro\n\n" + START + "\nMeasured 2026-11-26")
    assert new.endswith(END + "\n\nafter\n")
    assert "old table" not in new
    assert replace_block(new, render(DOC)) == new  # idempotent


def test_replace_block_refuses_a_file_without_markers():
    with pytest.raises(ValueError, match="markers"):
        replace_block("# no markers here\n", "table")


def test_report_cli_updates_a_markdown_file(tmp_path):
    results = tmp_path / "r.json"
    results.write_text(json.dumps(DOC))
    md = tmp_path / "b.md"
    md.write_text(f"x\n{START}\n{END}\n")
    proc = subprocess.run([sys.executable, "-m", "bench.report", str(results), "--into", str(md)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "`catchup_10m`" in md.read_text()
    md.write_text("no markers\n")
    proc = subprocess.run([sys.executable, "-m", "bench.report", str(results), "--into", str(md)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and md.read_text() == "no markers\n"
