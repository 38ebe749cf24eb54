"""Dense sensor index: sensor id strings to small integers, with positions.

Every per-sensor array in detection and geodata is indexed by this number, so
state lookups are numpy fancy indexing instead of dict lookups per reading.
The index only grows; ids are never reused within a process.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["SensorIndex"]


class SensorIndex:
    """Grows as new sensor ids appear; keeps each sensor's last known position.

    ``lat``/``lon`` are NaN where no position is known. ``moved`` flags sensors
    whose position changed since geodata last mapped them (geodata clears it).
    ``partition`` is the code (see :meth:`partition_code`) of the Kafka
    (topic, partition) the sensor's readings last came from (-1 for none), so
    per-partition state can be dropped on revoke.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._ids: dict[str, int] = {}
        self.names: list[str] = []
        self.lat = np.full(capacity, np.nan)
        self.lon = np.full(capacity, np.nan)
        self.moved = np.zeros(capacity, dtype=bool)
        self.registered = np.zeros(capacity, dtype=bool)
        self.partition = np.full(capacity, -1, dtype=np.int32)
        self._partition_codes: dict[tuple[str, int], int] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, sensor_id: str) -> bool:
        return sensor_id in self._ids

    def get(self, sensor_id: str) -> int | None:
        """The index of a known sensor, or None."""
        return self._ids.get(sensor_id)

    def partition_code(self, topic: str, partition: int) -> int:
        """A small integer for a (topic, partition), stable for the process's lifetime."""
        key = (topic, partition)
        code = self._partition_codes.get(key)
        if code is None:
            code = self._partition_codes[key] = len(self._partition_codes)
        return code

    def sensors_of_partitions(self, partitions: list[tuple[str, int]]) -> np.ndarray:
        """Boolean mask over sensors whose readings last came from one of these partitions."""
        codes = [self._partition_codes[tp] for tp in partitions if tp in self._partition_codes]
        return np.isin(self.partition[: len(self.names)], codes)

    def id_of(self, index: int) -> str:
        return self.names[index]

    def lookup(self, sensor_ids: list[str], valid: Callable[[str], object] | None = None) -> np.ndarray:
        """Indices for a list of ids, adding unknown ones (one dict probe each; the decoder passes each
        distinct id of a poll once, in order of first appearance).

        ``valid`` checks ids not seen before (the only ones that need checking);
        an invalid one gets index -1 and is not added.
        """
        out = list(map(self._ids.get, sensor_ids))
        if None in out:
            for i, s in enumerate(sensor_ids):
                if out[i] is None:
                    out[i] = self.add(s) if valid is None or valid(s) else -1
        return np.fromiter(out, dtype=np.int32, count=len(out))

    def add(self, sensor_id: str, lat: float = float("nan"), lon: float = float("nan"),
            registered: bool = False) -> int:
        """Add a sensor (or return the existing index); a position given is recorded."""
        idx = self._ids.get(sensor_id)
        if idx is None:
            idx = len(self.names)
            self._grow(idx + 1)
            self._ids[sensor_id] = idx
            self.names.append(sensor_id)
        if registered:
            self.registered[idx] = True
        if lat == lat and lon == lon:  # not NaN
            self.set_positions(np.array([idx]), np.array([lat]), np.array([lon]))
        return idx

    def set_positions(self, idx: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> None:
        """Record positions (vectorised); sensors whose position changes are flagged ``moved``."""
        changed = (self.lat[idx] != lat) | (self.lon[idx] != lon)
        if changed.any():
            self.lat[idx] = lat
            self.lon[idx] = lon
            self.moved[idx[changed]] = True

    def ids(self, idx: np.ndarray) -> list[str]:
        names = self.names
        return [names[i] for i in idx.tolist()]

    def _grow(self, n: int) -> None:
        cap = self.lat.shape[0]
        if n <= cap:
            return
        new = max(n, cap * 2)
        self.lat = _extend(self.lat, new, np.nan)
        self.lon = _extend(self.lon, new, np.nan)
        self.moved = _extend(self.moved, new, False)
        self.registered = _extend(self.registered, new, False)
        self.partition = _extend(self.partition, new, -1)


def _extend(a: np.ndarray, n: int, fill: object) -> np.ndarray:
    out = np.full(n, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out
