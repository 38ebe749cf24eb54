"""Run every benchmark and write ``bench-results.json`` (or ``$BENCH_OUT``).

Each module's ``run(quick)`` returns figures measured side by side with their
baseline in the same run, so ratios hold on a noisy shared machine. Nothing
here fails on speed. ``BENCH_QUICK=1`` makes every figure smaller and faster;
``BENCH_ONLY=ingest,detect`` runs a subset.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

MODULES = ["ingest", "consumer_backends", "detect", "district_map", "e2e", "latency", "peer_quix", "nab"]


def machine() -> dict:
    import numpy as np

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": np.__version__, "processor": platform.processor() or platform.machine()}
    try:
        with open("/proc/meminfo") as f:
            info["memory_kb"] = int(f.readline().split()[1])
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def main() -> int:
    quick = os.environ.get("BENCH_QUICK") == "1"
    only = [m for m in os.environ.get("BENCH_ONLY", "").split(",") if m]
    out = Path(os.environ.get("BENCH_OUT", "bench-results.json"))
    doc = {"date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "quick": quick,
           "machine": machine(), "figures": [], "notes": []}
    for name in only or MODULES:
        started = time.time()
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ImportError as e:
            doc["notes"].append(f"{name}: not run ({e})")
            continue
        print(f"bench {name} ...", file=sys.stderr, flush=True)
        try:
            figures = mod.run(quick=quick)
        except Exception as e:  # a broken benchmark is reported, the others still run
            traceback.print_exc()
            doc["notes"].append(f"{name}: failed: {type(e).__name__}: {e}")
            continue
        for f in figures:
            f.setdefault("module", name)
            doc["figures"].append(f)
            base = f" (baseline {f['baseline_value']:.4g}, ratio {f['ratio']:.3g})" if "ratio" in f else ""
            print(f"  {f['name']}: {f['value']:.4g} {f['unit']}{base}", file=sys.stderr)
        doc["notes"].append(f"{name}: {time.time() - started:.0f} s")
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
