"""Static checks of deploy/Dockerfile and the build context filter (.dockerignore at the repo root)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from tests.deploy.build_context import dockerignore_patterns, ignored

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _one(name: str) -> str:
    values = [rest for word, rest in _instructions() if word == name]
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


def test_base_image_is_slim_python_311_pinned_by_patch_version():
    args = dict(rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)", args["PYTHON_IMAGE"])
    stages = [rest for word, rest in _instructions() if word == "FROM"]
    assert len(stages) >= 2, "multi-stage build expected"
    assert all(s.startswith("${PYTHON_IMAGE}") for s in stages)


def test_runtime_runs_as_unprivileged_numeric_user():
    user = _one("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000
    # the user directive comes after the last FROM: it applies to the runtime stage
    words = [w for w, _ in _instructions()]
    assert len(words) - 1 - words[::-1].index("USER") > len(words) - 1 - words[::-1].index("FROM")


def test_port_healthcheck_entrypoint_and_command():
    assert _one("EXPOSE") == "9108"
    health = _one("HEALTHCHECK")
    assert "/healthz" in health and '"python"' in health and "curl" not in health
    assert json.loads(_one("ENTRYPOINT")) == ["stadtwacht"]
    assert json.loads(_one("CMD")) == ["run", "--config", "/etc/stadtwacht/stadtwacht.toml"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "stadtwacht" in scripts


def test_numba_cache_is_on_the_writable_state_volume():
    # the root filesystem is read-only at run time (k8s): numba must cache the compiled kernels where it may write,
    # or every start compiles them again (about a minute) and a missing cache location fails the import
    steps = _instructions()
    runtime = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]
    env = " ".join(r for w, r in runtime if w == "ENV")
    cache = re.search(r"NUMBA_CACHE_DIR=(\S+)", env)
    assert cache, "NUMBA_CACHE_DIR is not set in the runtime stage"
    state = "/var/lib/stadtwacht"
    assert cache.group(1).startswith(state + "/")
    assert any(w == "RUN" and f"chown 10001:10001 {state}" in r for w, r in runtime)
    deployment = (ROOT / "deploy" / "k8s" / "deployment.yaml").read_text(encoding="utf-8")
    assert re.search(rf"- name: state\s+mountPath: {state}\n", deployment)


def test_copied_sources_exist_in_the_context():
    for word, rest in _instructions():
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source


def test_dockerignore_keeps_the_package_and_drops_the_rest():
    patterns = dockerignore_patterns()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for needed in ["pyproject.toml", project["project"]["readme"], *packages]:
        assert not ignored(needed, patterns), f"{needed} is needed by pip install but ignored"
    for kept in ["stadtwacht/web/app.js", "detection/default_rules.toml", "geodata/stuttgart_sensors.csv"]:
        assert not ignored(kept, patterns), f"{kept} is package data but ignored"
    for dropped in [".git", ".venv", "tests", "channels.env", "deploy/config/channels.env",
                    "detection/__pycache__/numba-0/engine.nbi", ".venv/lib/site.py", "tests/deploy/x.py"]:
        assert ignored(dropped, patterns), f"{dropped} must stay out of the build context"
