"""One numba cache directory per version of this package's sources.

numba keys a kernel's on-disk cache on the kernel's own file, but the engine's and the
scorer's kernels inline helpers from the package's other files: an edit to a helper alone
would leave the stale compiled kernel running. Imported first by ``detection/__init__``,
before any kernel is defined; a ``NUMBA_CACHE_DIR`` chosen by the operator is kept as the base.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba

__all__ = ["source_digest"]

_HERE = Path(__file__).parent


def source_digest() -> str:
    """Hash of every source file of the package."""
    return hashlib.sha1(b"".join(p.read_bytes() for p in sorted(_HERE.glob("*.py")))).hexdigest()[:16]


numba.config.CACHE_DIR = str(Path(numba.config.CACHE_DIR or _HERE / "__pycache__") / f"numba-{source_digest()}")
