"""Helpers for alerting tests: real SMTP and HTTP receivers on 127.0.0.1, level builders, fake clock."""

from __future__ import annotations

import json
import socket
import threading
import time
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from alerting.config import AlertingConfig, ChannelConfig, RouteConfig
from geodata.levels import DistrictLevel

T0 = 1_750_000_000_000_000_000  # 2025-06-15T15:06:40Z
S = 1_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def level(district: str, lv: int, *, hazard: str = "flood", quantity: str = "water_level", t: int = T0,
          value: float | None = None, name: str | None = None, sensors: tuple[str, ...] = ("pegel-1",),
          level_name: str | None = None) -> DistrictLevel:
    """A DistrictLevel for tests (names default to the id title-cased)."""
    names = {0: "normal", 1: "Vorwarnung", 2: "Warnung", 3: "Unwetter", 4: "Extrem"}
    return DistrictLevel(district=district, district_name=name or district.title(), hazard=hazard,
                         quantity=quantity, rule="static", level=lv,
                         level_name=level_name or names.get(lv, f"L{lv}"),
                         value=100.0 * lv + 5 if value is None else value, threshold=100.0 * lv,
                         sensors=sensors if lv else (), time_ns=t)


class FakeClock:
    """An injectable ns clock that only moves when told."""

    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


class SmtpReceiver:
    """aiosmtpd on loopback that can go down and come back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[Message] = []
        self.times: list[float] = []
        self._ctl: Controller | None = None
        self.start()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        self.times.append(time.monotonic())
        return "250 OK"

    def start(self) -> None:
        self._ctl = Controller(self, hostname="127.0.0.1", port=self.port)
        self._ctl.start()

    def stop(self) -> None:
        if self._ctl is not None:
            self._ctl.stop()
            self._ctl = None

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=stadtwacht@example.org&to=leitstelle@example.org&mode=insecure"

    def bodies(self) -> list[str]:
        """The text/plain part of every message received."""
        return [m.get_body(preferencelist=("plain",)).get_content() for m in self.messages]


class HttpReceiver:
    """A json:// webhook receiver: stores each POSTed JSON document."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.posts: list[dict] = []
        self.times: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                doc = json.loads(self.rfile.read(n))
                if delay_s:
                    time.sleep(delay_s)
                outer.posts.append(doc)
                outer.times.append(time.monotonic())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._srv.server_address[1]
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()


def file_config(tmp_path, **kw) -> AlertingConfig:
    """Three file channels (control room, civil protection, environment office) and the issue's routes."""
    chans = [ChannelConfig(name="leitstelle", url=f"file://{tmp_path}/leitstelle.jsonl", tags=["control-room"]),
             ChannelConfig(name="kats", url=f"file://{tmp_path}/kats.jsonl", tags=["kats"]),
             ChannelConfig(name="umwelt", url=f"file://{tmp_path}/umwelt.jsonl", tags=["environment"])]
    routes = [RouteConfig(hazard="flood", min_level=3, tags=["control-room", "kats"]),
              RouteConfig(hazard="flood", min_level=1, max_level=2, tags=["control-room"],
                          escalate_after="10m", escalate_tags=["kats"]),
              RouteConfig(hazard="air", min_level=1, max_level=1, tags=["environment"]),
              RouteConfig(hazard="air", min_level=2, tags=["environment", "control-room"])]
    base = {"channels": chans, "routes": routes, "group_wait": "30s", "repeat_interval": "1h"}
    base.update(kw)
    return AlertingConfig(**base)


def read_file_channel(tmp_path, name: str) -> list[dict]:
    p = tmp_path / f"{name}.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]
