"""The decoder's fast path (time strings parsed per column) gives exactly what the strict schema gives."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from ingest.decode import AwareTime, RawMessage, ReadingDecoder, rfc3339_us
from ingest.sensor_index import SensorIndex

NOW_NS = 1_795_000_000_000_000_000  # 2026-11-18
_STRICT_TIME = msgspec.json.Decoder(AwareTime)


def strict_us(text: str) -> int | None:
    """µs since the epoch as the strict path computes it, None where msgspec rejects the string."""
    try:
        return round(_STRICT_TIME.decode(msgspec.json.encode(text)).timestamp() * 1e6)
    except msgspec.ValidationError:
        return None


@pytest.mark.parametrize(("text", "taken"), [
    ("2026-11-18T04:00:00+01:00", True),
    ("2026-11-18T03:00:00Z", True),
    ("2024-02-29T23:59:59.5-02:30", True),
    ("2026-11-18T03:00:00.123456Z", True),
    ("1970-01-01T00:00:00Z", True),
    ("2099-12-31T23:59:59.999999-23:59", True),
    ("2026-02-29T00:00:00Z", False),  # no such day
    ("2026-11-18T03:00:00", False),  # no offset
    ("2026-11-18t03:00:00z", False),  # left to msgspec (which takes it)
    ("2026-11-18T03:00:00.1234567Z", False),  # more than µs: left to msgspec
    ("2026-11-18T03:00:00Z\x00", False),  # trailing NUL (numpy would drop it)
    ("2026-11-18T03:00:00+01:00 and more text", False),
    ("2026-11-18T03:00:00+24:00", False),
    ("2026-11-18T03:00:00-00:00", True),  # msgspec takes it as UTC
    ("2026-11-18T03:00:60Z", False),
    ("2026-11-18T24:00:00Z", False),
    ("1969-12-31T23:59:59Z", False),  # outside the fast path's years: left to msgspec
    ("ä", False),
    ("", False),
])
def test_common_shapes_are_taken_and_agree_with_msgspec(text, taken):
    us, ok = rfc3339_us([text])
    assert bool(ok[0]) is taken
    if taken:
        assert int(us[0]) == strict_us(text)


def _near_rfc3339() -> st.SearchStrategy[str]:
    """Mostly valid RFC 3339 strings, with every component sometimes out of range or malformed."""

    def two(lo: int, hi: int) -> st.SearchStrategy[str]:
        return st.one_of(st.integers(lo, hi), st.integers(lo, hi), st.integers(lo, hi), st.integers(0, 99)).map(
            lambda v: f"{v:02d}")

    frac = st.one_of(st.just(""), st.text("0123456789", min_size=0, max_size=8).map(lambda f: "." + f))
    offset = st.one_of(st.sampled_from(["Z", "Z", "z", "", "+", "-00:00"]),
                       st.tuples(st.sampled_from("+-"), two(0, 23), st.sampled_from("::x"), two(0, 59)).map("".join))
    sep = st.sampled_from  # the usual separator is the likely one
    valid = st.tuples(  # well-formed times half of the time, so the fast path is really exercised
        st.integers(1970, 2099), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23), st.integers(0, 59),
        st.integers(0, 59), st.text("0123456789", min_size=1, max_size=6).map(lambda f: "." + f) | st.just(""),
        st.sampled_from(["Z", "+01:00", "-00:00"]) | st.tuples(st.sampled_from("+-"), st.integers(0, 23),
                                                                 st.integers(0, 59)).map(
            lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}"),
    ).map(lambda t: f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:{t[4]:02d}:{t[5]:02d}{t[6]}{t[7]}")
    return valid | st.tuples(
        st.integers(1960, 2110).map(lambda y: f"{y:04d}"), sep("---/"), two(1, 12), sep("---."), two(1, 31),
        sep("TTTt x"), two(0, 23), sep(":::"), two(0, 59), sep("::."), two(0, 59), frac, offset,
    ).map("".join)


@settings(max_examples=800, deadline=None)
@given(st.lists(_near_rfc3339(), min_size=1, max_size=40))
def test_every_time_taken_is_one_msgspec_accepts_with_the_same_instant(texts):
    us, ok = rfc3339_us(texts)
    for text, u, taken in zip(texts, us.tolist(), ok.tolist(), strict=True):
        if taken:
            assert strict_us(text) == u, text


def test_the_strategy_reaches_the_fast_path():
    """Guards the property test above against vacuity: it generates strings the fast path takes."""
    taken = find(_near_rfc3339(), lambda t: bool(rfc3339_us([t])[1][0]) and "." in t,
                 settings=settings(max_examples=5000, database=None, derandomize=True, deadline=None))
    assert strict_us(taken) is not None


class _Never:
    """A decoder that always fails: turns the fast path off."""

    def decode(self, data: bytes):
        raise ValueError("fast path disabled")


def _decoder(fast: bool) -> ReadingDecoder:
    sensors = SensorIndex()
    sensors.add("s1", 48.78, 9.18, registered=True)
    d = ReadingDecoder(sensors, community_topics=["sensors.community"], clock_ns=lambda: NOW_NS)
    d.columnar = False  # this file compares the struct paths; test_decode_columnar.py checks the scanner
    if not fast:
        d._fast_one = d._fast_many = _Never()
    return d


def _reading(sensor, time, values) -> dict:
    return {"sensor_id": sensor, "time": time, "values": values, "lat": 48.7, "lon": 9.1}


_times = st.one_of(_near_rfc3339(), st.sampled_from(["2026-11-18T03:00:00Z", "2026-11-18T04:00:00.25+01:00"]))
_element = st.builds(_reading, st.sampled_from(["s1", "s2", "bad id!", ""]), _times,
                     st.dictionaries(st.sampled_from(["pm10", "no2", "x"]), st.floats(-5, 6000), max_size=2))
_message = st.one_of(
    _element.map(lambda r: json.dumps(r).encode()),
    st.lists(_element, max_size=5).map(lambda rs: json.dumps(rs).encode()),
    st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_message, min_size=1, max_size=12))
def test_fast_and_strict_paths_give_identical_results(values):
    messages = [RawMessage("sensors.air", 0, i, b"k", v, 1_795_000_000_000) for i, v in enumerate(values)]
    fast, strict = _decoder(True).decode(messages), _decoder(False).decode(messages)
    for col in ("sensor", "quantity", "time", "value", "message"):
        assert np.array_equal(getattr(fast.batch, col), getattr(strict.batch, col)), col
    assert fast.dead == strict.dead
    assert np.array_equal(fast.accepted_by_quantity, strict.accepted_by_quantity)


@pytest.mark.parametrize(("prefix", "valid"), [(b"", True), (b" ", True), (b"\n\t\r", True),
                                               (b"\x0b\x0c", False)])  # not JSON whitespace, yet lstrip()'s
def test_leading_whitespace_is_handled_alike(prefix, valid):
    one = json.dumps(_reading("s1", "2026-11-18T03:00:00Z", {"pm10": 1.0})).encode()
    many = json.dumps([_reading("s1", "2026-11-18T03:00:00Z", {"pm10": 2.0})] * 3).encode()
    messages = [RawMessage("sensors.air", 0, i, None, prefix + v, -1) for i, v in enumerate([one, many])]
    fast, strict = _decoder(True).decode(messages), _decoder(False).decode(messages)
    assert fast.batch.value.tolist() == strict.batch.value.tolist() == ([1.0, 2.0, 2.0, 2.0] if valid else [])
    assert fast.dead == strict.dead
    assert len(fast.dead) == (0 if valid else 2)
