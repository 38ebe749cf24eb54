"""The one HTTP port of a running pipeline: metrics, health, alert API, CAP, live page.

A small threaded server from the standard library is enough here: a control
room has a handful of browsers, Prometheus scrapes every few seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from alerting.api import AlertApi
from alerting.atom import atom_feed
from alerting.cap import cap_filename

__all__ = ["HttpServer", "StateFeed"]

log = logging.getLogger(__name__)

#: A Host header fit to build links from: a name or IPv4 address, or an IPv6 literal, with an optional port.
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _local_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches a server bound to ``host`` (all interfaces: the loopback)."""
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"


class StateFeed:
    """The latest /api/state document and a condition that wakes Server-Sent-Event streams."""

    def __init__(self, build: Callable[[], dict], lock: threading.RLock) -> None:
        self._build = build
        self._lock = lock
        self._cond = threading.Condition()
        self.version = 0
        self._cached: tuple[int, bytes] | None = None

    def changed(self) -> None:
        with self._cond:
            self.version += 1
            self._cond.notify_all()

    def document(self) -> bytes:
        version = self.version
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        with self._lock:
            data = json.dumps(self._build(), ensure_ascii=False).encode()
        self._cached = (version, data)
        return data

    def wait(self, seen: int, timeout: float) -> int:
        with self._cond:
            if self.version == seen:
                self._cond.wait(timeout)
            return self.version


class HttpServer:
    """Serves the pipeline's HTTP endpoints on a background thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, api: AlertApi, feed: StateFeed,
                 readiness: Callable[[], tuple[bool, dict]], cap_dir: Path | None,
                 feed_records: Callable[[], list], max_body_bytes: int = 65536,
                 public_url: str = "") -> None:
        self.registry = registry
        self.api = api
        self.feed = feed
        self.readiness = readiness
        self.cap_dir = cap_dir
        self.feed_records = feed_records  # the Atom feed's (Pipeline.feed_records)
        self.max_body = max_body_bytes
        self.stopping = threading.Event()
        self._web = resources.files("stadtwacht") / "web"
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        #: ``[alerting] public_url`` when set: links in the CAP feed then use it, not the address asked for
        self.configured_url = public_url
        self.public_url = public_url or _local_url(host, self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.feed.changed()
        self._server.shutdown()
        self._server.server_close()

    def static(self, path: str) -> tuple[bytes, str] | None:
        name = path.lstrip("/") or "index.html"
        if ".." in name or name.startswith("/"):
            return None
        f = self._web.joinpath(*name.split("/"))
        try:
            data = f.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        return data, ctype


_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
}


def _make_handler(srv: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "stadtwacht"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:  # access log at debug level, no secrets
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, status: int, body: bytes, ctype: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in {**_SECURITY_HEADERS, **(headers or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: object) -> None:
            self._send(status, json.dumps(obj, ensure_ascii=False).encode())

        def _body(self) -> bytes | None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > srv.max_body:
                self.close_connection = True
                self._json(413, {"error": f"request body over {srv.max_body} bytes"})
                return None
            return self.rfile.read(length) if length else b""

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def _base_url(self) -> str:
            """The configured public URL, else the one the client asked for (behind a Service name or a
            published port, the bind address would be unreachable: 0.0.0.0 in a container)."""
            host = self.headers.get("Host", "")
            if srv.configured_url or not _HOST.fullmatch(host):
                return srv.public_url
            return f"http://{host}"

        def _dispatch(self, method: str) -> None:
            path = urlsplit(self.path).path
            try:
                if path.startswith("/api/") and path != "/api/state":
                    body = self._body()
                    if body is None:
                        return
                    status, headers, data = srv.api.handle(method, path, dict(self.headers.items()), body)
                    ctype = headers.pop("Content-Type", "application/json")
                    self._send(status, data, ctype, headers)
                elif method != "GET":
                    self._json(405, {"error": "method not allowed"})
                elif path == "/metrics":
                    self._send(200, generate_latest(srv.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._json(200, {"status": "alive"})
                elif path == "/readyz":
                    ready, detail = srv.readiness()
                    self._json(200 if ready else 503, {"ready": ready, **detail})
                elif path == "/api/state":
                    self._send(200, srv.feed.document())
                elif path == "/events":
                    self._events()
                elif path in ("/cap/atom.xml", "/cap/feed.atom"):
                    feed = atom_feed(srv.feed_records(), base_url=self._base_url(), self_path="/cap/atom.xml")
                    self._send(200, feed, "application/atom+xml; charset=utf-8")
                elif path.startswith("/cap/") and path.endswith(".xml"):
                    self._cap(unquote(path[len("/cap/"):-len(".xml")]))
                else:
                    found = srv.static(path)
                    if found is None:
                        self._json(404, {"error": "not found"})
                    else:
                        self._send(200, *found)
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception:  # a handler bug must not kill the server thread
                log.exception("HTTP %s %s failed", method, path)
                with contextlib.suppress(OSError):
                    self._json(500, {"error": "internal error"})

        def _cap(self, alert_id: str) -> None:
            if srv.cap_dir is None:
                self._json(404, {"error": "CAP output disabled"})
                return
            name = cap_filename(alert_id)
            f = srv.cap_dir / name
            if not f.is_file():
                self._json(404, {"error": "no CAP message for this alert"})
                return
            self._send(200, f.read_bytes(), "application/cap+xml; charset=utf-8")

        def _events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            seen = -1
            last_write = 0.0
            while not srv.stopping.is_set():
                version = srv.feed.wait(seen, timeout=15.0)
                if version != seen:
                    seen = version
                    self.wfile.write(b"event: state\ndata: " + srv.feed.document() + b"\n\n")
                    last_write = time.monotonic()
                    time.sleep(0.5)  # at most ~2 updates a second per client
                elif time.monotonic() - last_write >= 14:
                    self.wfile.write(b": keep-alive\n\n")
                    last_write = time.monotonic()
                self.wfile.flush()

    return Handler
