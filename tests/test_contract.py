"""The contract between the platform's processes has one home: ``hubforge.contract``."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from hubforge import contract

ROOT = Path(__file__).resolve().parents[1]
#: The package's folders (the user's layout: each installed under ``hubforge.``).
SOURCES = ("core", "hub", "server_extension", "spawner_profiles", "widgets")
CONTRACT = ROOT / "core" / "contract.py"


def _python_files() -> list[Path]:
    return [path for folder in SOURCES for path in sorted((ROOT / folder).rglob("*.py"))]


def test_the_contract_imports_only_the_standard_library() -> None:
    tree = ast.parse(CONTRACT.read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported, "the parse found no imports at all"
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)


def test_every_platform_variable_is_named_only_in_the_contract() -> None:
    """A quoted ``HUBFORGE_*`` name outside the contract is a second spelling of the contract."""
    spelled = re.compile(r"""["']HUBFORGE_[A-Z_]+["']""")
    elsewhere = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _python_files()
        if path != CONTRACT
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line)
    ]
    assert not elsewhere, "\n".join(elsewhere)
    names = [value for key, value in vars(contract).items() if key.endswith("_ENV")]
    assert len(names) == len(set(names)) >= 20 and all(name.startswith("HUBFORGE_") for name in names)
    assert sorted(key for key in vars(contract) if key.endswith("_ENV")) == sorted(
        key for key in contract.__all__ if key.endswith("_ENV")
    )


@pytest.mark.parametrize(
    ("value", "off"),
    [
        ("off", True),
        (" OFF ", True),
        ("0", True),
        ("False", True),
        ("no", True),
        ("on", False),
        ("1", False),
        ("", False),
        (None, False),
        ("offline", False),
    ],
)
def test_a_switch_reads_the_same_everywhere(value: str | None, off: bool) -> None:
    assert contract.switched_off(value) is off
    env = {} if value is None else {contract.TRACKING_ENV: value}
    assert contract.tracking_on(env) is not off


def test_the_server_and_the_kernel_read_the_tracking_switch_alike() -> None:
    """The server hands the switch on (``tracking_state``), the kernel reads it (``KernelContext``)."""
    from hubforge.server_extension.kernel.context import KernelContext
    from hubforge.server_extension.launch import tracking_state

    for value in ("off", "No", "on", ""):
        handed = tracking_state({contract.TRACKING_ENV: value}, enabled=True)
        kernel = KernelContext.from_env({contract.TRACKING_ENV: handed, "JUPYTERHUB_USER": "alice"})
        assert kernel.enabled is (not contract.switched_off(value))
    assert tracking_state({}, enabled=False) == "off"
