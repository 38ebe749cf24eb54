"""The compiled kernels' disk cache is keyed on every source file of detection/, not only the kernel's own."""

from detection.engine import _process_rows
from detection.kernel_cache import source_digest


def test_engine_kernels_cache_under_a_directory_named_by_the_package_source_digest():
    # the fused loop inlines helpers from rules.py, windows.py and health.py: an edit there must miss the cache
    assert f"numba-{source_digest()}" in _process_rows._cache._cache_path
