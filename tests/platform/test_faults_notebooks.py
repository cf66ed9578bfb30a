"""Faults while alice works: her notebook logs metrics at a person's pace through the hub
while a process under it is killed outright (kill -9).

- MLflow's own process, or its uvicorn worker: her cells go on, what she logged while
  MLflow was away reaches it once it is back, every step once.
- Her server: its kernels (her notebook's, a Voila page's) leave with it, the notebook's
  ending her run first (nothing she logged is lost); the hub sees the server gone and she
  starts it again.
- Her kernel: jupyter-server starts another; the dead kernel's run ends KILLED with what
  MLflow had acknowledged, and the new kernel tracks to a run of its own.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import nbformat
import psutil
import pytest

from harness.faults import (
    alices_server,
    ended,
    kernels_of,
    metric_steps,
    mlflow_answers,
    mlflow_supervisor,
    paced,
    ran,
    server_of,
    server_ready,
    session_run,
    supervised_port,
)
from harness.platform import wait_for
from harness.server import kernel_channel, notebook_session, open_session


class Steps:
    """alice's ``mlflow.log_metric('step', n, step=n)`` cells, counted."""

    def __init__(self, kernel: Any):
        self.kernel = kernel
        self.logged = 0

    def log(self, pause: float = 0.1) -> None:
        n = self.logged
        paced(self.kernel, f"mlflow.log_metric('step', {n}, step={n})", pause)
        self.logged += 1

    def expected(self) -> list[int]:
        return list(range(self.logged))


def _notebook() -> str:
    return f"faults-{uuid.uuid4().hex[:6]}.ipynb"


def _kill_mlflow_while_logging(platform: Any, steps: Steps, victim: Any) -> None:
    """Kill ``victim`` (a process of MLflow's) while cells log steps: before, while MLflow is
    away, and after it answers again."""
    port = supervised_port(mlflow_supervisor(platform))
    for _ in range(5):
        steps.log()
    victim.kill()
    deadline = time.monotonic() + 120
    away = 0
    while not mlflow_answers(port) or away == 0:
        assert time.monotonic() < deadline, "MLflow did not come back"
        steps.log(0.2)
        away += 1
    for _ in range(5):
        steps.log()


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
@pytest.mark.parametrize("which", ["mlflow server", "uvicorn worker"])
def test_metrics_logged_while_mlflow_is_killed_reach_it_once(platform: Any, which: str) -> None:
    with alices_server(platform.url) as http:
        with notebook_session(http, "/user/alice", _notebook()) as kernel:
            ran(kernel, "import mlflow")
            run_id = session_run(kernel)
            steps = Steps(kernel)
            supervisor = mlflow_supervisor(platform)
            assert supervisor is not None
            (server,) = [p for p in supervisor.children() if "mlflow" in " ".join(p.cmdline())]
            (worker,) = [p for p in server.children() if "uvicorn" in p.cmdline()]
            _kill_mlflow_while_logging(platform, steps, server if which == "mlflow server" else worker)
            assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
            assert mlflow_supervisor(platform).pid == supervisor.pid, "its supervisor started MLflow again"
            wait_for(lambda: metric_steps(http, run_id, "step") == steps.expected(), 90, "each step to reach MLflow")
        # Leaving the notebook shut its kernel down: the run ends, still with every step once.
        assert wait_for(lambda: ended(http, run_id), 60, "the run to end") == "FINISHED"
        assert metric_steps(http, run_id, "step") == steps.expected()


def test_alices_server_killed_takes_her_kernel_and_ends_its_run_with_all_she_logged(platform: Any) -> None:
    """kill -9 of her server, right after a cell logged: the kernel sees its server gone,
    ends her run with everything she logged, and leaves; the hub sees the server gone,
    and she starts it again."""
    with alices_server(platform.url) as http:
        _, kernel = open_session(http, "/user/alice", _notebook())
        try:
            ran(kernel, "import mlflow")
            run_id = session_run(kernel)
            steps = Steps(kernel)
            for _ in range(5):
                steps.log()
            server = server_of(platform, "alice")
            # And a Voila page of hers open: Voila's kernel runs under her server too.
            app = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('report ready')")])
            saved = http.put("/user/alice/api/contents/report.ipynb", json={"type": "notebook", "content": app})
            assert saved.status_code in (200, 201), saved.text
            page = http.get("/user/alice/voila/render/report.ipynb", timeout=120)
            assert page.status_code == 200 and "report ready" in page.text
            kernels = kernels_of(server)
            assert len(kernels) == 2, "her notebook's kernel and the Voila page's run under her server"
            steps.log(pause=0)  # the last one still in the kernel's queue when the server goes
            server.kill()
        finally:
            kernel.close()

        _, alive = psutil.wait_procs(kernels, timeout=30)
        assert not alive, "her kernels ended with their server"
        assert wait_for(lambda: ended(http, run_id), 60, "her run to end") in ("FINISHED", "KILLED")
        assert metric_steps(http, run_id, "step") == steps.expected(), "nothing she logged is lost"

        wait_for(lambda: not http.get("/hub/api/users/alice").json()["servers"], 90, "the hub to see it gone")
        assert http.post("/hub/api/users/alice/server", json={}).status_code in (201, 202)
        wait_for(lambda: server_ready(http, "alice"), 180, "her server to start again")
        assert http.get("/user/alice/api/kernels").json() == [], "a new server, with no kernel of the old one"
        assert server_of(platform, "alice").pid != server.pid
        with notebook_session(http, "/user/alice", _notebook()) as again:
            assert ran(again, "print(1 + 1)") == "2"


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_alices_kernel_killed_is_restarted_and_its_run_ends_killed(platform: Any) -> None:
    """kill -9 of her kernel: jupyter-server starts another in its place; the dead kernel's
    run ends KILLED with what MLflow had acknowledged; the new kernel has a run of its own."""
    with alices_server(platform.url) as http, notebook_session(http, "/user/alice", _notebook()) as kernel:
        ran(kernel, "import mlflow; x = 1")
        run_id = session_run(kernel)
        steps = Steps(kernel)
        for _ in range(5):
            steps.log()
        wait_for(lambda: metric_steps(http, run_id, "step") == steps.expected(), 60, "the steps to reach MLflow")
        (dead,) = kernels_of(server_of(platform, "alice"))
        dead.kill()

        (session,) = http.get("/user/alice/api/sessions").json()
        wait_for(
            lambda: [k.pid for k in kernels_of(server_of(platform, "alice"))] not in ([], [dead.pid]),
            60,
            "jupyter-server to start her kernel again",
        )
        assert wait_for(lambda: ended(http, run_id), 90, "the dead kernel's run to end") == "KILLED"
        assert metric_steps(http, run_id, "step") == steps.expected()

        # The same notebook, on the kernel started in place of the dead one (same id).
        again = kernel_channel(http, "/user/alice", session["kernel"]["id"])
        try:
            assert ran(again, "print('x' in dir())") == "False", "a new kernel"
            ran(again, "import mlflow")
            assert session_run(again) != run_id, "the new kernel tracks to a run of its own"
        finally:
            again.close()
