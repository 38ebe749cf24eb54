"""Per-sensor rolling event-time windows kept as rings of buckets (numpy arrays, never re-scanned).

A window of length W with B buckets has buckets of width w = W / B; evaluated at
event time E it holds every accepted reading whose bucket ``t // w`` lies in
``(E // w - B, E // w]``, so it spans between (B-1)/B x W and W before E.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BucketWindow", "bucket_count"]

_HOUR_NS = 3_600_000_000_000
_NONE = np.iinfo(np.int32).min  # empty slot; bucket ids are stored as int32 relative to a base
_NONE64 = np.iinfo(np.int64).min

#: Per-bucket accumulators each aggregate needs.
_FIELDS: dict[str, tuple[str, ...]] = {
    "mean": ("n", "sum"),
    "max": ("max",),
    "min": ("min",),
    "band": ("n", "sum", "min", "max"),
    "rate_per_hour": ("n", "sx", "sy", "sxx", "sxy"),
}
_FILL = {"n": 0.0, "sum": 0.0, "max": -np.inf, "min": np.inf, "sx": 0.0, "sy": 0.0, "sxx": 0.0, "sxy": 0.0}


def bucket_count(aggregate: str) -> int:
    """How many buckets a window of this aggregate keeps (memory vs. edge precision)."""
    return {"rate_per_hour": 10, "band": 12}.get(aggregate, 24)


class BucketWindow:
    """Ring of B buckets per sensor for one aggregate ("mean", "max", "min", "band", "rate_per_hour").

    ``update`` takes at most one reading per sensor (unique ``sensor``), adds it and
    returns the aggregate at each sensor's evaluation time. "band" returns the
    spread max - min and keeps ``last_n``/``last_mean`` of the evaluated windows.
    "mean" keeps running totals of the window (buckets leaving it are subtracted),
    so a reading costs O(1) instead of a scan of all buckets.
    """

    def __init__(self, aggregate: str, window_ns: int, capacity: int = 0) -> None:
        self.aggregate = aggregate
        self.buckets = bucket_count(aggregate)
        self.width = max(1, -(-window_ns // self.buckets))
        self.fields = _FIELDS[aggregate]
        self.capacity = 0
        self.base: int | None = None  # bucket number stored as 0 (set by the first reading)
        self.ids = np.empty((0, self.buckets), np.int32)
        self.acc = {f: np.empty((0, self.buckets), np.float32 if f == "n" else np.float64) for f in self.fields}
        self.last_n = np.empty(0)
        self.last_mean = np.empty(0)
        self.running = aggregate == "mean"
        self.tot_n = np.empty(0)
        self.tot_sum = np.empty(0)
        self.cur_be = np.empty(0, np.int64)  # relative bucket the totals refer to
        self.grow(capacity)

    def grow(self, n: int) -> None:
        """Make room for sensors 0..n-1."""
        if n <= self.capacity:
            return
        new = max(n, 2 * self.capacity, 64)
        ids = np.full((new, self.buckets), _NONE, np.int32)
        ids[: self.capacity] = self.ids
        self.ids = ids
        for f in self.fields:
            a = np.full((new, self.buckets), _FILL[f], self.acc[f].dtype)
            a[: self.capacity] = self.acc[f]
            self.acc[f] = a
        if self.running:
            for name, fill in (("tot_n", 0.0), ("tot_sum", 0.0), ("cur_be", _NONE64)):
                old = getattr(self, name)
                a = np.full(new, fill, old.dtype)
                a[: self.capacity] = old
                setattr(self, name, a)
        self.capacity = new

    def reset(self, sensor_mask: np.ndarray) -> None:
        """Forget the windows of the selected sensors."""
        rows = np.flatnonzero(sensor_mask[: self.capacity])
        self.ids[rows] = _NONE
        for f in self.fields:
            self.acc[f][rows] = _FILL[f]
        if self.running:
            self.tot_n[rows] = 0.0
            self.tot_sum[rows] = 0.0
            self.cur_be[rows] = _NONE64

    def nbytes(self) -> int:
        running = self.tot_n.nbytes + self.tot_sum.nbytes + self.cur_be.nbytes if self.running else 0
        return int(self.ids.nbytes + sum(a.nbytes for a in self.acc.values()) + running)

    def _advance(self, sensor: np.ndarray, be: np.ndarray) -> None:
        """Move the running totals to eval bucket ``be``, subtracting the buckets that left the window."""
        B = self.buckets
        cur = self.cur_be[sensor]
        d = be - cur
        full = (cur == _NONE64) | (d >= B)
        self.tot_n[sensor[full]] = 0.0
        self.tot_sum[sensor[full]] = 0.0
        part = ~full & (d > 0)
        if part.any():
            ps, pcur, pd = sensor[part], cur[part], d[part]
            for j in range(1, int(pd.max()) + 1):  # a loop over buckets, usually just one
                m = pd >= j
                s = ps[m]
                gone = pcur[m] - B + j
                slot = (gone + self.base) % B
                hit = self.ids[s, slot] == gone
                s, slot = s[hit], slot[hit]
                self.tot_n[s] -= self.acc["n"][s, slot]
                self.tot_sum[s] -= self.acc["sum"][s, slot]
        self.cur_be[sensor] = np.where(full | (d > 0), be, cur)

    def update(self, sensor: np.ndarray, time: np.ndarray, value: np.ndarray, eval_time: np.ndarray,
               add: np.ndarray | None = None, evaluate: bool = True) -> np.ndarray | None:
        """Add one reading per (unique) sensor where ``add``; the aggregate at ``eval_time`` if ``evaluate``."""
        B, w = self.buckets, self.width
        b_abs = time // w
        if self.base is None and b_abs.size:
            self.base = int(b_abs.min()) - 2**28  # room for readings older than the first one
        b = b_abs - self.base  # relative bucket number: fits int32 for 2**31 buckets after the base
        if self.running:
            be = eval_time // w - self.base
            self._advance(sensor, be)
        slot = b_abs % B
        fi = sensor.astype(np.intp) * B + slot  # flat index of (sensor, slot)
        ids = self.ids.reshape(-1)
        held = ids[fi]
        fresh = b > held
        take = b >= held if add is None else (b >= held) & add  # a slot holding a newer bucket: too old
        new = fresh & take
        f_new = fi[new]
        ids[f_new] = b[new]
        acc = {f: a.reshape(-1) for f, a in self.acc.items()}
        for f, a in acc.items():
            a[f_new] = _FILL[f]
        ft, v = fi[take], value[take]
        if "n" in acc:
            acc["n"][ft] += 1.0
        if "sum" in acc:
            acc["sum"][ft] += v
        if "max" in acc:
            acc["max"][ft] = np.maximum(acc["max"][ft], v)
        if "min" in acc:
            acc["min"][ft] = np.minimum(acc["min"][ft], v)
        if "sx" in acc:
            x = (time[take] - b_abs[take] * w) / _HOUR_NS  # hours since the bucket's start
            acc["sx"][ft] += x
            acc["sy"][ft] += v
            acc["sxx"][ft] += x * x
            acc["sxy"][ft] += x * v
        if self.running:
            inwin = take & (b > be - B)
            si = sensor[inwin]
            self.tot_n[si] += 1.0
            self.tot_sum[si] += value[inwin]
            with np.errstate(invalid="ignore", divide="ignore"):
                return self.tot_sum[sensor] / self.tot_n[sensor]
        return self.evaluate(sensor, eval_time) if evaluate else None

    def evaluate(self, sensor: np.ndarray, eval_time: np.ndarray) -> np.ndarray:
        """The aggregate of each sensor's window at ``eval_time`` (a scan of its buckets)."""
        B, w = self.buckets, self.width
        be = (eval_time // w - (self.base or 0))[:, None]
        ids = self.ids[sensor].astype(np.int64)
        valid = (ids > be - B) & (ids <= be)
        acc = {f: self.acc[f][sensor] for f in self.fields}
        agg = self.aggregate
        with np.errstate(invalid="ignore", divide="ignore"):
            if agg == "max":
                out = np.where(valid, acc["max"], -np.inf).max(axis=1)
                return np.where(valid.any(axis=1), out, np.nan)  # empty window: NaN (no decision)
            if agg == "min":
                out = np.where(valid, acc["min"], np.inf).min(axis=1)
                return np.where(valid.any(axis=1), out, np.nan)
            n = np.where(valid, acc["n"], 0.0).sum(axis=1)
            if agg == "mean":
                return np.where(valid, acc["sum"], 0.0).sum(axis=1) / n
            if agg == "band":
                self.last_n = n
                self.last_mean = np.where(valid, acc["sum"], 0.0).sum(axis=1) / n
                return (np.where(valid, acc["max"], -np.inf).max(axis=1)
                        - np.where(valid, acc["min"], np.inf).min(axis=1))
            # rate_per_hour: shift each bucket's x (hours since its start) to hours since the eval bucket's start
            off = np.where(valid, (ids - be) * (w / _HOUR_NS), 0.0)
            nb = np.where(valid, acc["n"], 0.0)
            sx_b = np.where(valid, acc["sx"], 0.0)
            sy = np.where(valid, acc["sy"], 0.0).sum(axis=1)
            sx = (sx_b + nb * off).sum(axis=1)
            sxx = (np.where(valid, acc["sxx"], 0.0) + 2.0 * off * sx_b + nb * off * off).sum(axis=1)
            sxy = (np.where(valid, acc["sxy"], 0.0) + off * np.where(valid, acc["sy"], 0.0)).sum(axis=1)
            den = n * sxx - sx * sx
            slope = (n * sxy - sx * sy) / den
            return np.where((n >= 2) & (den > 1e-12 * np.maximum(n * sxx, 1e-300)), slope, np.nan)
