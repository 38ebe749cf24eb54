"""Decoder: the reading contract, sensor.community pushes, and every kind of bad input."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import RawMessage, ReadingDecoder
from ingest.quantities import QUANTITY_CODE
from ingest.sensor_index import SensorIndex

NOW_NS = 1_795_000_000_000_000_000  # 2026-11-18
T = "2026-11-18T04:00:00+01:00"


def reading(sensor="s1", time=T, values=None, **extra) -> dict:
    d = {"sensor_id": sensor, "time": time, "values": {"pm10": 12.5} if values is None else values}
    d.update(extra)
    return d


def msg(value, topic="sensors.air", offset=0, ts=-1) -> RawMessage:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return RawMessage(topic, 0, offset, b"k", data, ts)


def decoder() -> ReadingDecoder:
    sensors = SensorIndex()
    sensors.add("s1", 48.78, 9.18, registered=True)
    sensors.add("sc-4711", 48.77, 9.17, registered=True)
    return ReadingDecoder(sensors, community_topics=["sensors.community"], clock_ns=lambda: NOW_NS)


# (case, message value, expected reason or None)
BAD = [
    ("truncated JSON", b'{"sensor_id": "s1", "time": "2026', "malformed"),
    ("not JSON", b"hello", "malformed"),
    ("wrong encoding", '{"sensor_id": "s1", "time": "%s", "values": {"pm10": 1}, "x": "ä"}'.replace(
        "%s", T).encode("latin-1"), "malformed"),
    ("empty", b"", "malformed"),
    ("missing field", reading(values={}) | {"values": None}, "malformed"),
    ("missing time", {"sensor_id": "s1", "values": {"pm10": 1}}, "malformed"),
    ("wrong type", reading(values={"pm10": "12"}), "malformed"),
    ("bool value", reading(values={"pm10": True}), "malformed"),
    ("unknown field", reading(extra_field=1), "malformed"),
    ("NaN token", b'{"sensor_id":"s1","time":"' + T.encode() + b'","values":{"pm10":NaN}}', "malformed"),
    ("Infinity via 1e999", b'{"sensor_id":"s1","time":"' + T.encode() + b'","values":{"pm10":1e999}}',
     "not_finite"),
    ("time without offset", reading(time="2026-11-18T04:00:00"), "bad_time"),
    ("time garbage", reading(time="yesterday"), "bad_time"),
    ("unknown quantity", reading(values={"radiation": 1.0}), "unknown_quantity"),
    ("negative PM", reading(values={"pm10": -5.0}), "out_of_range"),
    ("absurd water level", reading(values={"water_level": 1e7}), "out_of_range"),
    ("far future", reading(time="2030-01-01T00:00:00Z"), "future"),
    ("bad latitude", reading(lat=123.0, lon=9.0), "bad_position"),
    ("only lat", reading(sensor="new1", lat=48.0), "bad_position"),
    ("unknown sensor without position", reading(sensor="nobody"), "unknown_sensor"),
    ("markup in sensor id", reading(sensor="<script>alert(1)</script>", lat=48.7, lon=9.1), "bad_sensor_id"),
    ("sensor id ending in a newline", reading(sensor="pegel-x\n", lat=48.7, lon=9.1), "bad_sensor_id"),
    # an unset date (Go's and .NET's zero time) or a sentinel: int64 ns would wrap round to another date
    ("year 1", reading(time="0001-01-01T00:00:00Z"), "bad_time"),
    ("year 9999", reading(time="9999-12-31T23:59:59Z"), "bad_time"),
    ("wraps to now", reading(time="2611-06-09T10:40:13Z"), "bad_time"),
    ("before 1970", reading(time="1969-12-31T23:59:59Z"), "bad_time"),
    ("deep nesting", b"[" * 5000 + b"]" * 5000, "malformed"),
    ("top-level number", b"42", "malformed"),
]


@pytest.mark.parametrize(("case", "value", "reason"), BAD, ids=[c for c, _, _ in BAD])
def test_bad_input_is_dead_lettered_with_reason(case, value, reason):
    out = decoder().decode([msg(value)])
    assert len(out.batch) == 0
    assert [d.reason for d in out.dead] == [reason], out.dead
    d = out.dead[0]
    assert d.detail and d.topic == "sensors.air" and d.offset == 0
    assert d.value == (value if isinstance(value, bytes) else json.dumps(value).encode())


def test_oversized_message():
    dec = decoder()
    dec.limits = type(dec.limits)(max_message_bytes=1000)
    out = dec.decode([msg([reading()] * 50)])
    assert [d.reason for d in out.dead] == ["oversized"]


@pytest.mark.parametrize("last", [{"x": 1}, reading(values={"pm10": -1.0}), reading()])
def test_too_many_readings_count_every_element_good_or_bad(last):
    """max_readings_per_message is about the message: four elements over a limit of three are oversized
    whichever of them is bad (it depended on which path took the message), with one dead letter."""
    dec = decoder()
    dec.limits = type(dec.limits)(max_readings_per_message=3)
    out = dec.decode([msg([reading()] * 3 + [last])])
    assert len(out.batch) == 0
    assert [(d.reason, d.element, d.readings) for d in out.dead] == [("oversized", None, 4)]
    assert dec.decode([msg([reading()] * 2 + [last])]).batch.value.size >= 2


def test_good_reading_becomes_columns():
    out = decoder().decode([msg(reading(values={"pm10": 12.5, "no2": 40.0}))])
    assert not out.dead
    b = out.batch
    assert b.quantity.tolist() == [QUANTITY_CODE["pm10"], QUANTITY_CODE["no2"]]
    assert b.value.tolist() == [12.5, 40.0]
    expected = np.datetime64("2026-11-18T03:00:00", "ns").astype(np.int64)
    assert b.time.tolist() == [expected, expected]
    assert b.sensor.tolist() == [0, 0]
    assert out.accepted_by_quantity[QUANTITY_CODE["pm10"]] == 1


def test_batch_message_keeps_good_elements():
    elements = [reading(), {"oops": 1}, reading(values={"pm10": -1.0}), reading(sensor="new2", lat=48.7, lon=9.1)]
    out = decoder().decode([msg(elements)])
    assert len(out.batch) == 2
    assert sorted((d.element, d.reason) for d in out.dead) == [(1, "malformed"), (2, "out_of_range")]


def test_unknown_sensor_with_position_is_mapped_later():
    dec = decoder()
    out = dec.decode([msg(reading(sensor="citizen-1", lat=48.8, lon=9.2))])
    assert not out.dead
    i = dec.sensors.get("citizen-1")
    assert dec.sensors.lat[i] == 48.8 and dec.sensors.moved[i]


@pytest.mark.parametrize(("value", "detail"), [
    (reading(values={"pm10": 1.0, "temperature": 3.0}), "unknown quantity 'temperature' in 'values'"),
    ([reading(), reading(values={"PM10": 2.0})], "unknown quantity 'PM10' in 'values'"),
    (reading(values={"pm10": -5.0}), "pm10=-5.0 outside the physical range 0 .. 2000"),
    (reading(time="2030-01-01T00:00:00Z"), "time 2030-01-01T00:00:00Z is ahead of the clock (2026-11-18T11:06:40Z)"),
    (b'{"sensor_id":"s1","time":"' + T.encode() + b'","values":{"pm10":NaN}}', "NaN and Infinity are not JSON"),
    (b'[{"sensor_id":"s1","time":"' + T.encode() + b'","values":{"o3":-Infinity}}]', "NaN and Infinity are not JSON"),
])
def test_the_detail_names_what_to_mend(value, detail):
    """A feed owner reads the dead letter's detail: the key, the value and its range, the times at fault."""
    (dead,) = decoder().decode([msg(value)]).dead
    assert detail in dead.detail, dead.detail


def test_a_rejected_reading_gives_its_sensor_no_position():
    """Bad input has no effect: a rejected reading's lat/lon neither places a new sensor (its next reading
    without a position is still unknown) nor moves a known one."""
    dec = decoder()
    bad = dec.decode([msg(reading(sensor="citizen-2", lat=48.8, lon=9.2, values={"pm10": -1.0}))])
    assert [d.reason for d in bad.dead] == ["out_of_range"]
    out = dec.decode([msg(reading(sensor="citizen-2"))])
    assert [d.reason for d in out.dead] == ["unknown_sensor"]
    dec.decode([msg(reading(sensor="citizen-2", lat=48.8, lon=9.2))])
    i = dec.sensors.get("citizen-2")
    dec.sensors.moved[i] = False
    dec.decode([msg(reading(sensor="citizen-2", time="2030-01-01T00:00:00Z", lat=0.0, lon=0.0))])  # future
    assert (dec.sensors.lat[i], dec.sensors.lon[i], dec.sensors.moved[i]) == (48.8, 9.2, False)


def test_a_reading_in_the_same_poll_may_place_its_sensor_for_the_others():
    dec = decoder()
    out = dec.decode([msg(reading(sensor="citizen-3"), offset=0),
                      msg(reading(sensor="citizen-3", lat=48.8, lon=9.2), offset=1)])
    assert not out.dead and len(out.batch) == 2


def test_a_registered_sensor_keeps_its_registry_position():
    """A trusted station's position (and with it its districts and impact area) comes from the registry,
    not from whatever a reading carries (a feed sending 0,0 took LUBW stations out of every district)."""
    dec = decoder()
    i = dec.sensors.get("s1")
    dec.sensors.moved[i] = False  # mapped once
    out = dec.decode([msg(reading(sensor="s1", lat=0.0, lon=0.0))])
    assert not out.dead and len(out.batch) == 1
    assert (dec.sensors.lat[i], dec.sensors.lon[i], dec.sensors.moved[i]) == (48.78, 9.18, False)


_R = b'"sensor_id":"s1","time":"2026-11-18T04:00:00+01:00"'


@pytest.mark.parametrize("columnar", [True, False])
@pytest.mark.parametrize("value", [
    b'{' + _R + b',"values":{"pm10":12.5,"pm10":1500}}',
    b'{' + _R + b',"values":{"pm10":12.5,"pm\\u0031\\u0030":1500}}',  # the same key, escaped
    b'{' + _R + b',"values":{"pm10":12.5},"time":"2026-11-18T05:00:00+01:00"}',
    b'{' + _R + b',"values":{"pm10":12.5},"lat":48.7,"lon":9.1,"lat":48.8}',
    b'{"sensor_id":"s\\u003a1","time":"2026-11-18T04:00:00Z","values":{"pm10":1,"pm10":2}}',  # a colon unseen
])
def test_a_key_given_twice_is_malformed_not_the_last_one(value, columnar):
    """JSON leaves repeated keys undefined and msgspec keeps the last: {"pm10": 12.5, "pm10": 1500} was read as
    1500. Which value the sender meant is unknown, so the reading is rejected, naming the key."""
    dec = decoder()
    dec.columnar = columnar
    out = dec.decode([msg(value)])
    assert len(out.batch) == 0
    assert [d.reason for d in out.dead] == ["malformed"]
    assert "given twice in one object" in out.dead[0].detail


@pytest.mark.parametrize("columnar", [True, False])
def test_a_key_given_twice_rejects_only_its_element(columnar):
    dec = decoder()
    dec.columnar = columnar
    value = b'[' + b", ".join(b'{' + _R + b',"values":' + v + b'}'
                              for v in (b'{"pm10":1}', b'{"no2":2,"no2":3}', b'{"o3":4}')) + b']'
    out = dec.decode([msg(value)])
    assert out.batch.value.tolist() == [1.0, 4.0]
    assert [(d.reason, d.element, d.detail) for d in out.dead] == [
        ("malformed", 1, "key 'no2' given twice in one object (which value is meant?)")]


@pytest.mark.parametrize("columnar", [True, False])
def test_colons_and_escapes_without_a_repeated_key_are_accepted(columnar):
    """The cheap filter in front of the exact check counts colons: ids and times with colons, spaces round
    them, escaped keys and a quantity that is no key's twin all still decode."""
    dec = decoder()
    dec.columnar = columnar
    values = [
        b'{"sensor_id" : "a:b:c", "time" : "2026-11-18T04:00:00+01:00", "values" : {"pm10" : 1, "no2":2},'
        b' "lat" : 48.7, "lon" : 9.1}',
        b'{"sensor_id":"s1","time":"2026-11-18T04:00:00.5+01:00","values":{"pm\\u0031\\u0030":3}}',
        b'[{"sensor_id":"s1","time":"2026-11-18T04:00:00Z","values":{"o3":4}},'
        b' {"sensor_id":"s1","time":"2026-11-18T04:00:00Z","values":{"o3":5}}]',
    ]
    out = dec.decode([msg(v, offset=i) for i, v in enumerate(values)])
    assert not out.dead
    assert out.batch.value.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_community_push_with_a_key_given_twice_is_malformed():
    push = b'{"esp8266id":"4711","esp8266id":"4712","sensordatavalues":[{"value_type":"SDS_P1","value":"1"}]}'
    out = decoder().decode([msg(push, topic="sensors.community", ts=NOW_NS // 1_000_000)])
    assert [(d.reason, d.detail) for d in out.dead] == [
        ("malformed", "key 'esp8266id' given twice in one object (which value is meant?)")]


def test_community_push_format():
    push = {"esp8266id": "4711", "software_version": "NRZ-2020-129",
            "sensordatavalues": [{"value_type": "SDS_P1", "value": "23.4"}, {"value_type": "SDS_P2", "value": "9.1"},
                                 {"value_type": "temperature", "value": "3.2"}]}
    out = decoder().decode([msg(push, topic="sensors.community", ts=NOW_NS // 1_000_000)])
    assert not out.dead
    assert out.batch.value.tolist() == [23.4, 9.1]
    assert out.batch.time.tolist() == [NOW_NS, NOW_NS]


@pytest.mark.parametrize(("push", "reason"), [
    ({"esp8266id": "999", "sensordatavalues": [{"value_type": "SDS_P1", "value": "1"}]}, "unknown_sensor"),
    ({"esp8266id": "4711", "sensordatavalues": [{"value_type": "SDS_P1", "value": "abc"}]}, "malformed"),
    ({"esp8266id": "4711", "sensordatavalues": [{"value_type": "temperature", "value": "1"}]}, "malformed"),
    ({"sensordatavalues": []}, "malformed"),
])
def test_bad_community_push(push, reason):
    out = decoder().decode([msg(push, topic="sensors.community", ts=NOW_NS // 1_000_000)])
    assert [d.reason for d in out.dead] == [reason]


def _accounted(messages: list[RawMessage], out) -> None:
    """Every message is either fully accepted, partly accepted with dead elements, or dead-lettered."""
    dead_msgs = {d.offset for d in out.dead if d.element is None}
    accepted_msgs = set(out.batch.message.tolist())
    for i, m in enumerate(messages):
        assert i in accepted_msgs or m.offset in dead_msgs or any(d.offset == m.offset for d in out.dead), m


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda s, v, t: json.dumps(reading(sensor=s, values=v, time=t, lat=48.7, lon=9.1)).encode(),
              st.text(max_size=12), st.dictionaries(st.sampled_from(["pm10", "no2", "o3", "x"]),
                                                     st.floats(), max_size=3),
              st.sampled_from([T, "2026-11-18T03:00:00Z", "bad", "2026-11-18T03:00:00"])),
), min_size=1, max_size=20))
def test_garbage_never_crashes_and_is_accounted_for(values):
    messages = [RawMessage("sensors.air", 0, i, None, v) for i, v in enumerate(values)]
    out = decoder().decode(messages)
    _accounted(messages, out)
    assert np.isfinite(out.batch.value).all()
    assert len(out.batch.sensor) == len(out.batch.time) == len(out.batch.value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=3000), min_size=1,
                max_size=30))
def test_batches_and_singles_decode_the_same(vals):
    elements = [reading(values={"pm10": v}) for v in vals]
    as_batch = decoder().decode([msg(elements)])
    as_single = decoder().decode([msg(e, offset=i) for i, e in enumerate(elements)])
    assert as_batch.batch.value.tolist() == as_single.batch.value.tolist()
    assert sum(d.readings for d in as_batch.dead) == sum(d.readings for d in as_single.dead)
    assert len(as_batch.batch) + sum(d.readings for d in as_batch.dead) == len(vals)


def test_msgspec_is_strict_about_ints_as_sensor_ids():
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"sensor_id": 5, "time": "x", "values": {}}',
                            type=__import__("ingest.decode", fromlist=["Reading"]).Reading)
