"""The alert record: the public contract for downstream consumers of alert events.

Published to the alerts topic and written by ``stadtwacht replay --alerts-out``
as JSON Lines; field names and meanings are documented in the README.
"""

from __future__ import annotations

import math

import msgspec

__all__ = ["AlertRecord", "decode_record", "encode_record"]


class AlertRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One event of an alert episode (times are RFC 3339 with an offset)."""

    alert_id: str  # stable for the episode, e.g. derived from (district, hazard, quantity, start)
    seq: int  # 1 for the firing event, +1 for each later event of the episode
    event: str  # "firing" | "update" | "resolved"
    hazard: str  # "flood" | "air" | "sensor"
    quantity: str
    level: int
    level_name: str
    districts: list[str]
    district_names: list[str]
    sensors: list[str]
    value: float | None  # the aggregate that decided; JSON null where none applies (NaN in memory)
    threshold: float | None  # the level boundary crossed; null e.g. when a faulty sensor ended the episode
    rule: str
    started_at: str
    time: str

    def __post_init__(self) -> None:
        # JSON has no NaN: "not applicable" travels as null and is NaN again in memory
        if self.value is None:
            self.value = math.nan
        if self.threshold is None:
            self.threshold = math.nan


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AlertRecord)


def encode_record(record: AlertRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(data: bytes | str) -> AlertRecord:
    return _decoder.decode(data)
