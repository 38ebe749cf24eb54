"""Dead letters: rejected input with its source and a human-readable reason."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REASONS", "DeadLetter", "dead_letter_headers"]

#: Every reason a message or reading may be dead-lettered for (metric label values).
REASONS: tuple[str, ...] = (
    "malformed",  # not JSON, not UTF-8, or not the documented shape
    "oversized",  # message larger than ingest.max_message_bytes or too many readings
    "unknown_quantity",  # a key of "values" that is not a canonical quantity
    "not_finite",  # NaN or +-Infinity (e.g. 1e999)
    "out_of_range",  # outside the quantity's physical range
    "bad_time",  # time without offset or unparsable
    "future",  # more than ingest.max_future ahead of the wall clock
    "bad_position",  # lat/lon outside WGS84 bounds or only one of them given
    "unknown_sensor",  # not in the registry and no lat/lon in the reading
    "bad_sensor_id",  # sensor_id not a plain token (letters, digits, . _ : -; at most 128)
    "late",  # older than detection.late_tolerance behind the sensor's newest reading
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected message, or one rejected element of a batch message.

    ``value`` is the original bytes of the whole message, so a feed owner can
    replay it after fixing the feed; ``element`` says which array element was
    rejected (None for the whole message).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    detail: str
    element: int | None = None
    readings: int = 1  # how many readings the rejection covers (for the readings counter)


def dead_letter_headers(d: DeadLetter) -> list[tuple[str, bytes]]:
    """Kafka headers carrying the reason and source; the value stays the original bytes."""
    headers = [
        ("stadtwacht.reason", d.reason.encode()),
        ("stadtwacht.detail", d.detail.encode("utf-8", "replace")[:1000]),
        ("stadtwacht.source", f"{d.topic}/{d.partition}/{d.offset}".encode()),
    ]
    if d.element is not None:
        headers.append(("stadtwacht.element", str(d.element).encode()))
    return headers
