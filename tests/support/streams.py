"""Standard streams that fail, for commands that must say so in their exit code."""

from __future__ import annotations

import errno
import io
import sys

import pytest


class _Full(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def fill_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard output on a full disk from now on: every write fails (ENOSPC). Call it in the test body: pytest's
    ``capsys`` sets ``sys.stdout`` again when the test starts, over anything a fixture set."""
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BufferedWriter(_Full())))
