"""sensor.community's native push format, translated into the reading contract.

Stuttgart's citizen PM sensors (SDS011 and similar on an ESP8266) push
``{"esp8266id": "...", "sensordatavalues": [{"value_type": "SDS_P1", "value": "12.3"}, ...]}``.
The push carries no timestamp, so the Kafka record's timestamp is the event
time, and no position, so the sensor must be in the registry as ``sc-<esp8266id>``.
"""

from __future__ import annotations

import datetime as _dt

import msgspec

from ingest.decode import Reading

__all__ = ["COMMUNITY_PREFIX", "CommunityDecoder", "community_sensor_id"]

COMMUNITY_PREFIX = "sc-"

# value_type suffix -> canonical quantity (P1 = PM10, P2 = PM2.5; P0 = PM1 is not a canonical quantity)
_SUFFIX = {"P1": "pm10", "P2": "pm2_5"}


class _Value(msgspec.Struct):
    value_type: str
    value: str | float


class _Push(msgspec.Struct):
    esp8266id: str | int
    sensordatavalues: list[_Value]


def community_sensor_id(esp8266id: str | int) -> str:
    """The stadtwacht sensor id of a sensor.community device."""
    return f"{COMMUNITY_PREFIX}{esp8266id}"


class CommunityDecoder:
    """Decodes one push message into a :class:`Reading` (``ValueError``/``msgspec`` errors on bad input)."""

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(_Push)

    def decode(self, data: bytes, timestamp_ms: int) -> Reading:
        push = self._decoder.decode(data)
        values: dict[str, float] = {}
        for v in push.sensordatavalues:
            suffix = v.value_type.rsplit("_", 1)[-1]
            quantity = _SUFFIX.get(suffix)
            if quantity is None:
                continue  # temperature, humidity, pressure, PM1: not our quantities
            values[quantity] = float(v.value)  # ValueError on a non-number
        if not values:
            raise ValueError("no PM values (value_type ending in P1 or P2) in sensordatavalues")
        if timestamp_ms < 0:
            raise ValueError("record has no timestamp and the push format carries none")
        time = _dt.datetime.fromtimestamp(timestamp_ms / 1000, tz=_dt.UTC)
        return Reading(sensor_id=community_sensor_id(push.esp8266id), time=time, values=values)
