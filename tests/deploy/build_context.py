"""The Docker build context of deploy/Dockerfile: the repository filtered by the root .dockerignore.

Docker matches each pattern against the path relative to the context root (``**/`` at any depth) and
drops a directory with everything below it. Shared by the static image checks and the install test.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether the context leaves out ``path`` (relative, with ``/``), the last matching pattern deciding."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    out = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatch(q, p) or (p.startswith("**/") and fnmatch.fnmatch(q, p[3:])) for q in prefixes):
            out = not negate
    return out


def copy_context(dest: Path) -> Path:
    """Copy what ``docker build -f deploy/Dockerfile .`` would send to the engine into ``dest``."""
    patterns = dockerignore_patterns()
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT).as_posix()
        rel = "" if rel == "." else rel + "/"
        dirs[:] = [d for d in dirs if not ignored(rel + d, patterns)]
        for name in files:
            if not ignored(rel + name, patterns):
                (dest / rel).mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(folder) / name, dest / rel / name)
    return dest
