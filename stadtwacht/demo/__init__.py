"""``stadtwacht demo``'s scenario simulator: realistic Stuttgart stories published to Kafka."""

from pathlib import Path as _Path

from stadtwacht.demo.scenarios import DEFAULT_SPEED, SCENARIOS, STORY_SIM_SECONDS, STORY_WALL_SECONDS
from stadtwacht.demo.simulator import DEFAULT_TOPICS, SimulationStats, Simulator

#: The demo's sensor registry (geodata's CSV format), shipped beside this file.
DEMO_SENSORS_CSV = _Path(__file__).with_name("demo_sensors.csv")

__all__ = ["DEFAULT_SPEED", "DEFAULT_TOPICS", "DEMO_SENSORS_CSV", "SCENARIOS", "STORY_SIM_SECONDS",
           "STORY_WALL_SECONDS", "SimulationStats", "Simulator"]
