"""The feature browser on a registry of 2,000 feature views (issue 13), same run:

- **open**: from the catalog the features service sends (its bytes) to the browser
  showing its first results, against what a notebook does without a catalog: import
  Feast and list the registry's feature views and services (in the Feast environment,
  timed there; reported with and without Feast's import). Target: ≤ 300 ms.
- **keystroke**: one search as a person types ``domain17 view`` letter by letter (the
  browser's search and results), against the least any search can do, a substring test
  of every view's name. Target: ≤ 50 ms.

The registry is generated once with the real Feast (about a minute) and kept under
``build/bench/``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path

from bench.report import Result
from hubforge.config import load_config
from hubforge.features.catalog import Catalog
from hubforge.features.environment import feast_python

VIEWS = 2000
ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench" / f"features-{VIEWS}"
TYPED = "domain17 view"


def _feast(*args: str) -> str:
    python = feast_python(load_config(None, environ={}))
    script = ROOT / "bench" / "features_registry.py"
    done = subprocess.run([str(python), str(script), *args], capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the Feast environment failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def registry() -> Path:
    """The generated repository (made with the real Feast the first time)."""
    marker = (ROOT / "bench" / "features_registry.py").read_text()
    stamp = CACHE / ".generator"
    if not (stamp.is_file() and stamp.read_text() == marker and (CACHE / "catalog.json").is_file()):
        CACHE.mkdir(parents=True, exist_ok=True)
        _feast("generate", str(CACHE), str(VIEWS))
        stamp.write_text(marker)
    return CACHE


def _open(body: bytes) -> float:
    """Seconds from the service's bytes to the browser's first results."""
    from hubforge.widgets.feature_browser import FeatureBrowser

    started = time.perf_counter()
    catalog = Catalog.from_json(body)
    browser = FeatureBrowser(client=_Loaded(catalog))
    browser.search("")
    assert browser.results
    return time.perf_counter() - started


class _Loaded:
    """A client whose catalog is already here (the bench times what the browser does with it)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def catalog(self) -> Catalog:
        return self._catalog


def _keystrokes(catalog: Catalog) -> list[float]:
    from hubforge.widgets.feature_browser import FeatureBrowser

    browser = FeatureBrowser(client=_Loaded(catalog))
    browser.search("")
    times = []
    for end in range(1, len(TYPED) + 1):
        started = time.perf_counter()
        browser.search(TYPED[:end])
        times.append(time.perf_counter() - started)
    assert browser.results
    return times


def _substring(names: list[str]) -> list[float]:
    times = []
    for end in range(1, len(TYPED) + 1):
        words = TYPED[:end].lower().split()
        started = time.perf_counter()
        found = [n for n in names if all(w in n for w in words)]
        times.append(time.perf_counter() - started)
        assert found is not None
    return times


def run(repeat: int) -> list[Result]:
    """Opening the browser and typing in it, against Feast's registry and a bare filter."""
    repo = registry()
    body = (repo / "catalog.json").read_bytes()
    catalog = Catalog.from_json(body)
    names = [item.name for item in catalog.of_kind("feature_view")]
    assert len(names) == VIEWS
    opened, feast_import, feast_list, typed, floor = [], [], [], [], []
    for _ in range(repeat):
        opened.append(_open(body) * 1000)
        timing = json.loads(_feast("baseline", str(repo)))
        feast_import.append((timing["import"] + timing["list"]) * 1000)
        feast_list.append(timing["list"] * 1000)
        typed.extend(t * 1000 for t in _keystrokes(catalog))
        floor.extend(t * 1000 for t in _substring(names))
    p99 = [statistics.quantiles(typed, n=100)[98]]
    floor_p99 = [statistics.quantiles(floor, n=100)[98]]
    return [
        Result("features: open browser, 2k views", "ms", opened, feast_list, "Feast: list views+services"),
        Result("features: open browser, 2k views", "ms", opened, feast_import, "Feast: import + list"),
        Result("features: keystroke search (p50)", "ms", typed, floor, "substring test of names"),
        Result("features: keystroke search (p99)", "ms", p99, floor_p99, "substring test of names"),
    ]
