"""Strict, fast decoding of the reading contract into columnar batches.

msgspec validates each message against a compiled schema in C; the remaining
per-message work is flattening into Python lists, then every check that can be
done on whole columns (quantity codes, finiteness, physical range, future
timestamps, positions) runs vectorised over the poll batch.

Columnar path (the common case): the compiled scanner of
:mod:`ingest.reading_scanner` reads the concatenated bytes of the poll batch
straight into columns for every message of the common well-formed shapes; it
resolves the sensor ids already in the index itself (a byte table mirroring the
index, :class:`ingest.reading_scanner.SensorTable`), new ids are looked up once
per distinct id per poll, and the per-value checks run as one compiled pass.
Messages it does not take go through the struct paths below, so results and
dead letters are exactly those of the strict path.

Struct fast path: messages are decoded with the time kept as a string (no
datetime object per reading, structs untracked by the garbage collector) and
the strings are parsed as RFC 3339 for the whole poll batch at once with numpy
(:func:`rfc3339_us`). Any message the fast path cannot take as it is (a
decode error, or a time string msgspec would reject) is decoded again by the
strict schema, so results and dead letters are exactly those of the strict path.

msgspec keeps the last of a repeated key; the scanner declines such messages and
the struct paths reject them (:mod:`ingest.duplicate_keys`) after a colon count
that lets messages which cannot repeat a key pass without the exact check.
"""

from __future__ import annotations

import datetime as _dt
import io
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
from ingest.duplicate_keys import duplicate_key
from ingest.quantities import PHYSICAL_MAX, PHYSICAL_MIN, QUANTITIES, QUANTITY_CODE
from ingest.reading_scanner import ScanResult, SensorTable, expand_check, group_spans, scan_messages
from ingest.sensor_index import SensorIndex

__all__ = ["SENSOR_ID_PATTERN", "DecodeLimits", "Decoded", "RawMessage", "Reading", "ReadingDecoder", "rfc3339_us"]

#: Sensor ids are plain tokens so they can never inject markup into a message, CAP or the page.
SENSOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"

_valid_sensor_id = re.compile(SENSOR_ID_PATTERN).fullmatch  # fullmatch: "$" alone lets a trailing "\n" pass
AwareTime = Annotated[_dt.datetime, msgspec.Meta(tz=True)]


_NAN = float("nan")
_WHITESPACE = frozenset(b" \t\r\n\f\v")  # what bytes.lstrip() strips


class Reading(msgspec.Struct, forbid_unknown_fields=True):
    """One reading as sensor feeds send it (the documented reading contract)."""

    sensor_id: str  # checked against SENSOR_ID_PATTERN once per new sensor
    time: AwareTime
    values: Annotated[dict[str, float], msgspec.Meta(min_length=1)]
    lat: float = _NAN  # optional; sensors missing from the registry need both
    lon: float = _NAN


class _FastReading(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """:class:`Reading` with the time still a string: the fast path's shape (no cycles, so no GC tracking)."""

    sensor_id: str
    time: str
    values: Annotated[dict[str, float], msgspec.Meta(min_length=1)]
    lat: float = _NAN
    lon: float = _NAN


class RawMessage(msgspec.Struct, frozen=True, gc=False):
    """The part of a Kafka record ingest needs (also built by replay from files).

    A frozen struct rather than a frozen dataclass: consumers build one per record, and this
    constructs several times faster and is not tracked by the garbage collector (no cycles).
    """

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


_AT_BYTE = re.compile(r"\(byte (\d+)\)")


def _hint(detail: str, data: bytes) -> str:
    """A JSON error at a NaN or Infinity token (what Python's json.dumps writes by default) says so."""
    m = _AT_BYTE.search(detail)
    if m and data[int(m.group(1)):].lstrip(b"-")[:3] in (b"NaN", b"Inf"):
        return detail + ": NaN and Infinity are not JSON (leave the quantity out; json.dumps(allow_nan=False))"
    return detail


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
        self._fast_one = msgspec.json.Decoder(_FastReading)
        self._fast_many = msgspec.json.Decoder(list[_FastReading])
        self._time = msgspec.json.Decoder(AwareTime)
        #: Whether the compiled scanner takes the messages it can (off: every message through the structs).
        self.columnar = True
        #: Messages taken by the compiled scanner, and those decoded through the structs (counts since start).
        self.columnar_messages = 0
        self.struct_messages = 0
        self._known = SensorTable()  # the ids of ``_known_of`` (the sensor index), for the scanner to resolve
        self._joined = io.BytesIO()  # a poll's values end to end (see _scan)
        self._known_of: SensorIndex | None = None
        self._part_codes: dict[tuple[str, int], int] = {}  # partition codes of ``_known_of`` seen so far

    def decode(self, messages: list[RawMessage]) -> Decoded:
        """Decode a poll batch; per-message Python work only for messages the scanner does not take."""
        self._sync_sensors()
        topics = list(map(_get_topic, messages))
        scan = self._scan(messages, topics) if self.columnar and messages else None
        strict: set[int] = set()
        while True:
            readings, msg_of, elem_of, dead, slow = self._decode_messages(messages, strict, scan)
            time_us, bad = self._times_us(readings, slow)
            if bad is None:
                break
            # a time string msgspec rejects: decode those messages strictly for the exact dead letters
            strict.update(np.unique(np.asarray(msg_of, dtype=np.int64)[bad]).tolist())
        taken = int(np.count_nonzero(scan[0].taken)) if scan is not None else 0
        self.columnar_messages += taken
        self.struct_messages += len(messages) - taken
        cols = self._columns(scan, readings, msg_of, elem_of, time_us)
        if cols is None:
            return Decoded(ReadingBatch.empty(), dead)
        return self._finish(messages, topics, cols, dead)

    def _scan(self, messages: list[RawMessage], topics: list[str]) -> _Scan:
        """The compiled scanner over the whole poll batch (messages it may take: not community, sized right),
        with the distinct ids it did not find in the index (in order of first appearance) and each such
        reading's one among them."""
        n = len(messages)
        values = list(map(_get_value, messages))
        try:
            length = np.fromiter(map(len, values), dtype=np.int64, count=n)
        except TypeError:  # tombstones (None)
            values = [v or b"" for v in values]
            length = np.fromiter(map(len, values), dtype=np.int64, count=n)
        ends = np.cumsum(length)
        take = (length > 0) & (length <= self.limits.max_message_bytes)
        community = self.community_topics
        if community:
            if topics.count(topics[0]) == n:  # one topic (one membership test)
                take &= topics[0] not in community
            else:
                take &= ~np.fromiter(map(community.__contains__, topics), dtype=bool, count=n)
        self._known.sync(self.sensors.names)
        # the values laid end to end in a buffer kept between polls: a fresh join of a large poll costs a
        # page fault per 4 KiB on every poll
        joined = self._joined
        try:
            joined.seek(0)
            joined.writelines(values)
        except BufferError:  # still exported (a view kept alive elsewhere): start a new buffer
            joined = self._joined = io.BytesIO()
            joined.writelines(values)
        size = joined.tell()
        view = joined.getbuffer()
        try:
            buf = np.frombuffer(view, dtype=np.uint8, count=size) if size else np.zeros(0, np.uint8)
            result = scan_messages(buf, ends - length, ends, take, self.limits.max_readings_per_message,
                                   self._known)
            names: list[str] = []
            group = np.zeros(0, np.int32)
            new = np.flatnonzero(result.sensor < 0)
            if new.size:
                spans = result.sensor_span[new]
                group, first = group_spans(buf, spans)
                names = [str(view[a:b], "utf-8") for a, b in spans[first].tolist()]
        finally:
            buf = None
            try:
                view.release()
            except BufferError:  # a view of it still alive: leave that buffer to it
                self._joined = io.BytesIO()
        return result, names, group

    def _sync_sensors(self) -> None:
        """Start the caches kept per sensor index afresh when the decoder is given another index."""
        if self._known_of is not self.sensors:
            self._known = SensorTable()
            self._part_codes = {}
            self._known_of = self.sensors

    def _decode_messages(self, messages: list[RawMessage], strict: set[int], scan: _Scan | None):
        readings: list = []
        msg_of: list[int] = []
        elem_of: list[int] = []
        dead: list[DeadLetter] = []
        slow = 0  # readings with a datetime (strict path, community) rather than a time string
        lim = self.limits
        fast_one, fast_many = self._fast_one.decode, self._fast_many.decode
        community = self.community_topics
        todo = range(len(messages)) if scan is None else np.flatnonzero(~scan[0].taken).tolist()
        for m in todo:
            msg = messages[m]
            data = msg.value
            if not data or len(data) > lim.max_message_bytes:
                dead.append(_dl(msg, "oversized" if data else "malformed",
                                f"{len(data) if data else 0} bytes (limit {lim.max_message_bytes})"))
                continue
            if msg.topic not in community and m not in strict:
                try:
                    first = data[0]  # data is not empty here; strip only when it starts with whitespace
                    if first == 0x5B or (first in _WHITESPACE and data.lstrip()[:1] == b"["):
                        rs = fast_many(data)
                        if rs and len(rs) <= lim.max_readings_per_message and not _repeats_key(data, rs):
                            readings.extend(rs)
                            msg_of.extend([m] * len(rs))
                            elem_of.extend(range(len(rs)))
                            continue
                    else:
                        r = fast_one(data)
                        if not _repeats_key(data, (r,)):
                            readings.append(r)
                            msg_of.append(m)
                            elem_of.append(-1)
                            continue
                except Exception:  # the strict path below decides and explains
                    pass
            slow += self._decode_strict(m, msg, readings, msg_of, elem_of, dead)
        return readings, msg_of, elem_of, dead, slow

    def _decode_strict(self, m: int, msg: RawMessage, readings: list, msg_of: list[int], elem_of: list[int],
                       dead: list[DeadLetter]) -> int:
        """The strict schema for one message: its readings appended, its rejections dead-lettered."""
        data = msg.value
        lim = self.limits
        try:
            if msg.topic in self.community_topics:
                reading = self._community.decode(data, msg.timestamp_ms)
                _check_keys(data)
                readings.append(reading)
                msg_of.append(m)
                elem_of.append(-1)
                return 1
            if data[:1] == b"[" or data.lstrip()[:1] == b"[":
                mark = len(dead)
                try:
                    rs = self._many.decode(data)
                    elems, total = range(len(rs)), len(rs)
                    if not rs:
                        dead.append(_dl(msg, "malformed", "empty array: no readings"))
                        return 0
                    _check_keys(data)
                except (msgspec.ValidationError, _RepeatedKey):
                    rs, elems = self._decode_elements(msg, dead)
                    total = len(rs) + len(dead) - mark
                if total > lim.max_readings_per_message:  # every element counts, good or bad
                    del dead[mark:]  # one dead letter for the whole message, not one more per bad element
                    detail = f"{total} readings (limit {lim.max_readings_per_message})"
                    dead.append(_dl(msg, "oversized", detail, readings=total))
                    return 0
                readings.extend(rs)
                msg_of.extend([m] * len(rs))
                elem_of.extend(elems)
                return len(rs)
            reading = self._one.decode(data)
            _check_keys(data)
            readings.append(reading)
            msg_of.append(m)
            elem_of.append(-1)
            return 1
        except Exception as err:  # any decode failure is bad input, never a crash
            reason, detail = _reason_of(err)
            dead.append(_dl(msg, reason, _hint(detail, data)))
            return 0

    def _times_us(self, readings: list, slow: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Event times in whole µs since the epoch, or the rows whose time string msgspec rejects."""
        times = list(map(_get_time, readings))
        if slow:
            times = [t if t.__class__ is str else t.isoformat() for t in times]
        us, ok = rfc3339_us(times)
        if ok.all():
            return us, None
        rows = np.flatnonzero(~ok)
        bad = []
        for r in rows.tolist():
            try:
                dt = self._time.decode(msgspec.json.encode(times[r]))
            except msgspec.ValidationError:
                bad.append(r)
                continue
            us[r] = round(dt.timestamp() * 1e6)  # as the strict path has always computed it
        return us, (np.asarray(bad, dtype=np.int64) if bad else None)

    def _decode_elements(self, msg: RawMessage, dead: list[DeadLetter]) -> tuple[list[Reading], list[int]]:
        """Slow path for a batch message with bad elements: keep the good ones with their positions."""
        out: list[Reading] = []
        elems: list[int] = []
        for e, raw in enumerate(self._raw_list.decode(msg.value)):
            try:
                reading = self._one.decode(raw)
                _check_keys(bytes(raw))
                out.append(reading)
                elems.append(e)
            except Exception as err:  # any decode failure is bad input, never a crash
                reason, detail = _reason_of(err)
                dead.append(_dl(msg, reason, detail, element=e))
        return out, elems

    # -- columns --
    def _columns(self, scan: _Scan | None, readings: list, msg_of: list[int],
                 elem_of: list[int], time_us: np.ndarray) -> _Columns | None:
        """The readings of both paths as columns in message order, sensors resolved (None when there are none)."""
        fast = scan[0] if scan is not None and scan[0].msg.shape[0] else None
        if fast is None and not readings:
            return None
        names: list[str] = []
        group = new = np.zeros(0, np.int32)
        if fast is not None:
            # the scanner resolved the ids already in the index; the others are new: one lookup (which adds
            # them) per distinct new id, in order of first appearance, as a lookup of every id would add them
            new = np.flatnonzero(fast.sensor < 0)
            names, group = scan[1], scan[2]
            if not readings:
                sensor = fast.sensor
                if new.size:
                    sensor[new] = self.sensors.lookup(names, _valid_sensor_id)[group]
                return _Columns(fast.msg, fast.elem, fast.time_us, fast.lat, fast.lon, fast.rows, sensor,
                                fast.quantity, fast.value)
        count = len(readings)
        values = list(map(_get_values, readings))
        per = np.fromiter(map(len, values), dtype=np.int64, count=count)
        n = int(per.sum())
        keys = list(chain.from_iterable(values))
        slow = _Columns(
            np.asarray(msg_of, dtype=np.int32), np.asarray(elem_of, dtype=np.int32), time_us,
            np.fromiter(map(_get_lat, readings), dtype=np.float64, count=count),
            np.fromiter(map(_get_lon, readings), dtype=np.float64, count=count), per, np.zeros(0, np.int32),
            np.fromiter(map(_QCODE_GET, keys, repeat(255, n)), dtype=np.uint8, count=n),
            np.fromiter(chain.from_iterable(map(dict.values, values)), dtype=np.float64, count=n))
        ids = list(map(_get_sensor, readings))
        if fast is None:
            slow.sensor = self.sensors.lookup(ids, _valid_sensor_id)
            return slow
        # both paths: merge by message (a message is wholly in one), ids looked up in that order as before
        cat = [np.concatenate([getattr(fast, f), getattr(slow, g)]) for f, g in
               (("msg", "msg"), ("elem", "elem"), ("time_us", "time_us"), ("lat", "lat"), ("lon", "lon"),
                ("rows", "rows"), ("quantity", "quantity"), ("value", "value"))]
        msg, elem, tus, lat, lon, rows, quantity, value = cat
        order = np.argsort(msg, kind="stable")
        first_row = np.cumsum(rows) - rows
        row_order = np.repeat(first_row[order], rows[order]) + _ranks(rows[order])
        all_ids: list[str | None] = [None] * fast.msg.shape[0]  # None: resolved by the scanner
        for r, g in zip(new.tolist(), group.tolist(), strict=True):
            all_ids[r] = names[g]
        all_ids += ids
        sensor = np.concatenate([fast.sensor, np.full(len(ids), -1, np.int32)])[order]
        todo = np.flatnonzero(np.concatenate([fast.sensor < 0, np.ones(len(ids), bool)])[order])
        sensor[todo] = self.sensors.lookup([all_ids[i] for i in order[todo].tolist()], _valid_sensor_id)
        return _Columns(msg[order], elem[order], tus[order], lat[order], lon[order], rows[order], sensor,
                        quantity[row_order], value[row_order])

    # -- whole-column checks --
    def _finish(self, messages: list[RawMessage], topics: list[str], cols: _Columns,
                dead: list[DeadLetter]) -> Decoded:
        per = cols.rows
        quantity, value = cols.quantity, cols.value
        rsensor = cols.sensor
        all_lat, all_lon = cols.lat, cols.lon
        bad_position = np.zeros(per.shape[0], dtype=bool)  # per reading
        ri = np.flatnonzero(~(np.isnan(all_lat) & np.isnan(all_lon)))  # readings that carry a position
        moves = np.zeros(0, np.int64)  # readings whose position a sensor takes, if they are accepted
        if ri.size:
            lat, lon = all_lat[ri], all_lon[ri]
            bad = ~((np.abs(lat) <= 90) & (np.abs(lon) <= 180))
            bad_position[ri[bad]] = True
            moves = ri[~bad & (rsensor[ri] >= 0)]
            moves = moves[~self.sensors.registered[rsensor[moves]]]  # a registry position wins
        if moves.size:  # the unknown-sensor check sees the poll's positions ...
            moved = rsensor[moves]
            before = self.sensors.lat[moved].copy()
            self.sensors.lat[moved] = all_lat[moves]
        # one compiled pass: reading columns repeated per value, each value's reason (0 = ok; codes index
        # _ROW_REASONS)
        now_ns = self._clock_ns()
        time_ns, message, sensor, reason, rejected = expand_check(
            per, cols.time_us, cols.msg, rsensor, quantity, value, bad_position, self.sensors.lat, PHYSICAL_MIN,
            PHYSICAL_MAX, now_ns + self.limits.max_future_ns)
        if moves.size:  # ... but only accepted readings give a sensor their position
            self.sensors.lat[moved] = before
            if rejected:
                refused = np.zeros(per.shape[0], dtype=bool)
                refused[np.repeat(np.arange(per.shape[0]), per)[reason > 0]] = True
                moves = moves[~refused[moves]]
            self.sensors.set_positions(rsensor[moves], all_lat[moves], all_lon[moves])

        if rejected:
            element = np.repeat(cols.elem, per)
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
                detail = _row_detail(code, sid, int(quantity[r]), float(value[r]), int(time_ns[r]), now_ns,
                                     msg.value, e)
                dead.append(_dl(msg, _ROW_REASONS[code], detail, readings=c, element=None if e < 0 else e))
            batch = ReadingBatch(sensor[keep], quantity[keep], time_ns[keep], value[keep], message[keep])
        else:
            batch = ReadingBatch(sensor, quantity, time_ns, value, message)
        self.sensors.partition[batch.sensor] = self._partition_codes(messages, topics)[batch.message]
        out = Decoded(batch, dead)
        out.accepted_by_quantity = np.bincount(batch.quantity, minlength=len(QUANTITY_CODE)).astype(np.int64)
        return out

    def _partition_codes(self, messages: list[RawMessage], topics: list[str]) -> np.ndarray:
        """Each message's (topic, partition) code; no tuple per message when one topic's known partitions."""
        n = len(messages)
        topic = topics[0]
        if topics.count(topic) == n:
            part = np.fromiter(map(_get_partition, messages), dtype=np.int64, count=n)
            low, high = int(part.min()), int(part.max())
            if high - low < 4096:  # partitions of one topic: a small range, so a table instead of a sort
                distinct = np.flatnonzero(np.bincount(part - low)) + low
                codes = list(map(self._part_codes.get, zip(repeat(topic), distinct.tolist())))
                if None not in codes:
                    table = np.zeros(high - low + 1, dtype=np.int32)
                    table[distinct - low] = codes
                    return table[part - low]
        code = self.sensors.partition_code  # new codes are given here only, in the order they always were
        sources = list(map(_get_source, messages))
        codes = {tp: code(*tp) for tp in set(sources)}
        self._part_codes.update(codes)
        return np.fromiter(map(codes.__getitem__, sources), dtype=np.int32, count=n)


_Scan = tuple[ScanResult, list[str], np.ndarray]  # see ReadingDecoder._scan


class _RepeatedKey(ValueError):
    """A key given twice in one object: rejected as malformed (msgspec alone would keep the last value)."""


def _check_keys(data: bytes) -> None:
    key = duplicate_key(data)
    if key is not None:
        raise _RepeatedKey(f"key {key!r} given twice in one object (which value is meant?)")


def _colons(r: _FastReading) -> int:
    """The colons a reading's JSON has when no key repeats (one per key, those inside its strings)."""
    return (3 + len(r.values) + (r.lat == r.lat) + (r.lon == r.lon) + r.sensor_id.count(":")
            + r.time.count(":"))


def _repeats_key(data: bytes, readings: Iterable[_FastReading]) -> bool:
    """Whether a message msgspec took repeats a key; the exact check only when the colons do not add up
    (a colon more per repeated key, or colons in other keys) or escapes could hide one."""
    suspect = b"\\" in data or data.count(b":") != sum(map(_colons, readings))
    return suspect and duplicate_key(data) is not None


@dataclass(slots=True)
class _Columns:
    """A poll batch's readings as columns: per reading, then per value (``rows`` values per reading)."""

    msg: np.ndarray  # int32
    elem: np.ndarray  # int32, -1 for a single-reading message
    time_us: np.ndarray  # int64
    lat: np.ndarray  # float64, NaN where absent
    lon: np.ndarray
    rows: np.ndarray  # int64
    sensor: np.ndarray  # int32 dense index, -1 for an invalid id
    quantity: np.ndarray  # uint8 per value, 255 for an unknown quantity
    value: np.ndarray  # float64 per value


_ROW_REASONS = ("ok", "unknown_quantity", "not_finite", "out_of_range", "future", "bad_position",
                "unknown_sensor", "bad_sensor_id", "bad_time")


def _row_detail(code: int, s: str, q: int, v: float, t_ns: int, now_ns: int, raw: bytes | None,
                element: int) -> str:
    """What a feed owner needs to mend the reading: the key, value, range or times at fault."""
    if code == 1:
        return (f"unknown quantity {_unknown_keys(raw, element)} in 'values' (the whole reading is rejected); "
                f"canonical: {', '.join(QUANTITY_CODE)}")
    if code == 2:
        return f"{QUANTITIES[q]}={v!r} is not a finite number"
    if code == 3:
        return f"{QUANTITIES[q]}={v!r} outside the physical range {PHYSICAL_MIN[q]:g} .. {PHYSICAL_MAX[q]:g}"
    if code == 4:
        return (f"time {_utc(t_ns)} is ahead of the clock ({_utc(now_ns)}) by more than ingest.max_future "
                f"(a local time sent with Z or +00:00?)")
    if code == 5:
        return "lat/lon outside WGS84 bounds or only one of them given"
    if code == 7:
        return f"sensor_id must match {SENSOR_ID_PATTERN}"
    if code == 8:
        return "time before 1970 or after 2262 (an unset or placeholder date such as 0001-01-01?)"
    return f"sensor {s!r} is not in the registry and the reading has no lat/lon"


def _utc(t_ns: int) -> str:
    return _dt.datetime.fromtimestamp(t_ns / 1e9, _dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _unknown_keys(raw: bytes | None, element: int) -> str:
    """The keys of the reading's 'values' that are no quantity, read again from the original (rejections only)."""
    try:
        doc = msgspec.json.decode(raw)
        reading = doc[element] if element >= 0 else doc
        keys = [k for k in reading["values"] if k not in QUANTITY_CODE]
    except Exception:  # the detail is best effort; the reason stands
        return "?"
    return ", ".join(repr(k) for k in keys[:5]) or "?"


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for each count c, concatenated."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


_QCODE_GET = QUANTITY_CODE.get
_get_values = attrgetter("values")
_get_time = attrgetter("time")
_get_sensor = attrgetter("sensor_id")
_get_lat = attrgetter("lat")
_get_lon = attrgetter("lon")
_get_value = attrgetter("value")
_get_topic = attrgetter("topic")
_get_partition = attrgetter("partition")
_get_source = attrgetter("topic", "partition")


def _dl(msg: RawMessage, reason: str, detail: str, element: int | None = None,
        readings: int = 1) -> DeadLetter:
    return DeadLetter(msg.topic, msg.partition, msg.offset, msg.key, msg.value or b"", reason, detail,
                      element, readings)


_CUM_DAYS = np.array([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334], dtype=np.int64)
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_FRAC_SCALE = np.array([0, 100_000, 10_000, 1_000, 100, 10, 1], dtype=np.int64)  # by number of digits
_WIDTH = 32  # longest form taken: 19 + 7 (".ffffff") + 6 ("+HH:MM")
# "YYYY-MM-DDTHH:MM:SS": byte minus _BASE must be <= _SPAN (digits 0..9, separators exactly)
_BASE = np.frombuffer(b"0000-00-00T00:00:00", dtype=np.uint8)
_SPAN = np.array([9 if ch == "0" else 0 for ch in "0000-00-00T00:00:00"], dtype=np.uint8)


def rfc3339_us(times: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Whole-column RFC 3339 parse: µs since the epoch and a mask of the strings taken.

    Takes ``YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)`` with years 1970..2099 and every
    field in range (the common shapes; each is one msgspec accepts with the same
    instant). Anything else is left to msgspec by the caller (mask False).
    """
    n = len(times)
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    length = np.fromiter(map(len, times), dtype=np.int64, count=n)  # true lengths (numpy drops trailing NULs)
    try:
        b = np.array(times, dtype=f"S{_WIDTH}")
    except UnicodeEncodeError:  # non-ASCII somewhere: never a time the fast path takes
        b = np.array([t if t.isascii() else "" for t in times], dtype=f"S{_WIDTH}")
    t = np.ascontiguousarray(b.view(np.uint8).reshape(n, _WIDTH).T)  # one row per character position
    ok = ((t[:19] - _BASE[:, None]) <= _SPAN[:, None]).all(axis=0)
    d = t[:19].astype(np.int32)  # small temporaries: fresh large arrays cost page faults
    year = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3] - 53328  # 53328 = 48 * 1111
    month, day, hour, minute, second = (d[i] * 10 + d[i + 1] - 528 for i in (5, 8, 11, 14, 17))
    frac = np.zeros(n, np.int64)
    p = np.full(n, 19, dtype=np.int64)  # position of the offset designator
    has_frac = t[19] == 46  # "."
    if has_frac.any():
        fr = np.flatnonzero(has_frac)
        dig = (t[20:27, fr] - 48) <= 9
        k = np.cumprod(dig, axis=0).sum(axis=0)
        ok[fr] &= (k >= 1) & (k <= 6)
        k = np.minimum(k, 6)
        f = np.zeros(fr.size, np.int64)
        for i in range(6):
            f = np.where(i < k, f * 10 + t[20 + i, fr].astype(np.int64) - 48, f)
        frac[fr] = f * _FRAC_SCALE[k]
        p[fr] = 20 + k
    flat = t.reshape(-1)
    cols = np.arange(n)
    tz = flat[p * n + cols]
    zulu = (tz == 90) & (length == p + 1)  # "Z"
    signed = ((tz == 43) | (tz == 45)) & (length == p + 6)  # "+" / "-"
    base = np.minimum(p + 1, _WIDTH - 5) * n + cols
    h1, h2, colon, m1, m2 = (flat[base + i * n].astype(np.int32) - 48 for i in range(5))  # "HH:MM"
    signed &= ((h1 >= 0) & (h1 <= 9) & (h2 >= 0) & (h2 <= 9) & (colon == 10) & (m1 >= 0) & (m1 <= 9)
               & (m2 >= 0) & (m2 <= 9))
    oh, om = h1 * 10 + h2, m1 * 10 + m2
    signed &= (oh <= 23) & (om <= 59)
    ok &= zulu | signed
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    mi = np.clip(month - 1, 0, 11)
    ok &= ((year >= 1970) & (year <= 2099) & (month >= 1) & (month <= 12) & (day >= 1)
           & (day <= _MONTH_DAYS[mi] + ((mi == 1) & leap)) & (hour <= 23) & (minute <= 59) & (second <= 59))
    # days since 1970-01-01 (years 1970..2099: every 4th year is a leap year, 2000 included)
    y = (year - 1970).astype(np.int64)
    days = y * 365 + (y + 1) // 4 + _CUM_DAYS[mi] + ((mi >= 2) & leap) + day - 1
    offset = np.where(signed, np.where(tz == 45, -1, 1) * (oh * 60 + om), 0)
    us = (days * 86400 + hour * 3600 + minute * 60 + second - offset * 60) * 1_000_000 + frac
    return np.where(ok, us, 0), ok
