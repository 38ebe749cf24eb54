"""Logging: human-readable by default, JSON lines by option; secrets never reach a log line."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from alerting.redaction import redact_url

__all__ = ["redact_text", "setup_logging"]


_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,31}://[^\s'\"<>]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+|(?:token|password|passwd|secret)\s*[=:]\s*)[^\s'\",;&]+")


def redact_text(text: str) -> str:
    """Every URL cut to service, host and port, every bearer/token/password value masked."""
    text = _URL.sub(lambda m: redact_url(m.group(0), keep_port=True), text)
    return _BEARER.sub(lambda m: f"{m.group(1)}***", text)


class _Redacting(logging.Filter):
    """Masks anything that looks like a credential (user:password@, tokens in paths and query strings), in
    our records and in those of apprise and the Kafka clients alike: apprise's own "privacy" masking keeps
    the first and last character of passwords and the whole query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


class _OncePerTopic(logging.Filter):
    """kafka-python logs "Topic X not found in cluster metadata" at ERROR with every metadata refresh while a topic
    its client asked about is missing, about ten a second (the producer keeps asking after one failed send to it).
    One line per topic every ``every_s`` seconds is let through: the runner's own ERROR line says what a missing
    output topic means, and /readyz names it."""

    def __init__(self, every_s: float = 300.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[object, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "Topic %s not found in cluster metadata" or not record.args:
            return True
        topic = record.args[0] if isinstance(record.args, tuple) else record.args
        now = time.monotonic()
        if now - self._last.get(topic, -self.every_s) < self.every_s:
            return False
        self._last[topic] = now
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Redacting())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kafka", "apprise"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    cluster = logging.getLogger("kafka.cluster")
    cluster.filters = [f for f in cluster.filters if not isinstance(f, _OncePerTopic)] + [_OncePerTopic()]
    # urllib3 logs request lines and retried paths ("POST /hook/<token>"): webhook tokens live in paths
    logging.getLogger("urllib3").setLevel(max(logging.ERROR, root.level))
