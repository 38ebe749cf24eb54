"""The detection engine: readings in, level transitions out (threshold/rate rules, sensor health, anomalies).

Each batch is handled in event-time order per sensor: its rows are sorted by
(sensor, time) once, then sensor health and each rule run over all rows in one
compiled pass (numba kernels in ``detection/health.py`` and ``detection/rules.py``),
which is exactly the per-reading semantics whatever the batch's shape (many
sensors with one reading each, or one sensor with thousands). Python loops run
over rules only, never over readings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detection.anomaly import AnomalyDetector, level_changes
from detection.config import DetectionConfig, RuleConfig
from detection.events import DetectionBatch, RuleInfo, hazard_code, kind_code
from detection.health import HEALTH_KINDS, HealthTracker
from detection.rules import NEVER, CompiledRule
from ingest.batch import ReadingBatch
from ingest.sensor_index import SensorIndex
from stadtwacht.durations import parse_duration

__all__ = ["DetectionEngine", "DetectionResult"]

_N_QUANTITIES = 7


@dataclass(frozen=True, slots=True)
class DetectionResult:
    """What one ``process`` call found: the transitions, and which input rows were too late to judge."""

    events: DetectionBatch
    late: np.ndarray  # bool per input row


class _Events:
    """Collects transition columns from many small steps."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, sensor, quantity, rule, kind: str | np.ndarray, hazard: str, level, prev, value, threshold,
            time) -> None:
        """One column set; ``rule`` and ``kind`` (a name or an array of kind codes) may be per row."""
        n = len(sensor)
        if n == 0:
            return
        kind = kind_code(kind) if isinstance(kind, str) else kind
        self.parts.append((
            np.asarray(sensor, np.int32), np.broadcast_to(np.asarray(quantity, np.uint8), (n,)),
            np.broadcast_to(np.asarray(rule, np.int16), (n,)), np.broadcast_to(np.asarray(kind, np.uint8), (n,)),
            np.full(n, hazard_code(hazard), np.uint8),
            np.broadcast_to(np.asarray(level, np.int8), (n,)), np.asarray(prev, np.int8),
            np.broadcast_to(np.asarray(value, np.float64), (n,)),
            np.broadcast_to(np.asarray(threshold, np.float64), (n,)),
            np.broadcast_to(np.asarray(time, np.int64), (n,)),
        ))

    def batch(self) -> DetectionBatch:
        if not self.parts:
            return DetectionBatch.empty()
        cols = [np.concatenate(c) for c in zip(*self.parts, strict=True)]
        out = DetectionBatch(*cols)
        return out.take(np.argsort(out.time, kind="stable"))


class DetectionEngine:
    """Turns reading batches into level transitions; all per-sensor state lives in arrays."""

    def __init__(self, rules: list[RuleConfig], config: DetectionConfig, sensors: SensorIndex) -> None:
        self.sensors = sensors
        self.config = config
        self.late_ns = parse_duration(config.late_tolerance)
        self.rules = [CompiledRule(r) for r in rules]
        self.health = HealthTracker(config.health)
        self.anomaly = None
        if config.anomaly.enabled:
            self.anomaly = AnomalyDetector(config.anomaly)
        self.anomaly_level = np.zeros((0, _N_QUANTITIES), np.int8)
        self.rule_info: list[RuleInfo] = [
            RuleInfo(r.name, r.quantity, r.hazard_name(),
                     "rate" if r.aggregate == "rate_per_hour" else "threshold",
                     ("normal", *r.level_names)) for r in rules
        ]
        n = len(rules)
        self._health_rule = {k: n + i for i, k in enumerate(HEALTH_KINDS)}
        self._health_base = np.int16(n)
        self._health_kind_codes = np.array([kind_code(k) for k in HEALTH_KINDS], np.uint8)
        names = {"stale": "veraltet", "stuck": "festhängend", "range": "außerhalb des Messbereichs"}
        self.rule_info += [RuleInfo(f"sensor-{k}", k, "sensor", k, ("normal", names[k])) for k in HEALTH_KINDS]
        self._anomaly_rule = len(self.rule_info)
        self.rule_info.append(RuleInfo("anomaly", "anomaly", "sensor", "anomaly", ("normal", "Anomalie")))
        self.capacity = 0

    # -- state housekeeping -------------------------------------------------------------------------

    def _sync(self) -> None:
        """Grow state to the sensor index and resolve rule patterns for new sensors."""
        n = len(self.sensors)
        if n > self.capacity:
            new = max(n, 2 * self.capacity, 64)
            self.health.grow(new)
            lvl = np.zeros((new, _N_QUANTITIES), np.int8)
            lvl[: self.anomaly_level.shape[0]] = self.anomaly_level
            self.anomaly_level = lvl
            self.capacity = new
        for r in self.rules:
            r.match_new_sensors(self.sensors.names)

    def reset(self, sensor_mask: np.ndarray) -> None:
        """Drop all state of the selected sensors (their partition was revoked)."""
        self._sync()
        mask = np.zeros(self.capacity, bool)
        m = np.asarray(sensor_mask, bool)[: self.capacity]
        mask[: m.shape[0]] = m
        self.health.reset(mask)
        for r in self.rules:
            r.reset(mask)
        self.anomaly_level[mask] = 0
        if self.anomaly is not None:
            self.anomaly.reset(mask)

    def state_nbytes(self) -> int:
        """Bytes of per-sensor state held (rules, health, anomaly)."""
        total = self.health.nbytes() + self.anomaly_level.nbytes + sum(r.nbytes() for r in self.rules)
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
        ev = _Events()
        sensor, time = batch.sensor, batch.time
        newest = self.health.newest[sensor]
        late = (newest != NEVER) & (time < newest - self.late_ns)
        rows = np.flatnonzero(~late)
        if rows.size == 0:
            return DetectionResult(DetectionBatch.empty(), late)
        rows = rows[np.lexsort((time[rows], sensor[rows]))]  # by sensor, then event time (stable)
        s, t = sensor[rows], time[rows]
        q, v = batch.quantity[rows], batch.value[rows]
        now = np.maximum(self.health.newest[s], t)  # the sensor's event-time clock at each row
        bad = self.health.out_of_range(q, v)
        faulty, row, kind, flag, value, threshold = self.health.observe(s, q, t, v, bad, now)
        if row.size:
            ev.add(s[row], q[row], self._health_base + kind, self._health_kind_codes[kind], "sensor", flag,
                   1 - flag, value, threshold, now[row])
        for i, rule in enumerate(self.rules):
            row, level, prev, value, threshold = rule.process(s, q, t, v, now, bad, faulty)
            if row.size:
                ev.add(s[row], rule.quantity, i, rule.kind, rule.hazard, level, prev, value, threshold, now[row])
        if self.anomaly is not None:
            self._anomalies(ev, s, q, t, v, bad)
        return DetectionResult(ev.batch(), late)

    def tick(self, now_ns: int) -> DetectionBatch:
        """Time-driven transitions at ``now_ns``: sensors turning stale, `for` maturing, keep_firing_for ending."""
        self._sync()
        ev = _Events()
        stale, silence, limit = self.health.stale_at(now_ns)
        if stale.size:
            ev.add(stale, self.health.primary[stale], self._health_rule["stale"], "stale", "sensor",
                   1, np.zeros(stale.size), silence, limit, now_ns)
            self._suppress(ev, stale, np.full(stale.size, now_ns, np.int64))
        for i, rule in enumerate(self.rules):
            if not (rule.for_ns.any() or rule.keep_ns):
                continue
            used = rule.n_slots
            cand = np.flatnonzero(rule.raw[:used].any(axis=1) | (rule.level[:used] > 0))
            if cand.size == 0:
                continue
            sensors = rule.sensor_of[cand]
            at = np.maximum(self.health.newest[sensors], now_ns)
            level, _ = rule.firing_level(cand, at)
            self._emit_levels(ev, i, rule, cand, sensors, level, rule.last_agg[cand], at)
        return ev.batch()

    # -- internals -----------------------------------------------------------------------------------

    def _emit_levels(self, ev: _Events, i: int, rule: CompiledRule, slot, s, level, value, time) -> None:
        """Emit changed levels of the rule's ``slot`` (sensors ``s``; 0 while faulty) and remember them."""
        level = np.where(self.health.faulty(s), 0, level).astype(np.int8)
        prev = rule.level[slot]
        ch = level != prev
        if ch.any():
            ev.add(s[ch], rule.quantity, i, rule.kind, rule.hazard, level[ch], prev[ch], value[ch],
                   rule.boundary(prev[ch], level[ch]), time[ch])
            rule.level[slot[ch]] = level[ch]

    def _suppress(self, ev: _Events, s: np.ndarray, time: np.ndarray) -> None:
        """Faulty sensors: every hazard level they hold drops to 0."""
        for i, rule in enumerate(self.rules):
            slot = rule.slot_of[s]
            up = np.flatnonzero(slot >= 0)
            up = up[rule.level[slot[up]] > 0]
            if up.size:
                su = slot[up]
                prev = rule.level[su]
                ev.add(s[up], rule.quantity, i, rule.kind, rule.hazard, 0, prev, rule.last_agg[su],
                       np.full(up.size, np.nan), time[up])
                rule.level[su] = 0

    def _anomalies(self, ev: _Events, s, q, t, v, bad) -> None:
        """Score the batch's accepted in-range rows and emit per-series anomaly transitions."""
        ok = np.flatnonzero(~bad)
        if ok.size == 0:
            return
        # rows are sorted by (sensor, time): each series (sensor, quantity) is in event-time order already
        s, q, t = s[ok], q[ok], t[ok]
        score = self.anomaly.update(s, q, t, v[ok])
        threshold = self.config.anomaly.threshold
        row = np.empty(ok.size, np.int64)
        row = row[: level_changes(s, q, score, threshold, self.anomaly_level, row)]
        if row.size:
            level = (score[row] >= threshold).astype(np.int8)
            ev.add(s[row], q[row], self._anomaly_rule, "anomaly", "sensor", level, 1 - level,
                   score[row], np.full(row.size, threshold), t[row])
