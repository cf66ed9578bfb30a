"""The import graph has layers, and the sources keep to them.

The shared package (``hubforge/``: config, contract, catalog, errors, CLI) sits at the
bottom and imports none of the parts above it; the hub side (``hub/``,
``spawner_profiles/``) and the server side (``server_extension/``, ``widgets/``) never
import each other: they meet through REST, the platform config and
``hubforge.contract``. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubforge.cli import COMMANDS_GROUP, build_parser

ROOT = Path(__file__).resolve().parents[2]
#: Folder of the user's layout -> the package it is imported as.
PACKAGES = {
    "hubforge": "hubforge",
    "hub": "hubforge.hub",
    "spawner_profiles": "hubforge.spawner_profiles",
    "server_extension": "hubforge.server_extension",
    "widgets": "hubforge.widgets",
}
HUB_SIDE = ("hubforge.hub", "hubforge.spawner_profiles")
SERVER_SIDE = ("hubforge.server_extension", "hubforge.widgets")
#: What each folder may not import.
FORBIDDEN = {
    "hubforge": HUB_SIDE + SERVER_SIDE,
    "hub": SERVER_SIDE,
    "spawner_profiles": SERVER_SIDE,
    "server_extension": HUB_SIDE,
    "widgets": HUB_SIDE,
}


def _module_name(folder: str, path: Path) -> str:
    parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGES[folder], *parts])


def imported(folder: str, path: Path, text: str | None = None) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path``, relative ones resolved.

    ``text``: the module's source, when it is not read from ``path``.
    """
    module = _module_name(folder, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    source = path.read_text() if text is None else text
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # `from hubforge import hub` imports the hub package
                yield node.lineno, f"{base}.{alias.name}"


def sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_each_folder_keeps_to_its_layer(folder: str) -> None:
    assert sources(folder), f"no sources found under {folder}/"
    crossings = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sources(folder)
        for line, name in imported(folder, path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[folder])
    ]
    assert crossings == []


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("def late():\n    from ...server_extension import app\n", "hubforge.server_extension.app"),
        ("from ... import widgets\n", "hubforge.widgets"),
        ("import hubforge.server_extension.kernel\n", "hubforge.server_extension.kernel"),
        ("from hubforge import server_extension as s\n", "hubforge.server_extension"),
    ],
)
def test_the_import_reader_sees_every_spelling(source: str, name: str) -> None:
    # The layer check is only as good as this reader: late, relative and aliased imports
    # from a module two levels down the hub side are all seen as the crossing they are.
    path = ROOT / "hub" / "governance" / "probe.py"
    names = {found for _, found in imported("hub", path, source)}
    assert name in names
    assert any(n.startswith(SERVER_SIDE) for n in names)


def test_the_parts_register_their_subcommands() -> None:
    # `hubforge up`, `profiles` and `k8s` come from the hub and the spawners through the
    # entry-point group; the shared package only owns `config` and `features` (hubforge.features).
    subcommands = next(action for action in build_parser()._actions if action.dest == "command").choices
    assert set(subcommands) == {"config", "features", "up", "profiles", "k8s", "audit", "apps", "schedule"}
    assert COMMANDS_GROUP == "hubforge.commands"
