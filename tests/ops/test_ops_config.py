"""The shipped deploy configuration against the real schema: every key known, secrets only by reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alerting.redaction import redact_url, resolve_channel_url
from stadtwacht.config import load_config

REPO = Path(__file__).resolve().parents[2]
TOML = REPO / "deploy" / "config" / "stadtwacht.toml"
ENV_EXAMPLE = REPO / "deploy" / "config" / "channels.env.example"


def _example_env() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _configmap_toml(tmp_path: Path) -> Path:
    doc = yaml.safe_load((REPO / "deploy" / "k8s" / "configmap.yaml").read_text(encoding="utf-8"))
    path = tmp_path / "configmap.toml"
    path.write_text(doc["data"]["stadtwacht.toml"], encoding="utf-8")
    return path


# alerting.config.validate checks "scheme://" on the raw url, before ${VAR} is resolved at start
_RAW_URL_CHECK = "not a URL (expected scheme://...)"


@pytest.mark.parametrize("which", ["compose", "configmap"])
def test_deploy_config_uses_only_schema_keys(which, tmp_path):
    path = TOML if which == "compose" else _configmap_toml(tmp_path)
    cfg, problems = load_config(path)
    assert [p for p in problems if p.message != _RAW_URL_CHECK] == []
    assert cfg.http.api_token_env == "STADTWACHT_API_TOKEN" and cfg.http.host == "0.0.0.0"
    assert cfg.logging.format == "json"
    assert [c.name for c in cfg.alerting.channels] == ["mail", "webhook"]
    assert "change-me" not in path.read_text(encoding="utf-8")


def test_channel_urls_resolve_from_the_example_environment_and_redact():
    cfg, _ = load_config(TOML)
    env = _example_env()
    for channel in cfg.alerting.channels:
        assert channel.url.startswith("${"), "channel URLs must be references, never literal secrets"
        url = resolve_channel_url(channel, env)
        assert "://" in url
        assert "password" not in redact_url(url) and "user" not in redact_url(url)


def test_check_config_accepts_the_deploy_config():
    result = subprocess.run([sys.executable, "-m", "stadtwacht", "check-config", "--config", str(TOML)],
                            capture_output=True, text=True, env={**_example_env(), "PATH": "/usr/bin:/bin"},
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr


def test_check_config_names_the_channel_secrets_that_are_not_set():
    """check-config resolves the channel URLs as the service would at start, from its own environment."""
    env = {k: v for k, v in _example_env().items() if k != "STADTWACHT_WEBHOOK_URL"}
    result = subprocess.run([sys.executable, "-m", "stadtwacht", "check-config", "--config", str(TOML)],
                            capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"}, cwd=REPO, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "channel 'webhook': environment variable STADTWACHT_WEBHOOK_URL is not set" in result.stderr
    assert "1 problem(s)" in result.stderr and "channel 'mail'" not in result.stderr
    assert _example_env()["STADTWACHT_MAIL_URL"] not in result.stdout + result.stderr


def _stadtwacht(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stadtwacht", *args], capture_output=True, text=True, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", **(env or {})}, timeout=120)


def test_start_up_errors_are_one_line_naming_the_cause_not_a_traceback(tmp_path):
    """What an operator mistypes gets one line saying what and where, and a non-zero exit (no traceback, which
    in a JSON log stream is a dozen lines of plain text)."""
    import socket

    missing = tmp_path / "nowhere.geojson"
    sasl_toml = tmp_path / "sasl.toml"
    sasl_toml.write_text('[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
                         'sasl_plain_username = "stadtwacht"\nsasl_plain_password_env = "NO_SUCH_PASSWORD"\n',
                         encoding="utf-8")
    token_toml = tmp_path / "token.toml"
    token_toml.write_text(f'[http]\napi_token_file = "{tmp_path / "no-token"}"\n', encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            (["run", "--bootstrap", "127.0.0.1:1", "--districts", str(missing), "--state-dir", str(tmp_path / "a")],
             2, str(missing)),
            (["run", "--config", str(token_toml), "--bootstrap", "127.0.0.1:1", "--state-dir", str(tmp_path / "b")],
             2, "http.api_token_file: cannot read"),
            (["run", "--bootstrap", "127.0.0.1:1", "--metrics-port", str(port), "--state-dir", str(tmp_path / "c")],
             1, "Address already in use"),
            (["run", "--bootstrap", "127.0.0.1:1", "--log-level", "verbose"], 2, "invalid choice: 'VERBOSE'"),
            (["run", "--bootstrap", "kafka:notaport"], 2, "--bootstrap: kafka.bootstrap_servers: not host:port"),
            (["run", "--config", str(sasl_toml), "--bootstrap", "127.0.0.1:1"], 2,
             "environment variable NO_SUCH_PASSWORD is not set"),
            (["check-config", "--config", str(sasl_toml)], 1, "environment variable NO_SUCH_PASSWORD is not set"),
            (["run", "--bootstrap", "127.0.0.1:1", "--topic", "bad topic!"], 2,
             "--topic: kafka.topics: 'bad topic!' is not a legal Kafka topic name"),
        ]
        for args, code, says in cases:
            done = _stadtwacht(*args)
            assert done.returncode == code and says in done.stderr, (args, done.returncode, done.stderr[-2000:])
            assert "Traceback" not in done.stderr, done.stderr


def test_a_second_service_on_the_same_state_directory_is_refused(tmp_path):
    """Two services on one state directory would share its outbox and episodes: the second says so and stops."""
    from stadtwacht.app import lock_state_dir

    held = lock_state_dir(tmp_path / "state")
    try:
        done = _stadtwacht("run", "--bootstrap", "127.0.0.1:1", "--state-dir", str(tmp_path / "state"))
        assert done.returncode == 2, done.stderr
        assert f"another stadtwacht service uses it (pid {os.getpid()})" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        held.close()
    with lock_state_dir(tmp_path / "state"):  # released with its holder
        pass
