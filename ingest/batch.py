"""Columnar batch of readings: the value ingest hands to detection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ReadingBatch"]


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """One reading per row; all arrays have the same length.

    ``sensor`` is the dense index of :class:`ingest.sensor_index.SensorIndex`,
    ``quantity`` the code of :mod:`ingest.quantities`, ``time`` the event time
    in ns since the Unix epoch (UTC), ``value`` in the quantity's canonical unit.
    ``message`` is the row's message number within the poll batch it came
    from (so a late row can be dead-lettered with its source), -1 where none.
    """

    sensor: np.ndarray  # int32
    quantity: np.ndarray  # uint8
    time: np.ndarray  # int64 ns
    value: np.ndarray  # float64
    message: np.ndarray  # int32

    def __len__(self) -> int:
        return int(self.sensor.shape[0])

    @classmethod
    def empty(cls) -> ReadingBatch:
        return cls(
            np.empty(0, np.int32), np.empty(0, np.uint8), np.empty(0, np.int64),
            np.empty(0, np.float64), np.empty(0, np.int32),
        )

    @classmethod
    def from_columns(cls, sensor, quantity, time, value, message=None) -> ReadingBatch:
        """Build a batch from array-likes, coercing dtypes (tests and replay use this)."""
        sensor = np.asarray(sensor, dtype=np.int32)
        if message is None:
            message = np.full(sensor.shape[0], -1, dtype=np.int32)
        return cls(
            sensor, np.asarray(quantity, dtype=np.uint8), np.asarray(time, dtype=np.int64),
            np.asarray(value, dtype=np.float64), np.asarray(message, dtype=np.int32),
        )

    def take(self, rows: np.ndarray) -> ReadingBatch:
        """The rows selected by a boolean mask or an index array."""
        return ReadingBatch(
            self.sensor[rows], self.quantity[rows], self.time[rows], self.value[rows], self.message[rows]
        )

    def sorted_by_time(self) -> ReadingBatch:
        """Rows in event-time order (stable), which windowed detection expects."""
        order = np.argsort(self.time, kind="stable")
        return self.take(order)

    @staticmethod
    def concat(batches: list[ReadingBatch]) -> ReadingBatch:
        if not batches:
            return ReadingBatch.empty()
        return ReadingBatch(*(np.concatenate([getattr(b, f) for b in batches]) for f in
                              ("sensor", "quantity", "time", "value", "message")))
