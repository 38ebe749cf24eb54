"""The columnar path's shortcuts across polls give exactly the strict path's results.

The decoder keeps state between polls for speed: the sensor ids already in the
index (the scanner resolves those itself), the partition codes seen, and the row
checks run as one compiled pass. These tests decode sequences of polls with a
columnar and a strict decoder side by side and compare everything they leave.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import RawMessage, ReadingDecoder
from ingest.quantities import PHYSICAL_MAX, PHYSICAL_MIN
from ingest.reading_scanner import SensorTable, expand_check, scan_messages
from ingest.sensor_index import SensorIndex
from tests.ingest.test_decode_columnar import _decoder, _message

_TOPICS = ("sensors.air", "sensors.water")


def _compare(col: ReadingDecoder, strict: ReadingDecoder, a, c) -> None:
    for name in ("sensor", "quantity", "time", "value", "message"):
        x, z = getattr(a.batch, name), getattr(c.batch, name)
        if name == "value":
            x, z = x.view(np.int64), z.view(np.int64)
        assert x.dtype == z.dtype, name
        assert np.array_equal(x, z), name
    assert a.dead == c.dead
    assert np.array_equal(a.accepted_by_quantity, c.accepted_by_quantity)
    assert col.sensors.names == strict.sensors.names
    n = len(strict.sensors)
    for attr in ("lat", "lon", "moved", "registered", "partition"):
        assert np.array_equal(getattr(col.sensors, attr)[:n], getattr(strict.sensors, attr)[:n], equal_nan=True), attr
    assert col.sensors._partition_codes == strict.sensors._partition_codes


# mostly one topic per poll (as a consumer of one topic polls), sometimes both
_poll = st.sampled_from([_TOPICS[:1], _TOPICS[:1], _TOPICS[1:], _TOPICS]).flatmap(
    lambda topics: st.lists(st.tuples(_message(), st.sampled_from(topics), st.integers(0, 3)), min_size=1,
                            max_size=8))
_registered = st.lists(st.sampled_from(["s2", "new-3", "r9", "a.b_c:d-e", "y" * 128]), max_size=2)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(_poll, _registered), min_size=1, max_size=4))
def test_polls_in_sequence_give_the_strict_results(polls):
    col, strict = _decoder("columnar"), _decoder("strict")
    offset = 0
    for poll, registered in polls:
        for sensors in (col.sensors, strict.sensors):  # the registry adds sensors between polls
            for i, sid in enumerate(registered):
                sensors.add(sid, 48.7 + i * 0.01, 9.1, registered=True)
        messages = []
        for value, topic, partition in poll:
            messages.append(RawMessage(topic, partition, offset, b"k", value, 1_795_000_000_000))
            offset += 1
        a = col.decode(messages)
        _compare(col, strict, a, strict.decode(messages))
        last = dict(zip(a.batch.sensor.tolist(), a.batch.message.tolist(), strict=True))
        codes = col.sensors._partition_codes
        for s, m in last.items():  # each sensor's partition: that of the last message it came in
            assert col.sensors.partition[s] == codes[(messages[m].topic, messages[m].partition)]


def _good(sid: str, i: int, **extra) -> dict:
    return {"sensor_id": sid, "time": f"2026-11-18T03:00:{i % 60:02d}Z", "values": {"pm10": 10.0 + i},
            "lat": 48.7 + i * 1e-3, "lon": 9.1} | extra


def test_known_new_and_slow_ids_mixed_in_one_poll():
    """Known ids resolved by the scanner, new ones, and struct-path ones interleave: same numbering as strict."""
    col, strict = _decoder("columnar"), _decoder("strict")
    first = [json.dumps([_good(f"k{i}", i) for i in range(30)]).encode()]
    msgs = [RawMessage("sensors.air", 0, 0, None, v) for v in first]
    _compare(col, strict, col.decode(msgs), strict.decode(msgs))
    values = [
        json.dumps([_good("k3", 1), _good("n1", 2), _good("k4", 3)]).encode(),
        json.dumps(_good("n2", 4, extra=1)).encode(),  # an unknown key: struct path (and a dead letter)
        b'{"sensor_id":"n\\u0033","time":"2026-11-18T03:00:00Z","values":{"pm10":1},"lat":48.7,"lon":9.1}',
        json.dumps(_good("n1", 5)).encode(),
        json.dumps([_good("n4", 6), _good("k29", 7), _good("n3", 8)]).encode(),
        json.dumps(_good("k0", 9, time="2026-11-18T03:00:00.1234567Z")).encode(),  # struct path, bad time
    ]
    msgs = [RawMessage("sensors.air", 1, i, None, v) for i, v in enumerate(values)]
    a, c = col.decode(msgs), strict.decode(msgs)
    _compare(col, strict, a, c)
    assert (col.columnar_messages, col.struct_messages) == (1 + 3, 3)
    assert col.sensors.names[31:] == ["n1", "n3", "n4"]  # after s1 (the fixture's) and k0..k29


def test_scanner_resolves_exactly_the_ids_in_its_table():
    """The table grows (and rehashes) as the index grows; the scanner finds every id in it and no other."""
    index = SensorIndex()
    table = SensorTable()
    ids = [f"s{i}" for i in range(300)] + ["s", "s1x", "S1", "x" * 128]
    for i, sid in enumerate(ids[:300]):
        index.add(sid)
        if i % 37 == 0:  # sync now and then, as the decoder does once per poll
            table.sync(index.names)
    table.sync(index.names)
    values = [json.dumps(_good(sid, i)).encode() for i, sid in enumerate(ids)]
    joined = b"".join(values)
    ends = np.cumsum([len(v) for v in values])
    out = scan_messages(np.frombuffer(joined, dtype=np.uint8), ends - [len(v) for v in values], ends,
                        np.ones(len(values), bool), 10, table)
    assert out.taken.all()
    assert out.sensor.tolist() == list(range(300)) + [-1] * 4


def _reference(rows, time_us, msg, sensor, quantity, value, bad_position, sensor_lat, limit_ns):
    """The whole-column formulation the compiled pass replaced (numpy, one mask per check)."""
    time_ns = np.repeat(time_us * 1000, rows)
    rsensor = np.repeat(sensor, rows)
    reason = np.zeros(quantity.shape[0], dtype=np.uint8)
    reason[rsensor < 0] = 7
    unknown = quantity == 255
    reason[unknown] = 1
    qi = np.where(unknown, 0, quantity)
    reason[(reason == 0) & ~np.isfinite(value)] = 2
    reason[(reason == 0) & ((value < PHYSICAL_MIN[qi]) | (value > PHYSICAL_MAX[qi]))] = 3
    reason[(reason == 0) & (time_ns > limit_ns)] = 4
    rows_bad = np.repeat(bad_position, rows)
    reason[(reason == 0) & rows_bad] = 5
    reason[(reason == 0) & np.isnan(sensor_lat[rsensor])] = 6
    return time_ns, np.repeat(msg, rows), rsensor, reason


_value = st.one_of(st.floats(-100, 2000), st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 1e6]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-5, 5), st.integers(-1, 4), st.booleans()), max_size=12),
       st.data())
def test_the_compiled_row_checks_are_the_column_masks(readings, data):
    rows = np.array([r[0] for r in readings], dtype=np.int64)
    time_us = np.array([1_795_000_000_000_000 + r[1] * 60_000_000 for r in readings], dtype=np.int64)
    msg = np.arange(len(readings), dtype=np.int32)
    sensor = np.array([r[2] for r in readings], dtype=np.int32)
    bad_position = np.array([r[3] for r in readings], dtype=bool)
    n = int(rows.sum())
    quantity = np.array(data.draw(st.lists(st.sampled_from([0, 1, 2, 3, 255]), min_size=n, max_size=n)),
                        dtype=np.uint8)
    value = np.array(data.draw(st.lists(_value, min_size=n, max_size=n)), dtype=np.float64)
    sensor_lat = np.array([48.7, np.nan, 48.8, np.nan, 48.9, 0.0], dtype=np.float64)
    limit = 1_795_000_000_000_000_000 + 120_000_000_000
    got = expand_check(rows, time_us, msg, sensor, quantity, value, bad_position, sensor_lat, PHYSICAL_MIN,
                       PHYSICAL_MAX, limit)
    want = _reference(rows, time_us, msg, sensor, quantity, value, bad_position, sensor_lat, limit)
    for g, w in zip(got[:4], want, strict=True):
        assert g.dtype == w.dtype
        assert np.array_equal(g, w)
    assert got[4] == int(np.count_nonzero(want[3]))


def test_tombstones_and_partitions_in_one_poll():
    """Tombstones (no value) among scanned messages, several partitions of one topic, then a new partition."""
    col, strict = _decoder("columnar"), _decoder("strict")
    for poll in range(3):
        messages = [RawMessage("sensors.air", (i + poll) % 3 if poll < 2 else 7, i, None,
                               None if i % 4 == 1 else json.dumps(_good(f"t{i % 5}", i)).encode())
                    for i in range(12)]
        a, c = col.decode(messages), strict.decode(messages)
        _compare(col, strict, a, c)
        assert [d.reason for d in a.dead] == ["malformed"] * 3
        assert (col.columnar_messages, col.struct_messages) == (9 * (poll + 1), 3 * (poll + 1))
    codes = col.sensors._partition_codes
    assert col.sensors.partition[col.sensors.get("t0")] == codes[("sensors.air", 7)]


def test_the_reused_value_buffer_never_leaks_between_polls():
    """A large poll, then smaller ones (stale bytes past their end), one while a view of the buffer is held."""
    col, strict = _decoder("columnar"), _decoder("strict")
    polls = [[json.dumps([_good(f"b{i}", i) for i in range(40)]).encode()] * 3,
             [json.dumps(_good("b1", 1)).encode()[:-1]],  # cut short: its stale continuation must not count
             [json.dumps(_good("c1", 2)).encode(), b"", json.dumps([_good("b2", 3)]).encode()]]
    held = None
    for k, values in enumerate(polls):
        if k == 2:
            held = col._joined.getbuffer()  # an export the decoder cannot release: it must use another buffer
        messages = [RawMessage("sensors.air", 0, i, None, v) for i, v in enumerate(values)]
        _compare(col, strict, col.decode(messages), strict.decode(messages))
    assert held is not None and held.nbytes > 0
    assert (col.columnar_messages, col.struct_messages) == (3 + 0 + 2, 0 + 1 + 1)
