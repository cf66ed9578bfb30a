"""`make test`'s lanes keep their promise: the platform modules of lane 4 start no shared platform.

The Makefile runs the platform layer in two pytest processes: the modules on the shared
platforms (the session's SQLite and PostgreSQL platforms of tests/platform/conftest.py)
and ``OWN_PLATFORM_TESTS``, which start platforms of their own. A module of that list that
asked for a shared platform would start both of them a second time in its lane, costing
every run minutes; this test says which module and which test did.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The fixtures that start the shared platforms (tests/platform/conftest.py).
SHARED = {"platform", "session_for"}


def makefile_list(name: str) -> list[str]:
    """The words of the Makefile variable ``name`` (``$(addprefix P,...)`` applied)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    (value,) = re.findall(rf"^{name} :=(.*)$", text, re.MULTILINE)
    prefixed = re.fullmatch(r"\s*\$\(addprefix ([^,]+),(.*)\)\s*", value)
    if prefixed:
        return [prefixed.group(1) + word for word in prefixed.group(2).split()]
    return value.split()


def _fixture(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return ast.unparse(target) in ("pytest.fixture", "fixture")


def shared_platform_users(path: Path) -> list[str]:
    """The tests and fixtures of ``path`` whose parameters name a shared platform (pytest's
    requests; a helper's parameter named ``platform`` is just a parameter)."""
    tree = ast.parse(path.read_text(), str(path))
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    requests = [f for f in functions if f.name.startswith("test_") or any(map(_fixture, f.decorator_list))]
    return [f.name for f in requests if {a.arg for a in f.args.args + f.args.kwonlyargs} & SHARED]


def test_the_own_platform_modules_exist_and_ask_for_no_shared_platform() -> None:
    modules = makefile_list("OWN_PLATFORM_TESTS")
    assert modules, "the Makefile names the platform modules that start their own platforms"
    for module in modules:
        path = ROOT / module
        assert path.is_file() and path.parent == ROOT / "tests" / "platform", module
        assert shared_platform_users(path) == [], f"{module} asks for a shared platform"


def test_the_reader_sees_a_shared_platform_asked_for(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text(
        "import pytest\n"
        "def test_a(tmp_path): ...\n"
        "def test_b(platform, tmp_path): ...\n"
        "def helper(platform): ...\n"
        "@pytest.fixture(scope='module')\n"
        "async def people(*, session_for): ...\n"
    )
    assert shared_platform_users(module) == ["test_b", "people"]
