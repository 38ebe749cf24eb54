"""Configuration of the alerting stage: grouping, channels, routes, silences (the `[alerting]` TOML section)."""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

from stadtwacht.durations import parse_duration

__all__ = [
    "AlertingConfig",
    "ChannelConfig",
    "GroupRule",
    "RouteConfig",
    "SilenceConfig",
    "validate",
]

_HAZARDS = ("", "flood", "air", "sensor")
_EVENTS = ("firing", "update", "resolved")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class GroupRule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A group_wait override: the first rule whose hazard and min_level match an event sets its wait."""

    # Hazard the rule applies to ("flood", "air", "sensor"); empty matches every hazard.
    hazard: str = ""
    # Lowest level the rule applies to (inclusive).
    min_level: int = 1
    # How long to collect events of the same hazard, event and level into one message ("0s" = send at once).
    wait: str = "30s"


class ChannelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One notification channel: an apprise URL (or file://, console://) with routing tags."""

    # Channel name, used in logs and the API (never the URL).
    name: str = ""
    # apprise URL; may reference secrets as ${ENV_VAR}. Never logged. Give either url or url_file.
    url: str = ""
    # Path of a file whose content (stripped) is the URL; for Kubernetes Secrets / Docker secrets.
    url_file: str = ""
    # Tags routes select this channel by, e.g. ["control-room"].
    tags: list[str] = []
    # Minimum time between two sends on this channel; "" keeps apprise's per-service default
    # (e.g. 5.5 s for e-mail, which makes a backlog of 20 mails take ~2 minutes).
    min_interval: str = ""


class RouteConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A routing rule: events matching hazard/level/district/event go to the channels with `tags`."""

    # Hazard to match; empty matches every hazard.
    hazard: str = ""
    # Lowest level to match (inclusive); the all-clear (level 0) is routed to those warned, not by routes.
    min_level: int = 1
    # Highest level to match (inclusive).
    max_level: int = 99
    # District ids to match; empty matches every district.
    districts: list[str] = []
    # Events to match ("firing", "update"); empty matches both.
    events: list[str] = []
    # Channel tags to notify.
    tags: list[str] = []
    # Keep evaluating later routes after this one matched (like Alertmanager's `continue`).
    continue_: bool = msgspec.field(default=False, name="continue")
    # Escalate when a firing alert matched by this route is not acknowledged within this time ("" = never).
    escalate_after: str = ""
    # Channel tags notified on escalation (they also receive the all-clear).
    escalate_tags: list[str] = []


class SilenceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A static maintenance window: matching events are recorded but not notified."""

    # Stable id of the silence (to reference it in logs and the API).
    id: str = ""
    # District ids silenced; empty with empty sensors means every district.
    districts: list[str] = []
    # Sensor ids silenced (an event is silenced when any of its sensors is listed).
    sensors: list[str] = []
    # Hazard silenced; empty means every hazard.
    hazard: str = ""
    # Start of the window, RFC 3339 with offset (empty = always started).
    starts: str = ""
    # End of the window, RFC 3339 with offset (empty = never ends).
    ends: str = ""
    # Why (shown in the API).
    comment: str = ""
    # The highest level it covers: a change to a higher level breaks through and is notified (absent: every level).
    max_level: int | None = None


def _default_group_rules() -> list[GroupRule]:
    return [GroupRule(hazard="flood", min_level=3, wait="0s")]


class AlertingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[alerting]` section."""

    # Default time to collect a burst of events (same hazard, event, level) into one message.
    group_wait: str = "30s"
    # Overrides of group_wait, first match wins; default: the top flood levels (>= 3) are sent at once.
    group_rules: list[GroupRule] = msgspec.field(default_factory=_default_group_rules)
    # Reminder interval for firing alerts nobody acknowledged ("" or "0s" = no reminders).
    repeat_interval: str = "4h"
    # Message language: "de" (default) or "en".
    language: str = "de"
    # Notification channels ([[alerting.channels]]).
    channels: list[ChannelConfig] = []
    # Routing rules ([[alerting.routes]]), evaluated in order; with no routes every channel gets everything.
    routes: list[RouteConfig] = []
    # Static maintenance windows ([[alerting.silences]]).
    silences: list[SilenceConfig] = []
    # Public base URL of the web page, linked in messages ("" = no link).
    public_url: str = ""
    # First retry delay of a failed send; doubles on every further failure.
    retry_initial: str = "1s"
    # Upper bound of the retry delay.
    retry_max: str = "5m"
    # Give up a delivery (outcome "expired") when it could not be sent for this long.
    max_retry_age: str = "24h"


def _check_duration(problems: list[tuple[str, str]], key: str, text: str, allow_empty: bool = False) -> None:
    if allow_empty and text == "":
        return
    try:
        if parse_duration(text) < 0:
            problems.append((key, "must not be negative"))
    except ValueError as exc:
        problems.append((key, str(exc)))


def _check_time(problems: list[tuple[str, str]], key: str, text: str) -> None:
    if text == "":
        return
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        problems.append((key, f"not an RFC 3339 time: {text!r}"))
        return
    if t.tzinfo is None:
        problems.append((key, "needs a UTC offset, e.g. 2025-01-01T00:00:00+01:00"))


def validate(cfg: AlertingConfig) -> list[tuple[str, str]]:
    """Semantic problems of an alerting configuration as (dotted key, message); empty when fine."""
    p: list[tuple[str, str]] = []
    for key in ("group_wait", "retry_initial", "retry_max", "max_retry_age"):
        _check_duration(p, f"alerting.{key}", getattr(cfg, key))
    _check_duration(p, "alerting.repeat_interval", cfg.repeat_interval, allow_empty=True)
    if cfg.language not in ("de", "en"):
        p.append(("alerting.language", f"must be 'de' or 'en', not {cfg.language!r}"))
    if cfg.public_url and not cfg.public_url.startswith(("http://", "https://")):
        p.append(("alerting.public_url", "must start with http:// or https://"))
    for i, g in enumerate(cfg.group_rules):
        k = f"alerting.group_rules[{i}]"
        if g.hazard not in _HAZARDS:
            p.append((f"{k}.hazard", f"unknown hazard {g.hazard!r}"))
        _check_duration(p, f"{k}.wait", g.wait)
    names: set[str] = set()
    tags: set[str] = set()
    for i, c in enumerate(cfg.channels):
        k = f"alerting.channels[{i}]"
        if not _NAME.match(c.name):
            p.append((f"{k}.name", "required: 1-64 letters, digits, '_', '-', '.'"))
        elif c.name in names:
            p.append((f"{k}.name", f"duplicate channel name {c.name!r}"))
        names.add(c.name)
        if bool(c.url) == bool(c.url_file):
            p.append((f"{k}.url", "give exactly one of url and url_file"))
        elif c.url and "://" not in c.url and "${" not in c.url:
            # Never echo the URL: it may hold a secret.
            p.append((f"{k}.url", "not a URL (expected scheme://...)"))
        if not c.tags:
            p.append((f"{k}.tags", "at least one tag is needed for routing"))
        _check_duration(p, f"{k}.min_interval", c.min_interval, allow_empty=True)
        tags.update(c.tags)
    for i, r in enumerate(cfg.routes):
        k = f"alerting.routes[{i}]"
        if r.hazard not in _HAZARDS:
            p.append((f"{k}.hazard", f"unknown hazard {r.hazard!r}"))
        if r.min_level < 1:
            p.append((f"{k}.min_level", "must be >= 1 (the all-clear goes to those warned)"))
        if r.max_level < r.min_level:
            p.append((f"{k}.max_level", "must be >= min_level"))
        for e in r.events:
            if e not in ("firing", "update"):
                p.append((f"{k}.events", f"unknown event {e!r} (firing, update)"))
        if not r.tags:
            p.append((f"{k}.tags", "at least one tag"))
        for t in [*r.tags, *r.escalate_tags]:
            if t not in tags:
                p.append((f"{k}.tags", f"no channel has tag {t!r}"))
        _check_duration(p, f"{k}.escalate_after", r.escalate_after, allow_empty=True)
        if r.escalate_after and not r.escalate_tags:
            p.append((f"{k}.escalate_tags", "needed with escalate_after"))
    ids: set[str] = set()
    for i, s in enumerate(cfg.silences):
        k = f"alerting.silences[{i}]"
        if not s.id:
            p.append((f"{k}.id", "required"))
        elif s.id in ids:
            p.append((f"{k}.id", f"duplicate silence id {s.id!r}"))
        ids.add(s.id)
        if s.hazard not in _HAZARDS:
            p.append((f"{k}.hazard", f"unknown hazard {s.hazard!r}"))
        _check_time(p, f"{k}.starts", s.starts)
        _check_time(p, f"{k}.ends", s.ends)
        if s.max_level is not None and s.max_level < 1:
            p.append((f"{k}.max_level", "must be >= 1 (a silence of level 0 would hold back nothing)"))
    return p
