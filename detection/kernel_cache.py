"""One numba cache directory per version of this package's sources.

numba keys a kernel's on-disk cache on the kernel's own file, but the engine's and the
scorer's kernels inline helpers from the package's other files: an edit to a helper alone
would leave the stale compiled kernel running. ``detection/__init__`` defines the package's
kernels inside :func:`cached_per_source_version`; other packages' kernels keep numba's usual
cache place (the setting is restored), and a ``NUMBA_CACHE_DIR`` set by the operator is kept as the base.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numba

__all__ = ["cached_per_source_version", "source_digest"]

_HERE = Path(__file__).parent


def source_digest() -> str:
    """Hash of every source file of the package."""
    return hashlib.sha1(b"".join(p.read_bytes() for p in sorted(_HERE.glob("*.py")))).hexdigest()[:16]


@contextlib.contextmanager
def cached_per_source_version() -> Iterator[None]:
    """Kernels defined (decorated) inside cache under ``numba-<source digest>``."""
    before = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = str(Path(before or _HERE / "__pycache__") / f"numba-{source_digest()}")
    try:
        yield
    finally:
        numba.config.CACHE_DIR = before
