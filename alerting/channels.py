"""Notification channels: apprise URLs, plus `file://` (JSON Lines, demo) and `console://` which apprise lacks.

Every send returns a `SendOutcome` telling success, retryable failure and permanent failure apart; error texts
never contain the channel URL (only the redacted service + host).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import apprise

from alerting.config import AlertingConfig
from alerting.errors import ChannelSecretError
from alerting.redaction import redact_url, resolve_channel_url
from stadtwacht.durations import parse_duration

__all__ = [
    "AppriseChannel",
    "BrokenChannel",
    "Channel",
    "ConsoleChannel",
    "FileChannel",
    "SendOutcome",
    "build_channels",
    "make_channel",
]


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """Result of one send: ok, or a failure that is worth retrying or not."""

    ok: bool
    retryable: bool = False
    error: str = ""  # safe to log: never contains the URL or a secret


class Channel(Protocol):
    """A named destination with routing tags."""

    name: str
    label: str  # redacted service + host, for metrics and logs
    tags: tuple[str, ...]

    def send(self, title: str, body: str, notify_type: str) -> SendOutcome: ...


class AppriseChannel:
    """Any apprise URL (mailto://, json://, ntfy://, ...); one apprise object per channel and worker."""

    def __init__(self, name: str, url: str, tags: tuple[str, ...], timeout_s: float = 30.0,
                 min_interval_s: float | None = None) -> None:
        self.name, self.tags, self.label = name, tags, redact_url(url)
        self._timeout = timeout_s
        self._apprise = apprise.Apprise()
        self._valid = bool(self._apprise.add(url))
        if min_interval_s is not None:
            for plugin in self._apprise:
                plugin.request_rate_per_sec = min_interval_s  # apprise's own throttle between sends

    def send(self, title: str, body: str, notify_type: str) -> SendOutcome:
        if not self._valid:
            return SendOutcome(False, retryable=False, error=f"{self.label}: apprise rejected the URL")
        try:
            result = self._apprise.notify(body=body, title=title, notify_type=notify_type,
                                          body_format=apprise.NotifyFormat.TEXT, timeout=self._timeout)
        except Exception as exc:
            return SendOutcome(False, retryable=True, error=f"{self.label}: {type(exc).__name__}")
        if result:
            return SendOutcome(True)
        status = getattr(getattr(result, "status", None), "name", "FAILURE")
        return SendOutcome(False, retryable=True, error=f"{self.label}: {status}")


class FileChannel:
    """`file:///path/alerts.jsonl`: appends one JSON object per message (demo and tests)."""

    def __init__(self, name: str, url: str, tags: tuple[str, ...]) -> None:
        self.name, self.tags, self.label = name, tags, redact_url(url)
        self.path = Path(unquote(urlsplit(url).path))
        self._lock = threading.Lock()

    def send(self, title: str, body: str, notify_type: str) -> SendOutcome:
        line = json.dumps({"channel": self.name, "type": notify_type, "title": title, "body": body},
                          ensure_ascii=False)
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
        except OSError as exc:
            return SendOutcome(False, retryable=True, error=f"{self.label}: {exc.strerror}")
        return SendOutcome(True)


class ConsoleChannel:
    """`console://` (stdout) or `console://stderr`: the message as plain text."""

    def __init__(self, name: str, url: str, tags: tuple[str, ...]) -> None:
        self.name, self.tags, self.label = name, tags, redact_url(url)
        self._stream = sys.stderr if urlsplit(url).netloc == "stderr" else sys.stdout

    def send(self, title: str, body: str, notify_type: str) -> SendOutcome:
        try:
            self._stream.write(f"== {title}\n{body}\n\n")
            self._stream.flush()
        except (OSError, ValueError) as exc:
            return SendOutcome(False, retryable=True, error=f"{self.label}: {type(exc).__name__}")
        return SendOutcome(True)


class BrokenChannel:
    """A channel whose URL could not be resolved: every send fails permanently. The service still starts
    (the other channels keep warning) and says so at once: an ERROR log and ``stadtwacht_channels_unusable``."""

    def __init__(self, name: str, tags: tuple[str, ...], reason: str) -> None:
        self.name, self.tags, self.label, self.reason = name, tags, "invalid://", reason

    def send(self, title: str, body: str, notify_type: str) -> SendOutcome:
        return SendOutcome(False, retryable=False, error=self.reason)


def make_channel(name: str, url: str, tags: tuple[str, ...], min_interval_s: float | None = None) -> Channel:
    """A channel for a resolved URL."""
    scheme = url.partition("://")[0].lower()
    if scheme == "file":
        return FileChannel(name, url, tags)
    if scheme == "console":
        return ConsoleChannel(name, url, tags)
    return AppriseChannel(name, url, tags, min_interval_s=min_interval_s)


def build_channels(cfg: AlertingConfig, environ: Mapping[str, str]) -> dict[str, Channel]:
    """name -> channel for every configured channel; unresolvable secrets give a permanently failing channel."""
    out: dict[str, Channel] = {}
    for c in cfg.channels:
        tags = tuple(c.tags)
        try:
            interval = parse_duration(c.min_interval) / 1e9 if c.min_interval else None
            out[c.name] = make_channel(c.name, resolve_channel_url(c, environ), tags, interval)
        except ChannelSecretError as exc:
            out[c.name] = BrokenChannel(c.name, tags, str(exc))
    return out
