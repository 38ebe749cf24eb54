"""Compiled threshold rules: parameters as table rows, per-sensor state as packed records, one row-step kernel.

A rule keeps state only for the sensors it applies to that have sent its quantity: each such
sensor gets a dense *slot* in the rule's region of the engine's state arena, one contiguous
record of int64 words (floats bit-cast through a float64 view) holding the level state
machine and the bucket window. The engine's fused kernel calls ``rule_row`` for each row of
the rule's quantity, in (sensor, event time) order, which is exactly the per-reading semantics.

Record layout (words): ``R_SENSOR`` sensor, ``R_LEVEL`` level last emitted, ``R_TIME`` newest
value's time ("last") or the running totals' eval bucket ("mean"), ``R_AGG`` the aggregate last
evaluated (float), ``R_F1``/``R_F2`` the newest value ("last") or the running count and sum
("mean"), then per level k ``since`` (when "aggregate >= level" last turned on, ``NEVER`` while it
is off: the hysteresis state) and ``last_fire``, then the window's buckets.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numba import njit

from detection.config import RuleConfig
from detection.events import hazard_code, kind_code
from detection.windows import AGG_CODE, NONE64, bucket_count, bucket_fill, bucket_words, window_add, window_eval
from ingest.quantities import quantity_code
from stadtwacht.durations import parse_duration

__all__ = ["NEVER", "RECORD_HEAD", "R_AGG", "R_LEVEL", "R_SENSOR", "CompiledRule", "T", "any_on", "firing_level",
           "rule_row"]

#: "No time yet" in int64 ns state (far enough from the minimum that adding durations is safe).
NEVER = -(2**62)

_EACH, _LAST, _WINDOW = range(3)  # how the aggregate is formed: each reading, newest value, bucket window

R_SENSOR, R_LEVEL, R_TIME, R_AGG, R_F1, R_F2 = range(6)
_HEAD = 6
#: Words of a record before its per-level times.
RECORD_HEAD = _HEAD


class T(IntEnum):
    """Column numbers of the engine's int64 rule table (one row of parameters and bookkeeping per rule)."""

    QUANTITY = 0  # quantity code
    MODE = 1  # each reading, newest value, bucket window
    CODE = 2  # aggregate code of the window
    BUCKETS = 3  # buckets of the window (0: none)
    WIDTH = 4  # bucket width, ns
    BASE = 5  # bucket number stored as 0
    KEEP = 6  # keep_firing_for, ns
    LEVELS = 7  # number of levels
    OFFSET = 8  # first word of the rule's region in the arena
    STRIDE = 9  # words per slot record
    CAPACITY = 10  # slot records the region holds
    SLOTS = 11  # slot records in use
    KIND = 12  # event kind code
    HAZARD = 13  # hazard code
    BUCKET_WORDS = 14  # words per bucket
    TIMED = 15  # 1 when a level has a `for` or keep_firing_for (time-driven checks needed)
    MATCHED = 16  # sensors of the index the rule applies to


class CompiledRule:
    """One rule: its parameters, record layout and empty record; the state itself lives in the engine's arena."""

    def __init__(self, cfg: RuleConfig, table_row: np.ndarray) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.quantity = quantity_code(cfg.quantity)
        self.kind = "rate" if cfg.aggregate == "rate_per_hour" else "threshold"
        self.hazard = cfg.hazard_name()
        self.levels = np.asarray(cfg.levels, np.float64)
        self.clear = np.asarray(cfg.clear_levels(), np.float64)
        self.for_ns = np.asarray(cfg.for_ns(), np.int64)
        self.keep_ns = parse_duration(cfg.keep_firing_for)
        self.window_ns = parse_duration(cfg.window)
        self.n_levels = len(cfg.levels)
        self.pattern = cfg.sensor_pattern()
        self.match_all = cfg.sensors == "*" or cfg.sensors == ["*"]
        #: The ``sensors`` selection as a tuple (rules with equal selections match the same sensors).
        self.selection = (cfg.sensors,) if isinstance(cfg.sensors, str) else tuple(cfg.sensors)
        self._plain = _plain_selection(self.selection)
        self.mode = _EACH
        if self.window_ns > 0:
            self.mode = _LAST if cfg.aggregate == "last" else _WINDOW
        #: True when the rule keeps a bucket window (its state is dominated by it).
        self.windowed = self.mode == _WINDOW
        agg = cfg.aggregate if self.windowed else "mean"
        self.buckets = bucket_count(agg) if self.windowed else 0
        self.bucket_words = bucket_words(agg)
        self.width = max(1, -(-self.window_ns // bucket_count(agg))) if self.windowed else 1
        self.stride = _HEAD + 2 * self.n_levels + self.buckets * self.bucket_words
        self.row = table_row  # this rule's row of the engine's table (a view: the engine keeps it current)
        row = table_row
        row[:] = 0
        row[T.QUANTITY] = self.quantity
        row[T.MODE] = self.mode
        row[T.CODE] = AGG_CODE[agg]
        row[T.BUCKETS] = self.buckets
        row[T.WIDTH] = self.width
        row[T.KEEP] = self.keep_ns
        row[T.LEVELS] = self.n_levels
        row[T.STRIDE] = self.stride
        row[T.KIND] = kind_code(self.kind)
        row[T.HAZARD] = hazard_code(self.hazard)
        row[T.BUCKET_WORDS] = self.bucket_words
        row[T.TIMED] = bool(self.for_ns.any() or self.keep_ns)
        self.template = self._empty_record()

    def _empty_record(self) -> np.ndarray:
        rec = np.zeros(self.stride, np.int64)
        fv = rec.view(np.float64)
        rec[R_SENSOR] = -1
        rec[R_LEVEL] = 0
        rec[R_TIME] = NEVER if self.mode == _LAST else NONE64
        fv[R_AGG] = np.nan
        fv[R_F1] = np.nan if self.mode == _LAST else 0.0
        fv[R_F2] = 0.0
        rec[_HEAD: _HEAD + 2 * self.n_levels] = NEVER
        if self.buckets:
            agg = self.cfg.aggregate
            rec[_HEAD + 2 * self.n_levels:] = np.tile(bucket_fill(agg), self.buckets)
        return rec

    @property
    def n_slots(self) -> int:
        """Sensors this rule holds state for."""
        return int(self.row[T.SLOTS])

    def matches(self, names: list[str]) -> np.ndarray:
        """Which of these sensor ids the rule's ``sensors`` selection takes."""
        if self.match_all:
            return np.ones(len(names), bool)
        if self._plain is not None:  # ids and "prefix*" globs: no regular expression needed
            ids, prefixes = self._plain
            if not ids:
                return np.array([s.startswith(prefixes) for s in names], bool)
            return np.array([s in ids or s.startswith(prefixes) for s in names], bool)
        match = self.pattern.match
        return np.fromiter((match(s) is not None for s in names), bool, count=len(names))

    def slot_nbytes(self) -> int:
        """Bytes of state one sensor slot holds (its record plus its entry in the engine's slot table)."""
        return int(self.stride * 8 + 4)

    def nbytes(self) -> int:
        """Bytes of the records in use."""
        return int(self.n_slots * self.stride * 8)


def _plain_selection(patterns: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]] | None:
    """The selection as (exact ids, id prefixes) when each pattern is an id or "prefix*", else None.

    Such a selection matches exactly the names ``fnmatch``'s translation matches: an id only itself,
    "prefix*" every name starting with the prefix.
    """
    ids: set[str] = set()
    prefixes: list[str] = []
    for p in patterns:
        body = p[:-1] if p.endswith("*") else p
        if any(c in "*?[" for c in body):
            return None
        if p.endswith("*"):
            prefixes.append(body)
        else:
            ids.add(p)
    return frozenset(ids), tuple(prefixes)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def rule_row(a, f, rec, mode, code, B, BW, w, base, K, keep, levels, clear, for_ns, r, t, v, tn, bad, faulty):
    """One reading of the rule's quantity for the record at word ``rec``: aggregate, hysteresis, `for`, keep.

    ``levels``, ``clear`` and ``for_ns`` are the engine's per-rule tables, ``r`` the rule's row in them.

    Returns (level, previous level, aggregate); the record's level is updated (0 while ``faulty``).
    """
    add = not bad
    if mode == _EACH:
        agg = v if add else np.nan
    elif mode == _LAST:
        if add and t >= a[rec + R_TIME]:
            a[rec + R_TIME] = t
            f[rec + R_F1] = v
        agg = f[rec + R_F1]
    else:
        w0 = rec + _HEAD + 2 * K
        agg = window_add(a, f, w0, code, B, BW, w, base, rec + R_TIME, rec + R_F1, rec + R_F2, t, v, add, tn)
        if code != 0:
            agg = window_eval(a, f, w0, code, B, BW, w, base, tn)[0]
    since = rec + _HEAD
    # hysteresis per level (NaN: no change); "on" is since != NEVER
    for k in range(K):
        if agg >= levels[r, k]:
            if a[since + k] == NEVER:
                a[since + k] = tn
        elif agg < clear[r, k]:
            a[since + k] = NEVER
    if agg == agg:
        f[rec + R_AGG] = agg
    lv = firing_level(a, rec, K, keep, for_ns, r, tn)
    if faulty:
        lv = 0
    prev = a[rec + R_LEVEL]
    a[rec + R_LEVEL] = lv
    return lv, prev, agg


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def firing_level(a, rec, K, keep, for_ns, r, now):
    """The level the record is at by time ``now`` (records firing), for time-driven checks (`for`: ``for_ns[r]``)."""
    since = rec + _HEAD
    fire = since + K
    lv = 0
    for k in range(K):
        s = a[since + k]
        fired = s != NEVER and now - s >= for_ns[r, k]
        if fired:
            a[fire + k] = now
        if fired or (keep > 0 and now < a[fire + k] + keep):
            lv = k + 1
    return lv


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def any_on(a, rec, K):
    """Whether any level's condition is on (its hysteresis state)."""
    since = rec + _HEAD
    for k in range(K):  # noqa: SIM110 (a loop compiles in numba; any() over a generator does not)
        if a[since + k] != NEVER:
            return True
    return False
