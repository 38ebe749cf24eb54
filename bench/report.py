"""Render bench-results.json as a Markdown table, optionally into a file between bench markers.

    python -m bench.report [RESULTS] [--into FILE.md]

Without ``--into`` the Markdown goes to stdout. With it, the block between
``<!-- bench:start -->`` and ``<!-- bench:end -->`` in FILE.md is replaced
(markers kept); a file without both markers is an error, never rewritten.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["END", "START", "render", "replace_block"]

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"


def _num(v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f} M"
    if a >= 1e4:
        return f"{v / 1e3:.0f} k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(doc: dict) -> str:
    """The results document as Markdown: a header line with machine and date, then one row per figure."""
    m = doc.get("machine", {})
    cpu = m.get("cpu_model") or m.get("processor") or "?"
    mem = f", {m['memory_kb'] / 1048576:.0f} GiB" if m.get("memory_kb") else ""
    lines = [
        f"Measured {doc.get('date', '?')} on {cpu} ({m.get('cpus', '?')} cores{mem}), Python {m.get('python', '?')}"
        + (" — quick mode (smaller, noisier)" if doc.get("quick") else "") + ".",
        "",
        "| figure | value | unit | baseline | ratio | notes |",
        "|---|---:|---|---:|---:|---|",
    ]
    for f in doc.get("figures", []):
        extra = []
        for key in ("same_events", "identical", "extrapolated"):
            if key in f:
                extra.append(f"{key}: {f[key]}")
        if f.get("note"):
            extra.append(f["note"])
        lines.append("| " + " | ".join([
            f"`{f['name']}`", _num(f.get("value")), _cell(str(f.get("unit", ""))), _num(f.get("baseline_value")),
            _num(f.get("ratio")), _cell("; ".join(extra)),
        ]) + " |")
    notes = [n for n in doc.get("notes", []) if n]
    if notes:
        lines += ["", "Run notes: " + _cell("; ".join(notes)) + "."]
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``; ValueError without both markers."""
    start = text.find(START)
    end = text.find(END, start + len(START)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise ValueError(f"markers {START} ... {END} not found")
    return text[: start + len(START)] + "\n" + block.rstrip("\n") + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="bench-results.json", help="results JSON (default: %(default)s)")
    parser.add_argument("--into", metavar="FILE.md", help="replace the block between the bench markers in FILE.md")
    args = parser.parse_args(argv)
    table = render(json.loads(Path(args.results).read_text(encoding="utf-8")))
    if not args.into:
        sys.stdout.write(table)
        return 0
    target = Path(args.into)
    try:
        target.write_text(replace_block(target.read_text(encoding="utf-8"), table), encoding="utf-8")
    except ValueError as e:
        print(f"{target}: {e}", file=sys.stderr)
        return 2
    print(f"updated {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
