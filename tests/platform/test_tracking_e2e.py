"""A notebook run through the hub lands in MLflow under the person who ran it.

Everything is real and goes through the proxy as a browser would: alice logs
in, starts her default server, opens a notebook session on it, runs cells over
the kernel's websocket, and finds the run through the MLflow REST API behind
the hub with her own token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import nbformat
import pytest

from harness.platform import api, experiment_runs, wait_for
from harness.server import notebook_session

NOTEBOOK = "work/e2e.ipynb"
CELLS = ["x = 41 + 1", "import mlflow\nmlflow.log_metric('answer', x)", "print(x)"]


@pytest.fixture
def alice_server(platform: Any, session_for: Any) -> Iterator[httpx.Client]:
    """Alice logged in, with her default server started through the hub; stopped afterwards."""
    session, user = session_for("data-scientist")
    assert user == "alice"
    with api(platform.url, session.new_token(user, note="tracking e2e")) as client:
        started = client.post("/hub/api/users/alice/server")
        assert started.status_code in (201, 202), started.text

        def ready() -> bool:
            return bool(client.get("/hub/api/users/alice").json()["servers"].get("", {}).get("ready"))

        wait_for(ready, 120, "alice's server")
        try:
            yield client
        finally:
            client.delete("/hub/api/users/alice/server")
            wait_for(lambda: not client.get("/hub/api/users/alice").json()["servers"], 60, "alice's server to stop")


def put_notebook(client: httpx.Client, path: str, cells: list[str]) -> None:
    """Save a notebook on alice's server through the contents API, as JupyterLab does."""
    folder = path.rsplit("/", 1)[0]
    made = client.put(f"/user/alice/api/contents/{folder}", json={"type": "directory"})
    assert made.status_code in (200, 201), made.text
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    saved = client.put(f"/user/alice/api/contents/{path}", json={"type": "notebook", "format": "json", "content": nb})
    assert saved.status_code in (200, 201), saved.text


def finished_run(client: httpx.Client, experiment: str) -> dict[str, Any] | None:
    """The experiment's one run once it has ended, read with alice's hub token; None before."""
    found = experiment_runs(client, experiment)
    if found is None:
        return None
    _, runs = found
    assert len(runs) <= 1, runs
    return runs[0] if runs and runs[0]["info"]["status"] != "RUNNING" else None


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_notebook_run_through_the_hub_is_tracked_as_alice(alice_server: httpx.Client) -> None:
    client = alice_server
    put_notebook(client, NOTEBOOK, CELLS)
    with notebook_session(client, "/user/alice", NOTEBOOK) as kernel:
        executed = [kernel.execute(code) for code in CELLS]
        status = kernel.execute("%hubforge_tracking status")
    assert [e.status for e in executed] == ["ok"] * len(CELLS), executed
    assert executed[-1].stdout == "42\n"
    assert "tracking: on" in status.stdout, status
    # Leaving the session shut the kernel down, which ends the run; poll for it.
    experiment = f"/Users/alice/{NOTEBOOK}"
    why = f"the run in {experiment} to end (kernel said: {status.stdout!r} {status.stderr!r})"
    run = wait_for(lambda: finished_run(client, experiment), 60, why, interval=0.5)
    assert run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    assert tags["mlflow.user"] == "alice"
    assert tags["mlflow.source.name"] == NOTEBOOK
    assert tags["hubforge.tier"] == "interactive"
    metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
    assert metrics["answer"] == 42
