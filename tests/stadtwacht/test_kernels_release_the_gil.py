"""Every compiled kernel of the hot path releases the GIL while it runs.

The loop thread shares the interpreter with kafka-python's IO thread (it reads
the next fetch answer meanwhile), the notifier threads (a webhook send waits
for the GIL after every socket call) and the HTTP threads: a kernel holding the
GIL for tens of milliseconds stalls all of them.
"""

from __future__ import annotations

import importlib

import pytest
from numba.core.registry import CPUDispatcher

MODULES = ["ingest.reading_scanner", "detection.anomaly", "detection.engine", "detection.health", "detection.rules",
           "detection.windows"]


@pytest.mark.parametrize("name", MODULES)
def test_kernels_are_nogil(name):
    module = importlib.import_module(name)
    kernels = {k: v for k, v in vars(module).items() if isinstance(v, CPUDispatcher) and v.__module__ == name}
    assert kernels, f"no compiled kernels found in {name}"
    holding = sorted(k for k, v in kernels.items() if not v.targetoptions.get("nogil"))
    assert not holding, f"{name}: kernels compiled without nogil=True: {holding}"
