"""Helpers of the operations tests: a loopback webhook receiver with secrets in its URL, the ops configuration."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = [
    "API_TOKEN",
    "WEBHOOK_PASSWORD",
    "WEBHOOK_PATH_SECRET",
    "WebhookReceiver",
    "gauge_registry",
    "iso",
    "ops_config",
]

#: Fake secrets: each must never appear in /metrics, /readyz or a log line.
WEBHOOK_PASSWORD = "pw-Xq7vS3cretHook"
WEBHOOK_PATH_SECRET = "tok-9fK2PathSecret"
API_TOKEN = "api-Zz81TokenSecret"


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 recording every POST (apprise ``json://`` sends one per notification)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.posts: list[dict] = []
        self.delay = delay_s
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.posts.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                           "body": json.loads(body or b"null")})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self) -> str:
        """The apprise URL with a password and a secret path segment (what a real webhook would carry)."""
        return f"json://watch:{WEBHOOK_PASSWORD}@127.0.0.1:{self.port}/hook/{WEBHOOK_PATH_SECRET}"

    def config_url(self) -> str:
        """The same URL as written in the TOML: the secrets as ${VAR} references (see ``secret_env``)."""
        return f"json://watch:${{OPS_HOOK_PASSWORD}}@127.0.0.1:{self.port}/hook/${{OPS_HOOK_TOKEN}}"

    @staticmethod
    def secret_env() -> dict[str, str]:
        return {"OPS_HOOK_PASSWORD": WEBHOOK_PASSWORD, "OPS_HOOK_TOKEN": WEBHOOK_PATH_SECRET,
                "OPS_API_TOKEN": API_TOKEN}

    def count(self) -> int:
        with self._lock:
            return len(self.posts)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def gauge_registry(path: Path, gauges: list[tuple[str, str]]) -> Path:
    """A sensor registry CSV of trusted flood gauges (sensor id, district)."""
    rows = ["sensor_id,name,hazard,lat,lon,impact,trusted"]
    rows += [f"{g},Gauge {g},flood,48.78,9.18,{d},true" for g, d in gauges]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def ops_config(path: Path, prefix: str, webhook_url: str, *, extra: str = "", max_poll_records: int = 500,
               retry_initial: str = "200ms") -> Path:
    """A run configuration on unique topics with one webhook channel (``WebhookReceiver.config_url``).

    One gauge rule (level 1 at 300 cm, no window): a reading of 350 cm fires, 100 cm resolves.
    ``late_tolerance = "0s"`` keeps the warm-up re-read after a restart to the last batch.
    """
    path.write_text(f"""
[kafka]
group_id = "{prefix}-group"
topics = ["{prefix}.flood", "{prefix}.air"]
community_topics = ["{prefix}.community"]
alerts_topic = "{prefix}.alerts"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_records = {max_poll_records}

[detection]
late_tolerance = "0s"

[[rules]]
name = "gauge-ops"
quantity = "water_level"
sensors = ["pegel-*"]
window = "0s"
aggregate = "last"
levels = [300.0]
level_names = ["Meldebeginn"]

[alerting]
group_wait = "0s"
retry_initial = "{retry_initial}"

[[alerting.channels]]
name = "ops-webhook"
url = "{webhook_url}"
tags = ["control-room"]

[http]
api_token_env = "OPS_API_TOKEN"
{extra}
""", encoding="utf-8")
    return path
