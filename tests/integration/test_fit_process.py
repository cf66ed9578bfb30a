"""The kernel's fit logger process, its protocol and its replacement, and the requirements it remembers.

The process is replaced by a stand-in that speaks the same protocol (ids in,
JSON answers out): the real one needs MLflow and is run by the kernel tests.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.platform import wait_for
from hubforge.server_extension.kernel import fit_process
from hubforge.server_extension.kernel.fit_process import FitProcess
from hubforge.server_extension.requirements_cache import RequirementsCache

#: Answers each id "logged"; with ``--spool .../leave``, leaves after reading the first id unanswered.
STAND_IN = """
import json, sys
leave = sys.argv[-1].endswith("leave")
for line in sys.stdin:
    if leave:
        open(sys.argv[-1] + "-left", "w").write(line)
        sys.exit(0)
    print(json.dumps({"id": line.strip(), "outcome": "logged"}), flush=True)
"""


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "stand_in_logger.py").write_text(STAND_IN)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setattr(fit_process, "MODULE", "stand_in_logger")
    return tmp_path


class Outcomes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, entry_id: str, outcome: str) -> None:
        with self.lock:
            self.seen.append((entry_id, outcome))


def test_ids_go_out_and_answers_come_back(stand_in: Path) -> None:
    outcomes = Outcomes()
    process = FitProcess(stand_in / "spool", outcomes)
    owner = process.owner()
    assert owner is not None and owner[0] > 0
    assert os.getsid(owner[0]) != os.getsid(0), "its own session: it outlives the kernel's process group"
    for entry_id in ("a", "b", "c"):
        assert process.send(entry_id)
    wait_for(lambda: len(outcomes.seen) == 3, 30, "the answers")
    assert outcomes.seen == [("a", "logged"), ("b", "logged"), ("c", "logged")]
    assert process.close(time.monotonic() + 5) == 0 and process.sent == {}
    assert not process.send("d"), "closed: nothing more goes out"


def test_a_logger_that_leaves_hands_its_unanswered_fits_to_the_next(stand_in: Path) -> None:
    outcomes = Outcomes()
    process = FitProcess(stand_in / "leave", outcomes)
    first = process.owner()
    assert process.send("x")
    wait_for(lambda: (stand_in / "leave-left").exists(), 30, "the first logger to read and leave")
    # The stand-in leaves each time; the id keeps going to a new one until one is found or it is closed.
    wait_for(lambda: process.owner() not in (None, first), 30, "a new logger")
    process.close(time.monotonic())
    wait_for(lambda: "x" not in process.sent, 30, "the last logger to leave too")
    assert ("x", "busy") in outcomes.seen, "closed: left in the spool, for the server's replay"


def test_without_python_to_start_it_says_so(stand_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(stand_in / "no-such-python"))
    process = FitProcess(stand_in / "spool", Outcomes())
    assert process.owner() is None and not process.send("a"), "the kernel then logs its fits itself"


def test_requirements_are_remembered_per_environment(tmp_path: Path) -> None:
    cache = RequirementsCache(tmp_path / "requirements.json")
    libraries = frozenset({"sklearn"})
    assert cache.get("sklearn", libraries) is None
    cache.put("sklearn", libraries, ["scikit-learn==1.9.1", "numpy==2.4.6"])
    again = RequirementsCache(tmp_path / "requirements.json")
    assert again.get("sklearn", libraries) == ["scikit-learn==1.9.1", "numpy==2.4.6"], "another process finds it"
    assert again.get("sklearn", frozenset({"sklearn", "xgboost"})) is None
    data = json.loads((tmp_path / "requirements.json").read_text())
    assert list(data) == [cache.fingerprint]
    other = RequirementsCache(tmp_path / "requirements.json")
    other._fingerprint = "another-environment"
    assert other.get("sklearn", libraries) is None, "installing anything starts afresh"
    other.put("sklearn", libraries, ["scikit-learn==2"])
    assert list(json.loads((tmp_path / "requirements.json").read_text())) == ["another-environment"]


@pytest.mark.parametrize("content", ["not json", "[]", '{"%s": {"sklearn|sklearn": [1, 2]}}', '{"%s": []}'])
def test_a_damaged_cache_reads_as_unknown(tmp_path: Path, content: str) -> None:
    cache = RequirementsCache(tmp_path / "requirements.json")
    (tmp_path / "requirements.json").write_text(content.replace("%s", cache.fingerprint))
    assert cache.get("sklearn", frozenset({"sklearn"})) is None


def test_the_logger_run_by_hand_without_mlflow_says_what_is_missing(tmp_path: Path) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "hubforge.server_extension.fit_logger", "--spool", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("MLFLOW_TRACKING_URI is not set: where should the fits go?")


def test_the_real_logger_goes_on_with_its_fits_after_the_kernel_stops_reading(tmp_path: Path) -> None:
    """The kernel ended (nobody reads the answers): the logger still handles every fit it was
    given, instead of dying of a broken pipe at its first answer with the rest not logged."""
    import subprocess

    from hubforge.contract import FIT_LOGGER_MODULE
    from hubforge.server_extension.kept_fits import FITS

    spool = tmp_path / "spool"
    for name in ("first", "second"):
        (spool / FITS / name).mkdir(parents=True)  # unreadable kept fits: each is set aside
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # never reached for these
    proc = subprocess.Popen(
        [sys.executable, "-m", FIT_LOGGER_MODULE, "--spool", str(spool)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the kernel is gone
    proc.stdin.write("first\nsecond\n")
    proc.stdin.close()
    assert proc.wait(300) == 0, proc.stderr.read()  # it imports MLflow and warms up: slow on a busy machine
    assert "BrokenPipeError" not in proc.stderr.read()
    assert not list((spool / FITS).iterdir()), "both fits were handled"
