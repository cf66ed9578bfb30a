"""The notebook corpus, run through the hub as a data scientist runs it, checked in MLflow as her.

Alice logs in, starts her server and opens each notebook of ``tests/notebooks/``
over JupyterLab's own REST and websocket protocol, at a person's pace (half a
second between cells, 0.2 s in ``print_then_train``). Along the way she renames
a notebook as JupyterLab does (contents, then session), restarts a kernel and
runs the notebook again, re-runs a cell with a changed param (MLflow refuses
it), shuts kernels down both ways JupyterLab does, and stops her server from
the hub with one notebook still open. Then, with her own token through the
proxy, every notebook's runs are read back: status, snapshot, environment,
every fit a child run with its params, and every metric, param and tag the
corpus produced either in MLflow or in her spool's ``rejected`` folder.

Ctrl-C of the whole platform while a notebook is open is in test_hub_restart.py, on a
platform of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.corpus import FOLDER, USER, Lab, artifacts, code_of, corpus, mlflow_runs
from harness.platform import MLFLOW_API, HubSession, PlatformProcess, api, wait_for


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict[str, Any]) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def metric_steps(http: httpx.Client, run: dict[str, Any], key: str) -> list[int]:
    got = http.get(f"{MLFLOW_API}/metrics/get-history", params={"run_id": run["info"]["run_id"], "metric_key": key})
    assert got.status_code == 200, got.text
    return sorted(m["step"] for m in got.json().get("metrics", []))


def rejected(spool: Path) -> list[list[Any]]:
    """Every record MLflow refused, as kept in alice's spool."""
    items: list[list[Any]] = []
    for file in (spool / "rejected").glob("*/items.jsonl"):
        items += [json.loads(line) for line in file.read_text().splitlines()]
    return items


@pytest.fixture
def alice(platform: PlatformProcess) -> Iterator[httpx.Client]:
    """Alice logged in with a token, her default server started; stopped afterwards."""
    session = HubSession(platform.url)
    assert session.login("alice").status_code == 302
    with api(platform.url, session.new_token("alice", note="corpus")) as http:
        http.timeout = httpx.Timeout(120)
        started = http.post("/hub/api/users/alice/server")
        assert started.status_code in (201, 202), started.text
        wait_for(lambda: http.get("/hub/api/users/alice").json()["servers"].get("", {}).get("ready"), 120, "her server")
        try:
            yield http
        finally:
            http.delete("/hub/api/users/alice/server")
            wait_for(lambda: not http.get("/hub/api/users/alice").json()["servers"], 90, "her server to stop")
            session.close()


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_the_corpus_at_a_persons_pace(platform: PlatformProcess, alice: httpx.Client) -> None:
    lab = Lab(alice)
    said: dict[str, list[Any]] = {}
    # Classification: two fits, then renamed as JupyterLab renames, one more cell, Shut Down Kernel.
    session, kernel = lab.open(lab.upload("classification.ipynb"))
    said["classification"] = lab.run(kernel, code_of("classification.ipynb"), 0.5)
    lab.rename(session, f"{FOLDER}/churn_classifier.ipynb")
    said["classification"] += lab.run(kernel, ["forest.n_estimators"], 0.5)
    kernel.close()
    lab.shut_down(session, "kernel")
    # Regression: a re-run cell with a changed param (refused), a restart, all cells again, closed.
    session, kernel = lab.open(lab.upload("regression.ipynb"))
    said["regression"] = lab.run(kernel, code_of("regression.ipynb"), 0.5)
    for _ in range(40):  # MLflow's refusal comes back from the sender; it is said after the next cell
        said["regression"] += lab.run(kernel, ["x = 1"], 0.5)
        if said["regression"][-1].stderr:
            break
    lab.restart(session)
    kernel.close()
    session["kernel"] = alice.get(f"{USER}/api/sessions/{session['id']}").json()["kernel"]
    kernel = lab.channel(session)
    said["regression-again"] = lab.run(kernel, code_of("regression.ipynb")[:4], 0.5)
    kernel.close()
    lab.shut_down(session, "session")
    # Pandas only, and a notebook whose last cell raises: closed with their kernels.
    for name in ("pandas_analysis.ipynb", "last_cell_raises.ipynb"):
        session, kernel = lab.open(lab.upload(name))
        said[name] = lab.run(kernel, code_of(name), 0.5)
        kernel.close()
        lab.shut_down(session, "session")
    # Print, then train 0.2 s later; the server is stopped from the hub with it still open.
    session, kernel = lab.open(lab.upload("print_then_train.ipynb"))
    said["print_then_train"] = lab.run(kernel, code_of("print_then_train.ipynb"), 0.2)
    kernel.close()
    stopped = alice.delete("/hub/api/users/alice/server")
    assert stopped.status_code in (202, 204), stopped.text
    wait_for(lambda: not alice.get("/hub/api/users/alice").json()["servers"], 90, "her server to stop")

    # What the cells said: their own output only; the refusal once, as one line.
    assert [e.status for e in said["last_cell_raises.ipynb"]] == ["ok", "ok", "error"]
    for name, executions in said.items():
        if name != "last_cell_raises.ipynb":
            assert all(e.status == "ok" for e in executions), (name, executions)
    notes = [e.stderr for e in said["regression"] if e.stderr]
    assert len(notes) == 1 and notes[0].startswith("hubforge: MLflow refused param 'feature_set'"), notes
    assert "Traceback" not in notes[0] and notes[0].count("\n") == 1
    quiet = [e.stderr for name in ("classification", "print_then_train", "pandas_analysis.ipynb") for e in said[name]]
    assert quiet == [""] * len(quiet), "tracking writes nothing to the cells"
    assert said["print_then_train"][0].stdout == "loading\n"

    # MLflow, as alice: one experiment per notebook, the renamed one under its new name.
    spool = platform.home("alice") / ".local" / "share" / "jupyter" / "hubforge" / "spool"
    refused = rejected(spool)
    expected = {  # final name: (corpus notebook, notebook runs, cells the first run executed)
        "churn_classifier.ipynb": ("classification.ipynb", 1, len(said["classification"])),
        "regression.ipynb": ("regression.ipynb", 2, len(said["regression"])),
        "pandas_analysis.ipynb": ("pandas_analysis.ipynb", 1, len(said["pandas_analysis.ipynb"])),
        "last_cell_raises.ipynb": ("last_cell_raises.ipynb", 1, len(said["last_cell_raises.ipynb"])),
        "print_then_train.ipynb": ("print_then_train.ipynb", 1, len(said["print_then_train"])),
    }
    # MLflow's notebook detection no longer asks the server for its sessions (a 403 each run).
    assert not re.search(r"403 GET /user/alice/api/sessions", platform.log_path.read_text(errors="replace"))
    for final, (source, sessions, cells) in expected.items():
        # A titled notebook's experiment keeps its name; its runs say the new one.
        experiment = f"/Users/alice/{FOLDER}/{source}"
        fits = set(corpus(source).metadata["hubforge_test"]["fits"])
        runs = wait_for(lambda e=experiment, f=fits: logged(alice, e, f), 120, f"the runs of {final} and their fits")
        check_notebook(alice, runs, corpus(source).metadata["hubforge_test"], final, (sessions, cells), refused)


def logged(http: httpx.Client, experiment: str, fits: set[str]) -> list[dict[str, Any]] | None:
    """The experiment's runs once they have ended and the first one's fits are all there."""
    runs = mlflow_runs(http, experiment)
    if runs is None:
        return None
    first = min((r for r in runs if "mlflow.parentRunId" not in tags(r)), key=lambda r: r["info"]["start_time"])
    children = {r["info"]["run_name"] for r in runs if tags(r).get("mlflow.parentRunId") == first["info"]["run_id"]}
    return runs if fits <= children else None


def check_notebook(
    http: httpx.Client, runs: list[dict[str, Any]], expect: dict[str, Any], final: str, counts: tuple, refused: list
) -> None:
    """One notebook's runs against what its corpus metadata says it produces.

    ``counts``: how many notebook runs (kernel lives) the experiment has, and how many
    cells the first one executed (each leaves its metrics, step = execution count).
    """
    sessions, cells = counts
    top = sorted((r for r in runs if "mlflow.parentRunId" not in tags(r)), key=lambda r: r["info"]["start_time"])
    assert len(top) == sessions, (final, [r["info"] for r in top])
    first = top[0]
    assert first["info"]["status"] == expect["status"], final
    assert first["info"]["run_name"] == final
    t = tags(first)
    assert t["mlflow.source.name"] == t["hubforge.notebook"] == f"{FOLDER}/{final}"
    assert (t["mlflow.user"], t["hubforge.server"], t["hubforge.tier"]) == ("alice", "default", "interactive")
    assert "" not in t.values(), "no empty tags"
    assert artifacts(http, first) == ["environment", "notebook"]
    assert artifacts(http, first, "notebook") == sorted([f"notebook/{final}", "notebook/executed_cells.py"])
    assert metric_steps(http, first, "hubforge.cell.duration_s") == list(range(1, cells + 1)), final
    failed = [cells] if expect["status"] == "FAILED" else []
    assert metric_steps(http, first, "hubforge.cell.error") == failed, (final, "an error mark for failed cells only")
    # The person's own params, metrics and tags: in MLflow, or refused and kept.
    mine = params(first)
    for key, value in expect["params"].items():
        assert mine.get(key) == value, (final, key, mine)
    metrics = {m["key"] for m in first["data"].get("metrics", [])}
    assert set(expect["metrics"]) <= metrics, (final, metrics)
    for key, value in expect["tags"].items():
        assert t.get(key) == value, (final, key)
    for kind, key, value in expect.get("refused", []):
        assert [kind, first["info"]["run_id"], key, value] in refused, (final, refused)
    # Every fit: a child run of the notebook's run, named after the estimator, with its params.
    fits = {r["info"]["run_name"]: r for r in runs if tags(r).get("mlflow.parentRunId") == first["info"]["run_id"]}
    assert set(fits) == set(expect["fits"]), (final, sorted(fits))
    for name, wanted in expect["fits"].items():
        got = params(fits[name])
        assert {k: got.get(k) for k in wanted} == wanted, (final, name, got)
        assert fits[name]["info"]["status"] == "FINISHED", (final, name)
