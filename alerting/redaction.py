"""Channel URL secrets: resolving ${ENV_VAR} and url_file, and redacting URLs to service + host."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from alerting.config import ChannelConfig
from alerting.errors import ChannelSecretError

__all__ = ["redact_url", "resolve_channel_url"]

#: Schemes of network addresses (Kafka listeners, HTTP), never of tokens.
_HOST_SCHEMES = frozenset({"plaintext", "ssl", "tcp", "http", "https"})
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


def redact_url(url: str, keep_port: bool = False) -> str:
    """Service and host only, e.g. 'mailto://smtp.example.org'; safe for logs, metrics, errors and APIs.

    ``keep_port`` keeps the port of a host that is kept (for logs: which listener, e.g. librdkafka's
    ``ssl://kafka-1:9093/1`` becomes ``ssl://kafka-1:9093``); channel labels stay service + host.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,31}", scheme):
        return "invalid://"
    scheme = scheme.lower()
    if scheme in ("file", "console"):
        return f"{scheme}://"
    host, port = "", None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port if keep_port else None
    except ValueError:  # not a URL (no host), or a port out of range (the host stays)
        pass
    # Some services put tokens where a host would be (e.g. tgram://bottoken/...): keep only host-like names,
    # single-label ones (a compose service "kafka") only for schemes that always name a host.
    if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}|\[?[0-9a-fA-F:]+\]?", host) or (
        "." not in host and host != "localhost" and ":" not in host and scheme not in _HOST_SCHEMES
    ):
        host = ""
    if host and port is not None:
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"
