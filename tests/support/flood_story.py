"""The three-message flood story of the delivery tests: a reading under the level, a message that cannot be
decoded (one dead letter) and a reading over it (one alert), so one batch needs every output topic."""

from __future__ import annotations

import time

from tests.reliability.harness import reading
from tests.support.kafka_topics import producer

__all__ = ["FLOOD_STORY_KEY", "flood_story", "produce_flood_story"]

#: The key (and sensor id) of every message of the story: the flood setup's first gauge (``harness.write_flood_setup``).
FLOOD_STORY_KEY = b"pegel-0"


def flood_story(t0_ns: int | None = None) -> list[bytes]:
    """pegel-0 at 300 cm at ``t0_ns`` (default: ten minutes ago), ``{not json``, pegel-0 at 500 cm a second later."""
    t0 = time.time_ns() - 600 * 10**9 if t0_ns is None else t0_ns
    return [reading("pegel-0", t0, 300.0), b"{not json", reading("pegel-0", t0 + 10**9, 500.0)]


def produce_flood_story(bootstrap: str, topic: str, **opts) -> None:
    """The story on ``topic`` (keyed ``FLOOD_STORY_KEY``), flushed; ``opts`` as for ``kafka_topics.producer``."""
    prod = producer(bootstrap, **opts)
    try:
        for value in flood_story():
            prod.send(topic, key=FLOOD_STORY_KEY, value=value)
        prod.flush()
    finally:
        prod.close()
