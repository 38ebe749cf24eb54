"""The alert state store interface: episodes, events, acks, silences, outbox and applied offsets.

The SQLite backend lives in ``sqlite_store.py``, opening and recovery in ``recovery.py``. Every mutation of
one `apply` happens inside one ``transaction()`` so episode, event, outbox and offsets commit together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from alerting.episodes import Episode, EpisodeKey
from alerting.record import AlertRecord

__all__ = ["DELETED", "SHARED", "AlertStore", "Delivery", "Pending", "Silence"]


@dataclass(frozen=True, slots=True)
class Pending:
    """An alert event waiting for its group_wait before it becomes an outbox message."""

    id: int
    alert_id: str
    group_key: str
    due_ns: int
    record: AlertRecord
    tags: tuple[str, ...]
    prev_level: int
    reading_ns: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One (message, channel) pair of the outbox; sent exactly when its row says 'sent'."""

    id: int
    message_id: int
    channel: str
    state: str  # "pending" | "sent" | "failed" | "expired"
    attempts: int
    next_ns: int
    created_ns: int
    title: str
    body: str
    notify_type: str
    refs: tuple[str, ...]
    reading_ns: int  # earliest reading time covered (0 for reminders/escalations)


@dataclass(frozen=True, slots=True)
class Silence:
    """A maintenance window: events of matching districts/sensors/hazard are recorded but not notified."""

    id: str
    districts: tuple[str, ...]
    sensors: tuple[str, ...]
    hazard: str
    starts_ns: int
    ends_ns: int  # 0 = open-ended
    comment: str
    created_by: str
    source: str  # "config" | "api" | "cli"
    #: the highest level it covers (None: every level); a change to a level above breaks through. Added later:
    #: a silence stored or shared without it (an older version's) decodes as None.
    max_level: int | None = None

    def active(self, now_ns: int) -> bool:
        """Whether the silence is in force at now_ns (started, not ended)."""
        return self.starts_ns <= now_ns and not (self.ends_ns and now_ns >= self.ends_ns)

    def matches(self, record: AlertRecord, now_ns: int, level: int | None = None) -> bool:
        """True when this silence covers the record at now_ns (``level``: as if the record had that level)."""
        if not self.active(now_ns):
            return False
        if self.hazard and self.hazard != record.hazard:
            return False
        if self.max_level is not None and (record.level if level is None else level) > self.max_level:
            return False
        if not self.districts and not self.sensors:
            return True
        return bool(set(self.districts) & set(record.districts) or set(self.sensors) & set(record.sensors))


#: ``silence_sharing`` states
SHARED, DELETED = "shared", "deleted"


class AlertStore(Protocol):
    """What the service needs from a durable store (one instance per thread)."""

    def transaction(self) -> AbstractContextManager[None]: ...
    def close(self) -> None: ...

    # episodes and events
    def episode_by_key(self, key: EpisodeKey) -> Episode | None: ...
    def episode(self, alert_id: str) -> Episode | None: ...
    def active_episodes(self) -> list[Episode]: ...
    def save_episode(self, ep: Episode, active: bool) -> None: ...
    def add_event(self, record: AlertRecord) -> None: ...
    def last_event_id(self) -> int: ...
    def unpublished_events(self) -> tuple[int, list[AlertRecord]]: ...
    def mark_published(self, upto_id: int) -> None: ...
    def history(self, limit: int) -> list[AlertRecord]: ...
    def episode_history(self, alert_id: str) -> list[AlertRecord]: ...
    def probe_write(self) -> None: ...
    def add_ack(self, alert_id: str, operator: str, time_ns: int) -> None: ...

    # grouping and outbox
    def add_pending(self, record: AlertRecord, group_key: str, due_ns: int, tags: tuple[str, ...],
                    prev_level: int, reading_ns: int) -> None: ...
    def pending_group_due(self, group_key: str) -> int | None: ...
    def pending_groups_for_alert(self, alert_id: str) -> list[str]: ...
    def due_groups(self, now_ns: int) -> list[str]: ...
    def take_group(self, group_key: str) -> list[Pending]: ...
    def add_message(self, created_ns: int, title: str, body: str, notify_type: str, refs: list[str],
                    reading_ns: int, kind: str, channels: list[str]) -> int: ...
    def next_delivery(self, channel: str) -> Delivery | None: ...
    def mark_delivery(self, delivery_id: int, state: str, attempts: int, next_ns: int, error: str,
                      now_ns: int) -> None: ...
    def outbox_depth(self, channel: str | None = None) -> int: ...
    def deliveries(self, state: str | None = None) -> Iterator[Delivery]: ...

    # silences and offsets
    def silences(self) -> list[Silence]: ...
    def put_silence(self, s: Silence) -> None: ...
    def delete_silence(self, silence_id: str) -> bool: ...
    # what the district topic knows of a silence: SHARED (it holds it), DELETED (deleted here, the deletion not
    # yet taken by the broker), None (nothing to remember)
    def set_silence_sharing(self, silence_id: str, state: str | None) -> None: ...
    def silence_sharing(self) -> dict[str, str]: ...
    def offsets(self) -> dict[tuple[str, int], int]: ...
    def set_offsets(self, offsets: dict[tuple[str, int], int]) -> None: ...
