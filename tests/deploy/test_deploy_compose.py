"""Static checks of deploy/compose.yaml: it parses, references files that exist and pins every image."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read deploy/compose.yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def _version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> host path (relative to deploy/) of a service's bind mounts."""
    out = {}
    for v in service.get("volumes", []):
        parts = v.split(":")
        if parts[0].startswith((".", "/")) and len(parts) >= 2:
            out[parts[1]] = parts[0]
    return out


def test_services(compose):
    assert set(compose["services"]) == {"kafka", "kafka-init", "stadtwacht", "simulator", "prometheus", "grafana"}


def test_images_are_pinned(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"


def test_built_images_carry_the_package_version(compose):
    for name in ("stadtwacht", "simulator"):
        service = compose["services"][name]
        assert service["image"] == f"stadtwacht:{_version()}", name
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        assert (DEPLOY / service["build"]["context"] / "pyproject.toml").is_file(), name


def test_kafka_runs_kraft_without_zookeeper(compose):
    env = compose["services"]["kafka"]["environment"]
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4.")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in env)
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_bind_mounts_and_env_files_exist(compose):
    for name, service in compose["services"].items():
        for container_path, host in _mounts(service).items():
            if host.startswith("."):
                assert (DEPLOY / host).exists(), f"{name}: {host} -> {container_path} does not exist"
        for env_file in service.get("env_file", []):
            path = DEPLOY / env_file
            assert path.exists() or path.with_name(path.name + ".example").exists(), f"{name}: {env_file}"


def test_named_volumes_are_declared_and_depends_on_defined_services(compose):
    declared = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for v in service.get("volumes", []):
            source = v.split(":")[0]
            if ":" in v and not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"
        for dep in service.get("depends_on", []):
            assert dep in compose["services"], f"{name} depends on unknown {dep}"


def test_published_ports_bind_to_loopback(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published on every interface"


def test_stadtwacht_command_files_are_mounted(compose):
    service = compose["services"]["stadtwacht"]
    command = service["command"]
    assert command[0] == "run"
    config = command[command.index("--config") + 1]
    assert _mounts(service)[config] == "./config/stadtwacht.toml"
    state_dir = command[command.index("--state-dir") + 1]
    assert state_dir in service["volumes"], "the state dir needs its own (per replica) volume"
    assert command[command.index("--metrics-port") + 1] == "9108"
    assert command[command.index("--bootstrap") + 1] == "kafka:9092"
    assert service["read_only"] is True


def test_simulator_feeds_the_same_broker(compose):
    command = compose["services"]["simulator"]["command"]
    assert command[0] == "simulate" and command[command.index("--bootstrap") + 1] == "kafka:9092"
    assert compose["services"]["simulator"]["healthcheck"] == {"disable": True}


def test_prometheus_loads_the_mounted_config(compose):
    service = compose["services"]["prometheus"]
    flags = dict(a.lstrip("-").split("=", 1) for a in service["command"] if "=" in a)
    config = Path(flags["config.file"])
    host = _mounts(service)[str(config.parent)]
    assert (DEPLOY / host / config.name).is_file()


def test_grafana_home_dashboard_is_mounted(compose):
    service = compose["services"]["grafana"]
    home = Path(service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    host = _mounts(service)[str(home.parent)]
    assert (DEPLOY / host / home.name).is_file()


def test_kafka_init_creates_every_configured_topic(compose):
    script = compose["services"]["kafka-init"]["command"][0]
    kafka = tomllib.loads((DEPLOY / "config" / "stadtwacht.toml").read_text(encoding="utf-8"))["kafka"]
    loop = re.search(r"for t in ([^;]+);", script).group(1).split()
    inputs = kafka["topics"] + kafka["community_topics"]
    assert sorted(loop) == sorted(inputs)
    assert f'--topic "$$t{kafka["dlq_suffix"]}"' in script, "dead-letter topics"
    assert f"--topic {kafka['alerts_topic']}" in script
    district = re.search(rf"--topic {re.escape(kafka['district_topic'])} --partitions (\d+) .*", script)
    assert district and "cleanup.policy=compact" in district.group(0), "the district topic, compacted"
    assert "--if-not-exists" in script
    assert compose["services"]["stadtwacht"]["depends_on"]["kafka-init"]["condition"] == (
        "service_completed_successfully"
    )
