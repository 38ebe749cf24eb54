"""Opening the alert state after a start or crash: schema check and a report of what was left pending."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from alerting.errors import StateStoreError
from alerting.sqlite_store import SCHEMA_VERSION, SqliteAlertStore

__all__ = ["STATE_FILE", "RecoveryReport", "open_store"]

STATE_FILE = "alerts.sqlite3"


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What a (re)start found: work the notifier resumes and the offsets the lead may skip."""

    active_episodes: int
    pending_events: int  # still inside their group_wait
    pending_deliveries: int  # outbox rows not yet recorded as sent
    offsets: dict[tuple[str, int], int]


def open_store(state_dir: Path) -> tuple[SqliteAlertStore, RecoveryReport]:
    """Open (or create) the state under state_dir; SQLite's WAL replay restores the last commit."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    try:
        store = SqliteAlertStore(path)
        version = store.user_version()
        if version > SCHEMA_VERSION:
            store.close()
            raise StateStoreError(str(path), f"schema version {version} is newer than {SCHEMA_VERSION}")
        if version < SCHEMA_VERSION:
            store.set_user_version(SCHEMA_VERSION)
        ok = store._db.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise StateStoreError(str(path), f"integrity check failed: {ok}")
        report = RecoveryReport(
            active_episodes=len(store.active_episodes()),
            pending_events=int(store._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]),
            pending_deliveries=store.outbox_depth(),
            offsets=store.offsets(),
        )
    except sqlite3.DatabaseError as exc:
        raise StateStoreError(str(path), str(exc)) from None
    return store, report
