"""A real Apache Kafka broker (one KRaft node on 127.0.0.1, optionally TLS and/or SASL) for tests, run by
deploy/kafka/apache-kafka.sh."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["SCRIPT", "ApacheKafka", "ApacheKafkaError", "free_port", "skip_unless_own_broker_can_run"]

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "apache-kafka.sh"
RESOLVE_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 60.0
MIN_JAVA = 17
START_ATTEMPTS = 3


class ApacheKafkaError(RuntimeError):
    """The broker script failed; carries the command, its exit status and its output."""

    def __init__(self, command: list[str], returncode: int | None, output: str) -> None:
        self.command = command
        self.returncode = returncode
        self.output = output
        super().__init__(f"{' '.join(command)} exited with {returncode}:\n{output[-4000:]}")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(args: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run the broker script and return its combined output, raising ApacheKafkaError on failure."""
    command = ["bash", str(SCRIPT), *args]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "PYTHON": sys.executable, **(env or {})},  # PYTHON runs the readiness probe
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise ApacheKafkaError(command, None, f"timed out after {timeout}s\n{output}") from exc
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise ApacheKafkaError(command, done.returncode, output)
    return output


def _java_major(java: str) -> int | None:
    """Return the major version of `java -version`, or None when it cannot be read."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def skip_unless_own_broker_can_run(broker_kind: str, what: str, tls: bool = False) -> None:
    """The skip guards of a test that starts its own Apache Kafka (``what`` says which, e.g. "with TLS"): it
    runs in the ``--broker=apache`` pass only (one broker tier at a time), and only where the broker can run."""
    import pytest

    def skip(reason: str) -> None:  # reported at the test, not at this helper (as pytest's skip marks are)
        raise pytest.skip.Exception(reason, _use_item_location=True)

    if broker_kind != "apache":
        skip(f"starts its own Apache Kafka {what}: runs in the --broker=apache pass")
    ok, why = ApacheKafka.available(tls=tls)
    if not ok:
        skip(f"Apache Kafka{' with TLS' if tls else ''} unavailable: {why}")


class ApacheKafka:
    """One Apache Kafka broker in `workdir`, listening on 127.0.0.1.

    ``tls``: the client listener speaks TLS (throwaway CA); ``sasl``: it requires SASL (PLAIN, SCRAM-SHA-256,
    SCRAM-SHA-512) for one user, ``sasl_username`` / ``sasl_password`` (``sasl_password`` given or random);
    ``auto_create_topics=False``: ``auto.create.topics.enable=false`` (a topic nobody created stays missing).
    """

    def __init__(self, workdir: Path, port: int | None = None, tls: bool = False, sasl: bool = False,
                 sasl_username: str = "stadtwacht", sasl_password: str | None = None,
                 auto_create_topics: bool = True) -> None:
        self.workdir = Path(workdir).resolve()
        self.tls = tls
        self.sasl = sasl
        self.auto_create_topics = auto_create_topics
        self.sasl_username = sasl_username
        self._sasl_password = sasl_password
        self._fixed_port = port
        self.port: int = port if port is not None else free_port()
        self._running = False

    @staticmethod
    def available(tls: bool = False) -> tuple[bool, str]:
        """Tell whether this machine can run the broker: (True, "") or (False, why not)."""
        java = os.environ.get("JAVA", "java")
        if shutil.which(java) is None:
            return False, f"Apache Kafka tests need a Java {MIN_JAVA}+ runtime ('{java}' not on PATH)"
        major = _java_major(java)
        if major is None or major < MIN_JAVA:
            return False, f"Apache Kafka 4.x needs Java {MIN_JAVA}+, '{java}' reports {major}"
        if shutil.which("mvn") is None:
            return False, "Apache Kafka tests need Maven ('mvn' not on PATH) to fetch the broker jars"
        if shutil.which("bash") is None or not SCRIPT.is_file():
            return False, f"missing bash or {SCRIPT}"
        if tls and shutil.which("openssl") is None:
            return False, "Apache Kafka TLS tests need 'openssl' on PATH to make a throwaway CA"
        return True, ""

    @staticmethod
    def resolve(timeout: float = RESOLVE_TIMEOUT_S) -> None:
        """Download the broker jars once (no-op when cached)."""
        _run(["resolve"], timeout)

    @property
    def bootstrap(self) -> str:
        """Bootstrap server string for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def ssl_cafile(self) -> Path | None:
        """CA bundle that signed the broker certificate (None without TLS)."""
        return self.workdir / "ca.pem" if self.tls else None

    @property
    def ssl_certfile(self) -> Path | None:
        """Client certificate signed by the same CA (the broker requests but does not require it)."""
        return self.workdir / "client.pem" if self.tls else None

    @property
    def ssl_keyfile(self) -> Path | None:
        """Private key of `ssl_certfile`."""
        return self.workdir / "client-key.pem" if self.tls else None

    @property
    def security_protocol(self) -> str:
        """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL: what the client listener speaks."""
        return {(False, False): "PLAINTEXT", (True, False): "SSL", (False, True): "SASL_PLAINTEXT",
                (True, True): "SASL_SSL"}[(self.tls, self.sasl)]

    @property
    def sasl_password(self) -> str | None:
        """The SASL user's password (as given, or the one the script generated; None without SASL)."""
        if not self.sasl:
            return None
        if self._sasl_password is None:
            self._sasl_password = (self.workdir / "sasl-password").read_text().strip()
        return self._sasl_password

    @property
    def log_file(self) -> Path:
        """The broker's log4j log."""
        return self.workdir / "logs" / "server.log"

    def client_config(self, sasl_mechanism: str = "PLAIN") -> dict[str, Any]:
        """kafka-python keyword arguments that reach this broker (SASL: as the broker's one user)."""
        config: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.tls or self.sasl:
            config["security_protocol"] = self.security_protocol
        if self.tls:
            config["ssl_cafile"] = str(self.ssl_cafile)
        if self.sasl:
            config.update(sasl_mechanism=sasl_mechanism, sasl_plain_username=self.sasl_username,
                          sasl_plain_password=self.sasl_password)
        return config

    def start(self, timeout: float = 120) -> ApacheKafka:
        """Resolve the jars if needed, start the broker and wait until it answers metadata."""
        if self._running:
            return self
        self.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port is not None else START_ATTEMPTS
        for attempt in range(attempts):
            controller_port = free_port()
            while controller_port == self.port:
                controller_port = free_port()
            args = ["start", "--dir", str(self.workdir), "--port", str(self.port)]
            args += ["--controller-port", str(controller_port), "--timeout", str(timeout)]
            if self.tls:
                args.append("--tls")
            if self.sasl:
                args.append("--sasl")
            if not self.auto_create_topics:
                args.append("--no-auto-create")
            try:
                _run(args, timeout + 60, self._script_env())
            except ApacheKafkaError as exc:
                _run(["stop", "--dir", str(self.workdir)], STOP_TIMEOUT_S)
                # A port picked by free_port() may have been taken meanwhile: pick another and retry.
                if attempt + 1 == attempts or "already in use" not in exc.output:
                    raise
                self.port = free_port()
                continue
            break
        self._running = True
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop the broker (waits until the process is gone); safe to call twice."""
        if not self._running:
            return
        self._running = False
        atexit.unregister(self.stop)
        _run(["stop", "--dir", str(self.workdir)], STOP_TIMEOUT_S)

    def _script_env(self) -> dict[str, str]:
        if not self.sasl:
            return {}
        env = {"STADTWACHT_KAFKA_SASL_USER": self.sasl_username}
        if self._sasl_password is not None:
            env["STADTWACHT_KAFKA_SASL_PASSWORD"] = self._sasl_password
        return env

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ApacheKafka({self.security_protocol}://{self.bootstrap}, workdir={str(self.workdir)!r})"
