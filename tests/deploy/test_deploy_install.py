"""The image's install step without a container engine: the wheel of the Docker build context, apart from the tree.

deploy/Dockerfile runs ``pip install /src`` on the context that .dockerignore leaves, then the image starts
``stadtwacht`` from site-packages with no checkout and no ``../shared`` beside it. A file the wheel leaves out
(rules, registry, page assets, demo sensors) or a path computed from the checkout fails there and nowhere else.
This builds that wheel offline, installs it without dependencies into a folder of its own (the dependencies come
from the test environment), and runs the console script from outside the repository: ``--help`` (the Dockerfile's
smoke call), ``check-config`` on the shipped production configuration, and the demo, whose page, alerts and
notification file come from the installed files only. The first start compiles the kernels for the new paths
(about a minute on two cores).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.deploy.build_context import ROOT, copy_context

PACKAGES = ["ingest", "detection", "geodata", "alerting", "stadtwacht"]
PACKAGE_DATA = ["detection/default_rules.toml", "geodata/stuttgart_sensors.csv", "stadtwacht/demo/demo_sensors.csv",
                "stadtwacht/web/index.html", "stadtwacht/web/app.js", "stadtwacht/web/style.css"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("install")
    context = copy_context(base / "context")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(base / "dist"), str(context)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (base / "dist").glob("stadtwacht-*.whl")
    site = base / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                           str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    cwd = base / "elsewhere"
    cwd.mkdir()
    # the installed copy first on the path (the checkout's editable finder comes after it), kernels cached apart
    env = {**os.environ, "PYTHONPATH": str(site), "NUMBA_CACHE_DIR": str(base / "numba-cache"),
           "PYTHONUNBUFFERED": "1"}
    return {"wheel": wheel, "site": site, "cwd": cwd, "env": env, "script": site / "bin" / "stadtwacht"}


def _run(installed: dict, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed["script"]), *args], cwd=installed["cwd"],
                          env={**installed["env"], **(env or {})}, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_holds_the_packages_and_their_data_and_no_tests(installed: dict) -> None:
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for package in PACKAGES:
        assert f"{package}/__init__.py" in names, package
    missing = [f for f in PACKAGE_DATA if f not in names]
    assert not missing, f"package data left out of the wheel: {missing}"
    assert not any(n.startswith(("tests/", "bench/", "deploy/")) or "__pycache__" in n for n in names)


def test_the_console_script_runs_from_the_installed_copy(installed: dict) -> None:
    helped = _run(installed, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "check-config" in helped.stdout and "demo" in helped.stdout
    where = subprocess.run([sys.executable, "-c", "import importlib, sys; print('\\n'.join(importlib.import_module(p)"
                            ".__file__ for p in sys.argv[1:]))", *PACKAGES],
                           cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert all(Path(f).is_relative_to(installed["site"]) for f in where.stdout.split()), where.stdout


def test_the_shipped_production_configuration_checks_out(installed: dict) -> None:
    env = {"STADTWACHT_MAIL_URL": "mailto://stadtwacht:secret@127.0.0.1:2525?to=leitstelle@example.org",
           "STADTWACHT_WEBHOOK_URL": "json://127.0.0.1:9/hook", "STADTWACHT_API_TOKEN": "install-test"}
    checked = _run(installed, "check-config", "--config", str(ROOT / "deploy" / "config" / "stadtwacht.toml"),
                   env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_demo_runs_from_the_installed_copy(installed: dict, tmp_path: Path) -> None:
    port, state = _free_port(), tmp_path / "state"
    out = tmp_path / "demo.out"
    with out.open("wb") as fo:
        proc = subprocess.Popen([str(installed["script"]), "demo", "--speed", "3000", "--duration", "45", "--host",
                                 "127.0.0.1", "--port", str(port), "--state-dir", str(state)], cwd=installed["cwd"],
                                env=installed["env"], stdout=fo, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300  # kernels compiled for the installed paths first
        while "control-room page" not in out.read_text(errors="replace"):
            assert proc.poll() is None, out.read_text(errors="replace")
            assert time.monotonic() < deadline, out.read_text(errors="replace")
            time.sleep(0.5)
        assert "built-in APPROXIMATE layer" in out.read_text()  # no ../shared beside site-packages
        pages = {}
        while not pages or any(status != 200 for status, _ in pages.values()):
            assert proc.poll() is None, out.read_text(errors="replace")
            assert time.monotonic() < deadline, pages
            pages = {name: _get(f"{url}/{name}") for name in ("", "app.js", "style.css", "api/state")}
            time.sleep(0.5)
        assert b"app.js" in pages[""][1] and pages["app.js"][1] == (ROOT / "stadtwacht/web/app.js").read_bytes()
        assert json.loads(pages["api/state"][1])["approximate"] is True
        assert proc.wait(timeout=120) == 0, out.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = out.read_text(errors="replace")
    assert "demo finished:" in text and " 0 alert events" not in text, text[-3000:]
    notes = [json.loads(line) for line in (state / "notifications.jsonl").read_text().splitlines()]
    assert any("Hochwasser" in json.dumps(n, ensure_ascii=False) for n in notes), notes[:3]
