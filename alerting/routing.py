"""Routing: which channel tags an alert event goes to, and which channels carry those tags."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from alerting.config import RouteConfig
from alerting.record import AlertRecord
from stadtwacht.durations import parse_duration

__all__ = ["Route", "Router"]


@dataclass(frozen=True, slots=True)
class Route:
    """A validated routing rule (the runtime form of RouteConfig)."""

    index: int
    hazard: str
    min_level: int
    max_level: int
    districts: frozenset[str]
    events: frozenset[str]
    tags: tuple[str, ...]
    cont: bool
    escalate_after_ns: int  # 0 = no escalation
    escalate_tags: tuple[str, ...]

    @classmethod
    def from_config(cls, index: int, r: RouteConfig) -> Route:
        return cls(index, r.hazard, r.min_level, r.max_level, frozenset(r.districts), frozenset(r.events),
                   tuple(r.tags), r.continue_, parse_duration(r.escalate_after) if r.escalate_after else 0,
                   tuple(r.escalate_tags))

    def matches(self, rec: AlertRecord) -> bool:
        return ((not self.hazard or self.hazard == rec.hazard)
                and self.min_level <= rec.level <= self.max_level
                and (not self.districts or bool(self.districts & set(rec.districts)))
                and (not self.events or rec.event in self.events))


class Router:
    """Ordered routes, first match wins unless it says `continue`; no routes at all = every channel."""

    def __init__(self, routes: Iterable[RouteConfig], channel_tags: Mapping[str, tuple[str, ...]]) -> None:
        self.routes = [Route.from_config(i, r) for i, r in enumerate(routes)]
        self.channel_tags = dict(channel_tags)

    def match(self, rec: AlertRecord) -> list[Route]:
        """The routes a firing/update event matches (the all-clear is not routed: it goes to those warned)."""
        out: list[Route] = []
        for r in self.routes:
            if r.matches(rec):
                out.append(r)
                if not r.cont:
                    break
        return out

    def tags_for(self, rec: AlertRecord) -> tuple[str, ...]:
        if not self.routes:
            return tuple(sorted({t for tags in self.channel_tags.values() for t in tags}))
        return tuple(sorted({t for r in self.match(rec) for t in r.tags}))

    def channels_for(self, tags: Iterable[str]) -> list[str]:
        """Channel names carrying any of the tags, in configuration order."""
        want = set(tags)
        return [name for name, ctags in self.channel_tags.items() if want & set(ctags)]
