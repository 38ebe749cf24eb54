"""Plain per-reading Python reference of the detection semantics (rules, health, anomaly levels), for property
tests and the detect benchmark.

Deliberately naive: keeps every accepted reading per (rule, sensor) and rescans it on each
evaluation, so it shares no data structure with the engine, only the documented semantics.
"""

from __future__ import annotations

import fnmatch
import math

from detection.config import DetectionConfig, RuleConfig
from detection.windows import bucket_count
from ingest.quantities import PHYSICAL_MAX, PHYSICAL_MIN, QUANTITIES, QUANTITY_CODE
from stadtwacht.durations import parse_duration
from tests.detection.anomaly_reference import ReferenceAnomaly

__all__ = ["ReferenceDetector"]

HOUR = 3_600_000_000_000
KINDS = ("stale", "stuck", "range")


def _window_aggregate(aggregate: str, window: int, points: list[tuple[int, float]], now: int) -> float:
    buckets = bucket_count(aggregate)
    w = max(1, -(-window // buckets))
    be = now // w
    pts = [(t, v) for t, v in points if be - buckets < t // w <= be]
    if not pts:
        return math.nan
    vals = [v for _, v in pts]
    if aggregate == "mean":
        return sum(vals) / len(vals)
    if aggregate == "max":
        return max(vals)
    if aggregate == "min":
        return min(vals)
    # rate_per_hour: least-squares slope in value per hour
    n = len(pts)
    if n < 2:
        return math.nan
    xs = [t / HOUR for t, _ in pts]
    mx, my = sum(xs) / n, sum(vals) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 1e-12:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in zip(xs, vals, strict=True)) / sxx


class _Rule:
    def __init__(self, cfg: RuleConfig) -> None:
        self.cfg = cfg
        self.q = QUANTITY_CODE[cfg.quantity]
        self.levels = list(cfg.levels)
        self.clear = cfg.clear_levels()
        self.for_ns = cfg.for_ns()
        self.keep = parse_duration(cfg.keep_firing_for)
        self.window = parse_duration(cfg.window)
        self.state: dict[int, dict] = {}

    def st(self, s: int) -> dict:
        if s not in self.state:
            k = len(self.levels)
            self.state[s] = {"raw": [False] * k, "since": [None] * k, "fire": [None] * k, "level": 0,
                             "points": [], "last": None, "agg": math.nan}
        return self.state[s]

    def level_at(self, st: dict, now: int) -> int:
        level = 0
        for k in range(len(self.levels)):
            fired = st["raw"][k] and now - st["since"][k] >= self.for_ns[k]
            if fired:
                st["fire"][k] = now
            if fired or (self.keep > 0 and st["fire"][k] is not None and now < st["fire"][k] + self.keep):
                level = k + 1
        return level


class ReferenceDetector:
    """Same contract as the engine's process/tick, one reading at a time; events as tuples."""

    def __init__(self, rules: list[RuleConfig], config: DetectionConfig, names: list[str]) -> None:
        self.rules = [_Rule(r) for r in rules]
        self.names = names
        self.late = parse_duration(config.late_tolerance)
        h = config.health
        self.h = h
        self.stale_min = parse_duration(h.stale_min)
        self.stuck_for = parse_duration(h.stuck_for)
        self.sensors: dict[int, dict] = {}
        # anomaly scores of in-range readings; per (sensor, quantity): [level, held until]
        self.anomaly = ReferenceAnomaly(config.anomaly) if config.anomaly.enabled else None
        self.anomaly_keep = parse_duration(config.anomaly.keep_firing_for)
        self.anomaly_threshold = config.anomaly.threshold
        self.anomaly_rule = len(self.rules) + len(KINDS)
        self.anomaly_level: dict[tuple[int, int], list[int]] = {}

    def sensor(self, s: int) -> dict:
        if s not in self.sensors:
            self.sensors[s] = {"newest": None, "first": None, "primary": None, "prev_primary": None,
                               "interval": None, "bad": set(), "flags": {k: False for k in KINDS}, "band": []}
        return self.sensors[s]

    def _bad(self, q: int, v: float) -> bool:
        sat = self.h.saturation.get(QUANTITIES[q], math.inf)
        return v < PHYSICAL_MIN[q] or v > PHYSICAL_MAX[q] or v >= sat

    def _limit(self, hs: dict) -> float:
        lim = self.stale_min if hs["interval"] is None else self.h.stale_factor * hs["interval"]
        return max(lim, self.stale_min)

    def _faulty(self, hs: dict) -> bool:
        return any(hs["flags"].values())

    def _suppress(self, s: int, now: int, out: list) -> None:
        for i, r in enumerate(self.rules):
            st = r.st(s)
            if st["level"] > 0:
                out.append((now, s, i, 0, st["level"]))
                st["level"] = 0

    def process(self, rows: list[tuple[int, int, int, float]]) -> tuple[list[bool], list[tuple]]:
        """rows of (sensor, quantity, time, value); returns (late mask, events (time, sensor, rule, level, prev))."""
        late = []
        for s, _, t, _ in rows:
            n = self.sensors.get(s, {}).get("newest")
            late.append(n is not None and t < n - self.late)
        order = sorted((i for i in range(len(rows)) if not late[i]), key=lambda i: (rows[i][0], rows[i][2]))
        out: list[tuple] = []
        for i in order:
            self._reading(*rows[i], out)
        out.sort(key=lambda e: (e[0], e[1], e[2]))
        return late, out

    def _reading(self, s: int, q: int, t: int, v: float, out: list) -> None:
        hs = self.sensor(s)
        now = t if hs["newest"] is None else max(hs["newest"], t)
        old = dict(hs["flags"])
        hs["newest"] = now
        if hs["first"] is None:
            hs["first"] = t
        if hs["primary"] is None:
            hs["primary"] = q
        prim = q == hs["primary"]
        bad = self._bad(q, v)
        if prim:
            prev = hs["prev_primary"]
            if prev is not None and t > prev:
                dt = float(t - prev)
                iv = hs["interval"]
                hs["interval"] = dt if iv is None else iv + self.h.interval_alpha * (dt - iv)
            hs["prev_primary"] = t if prev is None else max(prev, t)
        if bad:
            hs["bad"].add(q)
        else:
            hs["bad"].discard(q)
        if prim and not bad:
            hs["band"].append((t, v))
        w = max(1, -(-self.stuck_for // bucket_count("band")))
        be = now // w
        band = [x for tt, x in hs["band"] if be - bucket_count("band") < tt // w <= be]
        stuck = old["stuck"]
        due = hs.get("band_be") is None or be > hs["band_be"]  # judged at the first reading of a band bucket
        if due:
            hs["band_be"] = be
            stuck = False
        if due and band:
            mean = sum(band) / len(band)
            rel = self.h.stuck_rel_tolerance.get(QUANTITIES[hs["primary"]], 0.0)
            allowed = self.h.stuck_abs_tolerance + rel * abs(mean)
            enough = len(band) >= self.h.stuck_min_readings
            spread = max(band) - min(band)
            if old["stuck"]:
                stuck = enough and spread <= self.h.stuck_clear_factor * allowed
            else:
                stuck = enough and now - hs["first"] >= self.stuck_for and spread <= allowed
        hs["flags"] = {"stale": False, "stuck": stuck, "range": bool(hs["bad"])}
        base = len(self.rules)
        for j, k in enumerate(KINDS):
            if hs["flags"][k] != old[k]:
                out.append((now, s, base + j, int(hs["flags"][k]), int(old[k])))
        if self.anomaly is not None and not bad:
            self._anomaly(s, q, t, v, out)
        faulty = self._faulty(hs)
        if faulty:
            self._suppress(s, now, out)
        for i, r in enumerate(self.rules):
            if q != r.q or not any(fnmatch.fnmatchcase(self.names[s], p) for p in (
                    [r.cfg.sensors] if isinstance(r.cfg.sensors, str) else r.cfg.sensors)):
                continue
            st = r.st(s)
            if r.window == 0:
                agg = math.nan if bad else v
            elif r.cfg.aggregate == "last":
                if not bad and (st["last"] is None or t >= st["last"][0]):
                    st["last"] = (t, v)
                agg = math.nan if st["last"] is None else st["last"][1]
            else:
                if not bad:
                    st["points"].append((t, v))
                agg = _window_aggregate(r.cfg.aggregate, r.window, st["points"], now)
            for k in range(len(r.levels)):
                was = st["raw"][k]
                if agg >= r.levels[k]:
                    st["raw"][k] = True
                elif agg < r.clear[k]:
                    st["raw"][k] = False
                if st["raw"][k] and not was:
                    st["since"][k] = now
            if not math.isnan(agg):
                st["agg"] = agg
            level = 0 if faulty else r.level_at(st, now)
            if faulty:
                r.level_at(st, now)  # still records firing
            if level != st["level"]:
                out.append((now, s, i, level, st["level"]))
                st["level"] = level

    def _anomaly(self, s: int, q: int, t: int, v: float, out: list) -> None:
        """The reading's score; the series' level is 1 from a detection until keep_firing_for after the last."""
        held = self.anomaly_level.setdefault((s, q), [0, 0])
        if self.anomaly.score(s, q, t, v) >= self.anomaly_threshold:
            level = 1
            held[1] = max(held[1], t + self.anomaly_keep)
        else:
            level = 1 if held[0] == 1 and t < held[1] else 0
        if level != held[0]:
            out.append((t, s, self.anomaly_rule, level, held[0]))
            held[0] = level

    def tick(self, now: int) -> list[tuple]:
        out: list[tuple] = []
        if self.anomaly_keep:
            for (s, _), held in self.anomaly_level.items():
                if held[0] == 1 and held[1] <= now:
                    out.append((max(self.sensors[s]["newest"], now), s, self.anomaly_rule, 0, 1))
                    held[0] = 0
        for s in sorted(self.sensors):
            hs = self.sensors[s]
            if hs["newest"] is not None and not hs["flags"]["stale"] and now - hs["newest"] > self._limit(hs):
                hs["flags"]["stale"] = True
                out.append((now, s, len(self.rules), 1, 0))
                self._suppress(s, now, out)
        for i, r in enumerate(self.rules):
            if not (any(r.for_ns) or r.keep):
                continue
            for s, st in r.state.items():
                if not (any(st["raw"]) or st["level"] > 0):
                    continue
                at = max(self.sensors[s]["newest"], now)
                level = r.level_at(st, at)
                if self._faulty(self.sensors[s]):
                    level = 0
                if level != st["level"]:
                    out.append((at, s, i, level, st["level"]))
                    st["level"] = level
        out.sort(key=lambda e: (e[0], e[1], e[2]))
        return out
