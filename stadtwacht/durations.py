"""Duration strings ("90s", "10m", "1h30m", "1d") used throughout the configuration."""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNIT_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "min": 60_000_000_000,
            "h": 3_600_000_000_000, "d": 86_400_000_000_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|min|s|m|h|d)")


def parse_duration(text: str) -> int:
    """Nanoseconds for a duration string; ``ValueError`` with the text on a bad one."""
    s = text.strip().replace(" ", "")
    if not s:
        raise ValueError(f"empty duration {text!r}")
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"bad duration {text!r}: use e.g. '30s', '10m', '1h30m', '1d'")
    return int(total)


def format_duration(ns: int) -> str:
    """A compact human form, e.g. 5400 s -> '1h30m'."""
    s = ns // 1_000_000_000
    if s == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out.append(f"{s // size}{unit}")
            s %= size
    return "".join(out)
