"""Exceptions of the alerting stage (all derive from StadtwachtError and carry data)."""

from __future__ import annotations

from stadtwacht.errors import StadtwachtError

__all__ = ["AckOutdatedError", "AlertingError", "ChannelSecretError", "StateStoreError", "UnknownAlertError"]


class AlertingError(StadtwachtError):
    """Root of the alerting stage's errors."""


class ChannelSecretError(AlertingError):
    """A channel URL could not be resolved; carries the channel name and the redacted reason only."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"channel {channel!r}: {reason}")
        self.channel = channel
        self.reason = reason


class StateStoreError(AlertingError):
    """The alert state store is unusable (e.g. a newer schema or a corrupt file)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"alert state {path}: {reason}")
        self.path = path
        self.reason = reason


class UnknownAlertError(AlertingError):
    """An ack or silence referenced an alert or silence id that does not exist."""

    def __init__(self, ident: str) -> None:
        super().__init__(f"unknown id {ident!r}")
        self.ident = ident


class AckOutdatedError(AlertingError):
    """An acknowledgement of a level the alert has since risen above: the new level was not seen yet."""

    def __init__(self, ident: str, acked_level: int, level: int, level_name: str) -> None:
        super().__init__(f"the level of {ident!r} rose to {level} ({level_name}) since level {acked_level}: "
                         "acknowledge the new level")
        self.ident = ident
        self.acked_level = acked_level
        self.level = level
        self.level_name = level_name
