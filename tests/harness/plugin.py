"""hubforge's pytest plugin (setup.cfg: ``-p harness.plugin``).

Every test gets the marker of its layer from the folder it is in: ``unit``,
``integration`` or ``platform`` (see docs/testing.md), so ``-m`` selects layers
whichever paths are given. Fixtures every layer may use are here; those of one
layer are in that layer's conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


#: Lines of a platform's log shown with a test of it that failed.
PLATFORM_LOG_LINES = 80


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failed test of a running platform shows the end of that platform's log (the hub's,
    its services' and people's servers' output): its folder is gone by the end of a CI run."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    platform = getattr(item, "funcargs", {}).get("platform")
    tail = getattr(platform, "log_tail", None)
    if callable(tail):
        report.sections.append(("the platform's log, its end", tail(PLATFORM_LOG_LINES)))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots); kept after the run."""
    path = Path(__file__).resolve().parents[2] / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
