"""A SIGTERM while the kernels compile (the first start of an install: about a minute) ends the process at once.

Before, the signal only set the stop flag and the compile ran to its end, then the loop connected and stopped:
a rollout's grace period or an operator's Ctrl-C waited out the minute. A real process, an empty numba cache (so
the kernels really compile), no broker needed (nothing is read before the kernels are loaded).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.service import wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_during_the_kernel_load_stops_at_once(tmp_path):
    log = tmp_path / "run.log"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stadtwacht", "run", "--bootstrap", "127.0.0.1:9",
                                 "--state-dir", str(tmp_path / "state"), "--metrics-port", "0"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "loading the decode and detection kernels" in log.read_text(), 60,
                   what="the kernel load to start")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)  # the compile alone takes longer on an empty cache
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert rc == 0, text
    assert "stopped while the kernels were loading" in text, text
    assert "kernels ready" not in text, text  # it did not wait for the compile
