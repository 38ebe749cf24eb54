"""Finding a key repeated within one JSON object.

JSON leaves repeated keys undefined and msgspec, like most parsers, keeps the last
one silently: ``{"pm10": 12.5, "pm10": 1500}`` would be read as 1500. A reading
whose sender wrote one quantity twice is ambiguous, so ingest rejects it rather
than guess; this is the exact check for the messages that may repeat one (the
decoder filters cheaply first, so well-formed traffic never comes here).
"""

from __future__ import annotations

import json

__all__ = ["duplicate_key"]


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Repeated(key)
            seen.add(key)
    return obj


def duplicate_key(data: bytes | str) -> str | None:
    """The first key repeated within one object of ``data`` (at any depth), or None.

    None also for text that is not JSON: the caller's parser has accepted it already.
    """
    try:
        json.loads(data, object_pairs_hook=_pairs)
    except _Repeated as repeated:
        return repeated.key
    except (ValueError, RecursionError):
        return None
    return None
