"""The detection kernels' disk cache is keyed on every source file of detection/, not only the kernel's own;
other packages' kernels keep numba's usual place whatever the import order (a subprocess importing in another
order must find the cache the test session filled, or it compiles for tens of seconds)."""

import os
from pathlib import Path

import numba
import pytest
from numba.core.registry import CPUDispatcher

import ingest.reading_scanner as scanner
from detection.engine import _process_rows
from detection.kernel_cache import source_digest


def test_engine_kernels_cache_under_a_directory_named_by_the_package_source_digest():
    # the fused loop inlines helpers from rules.py, windows.py and health.py: an edit there must miss the cache
    assert f"numba-{source_digest()}" in _process_rows._cache._cache_path


@pytest.mark.skipif(bool(os.environ.get("NUMBA_CACHE_DIR")), reason="NUMBA_CACHE_DIR set: numba's usual place moved")
def test_other_kernels_keep_numbas_usual_cache_place():
    kernels = [k for k in vars(scanner).values() if isinstance(k, CPUDispatcher)]
    assert kernels and {k._cache._cache_path for k in kernels} == {str(Path(scanner.__file__).parent / "__pycache__")}
    assert not numba.config.CACHE_DIR  # restored after the detection package defined its kernels
