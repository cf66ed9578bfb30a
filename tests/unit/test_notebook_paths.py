"""Where a kernel learns its notebook's current path: the file the server writes, pure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hubforge.server_extension import notebook_paths
from hubforge.server_extension.notebook_paths import (
    LOOK_EVERY_S,
    NotebookWatch,
    path_file,
    read_path,
    remove_path,
    write_path,
)
from hubforge.server_extension.sessions import moved_path

KERNEL = "0f6a1c2e-77d4-4c1b-9a3e-2b8f3c5d6e7f"


def test_a_written_path_reads_back(tmp_path: Path) -> None:
    write_path(tmp_path, KERNEL, "work/churn.ipynb")
    assert path_file(tmp_path, KERNEL) == tmp_path / "kernels" / f"{KERNEL}.json"
    assert read_path(path_file(tmp_path, KERNEL)) == "work/churn.ipynb"
    remove_path(tmp_path, KERNEL)
    assert not path_file(tmp_path, KERNEL).exists()
    remove_path(tmp_path, KERNEL)  # gone already: nothing to do


@pytest.mark.parametrize("kernel_id", ["", "../x", "a/b", "k.json", "id with space", ".hidden"])
def test_only_kernel_ids_name_files(tmp_path: Path, kernel_id: str) -> None:
    with pytest.raises(ValueError, match="not a kernel id"):
        path_file(tmp_path, kernel_id)
    remove_path(tmp_path, kernel_id)  # refused quietly: a session without a sane kernel id


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        json.dumps({"path": 3}).encode(),
        json.dumps({"path": ""}).encode(),
        json.dumps({"path": "/etc/passwd"}).encode(),
        json.dumps({"path": "work/../../secret.ipynb"}).encode(),
        json.dumps({"path": "a\x00b.ipynb"}).encode(),
        json.dumps({"path": "x" * 5000}).encode(),
    ],
)
def test_what_is_not_a_notebook_path_reads_as_nothing(tmp_path: Path, content: bytes) -> None:
    file = tmp_path / "kernels" / f"{KERNEL}.json"
    file.parent.mkdir()
    file.write_bytes(content)
    assert read_path(file) is None


def test_the_watch_sees_each_move_once(tmp_path: Path) -> None:
    watch = NotebookWatch(tmp_path, KERNEL, "Untitled.ipynb")
    assert not watch.changed(fresh=True), "no file yet: the start path stands"
    write_path(tmp_path, KERNEL, "Untitled.ipynb")
    assert not watch.changed(fresh=True), "the same path is no move"
    write_path(tmp_path, KERNEL, "churn.ipynb")
    os.utime(path_file(tmp_path, KERNEL), ns=(1, 1))  # a new stamp even within one clock tick
    assert watch.changed(fresh=True) and watch.path == "churn.ipynb"
    assert not watch.changed(fresh=True)
    path_file(tmp_path, KERNEL).write_text("garbage")
    os.utime(path_file(tmp_path, KERNEL), ns=(2, 2))
    assert not watch.changed(fresh=True) and watch.path == "churn.ipynb", "a bad file keeps the last good path"


def test_before_cells_the_watch_looks_at_most_every_quarter_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cells run back to back (Run All) pay one ``stat`` per ``LOOK_EVERY_S``, not one each;
    a move is seen by the first cell after that, and at once when asked fresh."""
    clock = [100.0]
    monkeypatch.setattr(notebook_paths.time, "monotonic", lambda: clock[0])
    watch = NotebookWatch(tmp_path, KERNEL, "Untitled.ipynb")
    looks: list[str] = []
    real_stat, file = os.stat, str(path_file(tmp_path, KERNEL))

    def stat(path: object, **kwargs: object) -> os.stat_result:
        if path == file:  # the watch's own look (pathlib calls os.stat too)
            looks.append(file)
        return real_stat(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(notebook_paths.os, "stat", stat)
    write_path(tmp_path, KERNEL, "Untitled.ipynb")
    assert not watch.changed() and len(looks) == 1, "the first cell looks"
    write_path(tmp_path, KERNEL, "churn.ipynb")
    os.utime(path_file(tmp_path, KERNEL), ns=(1, 1))
    clock[0] += LOOK_EVERY_S / 2
    assert not watch.changed() and len(looks) == 1 and watch.path == "Untitled.ipynb", "too soon: no look"
    clock[0] += LOOK_EVERY_S / 2
    assert watch.changed() and watch.path == "churn.ipynb" and len(looks) == 2
    write_path(tmp_path, KERNEL, "final.ipynb")
    os.utime(path_file(tmp_path, KERNEL), ns=(2, 2))
    assert watch.changed(fresh=True) and watch.path == "final.ipynb", "asked fresh, it looks whatever the clock"


def test_a_kernel_without_an_id_watches_nothing(tmp_path: Path) -> None:
    watch = NotebookWatch(tmp_path, "", "kernel-42")
    assert not watch.changed() and watch.path == "kernel-42"


@pytest.mark.parametrize(
    ("path", "source", "target", "expected"),
    [
        ("Untitled.ipynb", "Untitled.ipynb", "churn.ipynb", "churn.ipynb"),
        ("work/a.ipynb", "work", "projects/2026", "projects/2026/a.ipynb"),
        ("work/deep/a.ipynb", "/work/", "archive", "archive/deep/a.ipynb"),
        ("work/a.ipynb", "work/a.ipynb", "a.ipynb", "a.ipynb"),
        ("workbench/a.ipynb", "work", "play", None),
        ("other.ipynb", "work", "play", None),
        ("work/a.ipynb", "work", "", "a.ipynb"),
    ],
)
def test_moved_path(path: str, source: str, target: str, expected: str | None) -> None:
    assert moved_path(path, source, target) == expected
