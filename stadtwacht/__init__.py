"""stadtwacht: composition package (CLI, configuration, wiring of the stages)."""

__version__ = "0.1.0"
