"""What a notebook's run ends with: the notebook as it is on disk, and the environment."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

__all__ = ["freeze", "session_files"]


def freeze() -> str:
    """``pip freeze`` without a subprocess: name==version of every installed distribution."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(sorted(seen.values(), key=str.lower)) + "\n"


def session_files(folder: Path, notebook_file: Path | None, requirements: str | None = None) -> list[tuple[Path, str]]:
    """The environment and the notebook as files in ``folder``, with their artifact paths.

    The notebook is copied as it is on disk (what the person last saved); a
    notebook that is gone (deleted, or never saved) is left out.
    """
    req = folder / "requirements.txt"
    req.write_text(freeze() if requirements is None else requirements)
    files = [(req, "environment")]
    if notebook_file is not None and notebook_file.suffix == ".ipynb" and notebook_file.is_file():
        copy = folder / notebook_file.name
        try:
            shutil.copyfile(notebook_file, copy)
        except OSError:
            return files
        files.append((copy, "notebook"))
    return files
