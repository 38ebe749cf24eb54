"""A real ``stadtwacht run`` subprocess for tests (own HTTP port, state directory and log) and waiting helpers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from stadtwacht.broker import free_port

__all__ = ["REPO", "ServiceProcess", "parse_metrics", "wait_for", "wait_until"]

REPO = Path(__file__).resolve().parents[2]


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of an exposition as (name, labels, value)."""
    return [(s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def wait_until(cond: Callable[[], object], timeout: float, interval: float = 0.25, what: str = "condition",
               alive: Callable[[], None] | None = None):
    """Poll ``cond`` until it returns something truthy (returned); ``alive`` may raise to stop early."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             alive: Callable[[], None] | None = None) -> object:
    """``wait_until`` with the operations tests' argument order and a 0.2 s poll."""
    return wait_until(predicate, timeout, interval=0.2, what=what, alive=alive)


class ServiceProcess:
    """A ``stadtwacht run`` subprocess with its own HTTP port and state directory; extra CLI args after them."""

    def __init__(self, config: Path, bootstrap: str, state_dir: Path, *args: str, env: dict | None = None,
                 log: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.cmd = [sys.executable, "-m", "stadtwacht", "run", "--config", str(config), "--bootstrap", bootstrap,
                    "--state-dir", str(state_dir), "--metrics-port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.log = log or state_dir.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 3.0, data: bytes | None = None, headers: dict | None = None,
            method: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError, ValueError):
                status, body = self.get("/readyz")
                last = json.loads(body)
                if status == 200:
                    return last
            time.sleep(0.2)
        raise AssertionError(f"not ready within {timeout}s: {last}\n{self.tail()}")

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Samples as {(name, sorted label items): value}."""
        _, body = self.get("/metrics", timeout=5)
        return {(name, tuple(sorted(labels.items()))): value for name, labels, value in parse_metrics(body.decode())}

    def total(self, name: str, **match: str) -> float:
        return sum(v for (n, labels), v in self.metrics().items()
                   if n == name and all(dict(labels).get(k) == val for k, val in match.items()))

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"stadtwacht run exited with {self.proc.returncode}:\n{self.tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
