"""Images on one machine: what each image's environment can run, on environments made for the test.

The spawn page, the config and the kernel's Python are in tests/unit/test_image_environments.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.platform import derived_environment
from hubforge.spawner_profiles.local.environments import LocalEnvironments, kernel_python_env


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("envs")
    bare = root / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    (root / "empty").mkdir()
    return {"derived": derived_environment(root / "derived"), "bare": bare, "empty": root / "empty"}


def test_each_image_is_what_its_environment_can_run(envs: dict[str, Path]) -> None:
    local = LocalEnvironments(
        {"scipy": "platform", "pytorch": str(envs["derived"]), "jax": str(envs["bare"]), "r": str(envs["empty"])}
    )
    assert local.unavailable("scipy") is None
    assert local.unavailable("pytorch") is None
    assert local.unavailable("tensorflow") == "no environment for it on this machine"
    assert (
        local.unavailable("jax")
        == f"its environment {envs['bare']} lacks ipykernel, mlflow, hubforge.server_extension.kernel"
    )
    assert local.unavailable("r") == f"its environment {envs['empty']} has no bin/python"
    torch = local.environment("pytorch")
    assert torch is not None and kernel_python_env(torch) == {"HUBFORGE_KERNEL_PYTHON": f"{envs['derived']}/bin/python"}
    assert kernel_python_env(local.environment("scipy")) == {}  # the server's own kernel, unchanged
