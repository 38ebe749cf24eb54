"""Alert episodes: the pure state machine turning district-level changes into firing/update/resolved events."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from alerting.record import AlertRecord
from geodata.levels import DistrictLevel

__all__ = ["Episode", "EpisodeKey", "alert_id_for", "episode_view", "rfc3339", "step"]

EpisodeKey = tuple[str, str, str]  # (district, hazard, quantity)


def rfc3339(ns: int) -> str:
    """RFC 3339 UTC time with an explicit +00:00 offset and millisecond precision."""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def alert_id_for(key: EpisodeKey, started_ns: int) -> str:
    """Stable episode id: a short hash of the key and the start time (same input, same id after a replay)."""
    h = hashlib.sha256("\x1f".join([*key, str(started_ns)]).encode()).hexdigest()
    return f"{key[1]}-{h[:12]}"


@dataclass(slots=True)
class Episode:
    """One active alert episode of a (district, hazard, quantity) plus its notification bookkeeping."""

    alert_id: str
    district: str
    district_name: str
    hazard: str
    quantity: str
    level: int
    level_name: str
    seq: int
    started_ns: int
    last_ns: int
    value: float | None  # stored as JSON, where NaN is null: NaN again in memory (see __post_init__)
    threshold: float | None  # NaN when a faulty sensor ended the episode
    rule: str
    sensors: tuple[str, ...]
    prev_level: int = 0  # level before the last event (for the trend)
    opened_ns: int = 0  # service clock when the episode fired
    acked_by: str = ""  # cleared by a rise in level: a new level needs a new acknowledgement
    acked_ns: int = 0
    notified_tags: list[str] = field(default_factory=list)  # everyone warned: gets every update and the all-clear
    last_notified_ns: int = 0
    escalated: list[int] = field(default_factory=list)  # indices of routes whose escalation fired
    routes: list[int] = field(default_factory=list)  # indices of routes that matched an event
    # Fields added later: a state stored without them (an older version's) decodes with these defaults.
    #: route index -> service clock its ``escalate_after`` counts from: when the route first matched the episode,
    #: restarted by a rise that cleared an acknowledgement (absent: ``opened_ns``, as older versions counted)
    route_since: dict[int, int] = field(default_factory=dict)
    held: bool = False  # a change of state a silence held back: its current state goes out when none covers it
    notified_level: int = -1  # the level of the last state sent to channels (-1: none, or not recorded)
    #: event time of the value shown when it was refreshed at an unchanged level (0: that of the last event)
    value_ns: int = 0

    def __post_init__(self) -> None:
        if self.value is None:
            self.value = math.nan
        if self.threshold is None:
            self.threshold = math.nan

    @property
    def shown_ns(self) -> int:
        """Event time of the value shown: of the last event, or of a later refresh at the same level."""
        return max(self.last_ns, self.value_ns)

    @property
    def key(self) -> EpisodeKey:
        return (self.district, self.hazard, self.quantity)

    def record(self, event: str, time_ns: int) -> AlertRecord:
        """The public record of this episode's latest event."""
        return AlertRecord(
            alert_id=self.alert_id, seq=self.seq, event=event, hazard=self.hazard, quantity=self.quantity,
            level=self.level, level_name=self.level_name, districts=[self.district],
            district_names=[self.district_name], sensors=list(self.sensors), value=self.value,
            threshold=self.threshold, rule=self.rule, started_at=rfc3339(self.started_ns), time=rfc3339(time_ns),
        )


def episode_view(ep: Episode) -> dict[str, Any]:
    """An active episode as the API and the page list it (JSON-ready; no channel data)."""
    return {"alert_id": ep.alert_id, "seq": ep.seq, "hazard": ep.hazard, "quantity": ep.quantity,
            "level": ep.level, "level_name": ep.level_name, "district": ep.district,
            "district_name": ep.district_name, "sensors": list(ep.sensors), "value": ep.value,
            "threshold": ep.threshold, "rule": ep.rule, "started_at": rfc3339(ep.started_ns),
            "time": rfc3339(ep.last_ns), "value_at": rfc3339(ep.shown_ns), "acked_by": ep.acked_by or None,
            "acked_at": rfc3339(ep.acked_ns) if ep.acked_by else None}


def step(current: Episode | None, change: DistrictLevel) -> tuple[Episode | None, AlertRecord | None]:
    """Apply one change: (episode after, record emitted or None).

    An unchanged level emits nothing; while firing, it may bring a new reading (or other sensors holding the
    level): the episode after then shows it, and is a new object the caller stores."""
    if current is None:
        if change.level <= 0:
            return None, None
        key = (change.district, change.hazard, change.quantity)
        ep = Episode(
            alert_id=alert_id_for(key, change.time_ns), district=change.district,
            district_name=change.district_name, hazard=change.hazard, quantity=change.quantity,
            level=change.level, level_name=change.level_name, seq=1, started_ns=change.time_ns,
            last_ns=change.time_ns, value=change.value, threshold=change.threshold, rule=change.rule,
            sensors=tuple(change.sensors),
        )
        return ep, ep.record("firing", change.time_ns)
    if change.level == current.level:
        if change.level <= 0 or (change.time_ns < current.shown_ns or (
                change.value == current.value and tuple(change.sensors) == current.sensors)):
            return current, None
        return replace(current, value=change.value, threshold=change.threshold, rule=change.rule,
                       sensors=tuple(change.sensors) or current.sensors, value_ns=change.time_ns,
                       route_since=dict(current.route_since), notified_tags=list(current.notified_tags),
                       escalated=list(current.escalated), routes=list(current.routes)), None
    rose = change.level > current.level  # a new, higher level needs a new acknowledgement; a fall keeps it
    ep = replace(
        current, level=max(change.level, 0), level_name=change.level_name, seq=current.seq + 1,
        last_ns=change.time_ns, value=change.value, threshold=change.threshold, rule=change.rule,
        sensors=tuple(change.sensors) or current.sensors, prev_level=current.level,
        district_name=change.district_name or current.district_name,
        acked_by="" if rose else current.acked_by, acked_ns=0 if rose else current.acked_ns,
        route_since=dict(current.route_since), notified_tags=list(current.notified_tags),
        escalated=list(current.escalated), routes=list(current.routes), value_ns=0,
    )
    event = "resolved" if change.level <= 0 else "update"
    return ep, ep.record(event, change.time_ns)
