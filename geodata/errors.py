"""Exceptions of the geodata package, each carrying the data needed to report it."""

from __future__ import annotations

from stadtwacht.errors import StadtwachtError

__all__ = ["GeodataError", "LayerError", "RegistryError"]


class GeodataError(StadtwachtError):
    """Root of geodata's errors."""


class LayerError(GeodataError):
    """A district layer that cannot be used: ``problems`` says why, ``path`` which file."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: " + "; ".join(self.problems))


class RegistryError(GeodataError):
    """A sensor registry with errors: ``problems`` holds (line number, message) pairs, line 1 = header."""

    def __init__(self, path: str, problems: list[tuple[int, str]]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__("\n".join(f"{path}:{line}: {msg}" for line, msg in self.problems))
