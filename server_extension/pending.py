"""Run data a process could not deliver before it ended, kept on disk for a later one.

A kernel that shuts down while MLflow is away (or that never reached it) leaves
what MLflow has not acknowledged here; the user's server replays it when MLflow
is back (:mod:`hubforge.server_extension.replay`). Layout, under the spool root
(``HUBFORGE_SPOOL_DIR``; by default ``<jupyter data dir>/hubforge/spool``, in the
person's home, so it outlives the server too)::

    pending/<id>/run.json       the run: MLflow URI, run id or how to open it, end status
    pending/<id>/items.jsonl    metrics, params and tags not acknowledged, a JSON list per line
    pending/<id>/artifacts/<artifact path>/<file>
    live/<pid>-<id>.json        a kernel recording a run now: the same header, plus its
                                process, its disk spool file and its environment
    rejected/<id>/              entries that could not be replayed, and
    rejected/<id>-refused/      records MLflow refused while a kernel ran, each
                                with reason.txt saying why

A kernel that dies without ending its run (killed, out of memory) leaves its
``live/`` file behind; :func:`adopt_dead` turns it, with whatever the kernel had
spilled to disk and the notebook as it is on disk, into a pending entry whose
run ends KILLED.

An entry appears whole or not at all: it is written under a dot-name, fsync'd
and renamed. Its files are checked when read back; an entry that does not parse
is moved to ``rejected/`` with the reason beside it, never replayed half.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hubforge.contract import RUN, RUN_VERSION, SPOOL_DIR_ENV, STR_MAX, Item, item_refusal

__all__ = [
    "PendingRun",
    "adopt_dead",
    "default_spool_root",
    "keep_refused",
    "list_entries",
    "list_pending",
    "read_items",
    "read_json",
    "read_pending",
    "reject",
    "remove_live",
    "spool_root",
    "write_items",
    "write_live",
    "write_pending",
    "write_run",
]

VERSION = RUN_VERSION
PENDING, REJECTED, LIVE = "pending", "rejected", "live"
#: The placeholder run id items carry until MLflow has named the run (see the tracker).
PLACEHOLDER = "hubforge-pending-run"
_STATUSES = ("FINISHED", "FAILED", "KILLED", None)
#: What a live/ file says beside the run header.
_LIVE_ONLY = ("pid", "started", "host", "spool_file", "requirements")


@dataclass
class PendingRun:
    """What ``run.json`` says: where the data goes and how the run ends.

    ``run_id`` is None when MLflow never opened the run: the replayer opens it in
    ``experiment_name`` with ``tags`` and ``start_time``, marks it with
    ``hubforge.replay_id`` (so a replay cut short never opens a second one) and
    records its id here. ``status`` None leaves the run's state alone.
    """

    tracking_uri: str
    run_id: str | None
    experiment_name: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    start_time: int = 0
    status: str | None = "FINISHED"
    end_time: int = 0
    dropped: int = 0
    id: str = ""
    notebook_file: str = ""
    version: int = VERSION

    @classmethod
    def parse(cls, data: Any) -> PendingRun:
        """Check ``data`` (parsed ``run.json``) field by field; ValueError names the first bad one."""
        if not isinstance(data, dict):
            raise ValueError("run.json: not an object")
        if type(data.get("version")) is not int or data["version"] != VERSION:
            raise ValueError(f"run.json: version {data.get('version')!r}, expected {VERSION}")
        run = cls(tracking_uri="", run_id=None)
        for name, kind in (("tracking_uri", str), ("experiment_name", str), ("id", str), ("notebook_file", str)):
            value = data.get(name, "")
            if not isinstance(value, kind) or len(value) > STR_MAX:
                raise ValueError(f"run.json: {name} must be a string")
            setattr(run, name, value)
        if not run.tracking_uri:
            raise ValueError("run.json: tracking_uri is empty")
        run_id = data.get("run_id")
        if run_id is not None and not (
            isinstance(run_id, str) and run_id.isascii() and run_id.isalnum() and len(run_id) <= 64
        ):
            raise ValueError("run.json: run_id must be an MLflow run id or null")
        run.run_id = run_id
        if run_id is None and not run.experiment_name:
            raise ValueError("run.json: a run not opened yet needs an experiment_name")
        tags = data.get("tags", {})
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise ValueError("run.json: tags must map strings to strings")
        run.tags = dict(tags)
        for name in ("start_time", "end_time", "dropped"):
            value = data.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"run.json: {name} must be a non-negative integer")
            setattr(run, name, value)
        if data.get("status", "FINISHED") not in _STATUSES:
            raise ValueError(f"run.json: status {data.get('status')!r} is not FINISHED, FAILED, KILLED or null")
        run.status = data.get("status", "FINISHED")
        return run


def default_spool_root() -> Path:
    """``<jupyter data dir>/hubforge/spool``: in the person's home, kept across servers."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "hubforge" / "spool"


def spool_root(env: Mapping[str, str] | None = None) -> Path:
    """The spool root: ``HUBFORGE_SPOOL_DIR`` if set, else :func:`default_spool_root`."""
    env = os.environ if env is None else env
    configured = env.get(SPOOL_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else default_spool_root()


def write_pending(
    root: Path,
    run: PendingRun,
    items: Iterable[Item],
    artifacts: Iterable[tuple[Path, str]] = (),
) -> Path:
    """Keep ``run`` with its ``items`` and ``artifacts`` ((local file, artifact path)) under ``root``.

    Returns the entry's folder. The artifacts are copied; the entry is complete when
    it becomes visible.
    """
    run.id = run.id or f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    pending = root / PENDING
    pending.mkdir(parents=True, exist_ok=True)
    tmp = pending / f".{run.id}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for local, artifact_path in artifacts:
        target = tmp / "artifacts" / _safe_relative(artifact_path)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target / local.name)
        _fsync_file(target / local.name)
    _write_durably(tmp / "items.jsonl", b"".join(_line(item) for item in items))
    _write_durably(tmp / "run.json", json.dumps(asdict(run), indent=1).encode())
    final = pending / run.id
    os.rename(tmp, final)
    _fsync_dir(pending)
    return final


def list_pending(root: Path) -> list[Path]:
    """Complete entries under ``root``, oldest first."""
    return list_entries(root / PENDING)


def list_entries(folder: Path) -> list[Path]:
    """The complete entries (folders not under a dot-name) in ``folder``, oldest first."""
    try:
        entries = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except FileNotFoundError:
        return []
    return sorted(entries, key=lambda p: p.name)


def read_json(entry: Path, name: str) -> Any:
    """``entry/name`` parsed; ValueError naming the file when it cannot be read or parsed."""
    try:
        return json.loads((entry / name).read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def read_pending(entry: Path) -> PendingRun:
    """The entry's ``run.json``, checked; ValueError (one line) when it is not a valid one."""
    return PendingRun.parse(read_json(entry, "run.json"))


def read_items(entry: Path) -> list[Item]:
    """The entry's items, each checked; ValueError names the first bad line."""
    items: list[Item] = []
    try:
        lines = (entry / "items.jsonl").read_bytes().splitlines()
    except FileNotFoundError:
        return items
    for number, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except ValueError:
            raise ValueError(f"items.jsonl line {number}: not JSON") from None
        if why := item_refusal(item):
            raise ValueError(f"items.jsonl line {number}: not a metric, param or tag record ({why})")
        items.append(item)
    return items


def write_items(entry: Path, items: Iterable[Item]) -> None:
    """Replace the entry's items (what is left after a partial replay), atomically."""
    _replace_durably(entry / "items.jsonl", b"".join(_line(item) for item in items))


def write_run(entry: Path, run: PendingRun) -> None:
    """Replace the entry's ``run.json`` (the run id, once opened), atomically."""
    _replace_durably(entry / "run.json", json.dumps(asdict(run), indent=1).encode())


def reject(root: Path, entry: Path, reason: str) -> Path:
    """Move a bad entry out of the way, with ``reason.txt`` beside its files."""
    folder = root / REJECTED
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / entry.name
    shutil.rmtree(target, ignore_errors=True)
    os.rename(entry, target)
    (target / "reason.txt").write_text(reason + "\n")
    return target


def keep_refused(root: Path, run: PendingRun, items: list[Item], reasons: list[str]) -> Path:
    """Keep records MLflow refused, beside the run they were for; one reason line per record.

    One folder per run (``rejected/<run record id>-refused/``): ``run.json`` names the
    run, ``items.jsonl`` and ``reason.txt`` grow line by line, in step.
    """
    run.id = run.id or f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    folder = root / REJECTED / f"{run.id}-refused"
    folder.mkdir(parents=True, exist_ok=True)
    _replace_durably(folder / "run.json", json.dumps(asdict(run), indent=1).encode())
    _append_durably(folder / "items.jsonl", b"".join(_line(item) for item in items))
    _append_durably(folder / "reason.txt", "".join(f"{why}\n" for why in reasons).encode())
    return folder


def write_live(root: Path, run: PendingRun, spool_file: Path, requirements: str = "") -> Path:
    """Record that this process is recording ``run`` (rewritten when the run is named or moves).

    ``requirements`` (the environment, as ``pip freeze`` says it) lets the server end
    the run with its environment if the process dies.
    """
    run.id = run.id or f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    folder = root / LIVE
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    data = {**asdict(run), "pid": pid, "started": _process_start(pid), "host": _host(), "spool_file": str(spool_file)}
    if requirements:
        data["requirements"] = requirements
    path = folder / f"{pid}-{run.id}.json"
    _replace_durably(path, json.dumps(data, indent=1).encode())
    return path


def remove_live(path: Path | None) -> None:
    """The process ended its run (or kept it as a pending entry): forget it."""
    if path is not None:
        path.unlink(missing_ok=True)


def adopt_dead(root: Path, notebook_root: Path | None = None) -> list[Path]:
    """Turn the ``live/`` files of kernels that died into pending entries; return them.

    A file is adopted when it was written on this host and its process is gone (or
    its pid now belongs to a later process). Files of other hosts sharing the home
    folder (pods with one volume) are theirs to adopt. The kernel's spilled items
    become the entry's items; what it held in memory died with it. The notebook, as
    it is on disk (only from under ``notebook_root``, the server's root folder), and
    the environment the kernel recorded become its artifacts. A run MLflow never
    opened and that spilled nothing leaves no entry.
    """
    adopted: list[Path] = []
    try:
        files = sorted(p for p in (root / LIVE).iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return adopted
    for path in files:
        try:
            data = json.loads(path.read_bytes())
            pid, started, host = data.get("pid"), data.get("started"), data.get("host")
        except (OSError, ValueError, AttributeError):
            continue  # being rewritten, or not ours to judge
        if host != _host() or not isinstance(pid, int) or _alive(pid, started):
            continue
        spool_file = Path(str(data.get("spool_file", "")))
        try:
            run = PendingRun.parse({k: v for k, v in data.items() if k not in _LIVE_ONLY})
            items = _spooled_items(spool_file, run.run_id)
        except ValueError:
            items, run = [], None
        # The same id as the kernel's own pending entry: a kernel killed after writing that
        # entry and before forgetting its live file does not get a second one.
        kept = bool(run and run.id) and (root / PENDING / run.id).exists()  # type: ignore[union-attr]
        if run is not None and (run.run_id is not None or items) and not kept:
            run.status, run.end_time = "KILLED", int(_last_write(path, spool_file) * 1000)
            with tempfile.TemporaryDirectory(prefix="hubforge-adopt-") as tmp:
                artifacts = _left_behind(Path(tmp), run, data.get("requirements"), notebook_root)
                adopted.append(write_pending(root, run, items, artifacts))
        if spool_file.name.startswith("spool-") and spool_file.parent == root:
            spool_file.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    return adopted


def _left_behind(
    folder: Path, run: PendingRun, requirements: Any, notebook_root: Path | None
) -> list[tuple[Path, str]]:
    """A dead kernel's artifacts: the environment it recorded, its notebook as it is on disk.

    The notebook is read only from under ``notebook_root`` (symbolic links resolved): the
    live file that names it was written by code the person runs.
    """
    files = []
    if isinstance(requirements, str) and requirements and len(requirements) <= STR_MAX * 10:
        (folder / "requirements.txt").write_text(requirements)
        files.append((folder / "requirements.txt", "environment"))
    notebook = Path(run.notebook_file).resolve() if run.notebook_file and notebook_root else None
    inside = notebook is not None and notebook_root is not None and notebook.is_relative_to(notebook_root.resolve())
    if notebook is not None and inside and notebook.suffix == ".ipynb" and notebook.is_file():
        try:
            shutil.copyfile(notebook, folder / notebook.name)
            files.append((folder / notebook.name, "notebook"))
        except OSError:
            pass
    return files


def _spooled_items(spool_file: Path, run_id: str | None) -> list[Item]:
    """The items a dead kernel's spool file holds (chunks, one JSON list per line)."""
    items: list[Item] = []
    try:
        lines = spool_file.read_bytes().splitlines()
    except OSError:
        return items
    for line in lines:
        try:
            chunk = json.loads(line)
        except ValueError:
            break  # a chunk cut short by the kill: the ones before it are whole
        for item in chunk if isinstance(chunk, list) else ():
            if item_refusal(item) is None:
                if item[RUN] == PLACEHOLDER and run_id:
                    item[RUN] = run_id
                items.append(item)
    return items


def _last_write(*paths: Path) -> float:
    """The newest modification time of ``paths`` (about when their process last recorded)."""
    times = []
    for path in paths:
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            continue
    return max(times, default=time.time())


def _host() -> str:
    return os.uname().nodename


def _process_start(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch); None when it is gone or a zombie."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except psutil.Error:
        return None


def _alive(pid: int, started: Any) -> bool:
    """Whether ``pid`` is still the process that wrote the file (not a later one with its pid)."""
    now = _process_start(pid)
    if now is None:
        return False
    return not isinstance(started, int | float) or abs(now - float(started)) < 1.0


def _safe_relative(artifact_path: str) -> Path:
    parts = [p for p in Path(artifact_path).parts if p not in ("", ".", "/")]
    if any(p == ".." for p in parts):
        raise ValueError(f"artifact path {artifact_path!r} leaves the entry")
    return Path(*parts) if parts else Path()


def _line(item: Item) -> bytes:
    # NaN and infinities are valid metric values; Python's json reads back what it writes.
    return (json.dumps(item, separators=(",", ":")) + "\n").encode()


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _append_durably(path: Path, data: bytes) -> None:
    with open(path, "ab") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _replace_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once: written beside it under a dot-name, then renamed."""
    tmp = path.with_name(f".{path.name}")
    _write_durably(tmp, data)
    os.replace(tmp, path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
