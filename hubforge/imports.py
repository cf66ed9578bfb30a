"""Imports that cost every hubforge process its start-up, deferred to their first use.

``jsonschema`` (the config's validator, and jupyter_events', nbformat's) imports
``rfc3987_syntax`` as it loads, for the ``iri`` and ``iri-reference`` formats. That
package builds about 35 Earley parsers at import: some 0.6 s of CPU in every
process that imports jsonschema (python-jsonschema/jsonschema#1428), two thirds of
a ``hubforge`` command's start and a share of every service's. No schema of the
platform's, JupyterHub's or Jupyter's uses those formats.

:func:`defer_slow_imports` (called by ``hubforge/__init__.py``, so before anything
of hubforge's imports jsonschema) puts a stand-in package in its place: the same
package path, so its submodules import as they would, and the same names, each
loading the real package the first time it is used. Validation is unchanged;
only the time it is paid moves to the first ``iri`` check, which most processes
never make. A process that imported jsonschema before hubforge keeps what it has.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

__all__ = ["DEFERRED", "defer_slow_imports"]

#: The package deferred, and the submodule whose names it re-exports (``from .x import *``).
DEFERRED = "rfc3987_syntax"
_REAL = "rfc3987_syntax.syntax_helpers"


def _load_real() -> ModuleType:
    """The real names' module, imported (parsers built) the first time it is asked for."""
    return importlib.import_module(_REAL)


def is_valid_syntax(term: str, value: str) -> bool:
    """``rfc3987_syntax.is_valid_syntax``, the one name jsonschema binds at import."""
    return bool(_load_real().is_valid_syntax(term, value))


def _module_getattr(name: str) -> Any:
    """Any other name of the package: from the real module, kept on the stand-in."""
    if name.startswith("__"):
        raise AttributeError(name)
    real = _load_real()
    package = sys.modules[DEFERRED]
    for key, value in vars(real).items():
        if not key.startswith("_"):
            package.__dict__.setdefault(key, value)
    try:
        return package.__dict__[name]
    except KeyError:
        raise AttributeError(f"module {DEFERRED!r} has no attribute {name!r}") from None


class _StandIn(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
        module.__getattr__ = _module_getattr  # type: ignore[method-assign]


class _Finder(importlib.abc.MetaPathFinder):
    """Finds :data:`DEFERRED` where it is installed and gives it the stand-in's loader."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != DEFERRED:
            return None
        real = importlib.machinery.PathFinder.find_spec(fullname)
        if real is None or real.submodule_search_locations is None:
            return None  # not installed (jsonschema then goes without it, as it would)
        spec = importlib.machinery.ModuleSpec(fullname, _StandIn(), origin=real.origin, is_package=True)
        spec.submodule_search_locations = list(real.submodule_search_locations)
        return spec


def defer_slow_imports() -> None:
    """Install the stand-in, unless the package is loaded already (then there is nothing to save)."""
    if DEFERRED in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
