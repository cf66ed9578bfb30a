"""Autologged fits and the end of a run, tracked against untracked, at a person's pace.

Each round starts two fresh kernels on the same real ``mlflow server``: one
tracked, one with tracking off (``HUBFORGE_TRACKING=off``, the extension
loaded). Both load the same data, wait as a person would (3 s), then train the
same random forest (about 1 s untracked): the first fit. A person looks at
the result (``PACE`` seconds) and trains again: a later fit. The tracked
kernel's logging runs off the cell's path in those pauses, as it does for a
person; the untracked kernel's cells run only once the tracked kernel has
finished logging, so its baseline is never slowed by the other's background
work. Then the tracked kernel is shut down and the time until its run is
FINISHED with the notebook and environment logged is taken, against a plain
``mlflow.end_run()`` of a run the person started themselves.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from bench.report import Result

__all__ = ["run_with"]

EXTENSION = "--IPKernelApp.extensions=hubforge.server_extension.kernel"
#: Seconds a person takes between two training cells (reads the result, edits a param).
PACE = 10.0
DATA = (
    "import time\nfrom sklearn.datasets import make_classification\n"
    "from sklearn.ensemble import RandomForestClassifier\n"
    "X, y = make_classification(n_samples=6000, n_features=20, random_state=0)"
)
FIT = "model = RandomForestClassifier(n_estimators=50, random_state={seed}).fit(X, y)"


class Kernel:
    """A real kernel with the extension loaded, tracking on or off."""

    def __init__(self, url: str, root: Path, notebook: str, tracked: bool):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HUBFORGE_", "JPY_"))}
        env.update(MLFLOW_TRACKING_URI=url, JUPYTERHUB_USER="bench", JPY_SESSION_NAME=notebook)
        env.update(HUBFORGE_NOTEBOOK_ROOT=str(root), HUBFORGE_SPOOL_DIR=str(root / "spool"))
        env.update(HUBFORGE_TRACKING="on" if tracked else "off")
        (root / notebook).write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
        self.km = KernelManager(kernel_name="python3")
        self.km.shutdown_wait_time = 50
        self.km.start_kernel(extra_arguments=[EXTENSION], env=env, cwd=str(root))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def execute(self, code: str) -> tuple[float, str]:
        """Run one cell: (seconds from request to reply, stdout)."""
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        started = time.perf_counter()
        self.kc.execute_interactive(code, timeout=600, output_hook=hook)
        return time.perf_counter() - started, "".join(out)

    def quiet(self, timeout: float = 300) -> None:
        """Wait until the tracked kernel has logged every fit (it logs while the kernel is idle)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(1.0)
            status = self.execute("%hubforge_tracking status")[1]
            if " 0 logging, 0 waiting" in status:
                return
        raise TimeoutError("the tracked kernel's fits were not logged")

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def _ended(client: Any, experiment: str) -> bool:
    """Whether the notebook's run is FINISHED with its notebook and environment logged."""
    exp = client.get_experiment_by_name(experiment)
    for run in client.search_runs([exp.experiment_id]) if exp else []:
        if "mlflow.parentRunId" not in run.data.tags and run.info.status == "FINISHED":
            return len(client.list_artifacts(run.info.run_id)) >= 2
    return False


def _shutdown_to_finished(kernel: Kernel, client: Any, experiment: str) -> float:
    kernel.kc.stop_channels()
    started = time.perf_counter()
    kernel.km.request_shutdown()
    while not _ended(client, experiment):
        if time.perf_counter() - started > 120:
            raise TimeoutError("the run did not end")
        time.sleep(0.05)
    took = time.perf_counter() - started
    kernel.km.finish_shutdown(waittime=50)
    kernel.km.cleanup_resources()
    return took


def _round(url: str, root: Path, n: int) -> dict[str, float]:
    from mlflow import MlflowClient

    notebook = f"fits-{n}-{os.getpid()}.ipynb"
    tracked = Kernel(url, root, notebook, tracked=True)
    plain = Kernel(url, root, f"plain-{notebook}", tracked=False)
    try:
        for kernel in (plain, tracked):
            kernel.execute(DATA)
        time.sleep(3.0)
        figures = {"plain_first": plain.execute(FIT.format(seed=1))[0]}
        figures["tracked_first"] = tracked.execute(FIT.format(seed=1))[0]
        time.sleep(PACE)
        figures["tracked_later"] = tracked.execute(FIT.format(seed=2))[0]
        tracked.quiet()
        time.sleep(PACE)
        figures["plain_later"] = plain.execute(FIT.format(seed=2))[0]
        # The baseline of the end: a run the person started, ended by hand.
        plain.execute("import mlflow\nmlflow.set_experiment('bench-plain-end')\nmlflow.start_run()")
        figures["plain_end"] = plain.execute("mlflow.end_run()")[0]
        figures["tracked_end"] = _shutdown_to_finished(tracked, MlflowClient(url), f"/Users/bench/{notebook}")
    finally:
        plain.close()
        if tracked.km.is_alive():
            tracked.close()
    return figures


def run_with(url: str, root: Path, repeat: int) -> list[Result]:
    """First and later fit latency, and shutdown to FINISHED, ``repeat`` rounds each."""
    rounds = [_round(url, root, n) for n in range(repeat)]

    def col(key: str) -> list[float]:
        return [r[key] * 1000 for r in rounds]

    print(
        "fits: first " + ", ".join(f"{r['tracked_first']:.2f}/{r['plain_first']:.2f} s" for r in rounds)
        + "; later " + ", ".join(f"{r['tracked_later']:.2f}/{r['plain_later']:.2f} s" for r in rounds)
        + f"; end {statistics.median(col('tracked_end')):.0f} ms",
        file=sys.stderr,
    )  # fmt: skip
    return [
        Result("first autologged fit", "ms", col("tracked_first"), col("plain_first"), "tracking off"),
        Result("later autologged fit", "ms", col("tracked_later"), col("plain_later"), "tracking off"),
        Result("shutdown -> run FINISHED", "ms", col("tracked_end"), col("plain_end"), "plain mlflow.end_run()"),
    ]
