"""Fits a kernel trained but could not log before it ended, kept for the server to log.

A kernel logs each autologged fit after the cell that trained it, off the cell's
path (see :mod:`hubforge.server_extension.kernel.autolog`). A kernel shut down
right after its last fits, or while MLflow is away, may end before it has: it
keeps each such fit under the spool root, and the server's replay process logs
it as a child run of the notebook's run (see :mod:`hubforge.server_extension.replay`)::

    fits/<id>/fit.json    where it goes: the MLflow URI, the notebook's run (its id, or
                          the replay id of a run MLflow never opened), the fit's own run
                          if the kernel opened it, names and times, who logs it now
    fits/<id>/fit.pkl     the fitted estimator, its arguments and its result (cloudpickle)
    fits/<id>/.lock       held (flock) by the process logging it

While the kernel runs, its fit logger process (:mod:`.fit_logger`) owns the fits
it was handed (``owner_pid``); the server's replay takes only fits whose owner is
gone, and the lock keeps two loggers off one fit.

The pickle is the person's own objects, written by their kernel into their home
and read back by their own server's replay; an entry appears whole or not at all
(written under a dot-name, then renamed) and ``fit.json`` is checked field by field.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .pending import REJECTED, VERSION, _alive, _fsync_dir, _host, _write_durably, list_entries, read_json

__all__ = ["FITS", "KeptFit", "claim", "list_fits", "owned_elsewhere", "read_fit", "reject_fit", "write_fit"]

FITS = "fits"
_TEXT_MAX = 4096


@dataclass
class KeptFit:
    """What ``fit.json`` says. ``run_id`` is the notebook's run; when MLflow never opened it,
    ``replay_id`` names the pending entry whose replay opens it (tag ``hubforge.replay_id``)."""

    tracking_uri: str
    experiment_name: str
    integration: str
    method: str
    name: str
    started_ms: int
    ended_ms: int
    run_id: str | None = None
    replay_id: str = ""
    cwd: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    child_run_id: str = ""  # the fit's own run, when the kernel opened it
    owner_pid: int = 0  # the process that logs it now (a kernel's fit logger), if any
    owner_started: float = 0.0
    host: str = ""
    id: str = ""
    version: int = VERSION

    @classmethod
    def parse(cls, data: Any) -> KeptFit:
        """Check ``data`` (parsed ``fit.json``); ValueError names the first bad field."""
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError("fit.json: not a version 1 object")
        texts = ("tracking_uri", "experiment_name", "integration", "method", "name", "replay_id", "cwd", "id", "host")
        for name in texts:
            if not isinstance(data.get(name, ""), str) or len(data.get(name, "")) > _TEXT_MAX:
                raise ValueError(f"fit.json: {name} must be a string")
        for name in ("tracking_uri", "experiment_name", "integration", "method", "name"):
            if not data.get(name):
                raise ValueError(f"fit.json: {name} is empty")
        run_id = data.get("run_id")
        if run_id is not None and not (isinstance(run_id, str) and run_id.isalnum() and len(run_id) <= 64):
            raise ValueError("fit.json: run_id must be an MLflow run id or null")
        if run_id is None and not data.get("replay_id"):
            raise ValueError("fit.json: no run to log the fit under (run_id or replay_id)")
        child = data.get("child_run_id", "")
        if not (isinstance(child, str) and (child == "" or (child.isalnum() and len(child) <= 64))):
            raise ValueError("fit.json: child_run_id must be an MLflow run id or empty")
        pid, started = data.get("owner_pid", 0), data.get("owner_started", 0.0)
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            raise ValueError("fit.json: owner_pid must be a non-negative integer")
        if not isinstance(started, int | float) or isinstance(started, bool):
            raise ValueError("fit.json: owner_started must be a number")
        for name in ("started_ms", "ended_ms"):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"fit.json: {name} must be a non-negative integer")
        tags = data.get("tags", {})
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise ValueError("fit.json: tags must map strings to strings")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def write_fit(root: Path, fit: KeptFit, payload: bytes) -> Path:
    """Keep ``fit`` and its pickled objects under ``root``; the entry is complete when it appears."""
    fit.id = fit.id or f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    folder = root / FITS
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{fit.id}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _write_durably(tmp / "fit.pkl", payload)
    _write_durably(tmp / "fit.json", json.dumps(asdict(fit), indent=1).encode())
    os.rename(tmp, folder / fit.id)
    _fsync_dir(folder)
    return folder / fit.id


def list_fits(root: Path) -> list[Path]:
    """Complete kept fits under ``root``, oldest first."""
    return list_entries(root / FITS)


def read_fit(entry: Path) -> KeptFit:
    """The entry's ``fit.json``, checked; ValueError (one line) when it is not a valid one."""
    return KeptFit.parse(read_json(entry, "fit.json"))


def owned_elsewhere(fit: KeptFit) -> bool:
    """Whether another live process on this host logs ``fit`` (a kernel's fit logger)."""
    if not fit.owner_pid or fit.owner_pid == os.getpid() or fit.host != _host():
        return False
    return _alive(fit.owner_pid, fit.owner_started)


@contextmanager
def claim(entry: Path) -> Iterator[bool]:
    """Hold ``entry``'s lock inside the block; yields False (held elsewhere, or gone) instead."""
    try:
        handle = open(entry / ".lock", "a")  # noqa: SIM115 - held for the block
    except OSError:
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield entry.exists()


def reject_fit(root: Path, entry: Path, reason: str) -> Path:
    """Move a fit that cannot be logged out of the way, with ``reason.txt`` beside it."""
    folder = root / REJECTED
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"fit-{entry.name}"
    shutil.rmtree(target, ignore_errors=True)
    os.rename(entry, target)
    (target / "reason.txt").write_text(reason + "\n")
    return target
