"""One distribution in the user's layout, every import name under ``hubforge.``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.packaging import build_wheel

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = {
    "hubforge": "hubforge",
    "hub": "hubforge/hub",
    "server_extension": "hubforge/server_extension",
    "widgets": "hubforge/widgets",
    "spawner_profiles": "hubforge/spawner_profiles",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


def test_every_python_folder_is_in_the_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in LAYOUT.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            inside = Path(package) / init.relative_to(ROOT / folder)
            assert inside.as_posix() in names, f"{init.relative_to(ROOT)} is missing from the wheel"


def test_wheel_ships_data_and_entry_points(wheel: Path) -> None:
    zf = zipfile.ZipFile(wheel)
    names = set(zf.namelist())
    assert {
        "hubforge/platform.schema.json",
        "hubforge/default-platform.yaml",
        "hubforge/hub/jupyterhub_config.py",
        # What `hubforge k8s render` starts Kueue's configuration from, with its licence.
        "hubforge/spawner_profiles/kubernetes/vendor/kueue/manager-config.yaml",
        "hubforge/spawner_profiles/kubernetes/vendor/kueue/LICENSE",
        # The chart `hubforge profiles render` runs.
        "hubforge/spawner_profiles/kubernetes/vendor/z2jh/values.yaml",
        "hubforge/spawner_profiles/kubernetes/vendor/z2jh/files/hub/jupyterhub_config.py",
        "hubforge/spawner_profiles/kubernetes/vendor/z2jh/files/hub/z2jh.py",
        "hubforge/spawner_profiles/kubernetes/vendor/z2jh/Chart.yaml",
        "hubforge/spawner_profiles/kubernetes/vendor/z2jh/templates/hub/deployment.yaml",
    } <= names
    schemas = {p.relative_to(ROOT).as_posix() for p in (ROOT / "hubforge" / "events" / "schemas").rglob("*.yaml")}
    assert schemas and schemas <= names, schemas - names  # the audit event schemas
    entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "hubforge = hubforge.cli:main" in entry_points
    assert "[hubforge.commands]" in entry_points  # `up`, `profiles`, `k8s` come from the parts
    assert "[mlflow.app]" in entry_points
    generic = {"hub", "widgets", "server_extension", "spawner_profiles", "tests", "bench"}
    assert not any(n.split("/")[0] in generic for n in names)


def test_only_hubforge_names_are_importable(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    # -I -S: no site-packages, no working folder; only what the wheel installed.
    probe = (
        "import sys, importlib.util as u; sys.path.insert(0, sys.argv[1]);"
        "ours = ['hubforge', 'hubforge.hub', 'hubforge.server_extension', 'hubforge.widgets',"
        " 'hubforge.spawner_profiles'];"
        "generic = ['hub', 'widgets', 'server_extension', 'spawner_profiles'];"
        "print([n for n in ours if u.find_spec(n) is None], [n for n in generic if u.find_spec(n)])"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[] []"


def test_public_api_is_explicit() -> None:
    import hubforge
    import hubforge.config
    import hubforge.errors
    import hubforge.personas
    import hubforge.server_extension.app
    import hubforge.server_extension.kernel
    import hubforge.server_extension.kernel.queue
    import hubforge.server_extension.kernel.tracker
    import hubforge.server_extension.pending
    import hubforge.server_extension.replay

    for module in (
        hubforge,
        hubforge.config,
        hubforge.errors,
        hubforge.personas,
        hubforge.server_extension.app,
        hubforge.server_extension.kernel,
        hubforge.server_extension.kernel.queue,
        hubforge.server_extension.kernel.tracker,
        hubforge.server_extension.pending,
        hubforge.server_extension.replay,
    ):
        assert module.__all__, module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
