"""`stadtwacht silence list|add|remove`: edit silences in a state directory (a running service picks them up);
with several instances the change is also handed to the others (``share``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable

from alerting.config import AlertingConfig
from alerting.episodes import rfc3339
from alerting.recovery import STATE_FILE, open_store
from alerting.store import DELETED, Silence
from alerting.templates import clean
from stadtwacht.durations import parse_duration

__all__ = ["silence_command"]


def silence_command(cfg: AlertingConfig, args: argparse.Namespace,
                    share: Callable[[str, Silence | None], None] | None = None) -> int:
    """Run one silence action; prints JSON; exit code 0 on success, 2 on a usage error, 1 if not found or
    not shared. ``share`` hands a silence added (None: removed) here to the other instances."""
    if share is None and not (args.state_dir / STATE_FILE).is_file():  # mistyped: no service would read it
        print(f"silence: no alert state in {args.state_dir} (give the --state-dir of the service)", file=sys.stderr)
        return 2
    store, _ = open_store(args.state_dir)
    try:
        if args.action == "list":
            for s in store.silences():
                print(json.dumps({"id": s.id, "districts": list(s.districts), "sensors": list(s.sensors),
                                  "hazard": s.hazard, "max_level": s.max_level, "starts": rfc3339(s.starts_ns),
                                  "ends": rfc3339(s.ends_ns) if s.ends_ns else None, "comment": s.comment,
                                  "created_by": s.created_by, "source": s.source}, ensure_ascii=False))
            return 0
        if args.action == "add":
            if not (args.district or args.sensor):
                print("silence add: give --district or --sensor", file=sys.stderr)
                return 2
            max_level = getattr(args, "max_level", None)
            if max_level is not None and max_level < 1:
                print("silence add: --max-level must be at least 1 (leave it out: every level)", file=sys.stderr)
                return 2
            try:
                duration = 0 if args.duration == "forever" else parse_duration(args.duration)
                if args.duration != "forever" and duration <= 0:
                    raise ValueError(f"duration {args.duration!r} must be positive (\"forever\": until removed)")
            except ValueError as exc:
                print(f"silence add: {exc}", file=sys.stderr)
                return 2
            now = time.time_ns()
            s = Silence(id=uuid.uuid4().hex[:12], districts=tuple(args.district), sensors=tuple(args.sensor),
                        hazard="", starts_ns=now,
                        ends_ns=now + duration if duration else 0, comment=clean(args.comment, 500),
                        created_by=clean(args.operator, 100), source="cli", max_level=max_level)
            with store.transaction():
                store.put_silence(s)
            out = {"id": s.id, "ends": rfc3339(s.ends_ns) if s.ends_ns else None}
            status = _shared(out, share, s.id, s)
            print(json.dumps(out))
            return status
        if args.action == "remove":
            if not args.id:
                print("silence remove: give --id", file=sys.stderr)
                return 2
            with store.transaction():
                ok = store.delete_silence(args.id)
                if ok and share is not None:  # until the service on this state directory reads the tombstone
                    store.set_silence_sharing(args.id, DELETED)
            if not ok:
                print(f"silence remove: no silence {args.id!r}", file=sys.stderr)
                return 1
            out = {"deleted": args.id}
            status = _shared(out, share, args.id, None)
            print(json.dumps(out))
            return status
        print(f"unknown action {args.action!r}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _shared(out: dict, share: Callable[[str, Silence | None], None] | None, silence_id: str,
            silence: Silence | None) -> int:
    """Hand the change to the other instances, noted in ``out``; the exit code (1: done here only)."""
    if share is None:
        return 0
    try:
        share(silence_id, silence)
    except Exception as exc:  # the broker: the operator must know the other instances did not get it
        out.update(shared=False, warning=f"done in this state directory only: sharing it with the other instances "
                                         f"failed ({type(exc).__name__}: {exc}); the service running on this state "
                                         f"directory shares it once the broker takes it")
        print(out["warning"], file=sys.stderr)
        return 1
    out["shared"] = True
    return 0
