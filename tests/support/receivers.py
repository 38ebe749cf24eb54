"""Real notification receivers on 127.0.0.1 (SMTP via aiosmtpd, json:// webhook) that tests start themselves."""

from __future__ import annotations

import json
import threading
import time
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from stadtwacht.broker import free_port

__all__ = ["HttpReceiver", "SmtpReceiver", "free_port"]


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 that can go down and come back on the same port."""

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
        return [m.get_body(preferencelist=("plain",)).get_content() for m in list(self.messages)]

    def texts(self) -> list[str]:
        """Subject and text/plain part of every message received (where a Ref line may stand)."""
        return [str(m["Subject"] or "") + "\n" + m.get_body(preferencelist=("plain",)).get_content()
                for m in list(self.messages)]


class HttpReceiver:
    """A json:// webhook receiver storing each POSTed document and its arrival time (optionally slow; ``status``:
    its answer to every POST, e.g. 503 for a receiver that refuses for now: what it refused is stored too)."""

    def __init__(self, delay_s: float = 0.0, status: int = 200) -> None:
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
                self.send_response(status)
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

    def texts(self) -> list[str]:
        """Title and message of every POST (where a Ref line may stand)."""
        return [str(p.get("title", "")) + "\n" + str(p.get("message", "")) for p in list(self.posts)]

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
