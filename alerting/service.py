"""The alerting facade the composition package calls: apply level changes, tick timers, run the notifier."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections import Counter as _Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from alerting.channels import BrokenChannel, Channel, build_channels, make_channel
from alerting.config import AlertingConfig
from alerting.episodes import Episode, episode_view, rfc3339, step
from alerting.errors import AckOutdatedError, UnknownAlertError
from alerting.metrics import AlertingMetrics
from alerting.outbox import Notifier, RetryPolicy
from alerting.record import AlertRecord
from alerting.recovery import STATE_FILE, open_store
from alerting.routing import Router
from alerting.store import DELETED, SHARED, Silence
from alerting.templates import clean, measurement_lost, render_event_message, render_followup_message
from geodata.levels import DistrictLevel
from stadtwacht.durations import parse_duration

__all__ = ["AlertService"]

log = logging.getLogger("stadtwacht.alerting")

Listener = Callable[[AlertRecord], None]
#: (district, sensors holding its episode up) -> whether a partial view sees everything that can hold it up.
Sees = Callable[[str, tuple[str, ...]], bool]

#: Tag of channels given with --notify: they receive every event (and therefore every all-clear).
EVERYTHING_TAG = "__everything__"
#: The outbox counts as stuck (readiness fails) when a delivery waits longer than this.
OUTBOX_STUCK_S = 600.0


def _parse_time_ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1e9) if text else 0


class AlertService:
    """Episodes, routing, grouping, durable outbox and notifier behind one object (thread-safe)."""

    def __init__(self, config: AlertingConfig, state_dir: Path, districts: Mapping[str, str],
                 registry: CollectorRegistry, clock: Callable[[], int] = time.time_ns, exercise: bool = False,
                 environ: Mapping[str, str] | None = None, extra_urls: list[str] | tuple[str, ...] = (),
                 channels: Mapping[str, Channel] | None = None,
                 rule_aggregates: Mapping[str, str] | None = None,
                 sensor_names: Mapping[str, str] | None = None) -> None:
        self.config = config
        #: rule name -> aggregate: a record names its rule only, and a rate-of-rise rule's value is per hour
        self.rule_aggregates = dict(rule_aggregates or {})
        #: sensor id -> the registry's name: messages name a gauge as people know it, with its id
        self.sensor_names = dict(sensor_names or {})
        self.districts = dict(districts)
        self.exercise = exercise
        self._clock = clock
        self._lock = threading.RLock()
        self._store, self.recovery = open_store(Path(state_dir))
        self._channels = dict(channels) if channels is not None else build_channels(
            config, os.environ if environ is None else environ)
        for i, url in enumerate(extra_urls, 1):  # --notify URLs: every event, outside the routing rules
            self._channels[f"notify-{i}"] = make_channel(f"notify-{i}", url, (EVERYTHING_TAG,))
        self._router = Router(config.routes, {n: c.tags for n, c in self._channels.items()})
        self._metrics = AlertingMetrics(registry)
        unusable = [c for c in self._channels.values() if isinstance(c, BrokenChannel)]
        for c in unusable:
            log.error("%s: every notification routed to it fails until that is fixed and the service restarted",
                      c.reason)
        self._metrics.channels_unusable.set(len(unusable))
        self._group_wait_ns = parse_duration(config.group_wait)
        self._group_rules = [(g.hazard, g.min_level, parse_duration(g.wait)) for g in config.group_rules]
        self._repeat_ns = parse_duration(config.repeat_interval) if config.repeat_interval else 0
        policy = RetryPolicy(parse_duration(config.retry_initial), parse_duration(config.retry_max),
                             parse_duration(config.max_retry_age))
        self._notifier = Notifier(Path(state_dir) / STATE_FILE, self._channels, self._metrics, policy, clock)
        #: Callbacks receiving every new AlertRecord after it is committed (e.g. the page's SSE stream).
        self.listeners: list[Listener] = []
        self._queued = False  # a notification was added to the outbox since the last _after_commit
        self._load_config_silences()
        self._silences = self._store.silences()
        self._update_gauges()
        if self.recovery.pending_deliveries or self.recovery.pending_events:
            log.info("alert state recovered: %d active episodes, %d grouped events, %d deliveries pending",
                     self.recovery.active_episodes, self.recovery.pending_events,
                     self.recovery.pending_deliveries)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start one notifier thread per channel (resumes the outbox left by a previous run)."""
        self._notifier.start()

    def stop(self, deadline_s: float = 10.0) -> None:
        """Flush every waiting group now (shutdown), let the notifier drain until the deadline, then stop."""
        with self._lock:
            now = self._clock()
            with self._store.transaction():
                for g in self._store.due_groups(2**62):
                    self._flush_group(g, now)
            self._after_commit([])
        self._notifier.stop(deadline_s)

    def close(self) -> None:
        """Stop without draining and close the state store."""
        self._notifier.stop(0.0)
        with self._lock:
            self._store.close()

    def deliver_pending(self) -> None:
        """Synchronously send what is due on every channel (for replay/tests; not needed with start())."""
        with self._lock:
            for name in self._channels:
                while self._notifier.deliver_once(self._store, name):
                    pass

    def now_ns(self) -> int:
        """The service clock (injected; wall clock by default)."""
        return self._clock()

    @property
    def channel_labels(self) -> dict[str, str]:
        """Channel name -> redacted service://host (for health output)."""
        return {n: c.label for n, c in self._channels.items()}

    # ------------------------------------------------------------------ episode changes
    def apply(self, changes: list[DistrictLevel], offsets: dict[tuple[str, int], int] | None = None, *,
              sees: Sees | None = None) -> list[AlertRecord]:
        """Apply district-level changes; episodes, events, outbox and offsets commit in one transaction.

        ``sees``: given when the levels come from part of the sensors (a process that owns only some
        partitions and rolls up in memory). A change may open or raise any episode, but lower or end one
        only where ``sees(district, episode sensors)``: elsewhere a sensor this process cannot read may
        still hold the level, and a false all-clear is the worse error.
        """
        records: list[AlertRecord] = []
        with self._lock:
            now = self._clock()
            with self._store.transaction():
                self._silences = self._store.silences()  # the CLI may have changed them
                for ch in changes:
                    key = (ch.district, ch.hazard, ch.quantity)
                    current = self._store.episode_by_key(key)
                    if (sees is not None and current is not None and ch.level < current.level
                            and not sees(ch.district, current.sensors)):
                        continue
                    ep, rec = step(current, ch)
                    if rec is None or ep is None:
                        if ep is not None and ep is not current:  # a new reading at the same level: shown only
                            self._store.save_episode(ep, active=True)
                        continue
                    if current is not None and current.acked_by and not ep.acked_by:
                        # a rise cleared the acknowledgement: the new level needs its own, so the escalations
                        # start over and count from now (those already sent go out again if it stays unacknowledged)
                        ep.escalated = []
                        for idx in ep.route_since:
                            ep.route_since[idx] = now
                    if not ep.district_name:
                        ep.district_name = self.districts.get(ep.district, ep.district)
                        rec.district_names = [ep.district_name]
                    if rec.event == "firing":
                        ep.opened_ns = now
                        if self._store.episode(ep.alert_id) is not None:
                            # an earlier episode of this key started at the same event time (a flapping
                            # sensor within one timestamp): keep ids unique and still deterministic
                            base, n = ep.alert_id, 2
                            while self._store.episode(f"{base}-{n}") is not None:
                                n += 1
                            ep.alert_id = rec.alert_id = f"{base}-{n}"
                    self._store.add_event(rec)
                    self._route_event(ep, rec, ch.time_ns, now)
                    self._store.save_episode(ep, active=rec.event != "resolved")
                    records.append(rec)
                self._flush_due(now)
                if offsets:
                    self._store.set_offsets(offsets)
            self._after_commit(records)
        self._call_listeners(records)  # outside the lock: a listener may take the caller's locks
        return records

    def reconcile(self, current: list[DistrictLevel], offsets: dict[tuple[str, int], int] | None = None, *,
                  sees: Sees | None = None, districts: Collection[str] | None = None) -> list[AlertRecord]:
        """Bring episodes in line with the current picture (after a restart or warm-up): an active episode
        the picture lacks is resolved, except where a partial picture does not see it (see :meth:`apply`).
        ``districts``: the picture covers only these (a district stage taking over some districts).

        An episode the picture lacks ends with no value (NaN): no reading of the rebuilt picture exceeds a level,
        but which reading is current is not known here, and the one the episode fired with would read as if it
        was current.
        """
        with self._lock:
            seen = {(c.district, c.hazard, c.quantity) for c in current}
            now = self._clock()
            gone = [DistrictLevel(district=ep.district, district_name=ep.district_name, hazard=ep.hazard,
                                  quantity=ep.quantity, rule=ep.rule, level=0, level_name="normal",
                                  value=math.nan, threshold=ep.threshold, sensors=ep.sensors, time_ns=now)
                    for ep in self._store.active_episodes()
                    if ep.key not in seen and (districts is None or ep.district in districts)]
            return self.apply([*gone, *current], offsets, sees=sees)

    def publish_mark(self) -> int:
        """Id of the newest committed event; after its records are published, pass it to ``mark_published``."""
        with self._lock:
            return self._store.last_event_id()

    def unpublished(self) -> tuple[int, list[AlertRecord]]:
        """Committed events not yet recorded as on the alerts topic (a kill fell before the publish)."""
        with self._lock:
            return self._store.unpublished_events()

    def mark_published(self, upto_id: int) -> None:
        """Record the events up to ``upto_id`` as durably published (after the producer flush)."""
        with self._lock, self._store.transaction():
            self._store.mark_published(upto_id)

    def applied_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> offset recorded with the last change applied from it."""
        with self._lock:
            return self._store.offsets()

    def tick(self, now_ns: int | None = None) -> None:
        """Timers: flush groups whose group_wait passed, send reminders and escalations."""
        with self._lock:
            now = self._clock() if now_ns is None else now_ns
            with self._store.transaction():
                self._silences = self._store.silences()
                self._release_held(now)  # a silence ended: what it held back goes out first
                self._flush_due(now)
                for ep in self._store.active_episodes():
                    if ep.acked_by:
                        continue
                    # as of the value shown ("Stand"): refreshed while the level held
                    rec = ep.record("firing" if ep.seq == 1 else "update", ep.shown_ns)
                    if self._silenced(rec, now):
                        continue
                    changed = False
                    for route in self._router.routes:
                        # counted from when the route matched the episode (not from its first, maybe lower, level)
                        since = ep.route_since.get(route.index, ep.opened_ns)
                        if (route.index in ep.routes and route.escalate_after_ns and route.index not in ep.escalated
                                and now - since >= route.escalate_after_ns):
                            self._enqueue_followup("escalation", rec, route.escalate_tags, now)
                            ep.escalated.append(route.index)
                            ep.notified_tags = sorted({*ep.notified_tags, *route.escalate_tags})
                            changed = True
                    if self._repeat_ns and ep.notified_tags and now - ep.last_notified_ns >= self._repeat_ns:
                        self._enqueue_followup("reminder", rec, tuple(ep.notified_tags), now)
                        ep.last_notified_ns = now
                        changed = True
                    if changed:
                        self._store.save_episode(ep, active=True)
            self._after_commit([])

    # ------------------------------------------------------------------ hand-over between instances
    def episodes(self, districts: set[str]) -> list[Episode]:
        """The full state of the active episodes of some districts (what a new owner needs to carry on)."""
        with self._lock:
            return [ep for ep in self._store.active_episodes() if ep.district in districts]

    def episode(self, alert_id: str) -> Episode | None:
        """One episode's full state, active or not."""
        with self._lock:
            return self._store.episode(alert_id)

    def adopt(self, states: list[tuple[Episode, bool]]) -> int:
        """Take over episodes (state, active) from the districts' previous owner, without events.

        The newer state of a key wins: this process's own (it owned the district last and stopped before
        handing its latest state on) or the one handed over. Returns how many states were taken.
        """
        taken = 0
        with self._lock, self._store.transaction():
            for ep, active in states:
                known = self._store.episode(ep.alert_id)
                if known is not None and known.seq > ep.seq:
                    continue  # this process got further with that episode
                local = self._store.episode_by_key(ep.key)
                if active and local is not None and local.alert_id != ep.alert_id:
                    if local.started_ns > ep.started_ns:
                        continue  # a later episode of the key was opened here
                    self._store.save_episode(local, active=False)  # superseded: one active episode per key
                elif not active and (local is None or local.alert_id != ep.alert_id):
                    continue  # an ended episode this process does not have open
                self._store.save_episode(ep, active=active)
                taken += 1
            self._update_gauges()
        return taken

    def retire(self, districts: set[str]) -> list[str]:
        """Make the active episodes of districts another instance now owns inactive, without an event
        (the owner carries them on); their alert ids."""
        with self._lock, self._store.transaction():
            eps = [ep for ep in self._store.active_episodes() if ep.district in districts]
            for ep in eps:
                self._store.save_episode(ep, active=False)
            if eps:
                self._update_gauges()
        return [ep.alert_id for ep in eps]

    # ------------------------------------------------------------------ operator actions
    def ack(self, alert_id: str, operator: str, level: int | None = None) -> dict[str, Any]:
        """Record an acknowledgement: stops reminders and escalation of the episode at its current level (a
        rise in level clears it again, a fall keeps it). ``level``: the level the operator saw; refused
        (``AckOutdatedError``) when the episode has risen above it since, as that level was not seen."""
        operator = clean(operator, 100) or "unknown"
        with self._lock:
            now = self._clock()
            with self._store.transaction():
                ep = self._store.episode(alert_id)
                if ep is None or not self._store.episode_active(alert_id):
                    raise UnknownAlertError(alert_id)
                if level is not None and ep.level > level:
                    raise AckOutdatedError(alert_id, level, ep.level, ep.level_name)
                self._store.add_ack(alert_id, operator, now)
                if not ep.acked_by:
                    ep.acked_by, ep.acked_ns = operator, now
                    self._store.save_episode(ep, active=True)
            log.info("alert %s acknowledged by %s", alert_id, operator)
            return self._episode_view(ep, now)

    def silence(self, *, districts: list[str] | tuple[str, ...] = (), sensors: list[str] | tuple[str, ...] = (),
                hazard: str = "", starts_ns: int | None = None, ends_ns: int = 0, comment: str = "",
                created_by: str = "", max_level: int | None = None) -> dict[str, Any]:
        """Add a silence (maintenance window); events are still recorded, notifications suppressed.
        ``max_level``: the highest level it covers (a change to a level above is sent); None: every level."""
        with self._lock:
            s = Silence(id=uuid.uuid4().hex[:12], districts=tuple(districts), sensors=tuple(sensors),
                        hazard=hazard, starts_ns=self._clock() if starts_ns is None else starts_ns,
                        ends_ns=ends_ns, comment=clean(comment, 500), created_by=clean(created_by, 100),
                        source="api", max_level=max_level)
            with self._store.transaction():
                self._store.put_silence(s)
            self._silences = self._store.silences()
            view = self._silence_view(s, self._clock())
            log.warning("silence %s set by %r: districts %s, sensors %s, hazard %s, levels %s, until %s (%s)", s.id,
                        s.created_by, list(s.districts) or "any", list(s.sensors) or "any", s.hazard or "any",
                        "any" if s.max_level is None else f"up to {s.max_level}", view["ends"] or "removed",
                        s.comment)
            return view

    def unsilence(self, silence_id: str) -> bool:
        """Remove a silence; False when there was none with that id. What it held back goes out now."""
        with self._lock:
            with self._store.transaction():
                ok = self._store.delete_silence(silence_id)
                if ok and self._store.silence_sharing().get(silence_id) == SHARED:
                    self._store.set_silence_sharing(silence_id, DELETED)  # until its tombstone is read back
                self._silences = self._store.silences()
                if ok:
                    self._release_held(self._clock())
            self._after_commit([])
            if ok:
                log.warning("silence %s removed", silence_id)
            return ok

    def silences(self) -> list[dict[str, Any]]:
        """Every stored silence (``active``: in force now; ended ones stay listed until removed)."""
        with self._lock:
            now = self._clock()
            return [self._silence_view(s, now) for s in self._silences]

    def silence_by_id(self, silence_id: str) -> Silence | None:
        with self._lock:
            return next((s for s in self._silences if s.id == silence_id), None)

    def take_shared_silence(self, silence_id: str, s: Silence | None) -> bool:
        """A silence shared by an instance (this one included) through the district topic: stored as given
        (and remembered as held by the topic), or removed (None); whether that changed anything here. A
        silence deleted here while the broker could not take the deletion stays deleted."""
        with self._lock:
            state = self._store.silence_sharing().get(silence_id)
            if s is not None and state == DELETED:
                return False
            same = s == self.silence_by_id(silence_id)
            with self._store.transaction():
                if s is None:
                    self._store.delete_silence(silence_id)
                    self._store.set_silence_sharing(silence_id, None)
                else:
                    if not same:
                        self._store.put_silence(s)
                    if state != SHARED:
                        self._store.set_silence_sharing(silence_id, SHARED)
                if not same:
                    self._silences = self._store.silences()
                    self._release_held(self._clock())  # lifted or narrowed: what it no longer covers goes out
            self._after_commit([])
            return not same

    def silence_deletion_unshared(self, silence_id: str) -> None:
        """A silence deleted here whose deletion the broker did not take: shared by ``unshared_silences``."""
        with self._lock, self._store.transaction():
            self._store.set_silence_sharing(silence_id, DELETED)

    def unshared_silences(self, alive: Collection[str], whole: bool = False) -> list[tuple[str, Silence | None]]:
        """What the district topic lacks, to be shared now (``alive``: the silences it holds, as read so far):
        silences made here while the broker could not take them, and deletions (None) it did not take.

        ``whole``: ``alive`` comes from reading the topic from its start to its end, so a silence it held once
        but no longer holds is lifted here. A deletion made through another instance reaches this one as a
        tombstone, but only until the compacted topic drops the tombstone (``delete.retention.ms``); after
        that the silence simply is not there, and kept here it would quietly suppress this instance's
        warnings."""
        alive = set(alive)
        with self._lock:
            out: list[tuple[str, Silence | None]] = []
            with self._store.transaction():
                sharing = self._store.silence_sharing()
                for s in self._store.silences():
                    if s.source == "config" or s.id in alive:
                        continue
                    if sharing.get(s.id) != SHARED:
                        out.append((s.id, s))
                    elif whole:
                        self._store.delete_silence(s.id)
                        self._store.set_silence_sharing(s.id, None)
                        log.warning("silence %s lifted: the district topic no longer holds it (deleted through "
                                    "another instance while this one was away)", s.id)
                for silence_id, state in sharing.items():
                    if state == DELETED and silence_id in alive:
                        out.append((silence_id, None))
                    elif state == DELETED and whole:  # nothing left to delete
                        self._store.set_silence_sharing(silence_id, None)
                self._silences = self._store.silences()
                self._release_held(self._clock())
            self._after_commit([])
            return out

    def is_silenced(self, ep: Episode) -> bool:
        """Whether the silences known here cover an episode (also one another instance decides)."""
        with self._lock:
            return self._silenced(ep.record("update", ep.last_ns), self._clock())

    # ------------------------------------------------------------------ views
    def active(self) -> list[dict[str, Any]]:
        """Active episodes as JSON-ready dicts (no channel URLs; tags only)."""
        with self._lock:
            now = self._clock()
            return [self._episode_view(ep, now) for ep in self._store.active_episodes()]

    def active_records(self) -> list[AlertRecord]:
        """The latest record of every active episode (for the Atom feed of active alerts)."""
        with self._lock:
            return [ep.record("firing" if ep.seq == 1 else "update", ep.last_ns)
                    for ep in self._store.active_episodes()]

    def episode_records(self, alert_id: str) -> list[AlertRecord]:
        """Every event of one episode in seq order, the latest included (CAP `references`)."""
        with self._lock:
            return self._store.episode_history(alert_id)

    def store_writable(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: can the state store take a write lock right now?"""
        with self._lock:
            try:
                self._store.probe_write()
            except Exception as exc:
                return False, {"path": str(self._store.path), "error": type(exc).__name__ + ": " + str(exc)}
            return True, {"path": str(self._store.path)}

    def outbox_status(self) -> dict[str, Any]:
        """Readiness: outbox depth, oldest pending age and per-channel state; not ok when stuck."""
        with self._lock:
            now = self._clock()
            channels: dict[str, Any] = {}
            oldest = 0.0
            for name, ch in self._channels.items():
                d = self._store.next_delivery(name)
                age = max(0.0, (now - d.created_ns) / 1e9) if d else 0.0
                oldest = max(oldest, age)
                channels[name] = {"channel": ch.label, "pending": self._store.outbox_depth(name),
                                  "oldest_pending_age_s": round(age, 1), "attempts": d.attempts if d else 0}
            return {"ok": oldest < OUTBOX_STUCK_S, "depth": self._store.outbox_depth(),
                    "oldest_pending_age_s": round(oldest, 1), "channels": channels}

    def history(self, limit: int = 100) -> list[AlertRecord]:
        """The latest alert events, newest first."""
        with self._lock:
            return self._store.history(max(1, min(limit, 10_000)))

    def outbox(self, state: str | None = None) -> list[dict[str, Any]]:
        """Outbox deliveries (channel names, refs, state, attempts) for diagnostics and tests."""
        with self._lock:
            return [{"id": d.id, "channel": d.channel, "state": d.state, "attempts": d.attempts,
                     "refs": list(d.refs), "title": d.title} for d in self._store.deliveries(state)]

    # ------------------------------------------------------------------ internals
    def _episode_view(self, ep: Episode, now: int) -> dict[str, Any]:
        rec = ep.record("firing" if ep.seq == 1 else "update", ep.last_ns)
        return {**episode_view(ep), "notified": list(ep.notified_tags), "silenced": self._silenced(rec, now)}

    @staticmethod
    def _silence_view(s: Silence, now: int) -> dict[str, Any]:
        d = asdict(s)
        d["starts"] = rfc3339(s.starts_ns)
        d["ends"] = rfc3339(s.ends_ns) if s.ends_ns else None
        d["active"] = s.active(now)
        return d

    def _load_config_silences(self) -> None:
        with self._store.transaction():
            wanted = {s.id for s in self.config.silences}
            for old in self._store.silences():
                if old.source == "config" and old.id not in wanted:
                    self._store.delete_silence(old.id)
            for c in self.config.silences:
                self._store.put_silence(Silence(
                    id=c.id, districts=tuple(c.districts), sensors=tuple(c.sensors), hazard=c.hazard,
                    starts_ns=_parse_time_ns(c.starts), ends_ns=_parse_time_ns(c.ends), comment=c.comment,
                    created_by="config", source="config", max_level=c.max_level))

    def _silenced(self, rec: AlertRecord, now: int, level: int | None = None) -> bool:
        """Whether a silence covers the record now (``level``: as if it had that level)."""
        return any(s.matches(rec, now, level) for s in self._silences)

    def _wait_ns(self, rec: AlertRecord) -> int:
        for hazard, min_level, wait in self._group_rules:
            if (not hazard or hazard == rec.hazard) and rec.level >= min_level:
                return wait
        return self._group_wait_ns

    def _route_event(self, ep: Episode, rec: AlertRecord, reading_ns: int, now: int) -> None:
        """Decide who hears about this event and queue it for its group (all in the caller's transaction)."""
        if rec.event == "resolved":
            ep.held = False
            # the all-clear goes to exactly those warned (even under a silence)
            self._queue(ep, rec, tuple(ep.notified_tags), reading_ns, now, ep.prev_level)
            return
        routes = self._router.match(rec)
        for r in routes:  # escalate_after counts from here (a route an older version recorded: from the start)
            ep.route_since.setdefault(r.index, ep.opened_ns if r.index in ep.routes else now)
        ep.routes = sorted({*ep.routes, *(r.index for r in routes)})
        if self._silenced(rec, now):
            if rec.event == "update" and ep.notified_tags and not self._silenced(rec, now, ep.prev_level):
                # eased into a silence from a level it does not cover (one that broke through it): those warned
                # of that level hear the change, as they would hear the all-clear
                ep.held = False
                self._queue(ep, rec, tuple(ep.notified_tags), reading_ns, now, ep.prev_level)
            else:
                ep.held = True  # sent once no silence covers the episode (tick, or the silence removed)
            return
        ep.held = False
        if rec.event == "update" and not ep.notified_tags:
            # nobody heard of the episode yet (its earlier levels matched no route, or a silence held them):
            # told as a first warning, not as an update of one they never got
            rec = msgspec.structs.replace(rec, event="firing")
        self._queue(ep, rec, self._tags(ep, rec), reading_ns, now, ep.prev_level)

    def _tags(self, ep: Episode, rec: AlertRecord) -> tuple[str, ...]:
        """Who hears a firing or update not silenced: the routes matching it, everyone already warned (an update
        reaches them whatever its new level matches: they must not go on believing the old one) and --notify."""
        tags = {*self._router.tags_for(rec), *ep.notified_tags}
        if self._router.channels_for([EVERYTHING_TAG]):
            tags.add(EVERYTHING_TAG)
        return tuple(sorted(tags))

    def _release_held(self, now: int) -> None:
        """Send the current state of episodes whose changes a silence held back, once none covers them."""
        released = False
        for ep in self._store.active_episodes():
            if not ep.held:
                continue
            rec = ep.record("update" if ep.notified_tags else "firing", ep.last_ns)  # firing: nobody heard of it
            if self._silenced(rec, now):
                continue
            ep.held, released = False, True
            tags = self._tags(ep, rec)
            if ep.level != ep.notified_level or not set(tags) <= set(ep.notified_tags):
                # trend against what the recipients last heard; reading time 0: no latency to measure
                prev = ep.notified_level if ep.notified_level >= 0 else ep.prev_level
                self._queue(ep, rec, tags, 0, now, prev)
            self._store.save_episode(ep, active=True)
        if released:  # sent now when no group_wait holds it (tick flushes what falls due later)
            self._flush_due(now)

    def _queue(self, ep: Episode, rec: AlertRecord, tags: tuple[str, ...], reading_ns: int, now: int,
               prev_level: int) -> None:
        """Queue an event for the channels carrying ``tags`` in its group (all in the caller's transaction)."""
        if not tags or not self._router.channels_for(tags):
            return
        # At most one grouped event per alert: flushing the older one keeps each alert's events in order.
        for g in self._store.pending_groups_for_alert(rec.alert_id):
            self._flush_group(g, now)
        event = "lost" if measurement_lost(rec) else rec.event  # never in one message with all-clears
        gkey = "|".join([event, rec.hazard, rec.quantity, str(rec.level), ",".join(tags)])
        due = self._store.pending_group_due(gkey)
        if due is None:
            due = now + self._wait_ns(rec)
        self._store.add_pending(rec, gkey, due, tags, prev_level, reading_ns)
        if rec.event != "resolved":
            ep.notified_tags = sorted({*ep.notified_tags, *tags})
            ep.last_notified_ns = now
            ep.notified_level = rec.level

    def _flush_due(self, now: int) -> None:
        for g in self._store.due_groups(now):
            self._flush_group(g, now)

    def _flush_group(self, gkey: str, now: int) -> None:
        items = self._store.take_group(gkey)
        if not items:
            return
        events = [(p.record, p.prev_level) for p in items]
        first = items[0].record
        acks = {}  # who took the alert, in the messages that still go out after it (a fall, the all-clear)
        for r, _ in events:
            ep = self._store.episode(r.alert_id)
            if ep is not None and ep.acked_by:
                acks[r.alert_id] = (ep.acked_by, rfc3339(ep.acked_ns))
        title, body = render_event_message(events, self.config.language, self.exercise, self.config.public_url,
                                           aggregates=self.rule_aggregates, acks=acks,
                                           sensor_names=self.sensor_names)
        if first.event == "resolved" and not measurement_lost(first):
            ntype = "success"
        else:
            ntype = "failure" if first.level >= 3 or first.event == "resolved" else "warning"
        self._store.add_message(now, title, body, ntype, [f"{r.alert_id}/{r.seq}" for r, _ in events],
                                min(p.reading_ns for p in items), first.event,
                                self._router.channels_for(items[0].tags))
        self._queued = True

    def _enqueue_followup(self, kind: str, rec: AlertRecord, tags: tuple[str, ...], now: int) -> None:
        channels = self._router.channels_for(tags)
        if not channels:
            return
        title, body = render_followup_message(kind, rec, self.config.language, self.exercise,
                                              self.config.public_url, aggregates=self.rule_aggregates,
                                              sensor_names=self.sensor_names)
        self._store.add_message(now, title, body, "failure", [f"{rec.alert_id}/{rec.seq}"], 0, kind, channels)
        self._queued = True

    def _update_gauges(self) -> None:
        counts = _Counter((ep.hazard, ep.level) for ep in self._store.active_episodes())
        self._metrics.set_active(dict(counts))
        self._metrics.outbox_depth.set(self._store.outbox_depth())

    def _after_commit(self, records: list[AlertRecord]) -> None:
        """Wake the notifier first (latency), then the gauges; a batch that changed nothing skips both."""
        if not records and not self._queued:
            return
        self._queued = False
        self._notifier.wake()
        for rec in records:
            self._metrics.alert_events.labels(rec.event).inc()
        self._update_gauges()

    def _call_listeners(self, records: list[AlertRecord]) -> None:
        for rec in records:
            for cb in list(self.listeners):
                try:
                    cb(rec)
                except Exception:
                    log.exception("alert listener failed")
