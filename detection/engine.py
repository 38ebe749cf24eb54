"""The detection engine: readings in, level transitions out (threshold/rate rules, sensor health, anomalies).

Each batch is handled in event-time order per sensor: one compiled pass finds the late rows
and orders the others by (sensor, time) (a counting sort by the dense sensor index), the
batch's columns are gathered into that order, then one fused compiled pass runs sensor
health and every rule of each row's quantity, row by row (prefetching rows ahead),
writing level transitions into reused buffers. This is exactly the per-reading semantics
whatever the batch's shape (many sensors with one reading each, or one sensor with
thousands). All per-sensor state is packed: health in per-sensor records, rules in per-slot
records of one arena (see ``detection/rules.py``), so a row touches a few cache lines and
Python only runs per batch, never per rule or per reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from detection.anomaly import AnomalyDetector, level_changes_of_rows
from detection.arrays import borrowed, grown, prefetch
from detection.config import DetectionConfig, RuleConfig
from detection.events import DetectionBatch, RuleInfo, hazard_code, kind_code
from detection.health import (
    H_BAND_BE,
    HEALTH_KINDS,
    RANGE,
    STALE,
    STUCK,
    HealthTracker,
    health_row,
    stale_after,
    stale_limit,
)
from detection.health import RECORD_HEAD as HEALTH_HEAD
from detection.rules import NEVER, R_AGG, R_LEVEL, R_SENSOR, CompiledRule, T, any_on, firing_level, rule_row
from detection.rules import RECORD_HEAD as RULE_HEAD
from ingest.batch import ReadingBatch
from ingest.quantities import PHYSICAL_MAX, PHYSICAL_MIN
from ingest.sensor_index import SensorIndex
from stadtwacht.durations import parse_duration

__all__ = ["DetectionEngine", "DetectionResult"]

_N_QUANTITIES = 7
_NO_MATCH, _NO_SLOT = -2, -1  # slot table entries: the rule does not apply / applies, no state yet
# event buffer columns (int64; value and threshold in a float64 buffer)
_E_SENSOR, _E_QUANTITY, _E_RULE, _E_KIND, _E_HAZARD, _E_LEVEL, _E_PREV, _E_TIME = range(8)
_KIND_STALE = kind_code("stale")
_AHEAD = 64  # rows ahead whose state the fused kernel prefetches
_SENSOR_HAZARD = hazard_code("sensor")
_FAR = np.iinfo(np.int64).max


@dataclass(frozen=True, slots=True)
class DetectionResult:
    """What one ``process`` call found: the transitions, which input rows were too late to judge, and the
    value refreshes of firing (sensor, rule) pairs (rows with ``level == prev``: no transition, the current
    aggregate; see ``DetectionConfig.value_refresh``)."""

    events: DetectionBatch
    late: np.ndarray  # bool per input row
    values: DetectionBatch = field(default_factory=DetectionBatch.empty)


class DetectionEngine:
    """Turns reading batches into level transitions; all per-sensor state lives in arrays."""

    def __init__(self, rules: list[RuleConfig], config: DetectionConfig, sensors: SensorIndex, *,
                 event_rows: int = 256) -> None:
        """``event_rows``: initial rows of the reused event buffers (they double when a batch needs more)."""
        self.sensors = sensors
        self.config = config
        self.late_ns = parse_duration(config.late_tolerance)
        n = len(rules)
        self.table = np.zeros((n, len(T)), np.int64)
        self.rules = [CompiledRule(r, self.table[i]) for i, r in enumerate(rules)]
        k = max([r.n_levels for r in self.rules], default=1)
        self.levels = np.zeros((n, k))
        self.clear = np.zeros((n, k))
        self.for_ns = np.zeros((n, k), np.int64)
        for i, r in enumerate(self.rules):
            self.levels[i, : r.n_levels] = r.levels
            self.clear[i, : r.n_levels] = r.clear
            self.for_ns[i, : r.n_levels] = r.for_ns
        # rules of each quantity, in rule order
        self.rules_of = np.full((_N_QUANTITIES, max(n, 1)), -1, np.int64)
        self.n_rules_of = np.zeros(_N_QUANTITIES, np.int64)
        for i, r in enumerate(self.rules):
            self.rules_of[r.quantity, self.n_rules_of[r.quantity]] = i
            self.n_rules_of[r.quantity] += 1
        self.arena = np.zeros(0, np.int64)  # the rules' slot records, rule by rule
        # each rule's empty record (row r, first stride words): a slot is written with it when a sensor takes it
        self.templates = np.zeros((n, max([r.stride for r in self.rules], default=1)), np.int64)
        for i, r in enumerate(self.rules):
            self.templates[i, : r.stride] = r.template
        self.health = HealthTracker(config.health)
        self._limits = np.stack([PHYSICAL_MIN, PHYSICAL_MAX, self.health.saturation]).astype(np.float64)
        self.anomaly = None
        if config.anomaly.enabled:
            self.anomaly = AnomalyDetector(config.anomaly)
        self.anomaly_level = np.zeros((0, _N_QUANTITIES), np.int8)
        # per series: the anomaly level holds before this time (last detection + keep_firing_for)
        self.anomaly_until = np.zeros((0, _N_QUANTITIES), np.int64)
        self._anomaly_keep_ns = parse_duration(config.anomaly.keep_firing_for)
        self._anomaly_due = _FAR  # no held anomaly level can run out before this (a lower bound)
        self.rule_info: list[RuleInfo] = [
            RuleInfo(r.name, r.quantity, r.hazard_name(),
                     "rate" if r.aggregate == "rate_per_hour" else "threshold",
                     ("normal", *r.level_names)) for r in rules
        ]
        names = {"stale": "veraltet", "stuck": "festhängend", "range": "außerhalb des Messbereichs"}
        self.rule_info += [RuleInfo(f"sensor-{k}", k, "sensor", k, ("normal", names[k])) for k in HEALTH_KINDS]
        self._anomaly_rule = len(self.rule_info)
        self.rule_info.append(RuleInfo("anomaly", "anomaly", "sensor", "anomaly", ("normal", "Anomalie")))
        self.slot_of = np.zeros((0, n), np.int32)  # per sensor and rule: slot, _NO_SLOT or _NO_MATCH
        self._refresh_ns = parse_duration(config.value_refresh)
        self.value_sent = np.zeros((0, n), np.int64)  # per sensor and rule: event time its value was last reported
        self.matched_upto = 0  # sensors [0, matched_upto) have been matched against the rules' patterns
        self.capacity = 0
        self._based = False  # window bucket numberings fixed (by the first batch)
        self._counts = np.zeros(1, np.int64)  # counting-sort scratch (all zero between calls)
        self._ev_int = np.zeros((max(event_rows, 1), 8), np.int64)
        self._ev_float = np.zeros((max(event_rows, 1), 2), np.float64)

    # -- state housekeeping -------------------------------------------------------------------------

    def _sync(self) -> None:
        """Grow state to the sensor index and resolve rule patterns for new sensors."""
        n = len(self.sensors)
        if n > self.capacity:
            new = max(n, 2 * self.capacity, 64)
            self.health.grow(new)
            self.anomaly_level = grown(self.anomaly_level, new, 0)
            self.anomaly_until = grown(self.anomaly_until, new, 0)
            if self.anomaly is not None:
                self.anomaly.reserve(new)
            self.slot_of = grown(self.slot_of, new, _NO_MATCH)
            self.value_sent = grown(self.value_sent, new, 0)
            self._counts = np.zeros(new + 1, np.int64)
            self.capacity = new
        if n > self.matched_upto:
            names = self.sensors.names[self.matched_upto: n]
            hits: dict[tuple[str, ...], np.ndarray] = {}  # rules with one selection share its matching
            for i, r in enumerate(self.rules):
                hit = hits.get(r.selection)
                if hit is None:
                    hit = hits[r.selection] = r.matches(names)
                self.slot_of[self.matched_upto: n, i] = np.where(hit, _NO_SLOT, _NO_MATCH)
                r.row[T.MATCHED] += int(hit.sum())
            self.matched_upto = n

    def _grow_rule(self, i: int, pending: np.ndarray) -> None:
        """Double rule i's region (its slots are full), and those of rules at least half full with it.

        Growing rules together keeps the number of arena rebuilds (each copies every region) logarithmic
        in the number of sensors instead of proportional to the number of rules. ``pending`` (per rule:
        sensors of the rest of the batch that will take a new slot) makes each region at least big enough
        for the batch, so that a batch of many new sensors rebuilds the arena once, not once per doubling.
        """
        caps = self.table[:, T.CAPACITY].copy()
        slots = self.table[:, T.SLOTS]
        due = (slots * 2 >= caps) & (slots < self.table[:, T.MATCHED])
        due[i] = True
        caps[due] = np.maximum(2 * caps[due], 1024)
        short = slots + pending > caps
        caps[short] = slots[short] + pending[short]
        self._rebuild_arena(caps)

    def _rebuild_arena(self, caps: np.ndarray) -> None:
        """Lay the rules' regions out again with the given capacities (the records of taken slots kept).

        Free slots stay zero, not empty records: the kernel writes a rule's empty record into a slot
        when a sensor takes it, so the pages of room never taken are never touched (``np.zeros`` maps
        them lazily) and a rebuild copies only the records in use.
        """
        offsets = np.concatenate([[0], np.cumsum(caps * self.table[:, T.STRIDE])])
        arena = np.zeros(int(offsets[-1]), np.int64)
        for i, r in enumerate(self.rules):
            used, off = r.n_slots * r.stride, int(r.row[T.OFFSET])
            arena[offsets[i]: offsets[i] + used] = self.arena[off: off + used]
            r.row[T.OFFSET] = offsets[i]
            r.row[T.CAPACITY] = caps[i]
        self.arena = arena

    def _region(self, i: int) -> np.ndarray:
        """Rule i's records as a (capacity, stride) view of the arena."""
        r = self.rules[i]
        off = int(r.row[T.OFFSET])
        return self.arena[off: off + int(r.row[T.CAPACITY]) * r.stride].reshape(-1, r.stride)

    def reset(self, sensor_mask: np.ndarray) -> None:
        """Drop all state of the selected sensors (their partition was revoked)."""
        self._sync()
        mask = np.zeros(self.capacity, bool)
        m = np.asarray(sensor_mask, bool)[: self.capacity]
        mask[: m.shape[0]] = m
        self.health.reset(mask)
        rows = np.flatnonzero(mask)
        for i, r in enumerate(self.rules):
            slots = self.slot_of[rows, i]
            keep = slots >= 0
            slots, owners = slots[keep], rows[keep]
            if slots.size:
                region = self._region(i)
                region[slots] = r.template  # slots stay theirs, cleared
                region[slots, R_SENSOR] = owners
        self.anomaly_level[mask] = 0
        self.anomaly_until[mask] = 0
        self.value_sent[mask] = 0
        if self.anomaly is not None:
            self.anomaly.reset(mask)

    def state_nbytes(self) -> int:
        """Bytes of per-sensor state held (rules, health, anomaly)."""
        total = (self.health.nbytes() + self.anomaly_level.nbytes + self.anomaly_until.nbytes
                 + self.slot_of.nbytes + self.value_sent.nbytes
                 + sum(r.nbytes() for r in self.rules))
        if self.anomaly is not None:
            total += self.anomaly.nbytes()
        return int(total)

    # -- the two entry points ---------------------------------------------------------------------

    def process(self, batch: ReadingBatch) -> DetectionResult:
        """Judge a batch of readings in event-time order per sensor.

        Rows older than the sensor's newest event time (as of before this batch) minus
        ``late_tolerance`` are late: masked in ``late`` and not judged. Older rows within the
        tolerance are merged into the windows and judged at the sensor's newest time.
        """
        self._sync()
        sensor, time, quantity, value = batch.sensor, batch.time, batch.quantity, batch.value
        n = sensor.shape[0]
        late = np.empty(n, bool)
        order = np.empty(n, np.int64)
        if self.capacity <= 4 * n + 4096:
            m, t_min = _order_rows(sensor, time, self.health.newest, self.late_ns, self._counts, late, order)
            order = order[:m]
        else:  # few rows for very many sensors: a comparison sort beats a pass over every sensor
            t_min = _late_rows(sensor, time, self.health.newest, self.late_ns, late)
            order = np.flatnonzero(~late)
            order = order[np.argsort(sensor[order], kind="stable")]
            _time_order(sensor, time, order)
        if order.size == 0:
            return DetectionResult(DetectionBatch.empty(), late)
        # the columns in (sensor, time) order: the kernels then read them sequentially (a gather through
        # ``order`` row by row stalls on cache misses once a batch outgrows the L2 cache)
        sensor, quantity, time, value = sensor[order], quantity[order], time[order], value[order]
        self.health.ensure_base(t_min)
        self._ensure_bases(t_min)
        m = order.size
        ok = np.empty(m if self.anomaly is not None else 0, np.int64)
        start, n_ev, n_ok = 0, 0, 0
        while True:
            start, n_ev, n_ok, full = _process_rows(
                start, sensor, quantity, time, value, self._limits, self.health.newest,
                self.health.interval, self.health.flags, self.health.primary, self.health.head, self.health.records,
                self.health.rel_tol, self.health.params(), self.health.stale_due, self.slot_of, self.table,
                self.rules_of, self.n_rules_of, self.levels, self.clear, self.for_ns, self.arena, self.templates,
                self._ev_int, self._ev_float, n_ev, ok, n_ok, self.value_sent, self._refresh_ns)
            if start >= m:
                break
            if full >= 0:
                self._grow_rule(full, _pending_slots(start, sensor, quantity, self.slot_of, self.rules_of,
                                                     self.n_rules_of, len(self.rules)))
            else:
                self._grow_events()
        events, values = self._events(n_ev), DetectionBatch.empty()
        if self._refresh_ns and n_ev:  # the kernel wrote value refreshes among the transitions: level == prev
            refresh = events.level == events.prev_level
            if refresh.any():
                events, values = events.take(~refresh), events.take(refresh & _last_of_pair(events))
        if self.anomaly is not None and n_ok:
            events = DetectionBatch.concat([events, self._anomalies(ok[:n_ok], sensor, quantity, time, value)])
        return DetectionResult(_by_time(events), late, values)

    def tick(self, now_ns: int) -> DetectionBatch:
        """Time-driven transitions at ``now_ns``: sensors turning stale, `for` maturing, keep_firing_for ending."""
        self._sync()
        h = self.health
        phase, start, n_ev = 0, 0, 0
        while True:
            phase, start, n_ev = _tick(
                now_ns, len(self.sensors), phase, start, h.newest, h.interval, h.flags, h.primary, h.stale_min,
                float(h.cfg.stale_factor), h.stale_due, self.slot_of, self.table, self.levels, self.clear, self.for_ns,
                self.arena, self._ev_int, self._ev_float, n_ev)
            if phase < 0:
                break
            self._grow_events()
        events = self._events(n_ev)
        if self._anomaly_keep_ns and now_ns >= self._anomaly_due:
            events = DetectionBatch.concat([events, self._anomalies_run_out(now_ns)])
        return _by_time(events)

    # -- internals -----------------------------------------------------------------------------------

    def _ensure_bases(self, t_min: int) -> None:
        """Fix each window's bucket numbering from the first reading (room for readings older than it)."""
        for r in self.rules:
            if r.windowed and not self._based:
                r.row[T.BASE] = t_min // r.width - 2**28
        self._based = True

    def _grow_events(self) -> None:
        self._ev_int = grown(self._ev_int, 2 * self._ev_int.shape[0], 0)
        self._ev_float = grown(self._ev_float, 2 * self._ev_float.shape[0], 0.0)

    def _events(self, n: int) -> DetectionBatch:
        """The first ``n`` rows of the event buffers as a batch."""
        if n == 0:
            return DetectionBatch.empty()
        e, fl = self._ev_int[:n], self._ev_float[:n]
        return DetectionBatch(
            e[:, _E_SENSOR].astype(np.int32), e[:, _E_QUANTITY].astype(np.uint8), e[:, _E_RULE].astype(np.int16),
            e[:, _E_KIND].astype(np.uint8), e[:, _E_HAZARD].astype(np.uint8), e[:, _E_LEVEL].astype(np.int8),
            e[:, _E_PREV].astype(np.int8), fl[:, 0].copy(), fl[:, 1].copy(), e[:, _E_TIME].copy())

    def _anomalies(self, rows: np.ndarray, sensor, quantity, time, value) -> DetectionBatch:
        """Score the batch's accepted in-range rows (in (sensor, time) order) and return the transitions."""
        score = self.anomaly.update_rows(rows, sensor, quantity, time, value)
        threshold = self.config.anomaly.threshold
        row = np.empty(rows.size, np.int64)
        row = row[: level_changes_of_rows(rows, sensor, quantity, time, score, threshold, self._anomaly_keep_ns,
                                          self.anomaly_level, self.anomaly_until, row)]
        if row.size == 0:
            return DetectionBatch.empty()
        src = rows[row]
        level = (score[row] >= threshold).astype(np.int8)
        up = src[level == 1]
        if up.size:
            self._anomaly_due = min(self._anomaly_due, int(self.anomaly_until[sensor[up], quantity[up]].min()))
        k = row.size
        return DetectionBatch(
            sensor[src], quantity[src], np.full(k, self._anomaly_rule, np.int16),
            np.full(k, kind_code("anomaly"), np.uint8), np.full(k, _SENSOR_HAZARD, np.uint8), level, 1 - level,
            score[row], np.full(k, threshold), time[src])

    def _anomalies_run_out(self, now_ns: int) -> DetectionBatch:
        """Held anomaly levels whose keep_firing_for ran out by ``now_ns`` without a reading: back to 0."""
        held = self.anomaly_level == 1
        until = self.anomaly_until
        sensor, quantity = np.nonzero(held & (until <= now_ns))
        later = until[held & (until > now_ns)]
        self._anomaly_due = int(later.min()) if later.size else _FAR
        k = sensor.size
        if k == 0:
            return DetectionBatch.empty()
        self.anomaly_level[sensor, quantity] = 0
        time = np.maximum(self.health.newest[sensor], now_ns)
        return DetectionBatch(
            sensor.astype(np.int32), quantity.astype(np.uint8), np.full(k, self._anomaly_rule, np.int16),
            np.full(k, kind_code("anomaly"), np.uint8), np.full(k, _SENSOR_HAZARD, np.uint8), np.zeros(k, np.int8),
            np.ones(k, np.int8), np.zeros(k), np.full(k, self.config.anomaly.threshold), time.astype(np.int64))


def _last_of_pair(events: DetectionBatch) -> np.ndarray:
    """Per row (in the kernel's order, per sensor in event time): whether it is the last of its (sensor, rule).

    Only a batch's last value refresh of a pair is passed on, and none that a later transition of the pair
    supersedes (it carries the value): a sensor reading hourly refreshes at every reading, and a catch-up
    batch holds hours of them."""
    key = events.sensor.astype(np.int64) << 16 | events.rule.astype(np.int64)
    _, from_end = np.unique(key[::-1], return_index=True)
    last = np.zeros(key.size, bool)
    last[key.size - 1 - from_end] = True
    return last


def _by_time(events: DetectionBatch) -> DetectionBatch:
    """Events in time order (stable: per sensor and rule in the order they happened)."""
    if len(events) < 2:
        return events
    order = np.argsort(events.time, kind="stable")
    return events.take(order)


@njit(cache=True, nogil=True)
def _pending_slots(start, sensor, quantity, slot_of, rules_of, n_rules_of, n_rules):
    """Per rule: the sensors of rows ``start:`` (by sensor) that have no slot in it yet and will take one."""
    out = np.zeros(n_rules, np.int64)
    last = np.full(n_rules, -1, np.int64)
    for j in range(start, sensor.size):
        i = sensor[j]
        q = quantity[j]
        for m in range(n_rules_of[q]):
            r = rules_of[q, m]
            if slot_of[i, r] == _NO_SLOT and last[r] != i:
                last[r] = i
                out[r] += 1
    return out


@njit(cache=True, nogil=True)
def _late_rows(sensor, time, newest, late_ns, late):
    """Mark rows older than their sensor's newest time minus the tolerance; the others' minimum time."""
    t_min = np.iinfo(np.int64).max
    for j in range(sensor.size):
        nw = newest[sensor[j]]
        lt = nw != NEVER and time[j] < nw - late_ns
        late[j] = lt
        if not lt:
            t_min = min(t_min, time[j])
    return t_min


@njit(cache=True, nogil=True)
def _time_order(sensor, time, order):
    """Within each sensor's run of ``order``, put rows in event-time order (stable); usually already so."""
    m = order.size
    lo = 0
    while lo < m:
        s = sensor[order[lo]]
        hi = lo + 1
        sorted_ = True
        while hi < m and sensor[order[hi]] == s:
            if time[order[hi]] < time[order[hi - 1]]:
                sorted_ = False
            hi += 1
        if not sorted_:
            run = order[lo:hi].copy()
            by_time = np.argsort(time[run], kind="mergesort")
            for k in range(hi - lo):
                order[lo + k] = run[by_time[k]]
        lo = hi


@njit(cache=True, nogil=True)
def _order_rows(sensor, time, newest, late_ns, counts, late, order):
    """Late rows marked; the others into ``order`` by (sensor, time), stable. Returns (count, min time)."""
    t_min = _late_rows(sensor, time, newest, late_ns, late)
    m = 0
    for j in range(sensor.size):
        if not late[j]:
            counts[sensor[j] + 1] += 1
            m += 1
    top = 0
    for j in range(sensor.size):
        top = max(top, sensor[j] + 1)
    for s in range(top):
        counts[s + 1] += counts[s]
    for j in range(sensor.size):
        if not late[j]:
            s = sensor[j]
            order[counts[s]] = j
            counts[s] += 1
    counts[: top + 1] = 0
    _time_order(sensor, time, order[:m])
    return m, t_min


@njit(cache=True, nogil=True, inline="always")
def _emit(ev, evf, n, sensor, quantity, rule, kind, hazard, level, prev, value, threshold, time):
    ev[n, 0] = sensor
    ev[n, 1] = quantity
    ev[n, 2] = rule
    ev[n, 3] = kind
    ev[n, 4] = hazard
    ev[n, 5] = level
    ev[n, 6] = prev
    ev[n, 7] = time
    evf[n, 0] = value
    evf[n, 1] = threshold
    return n + 1


@njit(cache=True, nogil=True, inline="always")
def _boundary(levels, clear, r, K, prev, new):
    """The boundary crossed by rule r: level new's bound rising, the clear bound of level prev falling."""
    if new > prev:
        return levels[r, min(max(new - 1, 0), K - 1)]
    return clear[r, min(max(prev - 1, 0), K - 1)]


@njit(cache=True, nogil=True, inline="always")
def _suppress(i, tn, slot_of, table, arena, f, ev, evf, n_ev):
    """Sensor i is faulty: every hazard level it holds drops to 0."""
    for r in range(table.shape[0]):
        sl = slot_of[i, r]
        if sl >= 0:
            rec = table[r, T.OFFSET] + sl * table[r, T.STRIDE]
            prev = arena[rec + R_LEVEL]
            if prev > 0:
                n_ev = _emit(ev, evf, n_ev, i, table[r, T.QUANTITY], r, table[r, T.KIND], table[r, T.HAZARD], 0,
                             prev, f[rec + R_AGG], np.nan, tn)
                arena[rec + R_LEVEL] = 0
    return n_ev


@njit(cache=True, nogil=True, error_model="numpy")
def _process_rows(start, sensor, quantity, time, value, limits, newest, interval, flags, primary, hhead, hrec,
                  rel_tol, hparams, stale_due, slot_of, table, rules_of, n_rules_of, levels, clear, for_ns, arena,
                  templates, ev, evf, n_ev, ok, n_ok, value_sent, refresh):
    """Health, then suppression and every rule of the row's quantity, row by row (rows in (sensor, time) order).

    A rule still firing at a row ``refresh`` ns (event time) or more after its value was last reported
    (``value_sent``: by a transition or a refresh; ``refresh`` 0: never) writes a value refresh, a row with
    ``level == prev`` and its current aggregate, which the caller separates from the transitions.

    Stops early, before a row, when the event buffers might overflow or a rule needs a slot and
    has none free. Returns (next position, events written, in-range rows listed in ``ok``, the rule
    that needs room or -1).
    """
    R = table.shape[0]
    # the arrays the inlined helpers take, borrowed: no reference counting per row
    newest, interval, flags, primary, hhead = borrowed(newest), borrowed(interval), borrowed(flags), \
        borrowed(primary), borrowed(hhead)
    hrec, rel_tol, slot_of, table, arena = borrowed(hrec), borrowed(rel_tol), borrowed(slot_of), borrowed(table), \
        borrowed(arena)
    levels, clear, for_ns, ev, evf = borrowed(levels), borrowed(clear), borrowed(for_ns), borrowed(ev), borrowed(evf)
    templates, value_sent = borrowed(templates), borrowed(value_sent)
    f = borrowed(arena.view(np.float64))
    hf = borrowed(hrec.view(np.float64))
    n_rules = R
    stale_min, stale_factor = hparams[10], hparams[11]
    h_stride, h_w, h_B, h_BW = hparams[0], hparams[3], hparams[1], hparams[2]
    m_rows = sensor.size
    # flat views for prefetching (a row view per prefetch would cost reference counting each time)
    slot_flat = slot_of.reshape(slot_of.size)
    hhead_flat = hhead.reshape(hhead.size)
    h_cols = hhead.shape[1]
    for j in range(start, m_rows):
        if j + 2 * _AHEAD < m_rows:  # the slot table and health arrays two steps ahead
            i2 = sensor[j + 2 * _AHEAD]
            prefetch(slot_flat, i2 * R)
            prefetch(newest, i2)
            prefetch(interval, i2)
            prefetch(hhead_flat, i2 * h_cols)
        if j + _AHEAD < m_rows:  # the records one step ahead: heads and the buckets the row will touch
            j1 = j + _AHEAD
            i1 = sensor[j1]
            t1 = time[j1]
            h1 = i1 * h_stride
            tn1 = max(t1, newest[i1])
            be1 = tn1 // h_w
            if be1 > hhead[i1, H_BAND_BE]:  # the row will judge the band: all of it
                for w in range(HEALTH_HEAD, h_stride, 8):
                    prefetch(hrec, h1 + w)
                prefetch(hrec, h1 + h_stride - 1)
            else:
                b1 = be1 if tn1 == t1 else t1 // h_w
                o1 = h1 + HEALTH_HEAD + (b1 % h_B) * h_BW
                prefetch(hrec, o1)
                prefetch(hrec, o1 + h_BW - 1)  # a bucket may straddle two cache lines
            q1 = quantity[j1]
            for m in range(n_rules_of[q1]):
                r = rules_of[q1, m]
                sl = slot_of[i1, r]
                if sl >= 0:
                    stride = table[r, T.STRIDE]
                    rec = table[r, T.OFFSET] + sl * stride
                    prefetch(arena, rec)
                    prefetch(arena, rec + 8)
                    B = table[r, T.BUCKETS]
                    if B:
                        w0 = rec + RULE_HEAD + 2 * table[r, T.LEVELS]
                        if table[r, T.CODE] != 0:  # an aggregate evaluated by a scan of all buckets
                            for w in range(w0, rec + stride, 8):
                                prefetch(arena, w)
                            prefetch(arena, rec + stride - 1)
                        else:
                            prefetch(arena, w0 + ((t1 // table[r, T.WIDTH]) % B) * table[r, T.BUCKET_WORDS])
        if n_ev + 3 + R > ev.shape[0]:
            return j, n_ev, n_ok, -1
        i = sensor[j]
        q = quantity[j]
        for m in range(n_rules_of[q]):
            r = rules_of[q, m]
            if slot_of[i, r] == _NO_SLOT and table[r, T.SLOTS] == table[r, T.CAPACITY]:
                return j, n_ev, n_ok, r
        t = time[j]
        v = value[j]
        bad = v < limits[0, q] or v > limits[1, q] or v >= limits[2, q]
        nw = newest[i]
        tn = t if t > nw else nw  # the sensor's event-time clock at this row
        old, new, silence, spread, allowed = health_row(i, q, t, v, bad, tn, newest, interval, flags, primary,
                                                        hhead, hrec, hf, rel_tol, hparams)
        due = tn + stale_after(stale_limit(interval[i], stale_min, stale_factor))  # sensor i is not stale before
        if due < stale_due[0]:
            stale_due[0] = due
        if old & STALE:
            lim = stale_limit(interval[i], stale_min, stale_factor)
            n_ev = _emit(ev, evf, n_ev, i, q, n_rules, _KIND_STALE, _SENSOR_HAZARD, 0, 1, silence / 1e9,
                         lim / 1e9, tn)
        if (old ^ new) & STUCK:
            up = 1 if new & STUCK else 0
            n_ev = _emit(ev, evf, n_ev, i, q, n_rules + 1, _KIND_STALE + 1, _SENSOR_HAZARD, up, 1 - up, spread,
                         allowed, tn)
        if (old ^ new) & RANGE:
            up = 1 if new & RANGE else 0
            if v >= limits[2, q]:
                thr = limits[2, q]
            elif v < limits[0, q]:
                thr = limits[0, q]
            else:
                thr = limits[1, q]
            n_ev = _emit(ev, evf, n_ev, i, q, n_rules + 2, _KIND_STALE + 2, _SENSOR_HAZARD, up, 1 - up, v, thr,
                         tn)
        faulty = new != 0
        if faulty:
            n_ev = _suppress(i, tn, slot_of, table, arena, f, ev, evf, n_ev)
        if not bad:
            if ok.size:
                ok[n_ok] = j
            n_ok += 1
        for m in range(n_rules_of[q]):
            r = rules_of[q, m]
            sl = slot_of[i, r]
            if sl == _NO_MATCH:
                continue
            stride = table[r, T.STRIDE]
            if sl == _NO_SLOT:
                sl = table[r, T.SLOTS]
                table[r, T.SLOTS] = sl + 1
                slot_of[i, r] = sl
                rec = table[r, T.OFFSET] + sl * stride
                for w in range(stride):
                    arena[rec + w] = templates[r, w]
                arena[rec + R_SENSOR] = i
            rec = table[r, T.OFFSET] + sl * stride
            K = table[r, T.LEVELS]
            lv, prev, agg = rule_row(arena, f, rec, table[r, T.MODE], table[r, T.CODE], table[r, T.BUCKETS],
                                     table[r, T.BUCKET_WORDS], table[r, T.WIDTH], table[r, T.BASE], K,
                                     table[r, T.KEEP], levels, clear, for_ns, r, t, v, tn, bad, faulty)
            if lv != prev:
                n_ev = _emit(ev, evf, n_ev, i, q, r, table[r, T.KIND], table[r, T.HAZARD], lv, prev, agg,
                             _boundary(levels, clear, r, K, prev, lv), tn)
                value_sent[i, r] = tn
            elif lv > 0 and refresh > 0 and tn - value_sent[i, r] >= refresh:
                n_ev = _emit(ev, evf, n_ev, i, q, r, table[r, T.KIND], table[r, T.HAZARD], lv, lv, f[rec + R_AGG],
                             levels[r, lv - 1], tn)
                value_sent[i, r] = tn
    return m_rows, n_ev, n_ok, -1


@njit(cache=True, nogil=True, error_model="numpy")
def _tick(now, n_sensors, phase, start, newest, interval, flags, primary, stale_min, stale_factor, stale_due, slot_of,
          table, levels, clear, for_ns, arena, ev, evf, n_ev):
    """Sensors turning stale (and their levels dropping), then `for`/keep_firing_for of timed rules.

    The scan of all sensors is skipped while ``now`` is before ``stale_due[0]`` (no sensor can be stale
    yet); a scan sets it anew from the sensors not stale. Resumable: returns (phase, position, events) to
    continue from when the buffers fill, phase -1 when done.
    """
    R = table.shape[0]
    # the arrays the inlined helpers take, borrowed: no reference counting per sensor or slot
    slot_of, table, levels, clear, for_ns = borrowed(slot_of), borrowed(table), borrowed(levels), borrowed(clear), \
        borrowed(for_ns)
    arena, ev, evf = borrowed(arena), borrowed(ev), borrowed(evf)
    f = borrowed(arena.view(np.float64))
    if phase == 0 and (start > 0 or now >= stale_due[0]):
        if start == 0:
            stale_due[1] = _FAR
        for i in range(start, n_sensors):
            if n_ev + 1 + R > ev.shape[0]:
                return 0, i, n_ev
            nw = newest[i]
            if nw == NEVER or flags[i] & STALE:
                continue
            lim = stale_limit(interval[i], stale_min, stale_factor)
            silence = now - nw
            if silence > lim:
                flags[i] |= STALE
                n_ev = _emit(ev, evf, n_ev, i, primary[i], R, _KIND_STALE, _SENSOR_HAZARD, 1, 0, silence / 1e9,
                             lim / 1e9, now)
                n_ev = _suppress(i, now, slot_of, table, arena, f, ev, evf, n_ev)
            else:
                due = nw + stale_after(lim)
                if due < stale_due[1]:
                    stale_due[1] = due
        stale_due[0] = stale_due[1]
    if phase == 0:
        phase, start = 1, 0
    # phase 1 (position: rule * 2**32 + slot)
    r0, s0 = start >> 32, start & 0xFFFFFFFF
    for r in range(r0, R):
        if not table[r, T.TIMED]:
            continue
        K = table[r, T.LEVELS]
        keep = table[r, T.KEEP]
        stride = table[r, T.STRIDE]
        off = table[r, T.OFFSET]
        for sl in range(s0 if r == r0 else 0, table[r, T.SLOTS]):
            if n_ev + 1 > ev.shape[0]:
                return 1, (r << 32) | sl, n_ev
            rec = off + sl * stride
            prev = arena[rec + R_LEVEL]
            if prev == 0 and not any_on(arena, rec, K):
                continue
            i = arena[rec + R_SENSOR]
            at = max(newest[i], now)
            lv = firing_level(arena, rec, K, keep, for_ns, r, at)
            if flags[i] != 0:
                lv = 0
            if lv != prev:
                n_ev = _emit(ev, evf, n_ev, i, table[r, T.QUANTITY], r, table[r, T.KIND], table[r, T.HAZARD], lv,
                             prev, f[rec + R_AGG], _boundary(levels, clear, r, K, prev, lv), at)
                arena[rec + R_LEVEL] = lv
    return -1, 0, n_ev
