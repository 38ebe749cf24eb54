"""SQLite (WAL) backend of the alert state store: one file `alerts.sqlite3` under the state directory."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from alerting.episodes import Episode, EpisodeKey
from alerting.record import AlertRecord, decode_record, encode_record
from alerting.store import Delivery, Pending, Silence

__all__ = ["SCHEMA_VERSION", "SqliteAlertStore"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
  alert_id TEXT PRIMARY KEY, district TEXT NOT NULL, hazard TEXT NOT NULL, quantity TEXT NOT NULL,
  active INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS episodes_active_key ON episodes(district, hazard, quantity) WHERE active = 1;
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY, alert_id TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL,
  UNIQUE(alert_id, seq));
CREATE TABLE IF NOT EXISTS acks (alert_id TEXT NOT NULL, operator TEXT NOT NULL, time_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
  id INTEGER PRIMARY KEY, alert_id TEXT NOT NULL, group_key TEXT NOT NULL, due_ns INTEGER NOT NULL,
  record BLOB NOT NULL, tags TEXT NOT NULL, prev_level INTEGER NOT NULL, reading_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY, created_ns INTEGER NOT NULL, kind TEXT NOT NULL, title TEXT NOT NULL,
  body TEXT NOT NULL, notify_type TEXT NOT NULL, refs TEXT NOT NULL, reading_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
  id INTEGER PRIMARY KEY, message_id INTEGER NOT NULL REFERENCES messages(id), channel TEXT NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_ns INTEGER NOT NULL DEFAULT 0,
  sent_ns INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS deliveries_channel_pending ON deliveries(channel, state, id);
CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS silence_sharing (id TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
  topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset INTEGER NOT NULL, PRIMARY KEY(topic, part));
CREATE TABLE IF NOT EXISTS published (
  one INTEGER PRIMARY KEY CHECK (one = 1), upto INTEGER NOT NULL);
INSERT OR IGNORE INTO published VALUES (1, (SELECT COALESCE(MAX(id), 0) FROM events));
"""

_enc = msgspec.json.Encoder()
_ep_dec = msgspec.json.Decoder(Episode)
_sil_dec = msgspec.json.Decoder(Silence)
_list_dec = msgspec.json.Decoder(list[str])


class SqliteAlertStore:
    """One connection to the state file; create one per thread (SQLite connections are not shared)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives power loss
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self._depth = 0
        self._lock = threading.RLock()

    def user_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def set_user_version(self, v: int) -> None:
        self._db.execute(f"PRAGMA user_version={int(v)}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (nested calls join the outer transaction)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    # ---- episodes and events
    def episode_by_key(self, key: EpisodeKey) -> Episode | None:
        row = self._db.execute("SELECT data FROM episodes WHERE district=? AND hazard=? AND quantity=? "
                               "AND active=1", key).fetchone()
        return _ep_dec.decode(row[0]) if row else None

    def episode(self, alert_id: str) -> Episode | None:
        row = self._db.execute("SELECT data FROM episodes WHERE alert_id=?", (alert_id,)).fetchone()
        return _ep_dec.decode(row[0]) if row else None

    def episode_active(self, alert_id: str) -> bool:
        row = self._db.execute("SELECT active FROM episodes WHERE alert_id=?", (alert_id,)).fetchone()
        return bool(row and row[0])

    def active_episodes(self) -> list[Episode]:
        rows = self._db.execute("SELECT data FROM episodes WHERE active=1 ORDER BY rowid").fetchall()
        return [_ep_dec.decode(r[0]) for r in rows]

    def save_episode(self, ep: Episode, active: bool) -> None:
        self._db.execute(
            "INSERT INTO episodes(alert_id, district, hazard, quantity, active, data) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(alert_id) DO UPDATE SET active=excluded.active, data=excluded.data",
            (ep.alert_id, ep.district, ep.hazard, ep.quantity, int(active), _enc.encode(ep)))

    def add_event(self, record: AlertRecord) -> None:
        self._db.execute("INSERT INTO events(alert_id, seq, record) VALUES (?,?,?)",
                         (record.alert_id, record.seq, encode_record(record)))

    def last_event_id(self) -> int:
        """Row id of the newest event (0 when none): the mark to pass to ``mark_published``."""
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def unpublished_events(self) -> tuple[int, list[AlertRecord]]:
        """Events not yet recorded as published to the alerts topic, in order, and the newest one's id."""
        upto = int(self._db.execute("SELECT upto FROM published").fetchone()[0])
        rows = self._db.execute("SELECT id, record FROM events WHERE id > ? ORDER BY id", (upto,)).fetchall()
        return (rows[-1][0] if rows else upto), [decode_record(r[1]) for r in rows]

    def mark_published(self, upto_id: int) -> None:
        """Record every event up to ``upto_id`` as durably published (never moves back)."""
        self._db.execute("UPDATE published SET upto = MAX(upto, ?)", (upto_id,))

    def history(self, limit: int) -> list[AlertRecord]:
        rows = self._db.execute("SELECT record FROM events ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [decode_record(r[0]) for r in rows]

    def episode_history(self, alert_id: str) -> list[AlertRecord]:
        rows = self._db.execute("SELECT record FROM events WHERE alert_id=? ORDER BY seq", (alert_id,)).fetchall()
        return [decode_record(r[0]) for r in rows]

    def probe_write(self) -> None:
        """Take and release the write lock (readiness check)."""
        with self.transaction():
            self._db.execute("UPDATE offsets SET next_offset=next_offset WHERE 0")

    def add_ack(self, alert_id: str, operator: str, time_ns: int) -> None:
        self._db.execute("INSERT INTO acks VALUES (?,?,?)", (alert_id, operator, time_ns))

    # ---- grouping and outbox
    def add_pending(self, record: AlertRecord, group_key: str, due_ns: int, tags: tuple[str, ...],
                    prev_level: int, reading_ns: int) -> None:
        self._db.execute(
            "INSERT INTO pending(alert_id, group_key, due_ns, record, tags, prev_level, reading_ns) "
            "VALUES (?,?,?,?,?,?,?)",
            (record.alert_id, group_key, due_ns, encode_record(record), _enc.encode(list(tags)).decode(),
             prev_level, reading_ns))

    def pending_group_due(self, group_key: str) -> int | None:
        row = self._db.execute("SELECT MIN(due_ns) FROM pending WHERE group_key=?", (group_key,)).fetchone()
        return row[0]

    def pending_groups_for_alert(self, alert_id: str) -> list[str]:
        rows = self._db.execute("SELECT DISTINCT group_key FROM pending WHERE alert_id=?", (alert_id,))
        return [r[0] for r in rows]

    def due_groups(self, now_ns: int) -> list[str]:
        rows = self._db.execute("SELECT group_key, MIN(due_ns) d, MIN(id) i FROM pending GROUP BY group_key "
                                "HAVING d <= ? ORDER BY d, i", (now_ns,))
        return [r[0] for r in rows]

    def take_group(self, group_key: str) -> list[Pending]:
        rows = self._db.execute("SELECT id, alert_id, group_key, due_ns, record, tags, prev_level, reading_ns "
                                "FROM pending WHERE group_key=? ORDER BY id", (group_key,)).fetchall()
        self._db.execute("DELETE FROM pending WHERE group_key=?", (group_key,))
        return [Pending(r[0], r[1], r[2], r[3], decode_record(r[4]), tuple(_list_dec.decode(r[5])), r[6], r[7])
                for r in rows]

    def add_message(self, created_ns: int, title: str, body: str, notify_type: str, refs: list[str],
                    reading_ns: int, kind: str, channels: list[str]) -> int:
        cur = self._db.execute(
            "INSERT INTO messages(created_ns, kind, title, body, notify_type, refs, reading_ns) "
            "VALUES (?,?,?,?,?,?,?)",
            (created_ns, kind, title, body, notify_type, _enc.encode(refs).decode(), reading_ns))
        mid = int(cur.lastrowid or 0)
        self._db.executemany("INSERT INTO deliveries(message_id, channel, state) VALUES (?,?,'pending')",
                             [(mid, c) for c in channels])
        return mid

    _DELIVERY = ("SELECT d.id, d.message_id, d.channel, d.state, d.attempts, d.next_ns, m.created_ns, m.title, "
                 "m.body, m.notify_type, m.refs, m.reading_ns FROM deliveries d JOIN messages m "
                 "ON m.id = d.message_id ")

    @staticmethod
    def _delivery(r: tuple) -> Delivery:
        return Delivery(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], tuple(_list_dec.decode(r[10])),
                        r[11])

    def next_delivery(self, channel: str) -> Delivery | None:
        """The oldest pending delivery of a channel (strict FIFO keeps each alert's events in order)."""
        row = self._db.execute(self._DELIVERY + "WHERE d.channel=? AND d.state='pending' ORDER BY d.id LIMIT 1",
                               (channel,)).fetchone()
        return self._delivery(row) if row else None

    def mark_delivery(self, delivery_id: int, state: str, attempts: int, next_ns: int, error: str,
                      now_ns: int) -> None:
        self._db.execute("UPDATE deliveries SET state=?, attempts=?, next_ns=?, last_error=?, "
                         "sent_ns=CASE WHEN ?='sent' THEN ? ELSE sent_ns END WHERE id=?",
                         (state, attempts, next_ns, error, state, now_ns, delivery_id))

    def outbox_depth(self, channel: str | None = None) -> int:
        if channel is None:
            return int(self._db.execute("SELECT COUNT(*) FROM deliveries WHERE state='pending'").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM deliveries WHERE state='pending' AND channel=?",
                                    (channel,)).fetchone()[0])

    def deliveries(self, state: str | None = None) -> Iterator[Delivery]:
        if state is None:
            rows = self._db.execute(self._DELIVERY + "ORDER BY d.id").fetchall()
        else:
            rows = self._db.execute(self._DELIVERY + "WHERE d.state=? ORDER BY d.id", (state,)).fetchall()
        return iter([self._delivery(r) for r in rows])

    # ---- silences and offsets
    def silences(self) -> list[Silence]:
        return [_sil_dec.decode(r[0]) for r in self._db.execute("SELECT data FROM silences ORDER BY rowid")]

    def put_silence(self, s: Silence) -> None:
        self._db.execute("INSERT INTO silences(id, data) VALUES (?,?) ON CONFLICT(id) DO UPDATE SET "
                         "data=excluded.data", (s.id, _enc.encode(s)))

    def delete_silence(self, silence_id: str) -> bool:
        return self._db.execute("DELETE FROM silences WHERE id=?", (silence_id,)).rowcount > 0

    def set_silence_sharing(self, silence_id: str, state: str | None) -> None:
        if state is None:
            self._db.execute("DELETE FROM silence_sharing WHERE id=?", (silence_id,))
        else:
            self._db.execute("INSERT INTO silence_sharing VALUES (?,?) ON CONFLICT(id) DO UPDATE SET "
                             "state=excluded.state", (silence_id, state))

    def silence_sharing(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT id, state FROM silence_sharing"))

    def offsets(self) -> dict[tuple[str, int], int]:
        return {(t, p): o for t, p, o in self._db.execute("SELECT topic, part, next_offset FROM offsets")}

    def set_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        self._db.executemany(
            "INSERT INTO offsets VALUES (?,?,?) ON CONFLICT(topic, part) DO UPDATE SET next_offset="
            "MAX(next_offset, excluded.next_offset)", [(t, p, o) for (t, p), o in offsets.items()])
