"""With several instances: every instance's alert records, read back from the alerts topic.

Each instance publishes the records of the districts it decides to the alerts topic, keyed by ``alert_id`` (one
episode's records stay in order on one partition, whichever instance decided them). Read back by every instance
(``stadtwacht.city_view``), they give each one the whole city's event timeline, and the history of the episodes
others decide: the ``references`` of their CAP messages, which every instance then writes too. So the page's
timeline, ``/api/alerts/history``, the Atom feed and ``/cap/…`` say the same on any instance behind a load
balancer.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable

import msgspec

from alerting.record import AlertRecord, decode_record

__all__ = ["AlertLog", "merge_history"]

log = logging.getLogger(__name__)


class AlertLog:
    """The alert records read so far: the newest ones, and every record of the most recently changed episodes.

    Bounded: ``max_recent`` records for the timeline, ``max_episodes`` episodes' histories (the episode changed
    least recently is forgotten first).
    """

    def __init__(self, max_recent: int = 1000, max_episodes: int = 10_000) -> None:
        self._recent: deque[AlertRecord] = deque(maxlen=max_recent)
        self._episodes: OrderedDict[str, dict[int, AlertRecord]] = OrderedDict()  # alert_id -> seq -> record
        self._max_episodes = max_episodes
        self._lock = threading.Lock()

    def take(self, value: bytes | None) -> AlertRecord | None:
        """Store one alerts topic record; the record when it is new (None: seen before, or not a record)."""
        if value is None:
            return None
        try:
            record = decode_record(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("undecodable record on the alerts topic skipped")
            return None
        with self._lock:
            episode = self._episodes.setdefault(record.alert_id, {})
            self._episodes.move_to_end(record.alert_id)
            if record.seq in episode:  # published twice (an instance replaying its last batch after a crash)
                return None
            episode[record.seq] = record
            self._recent.append(record)
            while len(self._episodes) > self._max_episodes:
                self._episodes.popitem(last=False)
        return record

    def episode_records(self, alert_id: str) -> list[AlertRecord]:
        """Every record of one episode read so far, in seq order."""
        with self._lock:
            episode = self._episodes.get(alert_id, {})
            return [episode[seq] for seq in sorted(episode)]

    def recent(self, limit: int) -> list[AlertRecord]:
        """The newest records, newest first."""
        with self._lock:
            return merge_history(self._recent, (), limit)


def merge_history(a: Iterable[AlertRecord], b: Iterable[AlertRecord], limit: int) -> list[AlertRecord]:
    """Two sets of alert records as one timeline: newest first (by event time), each event once."""
    seen: dict[tuple[str, int], AlertRecord] = {}
    for r in (*a, *b):
        seen.setdefault((r.alert_id, r.seq), r)
    # record times are all written by alerting.episodes.rfc3339 (UTC, milliseconds): the strings sort as times
    return sorted(seen.values(), key=lambda r: (r.time, r.seq), reverse=True)[:limit]
