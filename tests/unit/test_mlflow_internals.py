"""MLflow's private APIs are used in one module per side only.

In the MLflow server that is ``hub/mlflow/internals.py``; in kernels it is
``server_extension/kernel/patches.py`` (the two sides never import each other). An
MLflow upgrade that renames a private function should break one known place. This
reads every other module of the package and fails on a private MLflow name: an import
of ``_name`` from ``mlflow...``, an attribute ``_name`` of an imported MLflow module,
or one of MLflow's private environment variables, view or function names spelled out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INTERNALS = ROOT / "hub" / "mlflow" / "internals.py"
KERNEL_PATCHES = ROOT / "server_extension" / "kernel" / "patches.py"
SOURCES = sorted(
    path
    for folder in ("hub", "hubforge", "spawner_profiles", "server_extension", "widgets")
    for path in (ROOT / folder).rglob("*.py")
    if "__pycache__" not in path.parts and path not in {INTERNALS, KERNEL_PATCHES}
)


def private_uses(source: str) -> list[str]:
    """Private MLflow names ``source`` uses, as ``line: name``."""
    tree = ast.parse(source)
    modules: set[str] = set()  # local names bound to an mlflow module
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mlflow":
                    modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow" and not node.level:
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.lineno}: {node.module}.{alias.name}")
                else:
                    modules.add(alias.asname or alias.name)  # may be a module (handlers) or a class
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith(("_MLFLOW_", "_search_", "_get_"))
        ):
            found.append(f"{node.lineno}: {node.value!r}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_mlflow_api_outside_internals(path: Path) -> None:
    where = KERNEL_PATCHES if "server_extension" in path.parts else INTERNALS
    assert private_uses(path.read_text()) == [], f"move these into {where.relative_to(ROOT)}"


def test_the_reader_finds_each_kind_of_private_use() -> None:
    source = (
        "import os\n"
        "from mlflow.server import handlers\n"
        "from mlflow.server.handlers import _get_request_message\n"
        "def f():\n"
        "    handlers._get_graphql_auth_middleware = None\n"
        "    return os.environ.get('_MLFLOW_SGI_NAME'), '_search_experiments'\n"
    )
    assert len(private_uses(source)) == 4
    assert private_uses(INTERNALS.read_text()), "internals.py is where the server's private uses are"
    assert private_uses(KERNEL_PATCHES.read_text()), "patches.py is where the kernel's private uses are"
