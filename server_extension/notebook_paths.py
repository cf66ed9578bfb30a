"""Which notebook each kernel belongs to now: written by the server, read by the kernel.

A kernel learns its notebook once, at start (``JPY_SESSION_NAME``). When the
person renames or moves the notebook, jupyter-server updates its session (a
``PATCH /api/sessions/<id>`` from JupyterLab) or emits a contents ``rename``
event; the kernel hears of neither. The server extension writes the current
path of every session's kernel to ``<spool root>/kernels/<kernel id>.json``
(see :mod:`hubforge.server_extension.sessions`), and the kernel's tracker looks
at that file (one ``stat``) before cells, at most every ``LOOK_EVERY_S``
seconds, and always when it ends or is asked its status, so the run's source,
its notebook tag and the snapshot follow the notebook.

Both sides are the same person: the file lives in their home, beside the spool.
It is still checked when read, since anything the person's code writes there
ends up in MLflow tags.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

__all__ = ["KERNELS", "LOOK_EVERY_S", "NotebookWatch", "path_file", "read_path", "remove_path", "write_path"]

KERNELS = "kernels"
#: No notebook path is longer; a longer one is not ours.
_PATH_MAX = 4096
#: Seconds between looks before cells. A look is a ``stat`` of a file in the person's home,
#: tens of microseconds between cells run back to back (the caches are cold by then), which
#: Run All would pay for every cell; nobody renames a notebook and starts a cell faster.
LOOK_EVERY_S = 0.25


def path_file(root: Path, kernel_id: str) -> Path:
    """Where the notebook path of ``kernel_id`` is kept under the spool ``root``."""
    if not kernel_id or not all(c.isalnum() or c in "-_" for c in kernel_id):
        raise ValueError(f"not a kernel id: {kernel_id!r}")
    return root / KERNELS / f"{kernel_id}.json"


def write_path(root: Path, kernel_id: str, path: str) -> None:
    """Record that ``kernel_id`` now runs the notebook at ``path`` (relative to the server root)."""
    target = path_file(root, kernel_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}")
    tmp.write_text(json.dumps({"path": path}))
    os.replace(tmp, target)


def remove_path(root: Path, kernel_id: str) -> None:
    """Forget ``kernel_id``'s notebook (its session is gone)."""
    with contextlib.suppress(ValueError):
        path_file(root, kernel_id).unlink(missing_ok=True)


def read_path(file: Path) -> str | None:
    """The notebook path recorded in ``file``, or None when it is missing or not a valid one."""
    try:
        data = json.loads(file.read_bytes())
    except (OSError, ValueError):
        return None
    path = data.get("path") if isinstance(data, dict) else None
    if not isinstance(path, str) or not path or len(path) > _PATH_MAX or "\x00" in path:
        return None
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts:
        return None
    return path


class NotebookWatch:
    """The kernel's side: the current notebook path, re-read only when the file changed.

    ``changed()`` costs one ``stat`` when nothing happened, and none when it looked less
    than ``LOOK_EVERY_S`` seconds ago, so it runs before every cell; ``changed(fresh=True)``
    always looks.
    """

    def __init__(self, root: Path, kernel_id: str, path: str):
        self.path = path
        try:
            self._file: Path | None = path_file(root, kernel_id)
        except ValueError:
            self._file = None  # no kernel id (a kernel started by hand): nothing to watch
        self._fspath = os.fspath(self._file) if self._file is not None else None
        self._seen: int | None = None
        self._next_look = 0.0

    def changed(self, fresh: bool = False) -> bool:
        """Whether the notebook moved since the last look (``path`` is then the new one)."""
        if self._fspath is None:
            return False
        now = time.monotonic()
        if now < self._next_look and not fresh:
            return False
        self._next_look = now + LOOK_EVERY_S
        try:
            stamp = os.stat(self._fspath).st_mtime_ns
        except OSError:
            return False
        if stamp == self._seen:
            return False
        self._seen = stamp
        current = read_path(Path(self._fspath))
        if current is None or current == self.path:
            return False
        self.path = current
        return True
