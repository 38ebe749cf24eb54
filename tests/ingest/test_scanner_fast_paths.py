"""The scanner's word-at-a-time fast paths give exactly what the byte-at-a-time reading of the contract gives.

Digits are converted eight at a time, the time's shape and the keys are checked
a word at a time and sensor ids are hashed and compared a word at a time; each
has a byte-wise fallback near the end of a message. These tests put every
boundary of those words under the references (``float()``, the column time
parser, the strict msgspec path, the sensor index's own names).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from ingest.decode import RawMessage, rfc3339_us
from ingest.reading_scanner import SensorTable, parse_number, parse_time_us, scan_messages
from tests.ingest.test_decode_columnar import _same

# what follows a number: nothing (the byte-wise tail), or enough for a whole word (the eight-digit path)
_AFTERS = ["", ",", "}", ', "lon": 9.1}', "]" + " " * 12, "e3", "E-2,   ", ".5"]


def _number(text: str, after: str = "") -> tuple[float, int, bool]:
    buf = np.frombuffer((text + after).encode("latin-1"), dtype=np.uint8)
    x, end, ok = parse_number(buf, 0, buf.shape[0])
    return x, int(end), bool(ok)


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _expect_number(text: str, after: str) -> None:
    """``text + after`` parsed: ``text`` (plus a trailing exponent or fraction of ``after``) exactly as float()."""
    whole = text
    for tail in ("e3", "E-2", ".5"):
        if after.startswith(tail) and not (tail == ".5" and "." in text):
            whole = text + tail
    x, end, ok = _number(text, after)
    significant = len(whole.lstrip("-").lower().split("e")[0].replace(".", "").lstrip("0"))
    if significant > 19:
        assert not ok, (text, after)
        return
    assert ok, (text, after)
    assert end == len(whole), (text, after, end)
    assert _bits(x) == _bits(float(whole)), (text, after, x)


def _digits(n: int, first: int = 1) -> list[str]:
    """Digit strings of length n: all nines, a one and zeros, a ramp, and ones that end in zeros."""
    ramp = "".join(str((first + i) % 10) for i in range(n))
    ramp = ramp if ramp[0] != "0" else "1" + ramp[1:]
    return sorted({"9" * n, "1" + "0" * (n - 1), ramp, ramp[: max(1, n - 3)] + "0" * min(3, n - 1)})


@pytest.mark.parametrize("n", range(1, 20))
def test_integers_of_every_length_up_to_19_digits(n):
    for text in _digits(n):
        for sign in ("", "-"):
            for after in _AFTERS:
                _expect_number(sign + text, after)


@pytest.mark.parametrize("n", range(1, 20))
def test_decimals_of_every_length_and_point_position(n):
    for digits in _digits(n, first=3):
        for point in range(1, n):
            text = digits[:point] + "." + digits[point:]
            for after in _AFTERS[:5]:
                _expect_number(text, after)
        for zeros in (1, 7, 8, 9, 15):  # leading zeros of a fraction are not significant digits
            for after in _AFTERS[:5]:
                _expect_number("0." + "0" * zeros + digits, after)


@pytest.mark.parametrize("n", [20, 21, 27, 40])
def test_more_than_19_significant_digits_are_not_taken(n):
    for text in (("1" * n), "1" * 8 + "." + "2" * (n - 8), "0." + "0" * 9 + "3" * n):
        for after in _AFTERS[:5]:
            assert not _number(text, after)[2], (text, after)


def test_numbers_around_2_to_the_53():
    for k in range(-20, 21):
        for text in (str(2 ** 53 + k), str(2 ** 53 + k) + ".0", str(2 ** 53 + k)[:1] + "." + str(2 ** 53 + k)[1:],
                     str(2 ** 53 + k) + "e-7", str(2 ** 63 + k), str(10 ** 19 - 1 - k)):
            for after in ("", ",", ', "lon": 9.1}'):
                _expect_number(text, after)


@pytest.mark.parametrize("byte", range(256))
def test_digits_stop_exactly_at_the_first_other_byte(byte):
    """Whatever byte follows a digit run (inside the word or right after it), the number ends there."""
    for n in (1, 2, 7, 8, 9, 15, 16, 17):
        digits = "12345678901234567"[:n]
        more = "5" + " " * 9 if byte in (46, 69, 101) else "5" * 9  # digits after the byte, within the word
        text = digits + chr(byte) + more + ","
        buf = np.frombuffer(text.encode("latin-1"), dtype=np.uint8)
        x, end, ok = parse_number(buf, 0, buf.shape[0])
        if 48 <= byte <= 57:
            continue  # a digit: the run goes on (checked by the length tests above)
        if byte in (46, 69, 101):  # ".", "E", "e": the number goes on with a fraction or an exponent
            assert ok and end == n + 2, (n, byte, end)
            assert _bits(x) == _bits(float(text[:n + 2])), text
            continue
        assert ok and end == n, (n, byte, end)
        assert x == float(digits)


def test_the_eight_digit_path_never_reads_past_the_end_given():
    """Digits go on after ``end`` (the next message's bytes): the number ends at ``end``."""
    for n in range(1, 20):
        text = "123456789012345678901234"
        buf = np.frombuffer(text.encode(), dtype=np.uint8)
        for start in (0, 3):
            x, end, ok = parse_number(buf, start, start + n)
            assert ok and end == start + n
            assert x == float(text[start:start + n])


def test_exponent_and_power_of_two_edges_exactly_as_float():
    for text in ("9999999999999999999e64", "1e-64", "1e64", "4.9406564584124654e-48", "1.7976931348623157e64",
                 "2.2250738585072014e-48", "123456789012345678e-64", "0.1", "0.3", "48.734553538134925",
                 "9.1517264729533", "48.763000000000005", "9007199254740993e-16"):
        for after in ("", ",", ', "lon": 9.1}'):
            _expect_number(text, after)


# -- times: every byte of the fixed shape, every value --
_TIMES = ["2026-11-25T17:00:00Z", "2024-02-29T23:59:59.123456+01:00", "1970-01-01T00:00:00-00:30"]


@pytest.mark.parametrize("base", _TIMES)
def test_time_shape_every_byte_every_value(base):
    texts, cases = [], []
    for i in range(19):
        for b in range(256):
            text = base[:i] + chr(b) + base[i + 1:]
            cases.append(text)
            if b < 128:
                texts.append(text)
    ref = dict(zip(texts, zip(*(a.tolist() for a in rfc3339_us(texts)), strict=True), strict=True))
    for text in cases:
        for tail in ('"', '", "values": {"pm10": 1}}'):
            buf = np.frombuffer((text + tail).encode("latin-1"), dtype=np.uint8)
            us, end = parse_time_us(buf, 0, buf.shape[0])
            want_us, want_ok = ref.get(text, (0, False))  # a non-ASCII byte: never a time
            assert (end == len(text) + 1) is bool(want_ok), text
            if want_ok:
                assert us == want_us, text


# -- keys --
_READING = {"sensor_id": "s1", "time": "2026-11-18T03:00:00Z", "values": {"pm10": 12.5}, "lat": 48.7, "lon": 9.1}


def _raw(values: list[bytes]) -> list[RawMessage]:
    return [RawMessage("sensors.air", 0, i, b"k", v, 1_795_000_000_000) for i, v in enumerate(values)]


def _scan(values: list[bytes], known: list[str] = ()):
    length = np.array([len(v) for v in values], dtype=np.int64)
    ends = np.cumsum(length)
    buf = np.frombuffer(b"".join(values), dtype=np.uint8)
    table = SensorTable()
    table.sync(list(known))
    return buf, scan_messages(buf, ends - length, ends, length > 0, 1000, table)


def test_every_byte_of_every_key_changed_is_what_the_strict_path_says():
    text = json.dumps(_READING).encode()
    messages = [text]
    for key in _READING:
        at = text.index(b'"' + key.encode() + b'"')
        for i in range(at + 1, at + len(key) + 2):  # the key's bytes and its closing quote
            others = {0, 32, 34, 92, ord("a"), ord("s"), ord("t"), ord("_"), 0xC3, text[i] ^ 1, text[i] ^ 0x20}
            for b in others - {text[i]}:
                messages.append(text[:i] + bytes([b]) + text[i + 1:])
    _buf, result = _scan(messages)
    assert result.taken[0] and not result.taken[1:].any()
    _same(_raw(messages))


def test_keys_near_the_end_of_a_message_take_the_bytewise_way():
    """Compact messages whose last key sits within a word of the end (and the same keys not at the end)."""
    base = {"sensor_id": "s1", "time": "2026-11-18T03:00:00Z", "values": {"pm10": 1}}
    messages = []
    for last in ("lat", "lon"):
        for value in ("1", "12", "1.5"):
            doc = dict(base)
            doc[last] = float(value)
            messages.append(json.dumps(doc, separators=(",", ":")).replace(f":{float(value)!r}}}", f":{value}}}")
                            .encode())
    messages.append(b'{"values":{"o3":1},"time":"2026-11-18T03:00:00Z","sensor_id":"s"}')
    messages.append(b'{"values":{"o3":1},"sensor_id":"s","time":"2026-11-18T03:00:00Z"}')
    messages.append(b'{"time":"2026-11-18T03:00:00Z","sensor_id":"s","values":{"o3":1}}')
    messages += [m[:-1] for m in messages]  # and cut short: not taken
    _buf, result = _scan(messages)
    half = len(messages) // 2
    assert result.taken[:half].all() and not result.taken[half:].any()
    _same(_raw(messages))


@pytest.mark.parametrize("space", ["", " ", "  ", "\n", "\t", "\r\n", " \n\t "])
def test_whitespace_variants_between_every_token(space):
    w = space
    one = (f'{w}{{{w}"sensor_id"{w}:{w}"s1"{w},{w}"time"{w}:{w}"2026-11-18T03:00:00Z"{w},{w}"values"{w}:{w}'
           f'{{{w}"pm10"{w}:{w}12.5{w},{w}"o3"{w}:{w}7{w}}}{w},{w}"lat"{w}:{w}48.7{w},{w}"lon"{w}:{w}9.1{w}}}{w}')
    many = f"{w}[{w}{one},{w}{one}{w}]{w}"
    messages = [one.encode(), many.encode()]
    _buf, result = _scan(messages, ["s1"])
    assert result.taken.all()
    assert result.sensor.tolist() == [0, 0, 0]
    assert result.value.tolist() == [12.5, 7.0] * 3
    assert result.lat.tolist() == [48.7] * 3 and result.lon.tolist() == [9.1] * 3
    _same(_raw(messages))


# -- sensor ids: every length, word boundaries, table edges --
def _ids() -> list[str]:
    ids = []
    for n in range(1, 41):
        base = "".join("abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7) % 36] for i in range(n))
        ids.append(base)
        for i in sorted({0, n - 1, min(7, n - 1), min(8, n - 1), n // 2}):  # one byte changed at a word edge
            ids.append(base[:i] + ("Z" if base[i] != "Z" else "Y") + base[i + 1:])
    ids += ["x" * 128, "pm-000000", "pm-000001", "pm-00000", "pm-0000001"]
    return list(dict.fromkeys(ids))


@pytest.mark.parametrize("known_share", [0.0, 0.5, 1.0])
def test_ids_of_every_length_resolve_to_exactly_their_entry(known_share):
    ids = _ids()
    known = ids[: int(len(ids) * known_share)]
    messages = [json.dumps(dict(_READING, sensor_id=i)).encode() for i in ids]
    length = np.array([len(v) for v in messages], dtype=np.int64)
    ends = np.cumsum(length)
    buf = np.frombuffer(b"".join(messages), dtype=np.uint8)
    table = SensorTable()
    table.sync(known)
    if known:  # one sync past 512 bytes sizes the store exactly: the last entry's bytes end where the store ends
        assert table.off[table.count] == table.store.shape[0]
    result = scan_messages(buf, ends - length, ends, length > 0, 1000, table)
    assert result.taken.all()
    index = {name: k for k, name in enumerate(known)}
    spans = result.sensor_span.tolist()
    for r, name in enumerate(ids):
        assert bytes(buf[spans[r][0]:spans[r][1]]).decode() == name
        assert result.sensor[r] == index.get(name, -1), name


def test_table_edges_after_many_syncs():
    """Ids added over many syncs (the slots regrown, the store and offsets grown) still resolve exactly."""
    table = SensorTable()
    names: list[str] = []
    for step in range(40):
        names += [f"s{step}-{k}" * (1 + k % 5) for k in range(step * 3)]
        table.sync(names)
    messages = [json.dumps(dict(_READING, sensor_id=n)).encode() for n in [*names[::7], "s0-", "nope"]]
    length = np.array([len(v) for v in messages], dtype=np.int64)
    ends = np.cumsum(length)
    buf = np.frombuffer(b"".join(messages), dtype=np.uint8)
    result = scan_messages(buf, ends - length, ends, length > 0, 10, table)
    assert result.sensor.tolist() == [*range(0, len(names), 7), -1, -1]


def test_word_compare_of_ids_sees_every_byte():
    """The id compare (which decides whenever two ids share a hash) at every length, offset and differing byte."""
    from ingest.reading_scanner import _same

    rng = np.random.default_rng(5)
    for n in range(0, 41):
        for ao, bo in ((0, 0), (3, 0), (0, 5), (7, 9)):
            a = rng.integers(0, 256, ao + n + 2).astype(np.uint8)
            b = np.zeros(bo + n + 1, dtype=np.uint8)
            b[bo:bo + n] = a[ao:ao + n]
            assert _same(a, ao, b, bo, n), (n, ao, bo)
            for i in range(n):
                for flip in (1, 0x80):
                    c = b.copy()
                    c[bo + i] ^= flip
                    assert not _same(a, ao, c, bo, n), (n, ao, bo, i, flip)
