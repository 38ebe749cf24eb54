"""Compiled scanner of the reading contract: the raw bytes of a poll batch straight into columns.

One pass (numba) over the concatenated message values recognises exactly the
common, well-formed shapes of the reading contract (an object or an array of
objects with the keys ``sensor_id``, ``time``, ``values``, ``lat``, ``lon`` in
any order, JSON whitespace, plain numbers, RFC 3339 times of the shapes
:func:`ingest.decode.rfc3339_us` takes) and writes readings and values as
columns. Whatever it is not certain about (escapes, unknown or duplicate keys,
other types, numbers it cannot round exactly, odd times, ...) marks the whole
message "not taken", and the caller decodes it with the strict schema, so the
scanner only ever has to be right about what it takes.

Numbers are converted exactly as a correctly rounding parser does (as msgspec
and ``float()`` do): Clinger's fast path when mantissa and power of ten are both
exact doubles, else the Eisel-Lemire algorithm (128-bit products with a table
of powers of five), which declines the rare inputs it cannot decide.

Sensor ids already in the sensor index are resolved during the scan through a
:class:`SensorTable` (the index's ids as bytes in a hash table, exact byte
comparison), so steady-state polls need no Python work per id. Buffer positions
are cast to unsigned where they index, which spares numba's negative-index
handling in the byte loops. :func:`expand_check` is the decoder's per-value
checks over the whole poll batch in one compiled pass.

Speed on the common shape comes from reading words, not bytes, wherever the
bytes are known to be there: digits eight at a time (SWAR), the time's fixed
shape in three overlapping words, each key with its closing quote in one or
two words, sensor ids hashed and compared a word at a time; near the end of a
message the byte-wise code decides. Inside the scan the buffers are passed to
the helpers as raw pointers: an array argument costs an atomic incref and
decref per call, which was a good part of the time per reading. The small
helpers are inlined; the large ones are not (numba's inlining of those
tripled the first compile for little gain).
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ingest.quantities import QUANTITIES

__all__ = ["ScanResult", "SensorTable", "expand_check", "group_spans", "parse_number", "parse_time_us", "scan_messages"]

# -- constants (module-level numpy scalars/arrays are compile-time constants to numba) --
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)
_U32 = np.uint64(32)
_U52 = np.uint64(52)
_U63 = np.uint64(63)
_U29 = np.uint64(29)
_H_SEED = np.uint64(0x9E3779B97F4A7C15)  # odd multipliers of the sensor id hash
_H_MUL = np.uint64(0xFF51AFD7ED558CCD)
_H_MIX = np.uint64(0xC4CEB9FE1A85EC53)
_MASK9 = np.uint64(0x1FF)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_TWO53 = np.uint64(1 << 53)
_FRACTION = np.uint64((1 << 52) - 1)
_POW10U = np.array([10 ** i for i in range(9)], dtype=np.uint64)
_U8 = np.uint64(8)
_U16 = np.uint64(16)
_ZEROS8 = np.uint64(0x3030303030303030)  # "0" in every byte
_HIGH8 = np.uint64(0x8080808080808080)
_DIGIT_ADD = np.uint64(0x7676767676767676)  # x + 0x76 reaches 0x80 when x >= 10
_PAIR_MASK = np.uint64(0x000000FF000000FF)
_PAIR_MUL1 = np.uint64(0x000F424000000064)  # 100 + (1000000 << 32)
_PAIR_MUL2 = np.uint64(0x0000271000000001)  # 1 + (10000 << 32)
_POW10 = np.array([10.0 ** i for i in range(23)], dtype=np.float64)  # exact doubles
_Q_MIN, _Q_MAX = -64, 64  # powers of ten taken (values 1e-64 .. 1e83: never subnormal, never infinite)


def _powers_of_five() -> tuple[np.ndarray, np.ndarray]:
    """128-bit normalised 5**q for q in [_Q_MIN, _Q_MAX] (as in Lemire's fast_float table): high and low words."""
    hi, lo = [], []
    for q in range(_Q_MIN, _Q_MAX + 1):
        if q < 0:
            p5 = 5 ** -q
            z = p5.bit_length()
            if q >= -27:
                c = 2 ** (z + 127) // p5 + 1
            else:
                c = 2 ** (2 * z + 128) // p5 + 1
                while c >= 1 << 128:
                    c //= 2
        else:
            c = 5 ** q
            while c < 1 << 127:
                c *= 2
            while c >= 1 << 128:
                c //= 2
        hi.append(c >> 64)
        lo.append(c & ((1 << 64) - 1))
    return np.array(hi, dtype=np.uint64), np.array(lo, dtype=np.uint64)


_P5_HI, _P5_LO = _powers_of_five()

# the quantity names, padded, for matching the keys of "values"
_QLEN = np.array([len(q) for q in QUANTITIES], dtype=np.int64)
_QNAME = np.zeros((len(QUANTITIES), int(_QLEN.max())), dtype=np.uint8)
for _i, _q in enumerate(QUANTITIES):
    _QNAME[_i, : len(_q)] = np.frombuffer(_q.encode(), dtype=np.uint8)
# the keys with their closing quote as little-endian words, and masks of their lengths
_W_SENSOR = np.uint64(int.from_bytes(b"sensor_i", "little"))
_W_SENSOR_END = np.uint64(int.from_bytes(b'nsor_id"', "little"))  # bytes 2-9
_W_TIME = np.uint64(int.from_bytes(b'time"', "little"))
_W_VALUES = np.uint64(int.from_bytes(b'values"', "little"))
_W_LAT = np.uint64(int.from_bytes(b'lat"', "little"))
_W_LON = np.uint64(int.from_bytes(b'lon"', "little"))
_M4, _M5, _M7 = np.uint64(2 ** 32 - 1), np.uint64(2 ** 40 - 1), np.uint64(2 ** 56 - 1)
_KEY_SENSOR = np.frombuffer(b'ensor_id"', dtype=np.uint8)  # after the leading "s"
_KEY_TIME = np.frombuffer(b'ime"', dtype=np.uint8)  # after "t"
_KEY_VALUES = np.frombuffer(b'alues"', dtype=np.uint8)  # after "v"
# bytes allowed in a sensor id (ingest.decode.SENSOR_ID_PATTERN): 1 = letter or digit, 2 = . _ : -
_ID_CLASS = np.zeros(256, dtype=np.uint8)
for _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789":
    _ID_CLASS[_c] = 1
for _c in b"._:-":
    _ID_CLASS[_c] = 2
_CUM_DAYS = np.array([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334], dtype=np.int64)
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_FRAC_SCALE = np.array([0, 100_000, 10_000, 1_000, 100, 10, 1], dtype=np.int64)
_TIME_SHAPE = b"0000-00-00T00:00:00"  # "0" = a digit, else that byte


def _shape_words(shape: bytes) -> tuple[np.uint64, np.uint64]:
    """For 8 bytes of a shape: what to XOR a word with (a digit then becomes 0..9, a matching separator 0) and
    what to add so that a byte's high bit is set exactly when the byte is out of place (>= 10, resp. >= 1)."""
    xor = int.from_bytes(shape, "little")
    add = int.from_bytes(bytes(0x76 if c == 48 else 0x7F for c in shape), "little")
    return np.uint64(xor), np.uint64(add)


_SHAPE_A_XOR, _SHAPE_A_ADD = _shape_words(_TIME_SHAPE[0:8])
_SHAPE_B_XOR, _SHAPE_B_ADD = _shape_words(_TIME_SHAPE[8:16])
_SHAPE_C_XOR, _SHAPE_C_ADD = _shape_words(_TIME_SHAPE[11:19])

_SENSOR, _TIME, _VALUES, _LAT, _LON = 1, 2, 4, 8, 16
# buffer positions are cast to unsigned where they index: numba then skips its negative-index wraparound
_u = np.uintp


# -- machine words (LLVM intrinsics: one instruction each where numba's own would loop or split) --
def _contiguous(buf) -> bool:
    """A C pointer, or a 1-D array whose bytes are contiguous (what the word loads and pointers below assume)."""
    return isinstance(buf, types.CPointer) or (isinstance(buf, types.Array) and buf.layout == "C" and buf.ndim == 1)


@intrinsic
def _ptr(typingctx, ary):
    """The data pointer of a contiguous 1-D array: indexing it costs no reference counting in the callees
    (an array handed to a helper is increfed and decrefed, atomically, per call). The array must outlive it."""
    if not (isinstance(ary, types.Array) and _contiguous(ary)):
        return None

    def codegen(context, builder, signature, args):
        return context.make_array(signature.args[0])(context, builder, value=args[0]).data
    return types.CPointer(ary.dtype)(ary), codegen


@intrinsic
def _load8(typingctx, buf, i):
    """The 8 bytes ``buf[i:i + 8]`` as one little-endian uint64 (unaligned load; the caller bounds ``i``)."""
    if not _contiguous(buf) or buf.dtype != types.uint8:
        return None

    def codegen(context, builder, signature, args):
        data = args[0]
        if isinstance(signature.args[0], types.Array):
            data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
        value = builder.load(ptr, align=1)
        return builder.bswap(value) if sys.byteorder == "big" else value
    return types.uint64(buf, i), codegen


@intrinsic
def _mul128(typingctx, a, b):
    """Full 64x64 -> 128-bit unsigned product as (high, low)."""
    sig = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        i64, i128 = ir.IntType(64), ir.IntType(128)
        prod = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        high = builder.trunc(builder.lshr(prod, ir.Constant(i128, 64)), i64)
        return context.make_tuple(builder, signature.return_type, [high, builder.trunc(prod, i64)])
    return sig, codegen


@intrinsic
def _as_double(typingctx, bits):
    """The double whose IEEE 754 bits are the uint64 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.uint64), codegen


@intrinsic
def _clz(typingctx, a):
    """Leading zero bits of a uint64 (64 for 0)."""
    def codegen(context, builder, signature, args):
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))
    return types.uint64(types.uint64), codegen


@intrinsic
def _ctz(typingctx, a):
    """Trailing zero bits of a uint64 (64 for 0)."""
    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))
    return types.uint64(types.uint64), codegen


# -- numbers --
@njit(cache=True, nogil=True)
def _eisel_lemire(w, q):
    """The correctly rounded double nearest w * 10**q (w > 0, q in range), and whether it was decided."""
    lz = np.int64(_clz(w))
    w = w << np.uint64(lz)
    i = q - _Q_MIN
    hi, lo = _mul128(w, _P5_HI[i])
    if (hi & _MASK9) == _MASK9:  # the truncated table might matter: add the low word's contribution
        hi2, _lo2 = _mul128(w, _P5_LO[i])
        lo = lo + hi2
        if hi2 > lo:
            hi = hi + _U1
        if lo == _ALL and (hi & _MASK9) == _MASK9:  # still undecided: leave it to an exact parser
            return 0.0, False
    upper = np.int64(hi >> _U63)
    shift = np.uint64(upper + 9)
    mantissa = hi >> shift
    power2 = (((152170 + 65536) * q) >> 16) + 63 + upper - lz + 1023
    if power2 <= 0 or power2 >= 0x7FE:
        return 0.0, False
    if lo <= _U1 and -4 <= q <= 23 and (mantissa & _U3) == _U1 and (mantissa << shift) == hi:
        mantissa = mantissa & ~_U1  # exactly half way: round to even (down)
    mantissa = mantissa + (mantissa & _U1)
    mantissa = mantissa >> _U1
    if mantissa >= (_U2 << _U52):
        mantissa = _U1 << _U52
        power2 += 1
    # 53 bits (the top one implicit) and a normal biased exponent: the double's own bits
    return _as_double((mantissa & _FRACTION) | (np.uint64(power2) << _U52)), True


@njit(cache=True, nogil=True, inline="always")
def _digits(buf, p, end, w, digits):
    """The decimal digits at ``buf[p:end]`` appended to ``w`` (holding ``digits`` significant digits):
    (w, digits, position after them); digits -1 (and the position of the 20th) past 19 significant digits.

    Eight bytes at a time (SWAR): the digits among them found and converted in a few word operations.
    """
    while p + 8 <= end:
        x = _load8(buf, p) - _ZEROS8  # digits become 0..9; a borrow only ever reaches bytes after a non-digit
        stop = (x | (x + _DIGIT_ADD)) & _HIGH8  # the high bit of every byte that is not a digit (and after it)
        n = 8 if stop == np.uint64(0) else np.int64(_ctz(stop) >> np.uint64(3))
        if n == 0:
            return w, digits, p
        if digits + n > 19:
            return w, -1, p + (19 - digits)
        x = x << np.uint64(64 - 8 * n)  # the n digits to the top, zeros (leading zero digits) below
        x = x * np.uint64(10) + (x >> _U8)  # pairs
        x = (((x & _PAIR_MASK) * _PAIR_MUL1) + (((x >> _U16) & _PAIR_MASK) * _PAIR_MUL2)) >> _U32
        w = w * _POW10U[n] + x
        digits += n
        p += n
        if n < 8:
            return w, digits, p
    while p < end and 48 <= buf[_u(p)] <= 57:
        if digits >= 19:
            return w, -1, p
        w = w * np.uint64(10) + np.uint64(buf[_u(p)] - 48)
        digits += 1
        p += 1
    return w, digits, p


@njit(cache=True, nogil=True)
def parse_number(buf, p, end):
    """A JSON number at ``buf[p:end]``: (value, position after it, taken).

    Taken only for exact JSON number syntax with at most 19 significant digits
    and a power of ten msgspec's correctly rounded result is certain for; a
    JSON integer zero is +0.0 even when written ``-0`` (as msgspec gives it).
    """
    neg = False
    if p < end and buf[_u(p)] == 45:  # "-"
        neg = True
        p += 1
    if p >= end:
        return 0.0, p, False
    c = buf[_u(p)]
    w = np.uint64(0)
    digits = 0  # significant digits in w
    exp10 = 0
    if c == 48:  # a single leading "0"
        p += 1
        if p < end and 48 <= buf[_u(p)] <= 57:
            return 0.0, p, False
    elif 49 <= c <= 57:
        w, digits, p = _digits(buf, p, end, w, digits)
        if digits < 0:
            return 0.0, p, False
    else:
        return 0.0, p, False
    integer = True
    if p < end and buf[_u(p)] == 46:  # "."
        integer = False
        p += 1
        start = p
        if digits == 0:
            while p < end and buf[_u(p)] == 48:  # leading zeros of a fraction: not significant
                p += 1
        w, digits, p = _digits(buf, p, end, w, digits)
        if digits < 0:
            return 0.0, p, False
        exp10 -= p - start
        if p == start:
            return 0.0, p, False
    if p < end and (buf[_u(p)] == 101 or buf[_u(p)] == 69):  # "e" / "E"
        integer = False
        p += 1
        eneg = False
        if p < end and (buf[_u(p)] == 43 or buf[_u(p)] == 45):
            eneg = buf[_u(p)] == 45
            p += 1
        start = p
        e = 0
        while p < end and 48 <= buf[_u(p)] <= 57:
            if e < 100_000:
                e = e * 10 + (buf[_u(p)] - 48)
            p += 1
        if p == start:
            return 0.0, p, False
        exp10 += -e if eneg else e
    if w == np.uint64(0):
        return (-0.0 if neg and not integer else 0.0), p, True
    if exp10 < _Q_MIN or exp10 > _Q_MAX:
        return 0.0, p, False
    if w < _TWO53 and -22 <= exp10 <= 22:  # Clinger: both exact, one correctly rounded operation
        x = float(w)
        x = x * _POW10[exp10] if exp10 >= 0 else x / _POW10[-exp10]
    else:
        x, ok = _eisel_lemire(w, exp10)
        if not ok:
            return 0.0, p, False
    return (-x if neg else x), p, True


# -- times --
@njit(cache=True, nogil=True, inline="always")
def _off_shape(word, xor, add):
    """Nonzero when a byte of ``word`` is out of its shape (see _shape_words). A byte >= 0x80 after the XOR is
    out of place itself (its own high bit); the carry its addition may pass on only ever reaches a later byte."""
    x = word ^ xor
    return (x | (x + add)) & _HIGH8


@njit(cache=True, nogil=True, inline="always")
def _two(buf, i):
    return (np.int64(buf[_u(i)]) - 48) * 10 + (np.int64(buf[_u(i + 1)]) - 48)


@njit(cache=True, nogil=True)
def parse_time_us(buf, p, end):
    """An RFC 3339 time at ``buf[p:end]`` up to its closing quote: (µs since the epoch, position after the quote).

    The shapes taken are exactly those of :func:`ingest.decode.rfc3339_us`
    (``YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)``, years 1970..2099, fields in
    range); position -1 for anything else.
    """
    if p + 20 > end:
        return 0, -1
    # the shape in three overlapping words: bytes 0-7, 8-15, 11-18
    bad = _off_shape(_load8(buf, p), _SHAPE_A_XOR, _SHAPE_A_ADD)
    bad |= _off_shape(_load8(buf, p + 8), _SHAPE_B_XOR, _SHAPE_B_ADD)
    bad |= _off_shape(_load8(buf, p + 11), _SHAPE_C_XOR, _SHAPE_C_ADD)
    if bad != np.uint64(0):
        return 0, -1
    year = _two(buf, p) * 100 + _two(buf, p + 2)
    month, day = _two(buf, p + 5), _two(buf, p + 8)
    hour, minute, second = _two(buf, p + 11), _two(buf, p + 14), _two(buf, p + 17)
    i = p + 19
    frac = 0
    if buf[_u(i)] == 46:  # "."
        i += 1
        k = 0
        while i < end and 48 <= buf[_u(i)] <= 57:
            if k == 6:
                return 0, -1
            frac = frac * 10 + (buf[_u(i)] - 48)
            k += 1
            i += 1
        if k == 0:
            return 0, -1
        frac *= _FRAC_SCALE[k]
    if i >= end:
        return 0, -1
    offset = 0
    if buf[_u(i)] == 90:  # "Z"
        i += 1
    elif buf[_u(i)] == 43 or buf[_u(i)] == 45:  # "+" / "-"
        if i + 6 > end or buf[_u(i + 3)] != 58:
            return 0, -1
        for j in (1, 2, 4, 5):
            if buf[_u(i + j)] < 48 or buf[_u(i + j)] > 57:
                return 0, -1
        oh = (buf[_u(i + 1)] - 48) * 10 + (buf[_u(i + 2)] - 48)
        om = (buf[_u(i + 4)] - 48) * 10 + (buf[_u(i + 5)] - 48)
        if oh > 23 or om > 59:
            return 0, -1
        offset = oh * 60 + om
        if buf[_u(i)] == 45:
            offset = -offset
        i += 6
    else:
        return 0, -1
    if i >= end or buf[_u(i)] != 34:  # the closing quote, nothing else
        return 0, -1
    leap = (year % 4 == 0) and (year % 100 != 0 or year % 400 == 0)
    if not (1970 <= year <= 2099 and 1 <= month <= 12 and hour <= 23 and minute <= 59 and second <= 59):
        return 0, -1
    mi = month - 1
    if day < 1 or day > _MONTH_DAYS[mi] + (1 if (mi == 1 and leap) else 0):
        return 0, -1
    y = year - 1970
    days = y * 365 + (y + 1) // 4 + _CUM_DAYS[mi] + (1 if (mi >= 2 and leap) else 0) + day - 1
    us = (days * 86400 + hour * 3600 + minute * 60 + second - offset * 60) * 1_000_000 + frac
    return us, i + 1


# -- structure --
@njit(cache=True, nogil=True, inline="always")
def _ws(buf, p, end):
    while p < end and (buf[_u(p)] == 32 or buf[_u(p)] == 10 or buf[_u(p)] == 13 or buf[_u(p)] == 9):
        p += 1
    return p


@njit(cache=True, nogil=True, inline="always")
def _literal(buf, p, end, lit):
    """Whether ``buf[p:]`` starts with ``lit``."""
    n = lit.shape[0]
    if p + n > end:
        return False
    for i in range(n):  # noqa: SIM110 (a plain loop compiles to a tight one in numba)
        if buf[_u(p + i)] != lit[i]:
            return False
    return True


@njit(cache=True, nogil=True)
def _quantity(buf, p, end):
    """The code of a quantity key starting after its opening quote, and the position after its closing quote."""
    s = p
    while p < end and buf[_u(p)] != 34:
        if buf[_u(p)] == 92 or buf[_u(p)] < 32:  # an escape or a control byte: not ours
            return -1, p
        p += 1
    if p >= end:
        return -1, p
    n = p - s
    for q in range(_QLEN.shape[0]):
        if _QLEN[q] == n:
            same = True
            for i in range(n):
                if buf[_u(s + i)] != _QNAME[q, i]:
                    same = False
                    break
            if same:
                return q, p + 1
    return -1, p


@njit(cache=True, nogil=True)
def _reading(buf, p, end, rows_q, rows_v, nv, cap_v):
    """One reading object starting at its "{": (position after it or -1, sensor id span, time, lat, lon, rows)."""
    nan = np.nan
    sid_s = sid_e = 0
    tus = 0
    lat = lon = nan
    v0 = nv
    seen = 0
    p = _ws(buf, p + 1, end)
    while True:
        if p >= end or buf[_u(p)] != 34:
            return -1, 0, 0, 0, nan, nan, nv
        p += 1
        if p >= end:
            return -1, 0, 0, 0, nan, nan, nv
        key = 0
        if p + 10 <= end:  # the key and its closing quote in one or two words (a reading goes on after its keys)
            word = _load8(buf, p)
            if word == _W_SENSOR and _load8(buf, p + 2) == _W_SENSOR_END:
                key, p = _SENSOR, p + 10
            elif (word & _M5) == _W_TIME:
                key, p = _TIME, p + 5
            elif (word & _M7) == _W_VALUES:
                key, p = _VALUES, p + 7
            elif (word & _M4) == _W_LAT:
                key, p = _LAT, p + 4
            elif (word & _M4) == _W_LON:
                key, p = _LON, p + 4
        else:
            c = buf[_u(p)]
            if c == 115 and _literal(buf, p + 1, end, _KEY_SENSOR):
                key, p = _SENSOR, p + 10
            elif c == 116 and _literal(buf, p + 1, end, _KEY_TIME):
                key, p = _TIME, p + 5
            elif c == 118 and _literal(buf, p + 1, end, _KEY_VALUES):
                key, p = _VALUES, p + 7
            elif c == 108 and p + 3 < end and buf[_u(p + 3)] == 34:  # "lat" / "lon"
                if buf[_u(p + 1)] == 97 and buf[_u(p + 2)] == 116:
                    key, p = _LAT, p + 4
                elif buf[_u(p + 1)] == 111 and buf[_u(p + 2)] == 110:
                    key, p = _LON, p + 4
        if key == 0 or (seen & key) != 0:  # unknown or duplicate key
            return -1, 0, 0, 0, nan, nan, nv
        seen |= key
        p = _ws(buf, p, end)
        if p >= end or buf[_u(p)] != 58:  # ":"
            return -1, 0, 0, 0, nan, nan, nv
        p = _ws(buf, p + 1, end)
        if p >= end:
            return -1, 0, 0, 0, nan, nan, nv
        if key == _SENSOR:
            if buf[_u(p)] != 34:
                return -1, 0, 0, 0, nan, nan, nv
            p += 1
            sid_s = p
            if p >= end or _ID_CLASS[buf[_u(p)]] != 1:
                return -1, 0, 0, 0, nan, nan, nv
            while p < end and _ID_CLASS[buf[_u(p)]] != 0:
                p += 1
            if p >= end or buf[_u(p)] != 34 or p - sid_s > 128:
                return -1, 0, 0, 0, nan, nan, nv
            sid_e = p
            p += 1
        elif key == _TIME:
            if buf[_u(p)] != 34:
                return -1, 0, 0, 0, nan, nan, nv
            tus, p = parse_time_us(buf, p + 1, end)
            if p < 0:
                return -1, 0, 0, 0, nan, nan, nv
        elif key == _VALUES:
            if buf[_u(p)] != 123:  # "{"
                return -1, 0, 0, 0, nan, nan, nv
            p = _ws(buf, p + 1, end)
            qseen = 0
            while True:  # at least one entry (an empty "values" is the strict path's to reject)
                if p >= end or buf[_u(p)] != 34:
                    return -1, 0, 0, 0, nan, nan, nv
                q, p = _quantity(buf, p + 1, end)
                if q < 0 or (qseen >> q) & 1:
                    return -1, 0, 0, 0, nan, nan, nv
                qseen |= 1 << q
                p = _ws(buf, p, end)
                if p >= end or buf[_u(p)] != 58:
                    return -1, 0, 0, 0, nan, nan, nv
                p = _ws(buf, p + 1, end)
                x, p, ok = parse_number(buf, p, end)
                if not ok or nv >= cap_v:
                    return -1, 0, 0, 0, nan, nan, nv
                rows_q[nv] = q
                rows_v[nv] = x
                nv += 1
                p = _ws(buf, p, end)
                if p < end and buf[_u(p)] == 44:  # ","
                    p = _ws(buf, p + 1, end)
                    continue
                if p < end and buf[_u(p)] == 125:  # "}"
                    p += 1
                    break
                return -1, 0, 0, 0, nan, nan, nv
        else:
            x, p, ok = parse_number(buf, p, end)
            if not ok:
                return -1, 0, 0, 0, nan, nan, nv
            if key == _LAT:
                lat = x
            else:
                lon = x
        p = _ws(buf, p, end)
        if p < end and buf[_u(p)] == 44:
            p = _ws(buf, p + 1, end)
            continue
        if p < end and buf[_u(p)] == 125:
            p += 1
            break
        return -1, 0, 0, 0, nan, nan, nv
    if (seen & (_SENSOR | _TIME | _VALUES)) != (_SENSOR | _TIME | _VALUES):
        return -1, 0, 0, 0, nan, nan, v0
    return p, sid_s, sid_e, tus, lat, lon, nv


@njit(cache=True, nogil=True)
def _scan(buf, starts, ends, take, max_elements, cap_r, cap_v, slots, hashes, off, store):
    n = starts.shape[0]
    taken = np.zeros(n, dtype=np.bool_)
    r_msg = np.empty(cap_r, dtype=np.int32)
    r_elem = np.empty(cap_r, dtype=np.int32)
    r_time = np.empty(cap_r, dtype=np.int64)
    r_sid = np.empty((cap_r, 2), dtype=np.int64)
    r_sensor = np.empty(cap_r, dtype=np.int32)
    r_lat = np.empty(cap_r, dtype=np.float64)
    r_lon = np.empty(cap_r, dtype=np.float64)
    r_rows = np.empty(cap_r, dtype=np.int64)
    v_q = np.empty(cap_v, dtype=np.uint8)
    v_val = np.empty(cap_v, dtype=np.float64)
    nr = nv = 0
    bp, q_out, v_out = _ptr(buf), _ptr(v_q), _ptr(v_val)  # buf, v_q and v_val stay alive: all are used below
    s_slots, s_hashes, s_off, s_store = _ptr(slots), _ptr(hashes), _ptr(off), _ptr(store)
    mask = slots.shape[0] - 1
    for m in range(n):
        if not take[m]:
            continue
        end = ends[m]
        p = _ws(bp, starts[m], end)
        if p >= end:
            continue
        r0, v0 = nr, nv
        array = bp[_u(p)] == 91  # "["
        if array:
            p = _ws(bp, p + 1, end)
        e = 0
        ok = True
        while True:
            if p >= end or bp[_u(p)] != 123 or nr >= cap_r or e >= max_elements:
                ok = False
                break
            v_start = nv
            p, s0, s1, tus, lat, lon, nv = _reading(bp, p, end, q_out, v_out, nv, cap_v)
            if p < 0:
                ok = False
                break
            r_msg[nr] = m
            r_elem[nr] = e if array else -1
            r_time[nr] = tus
            r_sid[nr, 0] = s0
            r_sid[nr, 1] = s1
            r_sensor[nr] = _find(bp, s0, s1, s_slots, mask, s_hashes, s_off, s_store)
            r_lat[nr] = lat
            r_lon[nr] = lon
            r_rows[nr] = nv - v_start
            nr += 1
            e += 1
            p = _ws(bp, p, end)
            if not array:
                break
            if p < end and bp[_u(p)] == 44:
                p = _ws(bp, p + 1, end)
                continue
            if p < end and bp[_u(p)] == 93:  # "]"
                p = _ws(bp, p + 1, end)
                break
            ok = False
            break
        if ok and p == end:
            taken[m] = True
        else:
            nr, nv = r0, v0
    return taken, nr, nv, r_msg, r_elem, r_time, r_sid, r_sensor, r_lat, r_lon, r_rows, v_q, v_val


class ScanResult(NamedTuple):
    """Columns of the messages the scanner took (``taken``); readings in message and element order."""

    taken: np.ndarray  # bool per message
    msg: np.ndarray  # int32 per reading: message number
    elem: np.ndarray  # int32 per reading: element in its array message, -1 for a single-reading message
    time_us: np.ndarray  # int64 per reading
    sensor_span: np.ndarray  # int64 (readings, 2): start and end of the sensor id in the buffer
    sensor: np.ndarray  # int32 per reading: the id's entry in the SensorTable given (its dense index), else -1
    lat: np.ndarray  # float64 per reading, NaN when absent
    lon: np.ndarray
    rows: np.ndarray  # int64 per reading: number of values
    quantity: np.ndarray  # uint8 per value
    value: np.ndarray  # float64 per value


def scan_messages(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, take: np.ndarray,
                  max_elements: int, known: SensorTable | None = None) -> ScanResult:
    """Scan the messages ``buf[starts[i]:ends[i]]`` where ``take[i]``; see the module docstring.

    Sensor ids found in ``known`` come back resolved (``sensor``); the others are -1 (their spans say which).
    """
    known = known or _NO_SENSORS
    buf = np.ascontiguousarray(buf)  # the scan reads words through a pointer (no copy when already contiguous)
    size = int(buf.shape[0])
    cap_r = size // 40 + 1  # a reading takes more than 60 bytes
    cap_v = size // 6 + 1  # a value at least 6 ('"o3":1')
    taken, nr, nv, r_msg, r_elem, r_time, r_sid, r_sensor, r_lat, r_lon, r_rows, v_q, v_val = _scan(
        buf, starts, ends, take, max_elements, cap_r, cap_v, known.slots, known.hashes, known.off, known.store)
    return ScanResult(taken, r_msg[:nr], r_elem[:nr], r_time[:nr], r_sid[:nr], r_sensor[:nr], r_lat[:nr],
                      r_lon[:nr], r_rows[:nr], v_q[:nv], v_val[:nv])


# -- known sensor ids --
@njit(cache=True, nogil=True, inline="always")
def _tail(buf, i, e, n):
    """The last ``e - i`` (1..7) bytes of ``buf[e - n:e]`` as a little-endian word: one load when n >= 8."""
    if n >= 8:
        return _load8(buf, e - 8) >> np.uint64(8 * (8 - (e - i)))
    t = np.uint64(0)
    for j in range(e - i):
        t |= np.uint64(buf[_u(i + j)]) << np.uint64(8 * j)
    return t


@njit(cache=True, nogil=True, inline="always")
def _hash(buf, s, e):
    """A hash of ``buf[s:e]`` taken a word at a time, mixed down (the table masks the low bits)."""
    h = np.uint64(e - s) * _H_SEED
    i = s
    while i + 8 <= e:
        h = (h ^ _load8(buf, i)) * _H_MUL
        h ^= h >> _U29
        i += 8
    if i < e:
        h = (h ^ _tail(buf, i, e, e - s)) * _H_MUL
    h ^= h >> _U32
    h *= _H_MIX
    return h ^ (h >> _U29)


@njit(cache=True, nogil=True, inline="always")
def _same(a, ao, b, bo, n):
    """Whether ``a[ao:ao + n]`` and ``b[bo:bo + n]`` hold the same bytes (a word at a time)."""
    i = 0
    while i + 8 <= n:
        if _load8(a, ao + i) != _load8(b, bo + i):
            return False
        i += 8
    return i == n or _tail(a, ao + i, ao + n, n) == _tail(b, bo + i, bo + n, n)


@njit(cache=True, nogil=True, inline="always")
def _find(buf, s, e, slots, mask, hashes, off, store):
    """The entry whose bytes are exactly ``buf[s:e]``, or -1 (open addressing, linear probing; ``mask`` is
    the number of slots less one)."""
    h = _hash(buf, s, e)
    slot = np.int64(h & np.uint64(mask))
    n = e - s
    while True:
        g = slots[_u(slot)]
        if g < 0:
            return np.int32(-1)
        if hashes[_u(g)] == h and off[_u(g + 1)] - off[_u(g)] == n and _same(store, off[_u(g)], buf, s, n):
            return g
        slot = (slot + 1) & mask


@njit(cache=True, nogil=True)
def _place(slots, hashes, first, count):
    """Put entries ``first .. count-1`` (distinct, hashed) into the slots."""
    mask = slots.shape[0] - 1
    for g in range(first, count):
        slot = np.int64(hashes[g] & np.uint64(mask))
        while slots[slot] >= 0:
            slot = (slot + 1) & mask
        slots[slot] = g


@njit(cache=True, nogil=True)
def _append(data, lengths, first, hashes, off, store):
    """Copy new entries' bytes into the store and hash them (entries ``first ..``)."""
    p = 0
    for j in range(lengths.shape[0]):
        g = first + j
        o = off[g]
        n = lengths[j]
        store[o: o + n] = data[p: p + n]
        off[g + 1] = o + n
        hashes[g] = _hash(data, p, p + n)
        p += n


class SensorTable:
    """The sensor ids of a :class:`ingest.sensor_index.SensorIndex` as bytes in a hash table the scanner probes.

    Entry ``i`` is sensor index ``i``: the index only grows and never renumbers, so
    :meth:`sync` only ever appends the ids added since it last ran.
    """

    def __init__(self) -> None:
        self.count = 0
        self.slots = np.full(16, -1, dtype=np.int32)  # entry per slot, -1 free; at most half full
        self.hashes = np.zeros(8, dtype=np.uint64)  # per entry
        self.off = np.zeros(9, dtype=np.int64)  # entry i's bytes are store[off[i]:off[i + 1]]
        self.store = np.zeros(256, dtype=np.uint8)

    def sync(self, names: list[str]) -> None:
        """Take in ``names[count:]`` (the index's ids added since the last sync)."""
        first, count = self.count, len(names)
        if count == first:
            return
        new = [name.encode() for name in names[first:count]]
        data = np.frombuffer(b"".join(new), dtype=np.uint8)
        lengths = np.fromiter(map(len, new), dtype=np.int64, count=len(new))
        if count + 1 > self.off.shape[0]:
            cap = max(count + 1, 2 * self.off.shape[0])
            self.off = _grown(self.off, cap)
            self.hashes = _grown(self.hashes, cap)
        if int(self.off[first]) + data.shape[0] > self.store.shape[0]:
            self.store = _grown(self.store, max(int(self.off[first]) + data.shape[0], 2 * self.store.shape[0]))
        _append(data, lengths, first, self.hashes, self.off, self.store)
        if 2 * count > self.slots.shape[0]:
            size = self.slots.shape[0]
            while 2 * count > size:
                size *= 2
            self.slots = np.full(size, -1, dtype=np.int32)
            first = 0
        _place(self.slots, self.hashes, first, count)
        self.count = count


def _grown(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


_NO_SENSORS = SensorTable()


@njit(cache=True, nogil=True)
def _group(buf, spans):
    n = spans.shape[0]
    size = 16
    while size < 2 * n:
        size *= 2
    mask = np.uint64(size - 1)
    table = np.full(size, -1, dtype=np.int32)
    group = np.empty(n, dtype=np.int32)
    first = np.empty(n, dtype=np.int64)
    # each group's bytes copied into one small store, so comparisons stay in cache
    g_hash = np.empty(n, dtype=np.uint64)
    g_off = np.empty(n + 1, dtype=np.int64)
    store = np.empty(max(1, int((spans[:, 1] - spans[:, 0]).sum())), dtype=np.uint8)
    g_off[0] = 0
    ng = 0
    for r in range(n):
        s, e = spans[r, 0], spans[r, 1]
        h = np.uint64(14695981039346656037)
        for i in range(s, e):
            h = (h ^ np.uint64(buf[_u(i)])) * np.uint64(1099511628211)
        h ^= h >> np.uint64(29)
        slot = np.int64(h & mask)
        while True:
            g = table[slot]
            if g < 0:
                table[slot] = ng
                first[ng] = r
                g_hash[ng] = h
                o = g_off[ng]
                store[o: o + e - s] = buf[s:e]
                g_off[ng + 1] = o + e - s
                group[r] = ng
                ng += 1
                break
            if g_hash[g] == h and g_off[g + 1] - g_off[g] == e - s:
                o = g_off[g]
                same = True
                for i in range(e - s):
                    if store[o + i] != buf[_u(s + i)]:
                        same = False
                        break
                if same:
                    group[r] = g
                    break
            slot = (slot + 1) & (size - 1)
    return group, first[:ng]


def group_spans(buf: np.ndarray, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct byte strings among ``buf[s:e]`` spans: each span's group (in order of first appearance)
    and each group's first span (exact byte comparison, so no two different strings ever share a group)."""
    if spans.shape[0] == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    return _group(buf, spans)


# -- the per-row checks of a decoded poll batch, in one pass --
@njit(cache=True, nogil=True)
def _expand_check(rows, time_us, msg, sensor, quantity, value, bad_position, sensor_lat, low, high, limit_ns):
    n = quantity.shape[0]
    time_ns = np.empty(n, dtype=np.int64)
    message = np.empty(n, dtype=np.int32)
    row_sensor = np.empty(n, dtype=np.int32)
    reason = np.zeros(n, dtype=np.uint8)
    bad = 0
    i = 0
    for r in range(rows.shape[0]):
        tu = time_us[r]
        in_time = 0 <= tu <= 9_223_372_036_854_775  # 1970 .. 2262: what int64 ns hold (no wrap-around)
        t = tu * 1000 if in_time else 0
        m = msg[r]
        s = sensor[r]
        for _ in range(rows[r]):
            time_ns[i] = t
            message[i] = m
            row_sensor[i] = s
            q = quantity[i]
            x = value[i]
            code = 0
            if q == 255:
                code = 1
            elif s < 0:
                code = 7
            elif not in_time:
                code = 8
            elif not np.isfinite(x):
                code = 2
            elif x < low[q] or x > high[q]:
                code = 3
            elif t > limit_ns:
                code = 4
            elif bad_position[r]:
                code = 5
            elif np.isnan(sensor_lat[s]):
                code = 6
            if code:
                reason[i] = code
                bad += 1
            i += 1
    return time_ns, message, row_sensor, reason, bad


def expand_check(rows: np.ndarray, time_us: np.ndarray, msg: np.ndarray, sensor: np.ndarray, quantity: np.ndarray,
                 value: np.ndarray, bad_position: np.ndarray, sensor_lat: np.ndarray, low: np.ndarray,
                 high: np.ndarray, limit_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-reading columns repeated per value (time in ns, message, sensor) and each value's rejection code.

    Codes, the first that applies: 1 unknown quantity (255), 7 invalid sensor (< 0),
    2 not finite, 3 outside ``[low, high]`` of its quantity, 4 time after ``limit_ns``,
    5 its reading's position is bad, 6 no position known for the sensor (NaN in
    ``sensor_lat``); 0 when none does. Also the number of rejected values.
    """
    limit = min(max(int(limit_ns), -(2 ** 63)), 2 ** 63 - 1)
    return _expand_check(rows, time_us, msg, sensor, quantity, value, bad_position, sensor_lat, low, high,
                         np.int64(limit))
