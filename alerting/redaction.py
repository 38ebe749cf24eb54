"""Channel URL secrets: resolving ${ENV_VAR} and url_file, and redacting URLs to service + host."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from alerting.config import ChannelConfig
from alerting.errors import ChannelSecretError

__all__ = ["RedactingLogFilter", "redact_text", "redact_url", "resolve_channel_url"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_channel_url(channel: ChannelConfig, environ: Mapping[str, str]) -> str:
    """The channel's real URL with ${VAR} substituted; errors name the variable or file, never the URL."""
    if channel.url_file:
        try:
            raw = Path(channel.url_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ChannelSecretError(channel.name, f"cannot read url_file {channel.url_file}: "
                                                   f"{exc.strerror}") from None
    else:
        raw = channel.url

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in environ:
            raise ChannelSecretError(channel.name, f"environment variable {name} is not set")
        return environ[name]

    url = _VAR.sub(sub, raw)
    if "://" not in url:
        raise ChannelSecretError(channel.name, "resolved value is not a URL")
    return url


def redact_url(url: str) -> str:
    """Service and host only, e.g. 'mailto://smtp.example.org'; safe for logs, metrics, errors and APIs."""
    scheme, sep, _ = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,31}", scheme):
        return "invalid://"
    scheme = scheme.lower()
    if scheme in ("file", "console"):
        return f"{scheme}://"
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    # Some services put tokens where a host would be (e.g. tgram://bottoken/...): keep only host-like names.
    if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}|\[?[0-9a-fA-F:]+\]?", host) or (
        "." not in host and host != "localhost" and ":" not in host
    ):
        host = ""
    return f"{scheme}://{host}"


_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s'\"<>]*")


def redact_text(text: str) -> str:
    """Every URL inside a text replaced by its redacted form (service + host)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


class RedactingLogFilter(logging.Filter):
    """Rewrites log records so no URL (hence no channel secret) passes; attach to handlers or the apprise logger.

    apprise's own "privacy" masking keeps the first and last character of passwords and the full query
    string; this filter reduces every URL to service + host instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
