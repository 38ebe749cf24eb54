"""Benchmarks: ``make bench`` (``python -m bench``) writes one JSON document of figures."""
