"""The one exception root of stadtwacht; each stage package derives its own from it."""

__all__ = ["StadtwachtError"]


class StadtwachtError(Exception):
    """Root of every error stadtwacht raises on purpose."""
