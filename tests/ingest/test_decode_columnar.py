"""The compiled columnar scanner gives exactly what the strict schema gives, and really takes the common shapes."""

from __future__ import annotations

import json
import random
import struct

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import RawMessage, ReadingDecoder, rfc3339_us
from ingest.reading_scanner import group_spans, parse_number, parse_time_us
from ingest.sensor_index import SensorIndex
from tests.ingest.test_decode_fast import _near_rfc3339

NOW_NS = 1_795_000_000_000_000_000  # 2026-11-18
_FLOAT = msgspec.json.Decoder(float)


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _parse(text: str) -> tuple[float, bool]:
    buf = np.frombuffer(text.encode(), dtype=np.uint8)
    x, end, ok = parse_number(buf, 0, buf.shape[0])
    return x, bool(ok) and end == buf.shape[0]


def _check_number(text: str) -> bool:
    """A number the scanner takes is bit for bit msgspec's (and float()'s) value; True when taken."""
    x, taken = _parse(text)
    if taken:
        ref = _FLOAT.decode(text.encode())
        assert _bits(x) == _bits(ref), (text, x, ref)
        assert x == float(text), text
    return taken


# -- numbers --
@pytest.mark.parametrize(("text", "taken", "value"), [
    ("12.5", True, 12.5), ("-0", True, 0.0), ("-0.0", True, -0.0), ("-0e0", True, -0.0), ("0", True, 0.0),
    ("1E2", True, 100.0), ("1e+2", True, 100.0), ("0.000123", True, 0.000123), ("1e22", True, 1e22),
    ("1e23", True, 1e23), ("9007199254740993", True, 9007199254740992.0), ("48.763000000000005", True, None),
    ("9999999999999999999", True, None),  # 19 digits, above 2**63
    ("18446744073709551616", False, None),  # 20 digits: left to msgspec
    ("1e999", False, None), ("2e-400", False, None), ("01", False, None), ("1.", False, None),
    (".5", False, None), ("-", False, None), ("1e", False, None), ("+1", False, None), ("NaN", False, None),
])
def test_number_table(text, taken, value):
    x, ok = _parse(text)
    assert ok is taken
    if taken:
        _check_number(text)
        if value is not None:
            assert _bits(x) == _bits(value)


_decimal = st.builds(
    lambda neg, digits, point, exp: ("-" if neg else "") + (
        digits if point is None or point >= len(digits) else (digits[:point] or "0") + "." + digits[point:])
    + ("" if exp is None else f"e{exp}"),
    st.booleans(), st.integers(0, 10 ** 20).map(str), st.none() | st.integers(0, 21),
    st.none() | st.integers(-80, 80))


def _halfway(m: int, k: int, scale: int) -> str:
    """An exact tie between two doubles (round half to even decides), written as a decimal."""
    if scale:  # (2m+1) / 2**scale: a decimal with `scale` fraction digits
        digits = str((2 * m + 1) * 5 ** scale)
        return digits[:-scale] + "." + digits[-scale:]
    return str((2 * m + 1) << (k - 1))


@settings(max_examples=1500, deadline=None)
@given(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(-1000, 10000).map(repr),
    st.integers(-(10 ** 22), 10 ** 22).map(str),
    _decimal,
    st.builds(_halfway, st.integers(2 ** 52, 2 ** 53 - 1), st.integers(1, 11), st.sampled_from([0, 0, 1, 2, 3])),
))
def test_numbers_taken_are_exactly_msgspecs(text):
    _check_number(text)


def test_numbers_mostly_taken_and_exact_in_bulk():
    """A million-ish random decimals and ties, checked against msgspec; guards the property above from vacuity."""
    rnd = random.Random(7)
    taken = total = 0
    for _ in range(60_000):
        k = rnd.random()
        if k < 0.4:
            x = struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0]
            if x != x or x in (float("inf"), float("-inf")):
                continue
            text = repr(x)
        elif k < 0.7:
            text = f"{rnd.randint(1, 10 ** rnd.randint(1, 19) - 1)}e{rnd.randint(-60, 60)}"
        else:
            text = _halfway(rnd.randint(2 ** 52, 2 ** 53 - 1), rnd.randint(1, 11), rnd.choice([0, 1, 2, 3]))
        total += 1
        taken += _check_number(text)
    assert taken > 0.6 * total, (taken, total)


# -- times --
def _time(text: str) -> tuple[int, bool]:
    buf = np.frombuffer((text + '"').encode(), dtype=np.uint8)
    us, end = parse_time_us(buf, 0, buf.shape[0])
    return int(us), end == buf.shape[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(_near_rfc3339(), min_size=1, max_size=10))
def test_times_are_taken_exactly_as_the_column_parser_takes_them(texts):
    us, ok = rfc3339_us(texts)
    for text, u, taken in zip(texts, us.tolist(), ok.tolist(), strict=True):
        got, got_taken = _time(text)
        assert got_taken is taken, text
        if taken:
            assert got == u, text


# -- sensor id groups --
@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "ab", "ba", "s1", "s10", "s1 ", "\x00", "aa"]), max_size=40))
def test_groups_are_exactly_equal_byte_strings(ids):
    data = b"".join(i.encode() for i in ids)
    ends = np.cumsum([len(i.encode()) for i in ids], dtype=np.int64)
    spans = np.stack([ends - [len(i.encode()) for i in ids], ends], axis=1).astype(np.int64).reshape(-1, 2)
    group, first = group_spans(np.frombuffer(data, dtype=np.uint8), spans)
    distinct = list(dict.fromkeys(ids))
    assert [ids[f] for f in first.tolist()] == distinct
    assert [distinct[g] for g in group.tolist()] == ids


# -- whole messages: columnar vs strict --
def _decoder(mode: str) -> ReadingDecoder:
    sensors = SensorIndex()
    sensors.add("s1", 48.78, 9.18, registered=True)
    d = ReadingDecoder(sensors, community_topics=["sensors.community"], clock_ns=lambda: NOW_NS)
    d.columnar = mode == "columnar"
    if mode == "strict":
        from tests.ingest.test_decode_fast import _Never

        d._fast_one = d._fast_many = _Never()
    return d


def _mostly(good: st.SearchStrategy, odd: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` nine times in ten: most generated messages are well formed, so the scanner takes them."""
    return st.integers(0, 9).flatmap(lambda k: odd if k == 0 else good)


_ws = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n  "])
_good_number = st.one_of(st.floats(0, 2000).map(repr), st.integers(0, 2000).map(str),
                         st.sampled_from(["12.5", "1e1", "1.5E+2", "-0", "-0.0", "0.000123", "1999.9"]))
_number = _mostly(_good_number, st.one_of(
    st.sampled_from(["12.5", "40", "1e1", "1.5E+2", "-0", "-0.0", "0.000123", "48.763000000000005", "9.1",
                     "1e999", "01", "1.", "NaN", "true", "null", '"12"', "9999999999999999999",
                     "123456789012345678901234", "-5", "2e-400", "1999.9"]),
    st.floats(-600, 6000).map(repr), st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-10, 3000).map(str), _decimal,
))
_sensor = _mostly(st.sampled_from(['"s1"', '"s2"', '"new-3"', json.dumps("y" * 128), '"a.b_c:d-e"']),
                  st.sampled_from(['"s1"', '"s1"', '"s2"', '"new-3"', '"bad id!"', '""', '"ü-sensor"', '"s\\u0031"',
                           json.dumps("x" * 129), json.dumps("y" * 128), '"a.b_c:d-e"', "5", "null", '"-x"']))
_time_text = _mostly(st.sampled_from(["2026-11-18T04:00:00+01:00", "2026-11-18T03:00:00Z",
                                     "2026-11-18T03:00:00.5-00:30", "2026-11-18T02:59:59.123456Z"]), st.one_of(
    st.sampled_from(["2026-11-18T04:00:00+01:00", "2026-11-18T03:00:00Z", "2026-11-18T03:00:60Z",
                     "2026-11-18T03:00:00.123456789Z", "2026-11-18T03:00:00.5-00:30", "2026-11-18 03:00:00Z",
                     "2026-11-18T03:00:00z", "2030-01-01T00:00:00Z"]),
    _near_rfc3339())).map(json.dumps)
_values = _mostly(
    st.lists(st.tuples(st.sampled_from(["pm10", "no2", "o3", "water_level", "pm2_5"]), _number), min_size=1,
             max_size=3, unique_by=lambda kv: kv[0]),
    st.lists(st.tuples(st.sampled_from(["pm10", "no2", "o3", "water_level", "pm2_5", "x", "pm\\u0031\\u0030"]),
                       _number), min_size=0, max_size=3))


@st.composite
def _reading_text(draw) -> str:
    w = lambda: draw(_ws)  # noqa: E731
    vals = draw(_values)
    values = "{" + w() + ("," + w()).join(f'"{k}"{w()}:{w()}{v}' for k, v in vals) + w() + "}"
    if draw(st.integers(0, 20)) == 0:
        values = draw(st.sampled_from(["null", "[]", '{"pm10": {"a": 1}}', "{}"]))
    fields = [("sensor_id", draw(_sensor)), ("time", draw(_time_text)), ("values", values)]
    if draw(st.booleans()):
        fields += [("lat", draw(_number | st.just("48.7"))), ("lon", draw(_number | st.just("9.1")))]
    odd = draw(st.integers(0, 30))
    if odd == 0:
        fields.append(("extra", "1"))
    elif odd == 1 and fields:
        fields.append(draw(st.sampled_from(fields)))  # a duplicate key
    elif odd == 2:
        fields.pop(draw(st.integers(0, len(fields) - 1)))
    elif odd == 3:
        fields = [(k.replace("time", "ti\\u006de"), v) for k, v in fields]  # an escaped key
    fields = draw(st.permutations(fields))
    return "{" + w() + ("," + w()).join(f'"{k}"{w()}:{w()}{v}' for k, v in fields) + w() + "}"


@st.composite
def _message(draw) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind < 5:
        text = draw(_reading_text())
    elif kind < 9:
        elems = draw(st.lists(_reading_text() | st.sampled_from(["5", "[]", "null"]) if kind == 8 else _reading_text(),
                              min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=4))
        text = "[" + draw(_ws) + ("," + draw(_ws)).join(elems) + draw(_ws) + "]"
    else:
        return draw(st.binary(max_size=30))
    return (draw(_ws) + text + draw(_mostly(_ws, st.sampled_from([",", "x"])))).encode()


def _same(messages: list[RawMessage]) -> ReadingDecoder:
    col, struct_, strict = _decoder("columnar"), _decoder("struct"), _decoder("strict")
    a, b, c = col.decode(messages), struct_.decode(messages), strict.decode(messages)
    for col_name in ("sensor", "quantity", "time", "value", "message"):
        x, y, z = (getattr(o.batch, col_name) for o in (a, b, c))
        if col_name == "value":  # bit for bit (-0.0 is not 0.0 here)
            x, y, z = x.view(np.int64), y.view(np.int64), z.view(np.int64)
        assert np.array_equal(x, z), col_name
        assert np.array_equal(y, z), col_name
    assert a.dead == c.dead
    assert b.dead == c.dead
    assert np.array_equal(a.accepted_by_quantity, c.accepted_by_quantity)
    for attr in ("lat", "lon"):
        n = len(strict.sensors)
        assert np.array_equal(getattr(col.sensors, attr)[:n], getattr(strict.sensors, attr)[:n], equal_nan=True)
    assert col.sensors.names == strict.sensors.names
    return col


_TAKEN = [0, 0]  # messages taken by the scanner / decoded, over the property test below (vacuity guard)


@settings(max_examples=250, deadline=None)
@given(st.lists(_message(), min_size=1, max_size=10))
def test_columnar_and_strict_paths_give_identical_results(values):
    messages = [RawMessage("sensors.air", 0, i, b"k", v, 1_795_000_000_000) for i, v in enumerate(values)]
    col = _same(messages)
    _TAKEN[0] += col.columnar_messages
    _TAKEN[1] += len(messages)


class _Obj(dict):
    """An object as the reference reads it, remembering whether a key repeated."""

    def __init__(self, pairs: list) -> None:
        super().__init__(pairs)
        self.repeats = len(self) != len(pairs)


def _repeats(node) -> bool:
    if isinstance(node, _Obj):
        return node.repeats or any(map(_repeats, node.values()))
    return isinstance(node, list) and any(map(_repeats, node))


@settings(max_examples=150, deadline=None)
@given(st.lists(_message(), min_size=1, max_size=6))
def test_no_reading_with_a_repeated_key_is_accepted(values):
    """Against a plain reference (json with a pairs hook): a reading whose object repeats a key, at any depth,
    is dead-lettered itself, never accepted with one of its values."""
    messages = [RawMessage("sensors.air", 0, i, b"k", v, 1_795_000_000_000) for i, v in enumerate(values)]
    out = _decoder("columnar").decode(messages)
    accepted = set(out.batch.message.tolist())
    dead = {(d.offset, d.element) for d in out.dead}
    for m, value in enumerate(values):
        try:
            doc = json.loads(value, object_pairs_hook=_Obj)
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, list):
            for e in (e for e, elem in enumerate(doc) if _repeats(elem)):
                assert (m, e) in dead or (m, None) in dead, (value, out.dead)
        elif _repeats(doc):
            assert m not in accepted and (m, None) in dead, (value, out.dead)


def test_the_property_test_reaches_the_columnar_path():
    """Guards the property test above: a fair share of its messages were taken by the scanner (about a third
    usually, 0.32 to 0.40 in four runs; a bound of 0.25 failed once: the share varies with what hypothesis draws)."""
    if not _TAKEN[1]:
        test_columnar_and_strict_paths_give_identical_results()
    assert _TAKEN[0] > 0.1 * _TAKEN[1], _TAKEN


def _good(i: int, **extra) -> dict:
    return {"sensor_id": f"s{i % 3 + 1}", "time": f"2026-11-18T0{i % 4}:00:0{i % 10}.{i:03d}+01:00",
            "values": {"pm10": 10.0 + i, "no2": 0.1 * i}, "lat": 48.7 + i * 1e-3, "lon": 9.1 + i * 1e-3} | extra


def test_common_shapes_are_all_taken_by_the_scanner():
    """The deterministic vacuity guard: well-formed messages never leave the columnar path."""
    values = [json.dumps(_good(1)).encode(), json.dumps([_good(i) for i in range(50)]).encode(),
              json.dumps(_good(2), indent=2).encode(), json.dumps([_good(3), _good(4)], separators=(",", ":")).encode(),
              b'  {"time":"2026-11-18T03:00:00Z","values":{"water_level":-0.0},"sensor_id":"s1"}\n',
              json.dumps({"sensor_id": "s1", "time": "2026-11-18T03:00:00Z", "values": {"pm10": 1e-7}}).encode()]
    messages = [RawMessage("sensors.air", 1, i, None, v) for i, v in enumerate(values)]
    col = _same(messages)
    assert (col.columnar_messages, col.struct_messages) == (len(values), 0)


@pytest.mark.parametrize("value", [
    b'{"sensor_id":"s\\u0031","time":"2026-11-18T03:00:00Z","values":{"pm10":1}}',  # escape
    b'{"sensor_id":"s1","sensor_id":"s1","time":"2026-11-18T03:00:00Z","values":{"pm10":1}}',  # duplicate
    b'{"sensor_id":"s1","time":"2026-11-18T03:00:00Z","values":{"pm10":1,"pm10":2}}',  # duplicate quantity
    b'{"sensor_id":"s1","time":"2026-11-18T03:00:00Z","values":{"radiation":1}}',  # unknown quantity
    b'{"sensor_id":"s1","time":"2026-11-18T03:00:60Z","values":{"pm10":1}}',  # leap second
    b'{"sensor_id":"s1","time":"2026-11-18T03:00:00.1234567Z","values":{"pm10":1}}',  # beyond µs
    b'{"sensor_id":"s1","time":"2026-11-18T03:00:00Z","values":{"pm10":1e999}}',  # overflow
    b'{"sensor_id":"bad id","time":"2026-11-18T03:00:00Z","values":{"pm10":1}}',  # id outside the pattern
    b'{"sensor_id":"s1","time":"2026-11-18T03:00:00Z","values":{}}',  # empty values
    b'[]', b'[{"sensor_id":"s1","time":"2026-11-18T03:00:00Z","values":{"pm10":1}}, 5]', b"\x0b{}",
    b'{"sensor_id":"s1","time":"2026-11-18T03:00:00Z","values":{"pm10":1}} x',
])
def test_what_the_scanner_is_unsure_of_goes_the_strict_way(value):
    good = json.dumps(_good(5)).encode()
    messages = [RawMessage("sensors.air", 0, i, None, v) for i, v in enumerate([good, value, good])]
    col = _same(messages)
    assert (col.columnar_messages, col.struct_messages) == (2, 1)


def test_limits_and_community_stay_on_the_struct_path():
    dec = _decoder("columnar")
    dec.limits = type(dec.limits)(max_message_bytes=10_000, max_readings_per_message=3)
    values = [json.dumps([_good(i) for i in range(4)]).encode(), json.dumps([_good(i) for i in range(3)]).encode(),
              json.dumps([_good(i) for i in range(60)]).encode(), b""]
    messages = [RawMessage("sensors.air", 0, i, None, v) for i, v in enumerate(values)]
    messages.append(RawMessage("sensors.community", 0, 9, None, json.dumps(_good(1)).encode()))
    out = dec.decode(messages)
    assert (dec.columnar_messages, dec.struct_messages) == (1, 4)
    assert [d.reason for d in out.dead] == ["oversized", "oversized", "malformed", "malformed"]
    assert len(out.batch) == 6
