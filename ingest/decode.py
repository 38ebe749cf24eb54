"""Strict, fast decoding of the reading contract into columnar batches.

msgspec validates each message against a compiled schema in C; the remaining
per-message work is flattening into Python lists, then every check that can be
done on whole columns (quantity codes, finiteness, physical range, future
timestamps, positions) runs vectorised over the poll batch.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import attrgetter
from typing import Annotated

import msgspec
import numpy as np

from ingest.batch import ReadingBatch
from ingest.deadletter import DeadLetter
from ingest.quantities import PHYSICAL_MAX, PHYSICAL_MIN, QUANTITIES, QUANTITY_CODE
from ingest.sensor_index import SensorIndex

__all__ = ["SENSOR_ID_PATTERN", "DecodeLimits", "Decoded", "RawMessage", "Reading", "ReadingDecoder"]

#: Sensor ids are plain tokens so they can never inject markup into a message, CAP or the page.
SENSOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"

_valid_sensor_id = re.compile(SENSOR_ID_PATTERN).match
AwareTime = Annotated[_dt.datetime, msgspec.Meta(tz=True)]


_NAN = float("nan")


class Reading(msgspec.Struct, forbid_unknown_fields=True):
    """One reading as sensor feeds send it (the documented reading contract)."""

    sensor_id: str  # checked against SENSOR_ID_PATTERN once per new sensor
    time: AwareTime
    values: Annotated[dict[str, float], msgspec.Meta(min_length=1)]
    lat: float = _NAN  # optional; sensors missing from the registry need both
    lon: float = _NAN


@dataclass(frozen=True, slots=True)
class RawMessage:
    """The part of a Kafka record ingest needs (also built by replay from files)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int = -1


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_message_bytes: int = 1_048_576
    max_readings_per_message: int = 10_000
    max_future_ns: int = 300_000_000_000


@dataclass(slots=True)
class Decoded:
    """A poll batch decoded: the good readings and every rejection."""

    batch: ReadingBatch
    dead: list[DeadLetter] = field(default_factory=list)
    accepted_by_quantity: np.ndarray = field(default_factory=lambda: np.zeros(len(QUANTITY_CODE), np.int64))


def _reason_of(err: Exception) -> tuple[str, str]:
    text = str(err)
    if isinstance(err, msgspec.DecodeError) and not isinstance(err, msgspec.ValidationError):
        return "malformed", text
    if "Number out of range" in text:
        return "not_finite", text
    if "`$.time`" in text or "$[...].time" in text:
        return "bad_time", text
    return "malformed", text


class ReadingDecoder:
    """Decodes poll batches of raw messages into one :class:`ReadingBatch` plus dead letters."""

    def __init__(self, sensors: SensorIndex, limits: DecodeLimits | None = None,
                 community_topics: Iterable[str] = (), clock_ns: Callable[[], int] = time.time_ns) -> None:
        from ingest.community import CommunityDecoder

        self.sensors = sensors
        self.community_topics = frozenset(community_topics)
        self._community = CommunityDecoder()
        self.limits = limits or DecodeLimits()
        self._clock_ns = clock_ns
        self._one = msgspec.json.Decoder(Reading)
        self._many = msgspec.json.Decoder(list[Reading])
        self._raw_list = msgspec.json.Decoder(list[msgspec.Raw])

    def decode(self, messages: list[RawMessage]) -> Decoded:
        """Decode a poll batch; the Python-level loop is per message, the rest is per column."""
        readings: list[Reading] = []
        msg_of: list[int] = []
        elem_of: list[int] = []
        dead: list[DeadLetter] = []
        lim = self.limits
        one, many = self._one.decode, self._many.decode
        community = self.community_topics
        for m, msg in enumerate(messages):
            data = msg.value
            if not data or len(data) > lim.max_message_bytes:
                dead.append(_dl(msg, "oversized" if data else "malformed",
                                f"{len(data) if data else 0} bytes (limit {lim.max_message_bytes})"))
                continue
            try:
                if msg.topic in community:
                    readings.append(self._community.decode(data, msg.timestamp_ms))
                    msg_of.append(m)
                    elem_of.append(-1)
                elif data[:1] == b"[" or data.lstrip()[:1] == b"[":
                    try:
                        rs = many(data)
                        elems = range(len(rs))
                        if not rs:
                            dead.append(_dl(msg, "malformed", "empty array: no readings"))
                            continue
                    except msgspec.ValidationError:
                        rs, elems = self._decode_elements(msg, dead)
                    if len(rs) > lim.max_readings_per_message:
                        detail = f"{len(rs)} readings (limit {lim.max_readings_per_message})"
                        dead.append(_dl(msg, "oversized", detail, readings=len(rs)))
                        continue
                    readings.extend(rs)
                    msg_of.extend([m] * len(rs))
                    elem_of.extend(elems)
                else:
                    readings.append(one(data))
                    msg_of.append(m)
                    elem_of.append(-1)
            except Exception as err:  # any decode failure is bad input, never a crash
                reason, detail = _reason_of(err)
                dead.append(_dl(msg, reason, detail))
        return self._finish(messages, readings, msg_of, elem_of, dead)

    def _decode_elements(self, msg: RawMessage, dead: list[DeadLetter]) -> tuple[list[Reading], list[int]]:
        """Slow path for a batch message with bad elements: keep the good ones with their positions."""
        out: list[Reading] = []
        elems: list[int] = []
        for e, raw in enumerate(self._raw_list.decode(msg.value)):
            try:
                out.append(self._one.decode(raw))
                elems.append(e)
            except Exception as err:  # any decode failure is bad input, never a crash
                reason, detail = _reason_of(err)
                dead.append(_dl(msg, reason, detail, element=e))
        return out, elems

    # -- whole-column checks --
    def _finish(self, messages: list[RawMessage], readings: list[Reading], msg_of: list[int],
                elem_of: list[int], dead: list[DeadLetter]) -> Decoded:
        if not readings:
            return Decoded(ReadingBatch.empty(), dead)
        count = len(readings)
        values = list(map(_get_values, readings))
        per = np.fromiter(map(len, values), dtype=np.int64, count=count)
        n = int(per.sum())
        keys = list(chain.from_iterable(values))
        quantity = np.array(list(map(_QCODE_GET, keys, repeat(255, n))), dtype=np.uint8)
        value = np.array(list(chain.from_iterable(map(dict.values, values))), dtype=np.float64)
        ts = np.array(list(map(_timestamp, map(_get_time, readings))), dtype=np.float64)
        time_ns = np.repeat((ts * 1e6).round().astype(np.int64) * 1000, per)
        message = np.repeat(np.asarray(msg_of, dtype=np.int32), per)
        element = np.repeat(np.asarray(elem_of, dtype=np.int32), per)
        rsensor = self.sensors.lookup(list(map(_get_sensor, readings)), _valid_sensor_id)
        sensor = np.repeat(rsensor, per)
        first_row = np.cumsum(per) - per  # a reading's first row

        reason = np.zeros(n, dtype=np.uint8)  # 0 = ok; codes index _ROW_REASONS
        reason[sensor < 0] = 7
        unknown_q = quantity == 255
        reason[unknown_q] = 1
        qi = np.where(unknown_q, 0, quantity)
        reason[(reason == 0) & ~np.isfinite(value)] = 2
        reason[(reason == 0) & ((value < PHYSICAL_MIN[qi]) | (value > PHYSICAL_MAX[qi]))] = 3
        reason[(reason == 0) & (time_ns > self._clock_ns() + self.limits.max_future_ns)] = 4
        all_lat = np.array(list(map(_get_lat, readings)), dtype=np.float64)
        all_lon = np.array(list(map(_get_lon, readings)), dtype=np.float64)
        ri = np.flatnonzero(~(np.isnan(all_lat) & np.isnan(all_lon)))  # readings that carry a position
        if ri.size:
            lat, lon = all_lat[ri], all_lon[ri]
            bad = ~((np.abs(lat) <= 90) & (np.abs(lon) <= 180))
            if bad.any():
                rows = np.repeat(first_row[ri[bad]], per[ri[bad]]) + _ranks(per[ri[bad]])
                reason[rows] = np.where(reason[rows] == 0, 5, reason[rows])
            ok = ~bad & (rsensor[ri] >= 0)
            self.sensors.set_positions(rsensor[ri[ok]], lat[ok], lon[ok])
        reason[(reason == 0) & np.isnan(self.sensors.lat[sensor])] = 6  # (sensor -1 already marked 7)

        if reason.any():
            # one bad row rejects its whole reading (element), keeping other elements
            key = message.astype(np.int64) * (1 << 31) + element
            bad_keys, first = np.unique(key[reason > 0], return_index=True)
            bad_rows = np.flatnonzero(reason > 0)[first]
            keep = ~np.isin(key, bad_keys)
            counts = np.bincount(np.searchsorted(bad_keys, key[~keep]), minlength=len(bad_keys))
            for r, c in zip(bad_rows.tolist(), counts.tolist(), strict=True):
                msg = messages[int(message[r])]
                code = int(reason[r])
                e = int(element[r])
                sid = self.sensors.id_of(int(sensor[r])) if sensor[r] >= 0 else ""
                detail = _row_detail(code, sid, int(quantity[r]), float(value[r]))
                dead.append(_dl(msg, _ROW_REASONS[code], detail, readings=c, element=None if e < 0 else e))
            batch = ReadingBatch(sensor[keep], quantity[keep], time_ns[keep], value[keep], message[keep])
        else:
            batch = ReadingBatch(sensor, quantity, time_ns, value, message)
        code = self.sensors.partition_code
        parts = np.fromiter((code(m.topic, m.partition) for m in messages), dtype=np.int32,
                            count=len(messages))
        self.sensors.partition[batch.sensor] = parts[batch.message]
        out = Decoded(batch, dead)
        out.accepted_by_quantity = np.bincount(batch.quantity, minlength=len(QUANTITY_CODE)).astype(np.int64)
        return out


_ROW_REASONS = ("ok", "unknown_quantity", "not_finite", "out_of_range", "future", "bad_position",
                "unknown_sensor", "bad_sensor_id")


def _row_detail(code: int, s: str, q: int, v: float) -> str:
    if code == 1:
        return f"unknown quantity in 'values'; canonical: {', '.join(QUANTITY_CODE)}"
    q = QUANTITIES[q]
    if code in (2, 3):
        return f"{q}={v!r} outside the physical range"
    if code == 4:
        return "time is in the future beyond ingest.max_future"
    if code == 5:
        return "lat/lon outside WGS84 bounds or only one of them given"
    if code == 7:
        return f"sensor_id must match {SENSOR_ID_PATTERN}"
    return f"sensor {s!r} is not in the registry and the reading has no lat/lon"


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for each count c, concatenated."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


_timestamp = _dt.datetime.timestamp
_QCODE_GET = QUANTITY_CODE.get
_get_values = attrgetter("values")
_get_time = attrgetter("time")
_get_sensor = attrgetter("sensor_id")
_get_lat = attrgetter("lat")
_get_lon = attrgetter("lon")


def _dl(msg: RawMessage, reason: str, detail: str, element: int | None = None,
        readings: int = 1) -> DeadLetter:
    return DeadLetter(msg.topic, msg.partition, msg.offset, msg.key, msg.value or b"", reason, detail,
                      element, readings)
