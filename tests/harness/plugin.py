"""hubforge's pytest plugin (setup.cfg: ``-p harness.plugin``).

Every test gets the marker of its layer from the folder it is in: ``unit``,
``integration`` or ``platform`` (see docs/testing.md), so ``-m`` selects layers
whichever paths are given. Fixtures every layer may use are here; those of one
layer are in that layer's conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
#: The layers, each a folder of tests/ and a marker of the same name.
LAYERS = ("unit", "integration", "features", "platform")


def layer_of(path: Path) -> str | None:
    """The layer of a test file: the folder of tests/ it is in (None outside the layers)."""
    try:
        folder = Path(path).resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return folder if folder in LAYERS else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer before ``-m`` selects (hence ``tryfirst``)."""
    for item in items:
        layer = layer_of(item.path)
        if layer is not None:
            item.add_marker(layer)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots); kept after the run."""
    path = Path(__file__).resolve().parents[2] / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
