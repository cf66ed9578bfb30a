"""What a notebook's run ends with: the notebook as it is on disk, the cells as they ran, the environment,
the feature reads."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hubforge.installed import freeze

__all__ = ["EXECUTED", "RETRIEVALS", "executed_cells", "feature_files", "session_files"]

#: The artifact (under ``notebook/``) that lists the cells in the order they ran.
EXECUTED = "executed_cells.py"
#: The artifact (under ``features/``) that lists the feature reads of the session.
RETRIEVALS = "retrievals.json"


def executed_cells(history: list[str]) -> str:
    """The cells a kernel ran, in order, each under its execution count (IPython's ``In``)."""
    lines = ["# The cells this kernel ran, in the order it ran them (recorded by hubforge)."]
    for count, source in enumerate(history[1:], 1):
        lines += ["", f"# In[{count}]", source.rstrip("\n")]
    return "\n".join(lines) + "\n"


def session_files(
    folder: Path, notebook_file: Path | None, requirements: str | None = None, history: list[str] | None = None
) -> list[tuple[Path, str]]:
    """The environment, the notebook and the cells as they ran, as files in ``folder``, with
    their artifact paths.

    The notebook is copied as it is on disk (what the person last saved; a notebook
    that is gone is left out); ``history`` (IPython's input history, ``In``) says what
    ran, saved or not.
    """
    req = folder / "requirements.txt"
    req.write_text(freeze() if requirements is None else requirements)
    files = [(req, "environment")]
    if history and len(history) > 1:
        (folder / EXECUTED).write_text(executed_cells(history))
        files.append((folder / EXECUTED, "notebook"))
    if notebook_file is not None and notebook_file.suffix == ".ipynb" and notebook_file.is_file():
        copy = folder / notebook_file.name
        try:
            shutil.copyfile(notebook_file, copy)
        except OSError:
            return files
        files.append((copy, "notebook"))
    return files


def feature_files(folder: Path, summary: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """The session's feature reads (:meth:`hubforge.features.usage.FeatureUsage.summary`) as
    ``features/retrievals.json`` in ``folder``; nothing when it read none."""
    if not summary:
        return []
    path = folder / RETRIEVALS
    path.write_text(json.dumps(summary, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return [(path, "features")]
