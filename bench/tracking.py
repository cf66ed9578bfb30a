"""Notebook tracking: cell latency and ``log_metric`` throughput, hubforge against plain MLflow.

Everything runs through real ipykernel kernels (jupyter_client) against one
real ``mlflow server`` on SQLite started for the run. Latency: 2,000 trivial
cells, tracked kernel vs a kernel without the extension (median and p99),
measured in alternating blocks (tracked, plain, plain, tracked, ...) in the same
run so that load on a shared machine hits both alike, after warm-up cells that
are not counted; the first two cells of a fresh kernel, run back to back, are
reported apart (the tracked kernel opens its run then).
Throughput: calls/s of ``mlflow.log_metric`` from a cell: hubforge's queued
path (100,000 calls) vs plain synchronous logging (300 calls) and vs MLflow's
own async logging (10,000 calls), rates compared per call. For throughput the
ratio column is hubforge over the baseline, so above 1 is faster. Autologged fits
and the end of a run: see :mod:`bench.fits`.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from jupyter_client.manager import KernelManager
from test_kernel_queue import MlflowServer

from bench import fits
from bench.report import Result

__all__ = ["run"]

EXTENSION = "--IPKernelApp.extensions=hubforge.server_extension.kernel"
CELLS = 2000
BLOCK = 50
WARMUP = 100
RATE = """
import time, mlflow
{setup}
t = time.perf_counter()
for i in range({n}):
    mlflow.log_metric("bench", i, step=i{extra})
print("RATE", {n} / (time.perf_counter() - t))
"""


class Kernel:
    """A real kernel with (or without) the hubforge extension, tracking to ``url``."""

    def __init__(self, url: str, root: Path, tracked: bool):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HUBFORGE_", "JPY_"))}
        env.update(MLFLOW_TRACKING_URI=url, JUPYTERHUB_USER="bench", JPY_SESSION_NAME="bench.ipynb")
        env.update(HUBFORGE_NOTEBOOK_ROOT=str(root))
        self.km = KernelManager(kernel_name="python3")
        self.km.shutdown_wait_time = 60
        self.km.start_kernel(extra_arguments=[EXTENSION] if tracked else [], env=env, cwd=str(root))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def execute(self, code: str) -> str:
        """Run one cell; its stdout."""
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        self.kc.execute_interactive(code, timeout=600, output_hook=hook)
        return "".join(out)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def _first_cells(kernel: Kernel) -> tuple[float, float]:
    """ms of a fresh kernel's first and second cells, back to back (papermill, Run All)."""
    times = []
    for code in ("x = 0", "x += 1"):
        t = time.perf_counter()
        kernel.execute(code)
        times.append((time.perf_counter() - t) * 1000)
    return times[0], times[1]


def _wait_for_run(kernel: Kernel, timeout: float = 120) -> None:
    """Poll until the tracked kernel's run is open, so its opening is not in the samples."""
    deadline = time.monotonic() + timeout
    while not re.search(r"^run: [0-9a-f]{16,}$", kernel.execute("%hubforge_tracking status"), re.M):
        if time.monotonic() > deadline:
            raise TimeoutError("the tracked kernel's run did not open")
        time.sleep(0.1)


def _latencies(tracked: Kernel, plain: Kernel) -> tuple[list[float], list[float]]:
    """Trivial cells in alternating blocks (ABBA), so load drift hits both kernels alike."""
    for _ in range(WARMUP):
        for kernel in (tracked, plain):
            kernel.execute("x += 1")
    samples: dict[Kernel, list[float]] = {tracked: [], plain: []}
    for block in range(CELLS // BLOCK):
        for kernel in (tracked, plain) if block % 2 == 0 else (plain, tracked):
            out = samples[kernel]
            for _ in range(BLOCK):
                t = time.perf_counter()
                kernel.execute("x += 1")
                out.append((time.perf_counter() - t) * 1000)
    return samples[tracked], samples[plain]


def _p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)]


def _rate(kernel: Kernel, n: int, setup: str = "", extra: str = "") -> float:
    out = kernel.execute(RATE.format(n=n, setup=setup, extra=extra))
    return float(out.split("RATE", 1)[1].split()[0])


def _one_round(url: str, root: Path) -> dict[str, float]:
    tracked = Kernel(url, root, tracked=True)
    plain = Kernel(url, root, tracked=False)
    try:
        figures: dict[str, float] = {}
        # The untracked kernel first: the tracked one's run opening would load the machine.
        figures["plain_first"], figures["plain_second"] = _first_cells(plain)
        figures["tracked_first"], figures["tracked_second"] = _first_cells(tracked)
        _wait_for_run(tracked)
        ours, base = _latencies(tracked, plain)
        figures.update(tracked_median=statistics.median(ours), tracked_p99=_p99(ours))
        figures.update(plain_median=statistics.median(base), plain_p99=_p99(base))
        figures["ours_rate"] = _rate(tracked, 100_000)
        figures["plain_rate"] = _rate(plain, 300, setup="mlflow.start_run()")
        figures["async_rate"] = _rate(plain, 10_000, extra=", synchronous=False")
        plain.execute("mlflow.flush_async_logging(); mlflow.end_run()")
    finally:
        tracked.close()
        plain.close()
    return figures


def run(repeat: int) -> list[Result]:
    """Latency (median, p99) and throughput (vs plain, vs async) Results, ``repeat`` rounds each."""
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-tracking-") as tmp:
        server = MlflowServer(Path(tmp))
        server.start()
        try:
            rounds = [_one_round(server.url, Path(tmp)) for _ in range(repeat)]
            fit_results = fits.run_with(server.url, Path(tmp), repeat)
        finally:
            server.stop()

    def col(key: str) -> list[float]:
        return [r[key] for r in rounds]

    return [
        Result("first cell", "ms", col("tracked_first"), col("plain_first"), "untracked kernel"),
        Result("second cell, back to back", "ms", col("tracked_second"), col("plain_second"), "untracked kernel"),
        Result("cell latency median", "ms", col("tracked_median"), col("plain_median"), "untracked kernel"),
        Result("cell latency p99", "ms", col("tracked_p99"), col("plain_p99"), "untracked kernel"),
        Result("log_metric calls/s vs plain", "/s", col("ours_rate"), col("plain_rate"), "plain log_metric"),
        Result("log_metric calls/s vs async", "/s", col("ours_rate"), col("async_rate"), "mlflow async logging"),
        *fit_results,
    ]
