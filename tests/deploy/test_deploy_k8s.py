"""Static checks of the Kubernetes manifests under deploy/k8s and of the example configuration."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import msgspec
import pytest

from ingest.config import IngestConfig, KafkaConfig, validate

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the manifests")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d]


def _kind(kind: str) -> dict:
    found = [d for f in sorted(K8S.glob("*.yaml")) for d in _docs(f.name) if d.get("kind") == kind]
    assert len(found) == 1, kind
    return found[0]


@pytest.fixture(scope="module")
def deployment() -> dict:
    return _kind("Deployment")


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _arg(container: dict, flag: str) -> str:
    return container["args"][container["args"].index(flag) + 1]


def test_every_manifest_parses_and_is_namespace_agnostic():
    files = sorted(K8S.glob("*.yaml"))
    assert {f.name for f in files} >= {
        "deployment.yaml",
        "service.yaml",
        "configmap.yaml",
        "pdb.yaml",
        "secret.example.yaml",
        "kustomization.yaml",
    }
    for f in files:
        for doc in _docs(f.name):
            assert "namespace" not in doc.get("metadata", {}), f.name


def test_kustomization_lists_the_manifests_but_not_the_example_secret():
    kustomization = _docs("kustomization.yaml")[0]
    assert set(kustomization["resources"]) == {"configmap.yaml", "deployment.yaml", "service.yaml", "pdb.yaml"}
    assert "namespace" not in kustomization


def test_kubectl_kustomize_builds():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: the kustomize build is checked where kubectl is installed")
    res = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(res.stdout) if d)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]


def test_replicas_at_most_the_partition_count(deployment):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    script = compose["services"]["kafka-init"]["command"][0]
    partitions = int(re.search(r'--topic "\$\$t" --partitions (\d+)', script).group(1))
    assert 1 <= deployment["spec"]["replicas"] <= partitions
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_probes(deployment):
    container = _container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(_arg(container, "--metrics-port"))}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ports, probe


def test_security_context(deployment):
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    dockerfile_user = re.search(r"^USER (\d+)", (DEPLOY / "Dockerfile").read_text(), re.M).group(1)
    assert pod["securityContext"]["runAsUser"] == int(dockerfile_user)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_writable_paths_are_empty_dirs_and_config_comes_from_the_configmap(deployment):
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert "emptyDir" in mounts[_arg(container, "--state-dir")]
    assert "emptyDir" in mounts["/tmp"]
    config = Path(_arg(container, "--config"))
    configmap = _kind("ConfigMap")
    assert mounts[str(config.parent)]["configMap"]["name"] == configmap["metadata"]["name"]
    assert config.name in configmap["data"]


def test_secret_is_referenced_and_exemplified(deployment):
    (ref,) = _container(deployment)["envFrom"]
    secret = _docs("secret.example.yaml")[0]
    assert secret["kind"] == "Secret" and ref["secretRef"]["name"] == secret["metadata"]["name"]
    assert "STADTWACHT_API_TOKEN" in secret["stringData"]


def test_service_selects_the_pods_and_is_scraped_by_one_job_only(deployment):
    service = _kind("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    # the example job finds it by label; annotations would add a second scrape under a generic job's name
    assert not any(k.startswith("prometheus.io/") for k in service["metadata"].get("annotations", {}))
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http" and port["targetPort"] == "http" and port["port"] == 9108


def test_pod_disruption_budget(deployment):
    pdb = _kind("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_image_tag_is_the_package_version(deployment):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert _container(deployment)["image"] == f"stadtwacht:{version}"
    assert _docs("kustomization.yaml")[0]["images"] == [{"name": "stadtwacht", "newTag": version}]


# --- the example configuration (compose file and ConfigMap) -----------------------------------------------


def _configs() -> dict[str, str]:
    return {
        "deploy/config/stadtwacht.toml": (DEPLOY / "config" / "stadtwacht.toml").read_text(encoding="utf-8"),
        "ConfigMap stadtwacht.toml": _kind("ConfigMap")["data"]["stadtwacht.toml"],
    }


@pytest.mark.parametrize("where", ["deploy/config/stadtwacht.toml", "ConfigMap stadtwacht.toml"])
def test_kafka_and_ingest_sections_decode_and_validate(where):
    doc = tomllib.loads(_configs()[where])
    kafka = msgspec.convert(doc["kafka"], KafkaConfig)
    ingest = msgspec.convert(doc["ingest"], IngestConfig)
    assert validate(kafka, ingest) == []
    assert kafka.bootstrap_servers, "production configs name their brokers (empty = embedded broker)"
    assert kafka.group_id == "stadtwacht"


def test_configmap_differs_from_the_compose_config_only_in_the_bootstrap_address():
    compose_doc, k8s_doc = (tomllib.loads(t) for t in _configs().values())
    assert compose_doc["kafka"].pop("bootstrap_servers") == "kafka:9092"
    k8s_doc["kafka"].pop("bootstrap_servers")
    assert compose_doc == k8s_doc


def test_several_replicas_share_districts_through_the_district_topic(deployment):
    # without it each replica rolls up part of the sensors: never more than one episode owner per district
    kafka = tomllib.loads(_configs()["ConfigMap stadtwacht.toml"])["kafka"]
    assert deployment["spec"]["replicas"] == 1 or kafka.get("district_topic")


@pytest.mark.parametrize("where", ["deploy/config/stadtwacht.toml", "ConfigMap stadtwacht.toml"])
def test_every_secret_reference_is_provided(where):
    code = "\n".join(line.split("#")[0] for line in _configs()[where].splitlines())
    wanted = set(re.findall(r"\$\{(\w+)\}", code))
    wanted |= set(re.findall(r'api_token_env\s*=\s*"(\w+)"', code))  # [http]: the token's variable name
    assert "STADTWACHT_API_TOKEN" in wanted and len(wanted) >= 2
    example = (DEPLOY / "config" / "channels.env.example").read_text(encoding="utf-8")
    env = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    assert wanted <= env
    assert wanted <= set(_docs("secret.example.yaml")[0]["stringData"])
