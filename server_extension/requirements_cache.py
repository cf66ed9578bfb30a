"""Inferred model requirements, remembered on disk for as long as the environment stays the same.

MLflow infers a logged model's pip requirements by loading it in a fresh Python
process and mapping what that imports to installed distributions: seconds of
CPU for each model, and the same answer for every model of the same libraries
in the same environment. A person's kernels and fit loggers share one answer
per flavor and set of model libraries, under the spool root
(``requirements.json``), keyed by a fingerprint of what is installed: installing
or upgrading anything starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from hubforge.installed import distributions

__all__ = ["REQUIREMENTS", "RequirementsCache", "environment_fingerprint"]

#: The cache file, under the spool root.
REQUIREMENTS = "requirements.json"

#: No requirements list is longer; a longer one is not ours.
_MAX_ITEMS = 1000


def environment_fingerprint() -> str:
    """A digest of every installed distribution and its version."""
    seen = sorted({f"{name}=={version}".lower() for name, version in distributions()})
    return hashlib.sha256("\n".join(seen).encode()).hexdigest()[:32]


class RequirementsCache:
    """The cache file ``path``; :meth:`get` and :meth:`put` by flavor and model libraries."""

    def __init__(self, path: Path):
        self.path = path
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = environment_fingerprint()
        return self._fingerprint

    def get(self, flavor: str, libraries: frozenset[str]) -> list[str] | None:
        """The requirements remembered for this flavor and libraries here, or None."""
        known = self._read().get(self.fingerprint)
        value = known.get(_key(flavor, libraries)) if isinstance(known, dict) else None
        if isinstance(value, list) and len(value) <= _MAX_ITEMS and all(isinstance(v, str) for v in value):
            return list(value)
        return None

    def put(self, flavor: str, libraries: frozenset[str], requirements: list[str]) -> None:
        """Remember ``requirements``; answers of other environments are dropped."""
        with self._lock:
            known = self._read().get(self.fingerprint, {})
            known = known if isinstance(known, dict) else {}
            known[_key(flavor, libraries)] = list(requirements)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps({self.fingerprint: known}))
                os.replace(tmp, self.path)
            except OSError:
                tmp.unlink(missing_ok=True)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def _key(flavor: str, libraries: frozenset[str]) -> str:
    return f"{flavor}|{','.join(sorted(libraries))}"
