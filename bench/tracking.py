"""Notebook tracking: cell latency and ``log_metric`` throughput, hubforge against plain MLflow.

Everything runs through real ipykernel kernels (jupyter_client) against one
real ``mlflow server`` on SQLite started for the run. Latency: trivial cells,
tracked kernel vs a kernel without the extension (median and p99). A single
pair of kernels differs by a few per cent whatever runs in them (where the
scheduler puts each process on this shared machine), more than the 2% the
target allows, so each round measures ``PAIRS`` fresh pairs, ``CELLS`` cells
each, and pools them; within a pair the cells alternate one by one (tracked,
plain, plain, tracked, ...) so load drift hits both alike. Both kernels keep
their input history in memory: IPython commits every cell to one shared
``history.sqlite``, and the disk's flush times would otherwise be the figure.
The same measurement between two untracked kernels (``A/A``) is printed as the
noise floor. Medians are the median of the rounds' medians; a p99 is that of the
cells of every round pooled (``--repeat 3``: 7,200 cells a side), since one round's
p99 rests on its slowest 24 cells and moves by more than the 5% the target allows.
Where the machine has two CPUs or more, the pairs' kernels (and
every process they start) share one CPU and the client keeps to the others, so
that which CPU the scheduler gives each kernel of a pair, one source of that
noise, is the same for both. The MLflow server is not pinned: the tracked
kernel's sends cost its work on the same machine, which the burst figure keeps.
The first two cells of a fresh kernel, run back to back, are
reported apart (the tracked kernel opens its run then). A data scientist's
kernel has imported pandas, NumPy and scikit-learn, which a kernel pays for on
every cell whether it is tracked or not (and part of the tracked kernel's extra
is holding MLflow's modules, the same kind of cost): the ``with pandas and
scikit-learn`` figures pair a tracked and an untracked kernel that both imported
them (``IMPORTS``).
The ``cell audit on`` figures pair an untracked kernel with a tracked one that also
records each cell in the audit trail (``AUDIT_PAIRS``), as every kernel of a person's
server does; the other figures leave the audit off, to show tracking's own cost.
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
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from bench import fits
from bench.report import Result
from harness.mlflow import MlflowServer
from hubforge.contract import AUDIT_DIR_ENV

__all__ = ["run"]

EXTENSION = "--IPKernelApp.extensions=hubforge.server_extension.kernel"
#: Kernel pairs per round, measured cells per kernel of a pair, warm-up cells per kernel.
PAIRS = 6
CELLS = 400
WARMUP = 50
#: Cells per kernel of one longer burst (about 25 s), past the tracked kernel's 10 s bound on
#: holding its records: the cells that share the machine with its sends are in this figure.
BURST = 3000
#: What a data scientist's notebook has imported before its trivial cells (both kernels).
IMPORTS = "import numpy, pandas, sklearn.ensemble, sklearn.linear_model"
#: Pairs of kernels with :data:`IMPORTS`, per round.
IMPORT_PAIRS = 2
#: Pairs per round whose tracked kernel also records each cell in the audit trail, as every
#: kernel of a person's server does (the server sets ``HUBFORGE_AUDIT_DIR``).
AUDIT_PAIRS = 2
#: Both kernels' input history in memory (see the module's docstring).
MEMORY_HISTORY = "--HistoryManager.hist_file=:memory:"
RATE = """
import time, mlflow
{setup}
t = time.perf_counter()
for i in range({n}):
    mlflow.log_metric("bench", i, step=i{extra})
print("RATE", {n} / (time.perf_counter() - t))
"""


def _split_cpus() -> tuple[set[int] | None, set[int] | None]:
    """(the kernels' CPU, everyone else's): the last CPU and the rest; (None, None) with one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[-1]}, set(cpus[:-1])) if len(cpus) > 1 else (None, None)


KERNEL_CPUS, CLIENT_CPUS = _split_cpus()


@contextmanager
def _on_cpus(cpus: set[int] | None) -> Iterator[None]:
    """Run this thread, and the processes it starts meanwhile, on ``cpus`` (None: as they are)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Kernel:
    """A real kernel with (or without) the hubforge extension, tracking to ``url``."""

    def __init__(self, url: str, root: Path, tracked: bool, cpus: set[int] | None = None, audit: Path | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HUBFORGE_", "JPY_"))}
        env.update(MLFLOW_TRACKING_URI=url, JUPYTERHUB_USER="bench", JPY_SESSION_NAME="bench.ipynb")
        env.update(HUBFORGE_NOTEBOOK_ROOT=str(root))
        if audit is not None:
            env[AUDIT_DIR_ENV] = str(audit)
        self.km = KernelManager(kernel_name="python3")
        self.km.shutdown_wait_time = 60
        extra = [MEMORY_HISTORY, EXTENSION] if tracked else [MEMORY_HISTORY]
        with _on_cpus(cpus):
            self.km.start_kernel(extra_arguments=extra, env=env, cwd=str(root))
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


def _latencies(a: Kernel, b: Kernel, cells: int = CELLS) -> tuple[list[float], list[float]]:
    """ms of trivial cells in ``a`` and ``b``, one by one in ABBA order after a warm-up."""
    samples: dict[Kernel, list[float]] = {a: [], b: []}
    for i in range(WARMUP + cells):
        for kernel in (a, b) if i % 2 == 0 else (b, a):
            t = time.perf_counter()
            kernel.execute("x += 1")
            if i >= WARMUP:
                samples[kernel].append((time.perf_counter() - t) * 1000)
    return samples[a], samples[b]


def _pair(
    url: str,
    root: Path,
    tracked: bool,
    first: bool,
    cells: int = CELLS,
    setup: str = "x = 0",
    audit: Path | None = None,
) -> tuple[list[float], list[float]]:
    """Cell times of one fresh pair: (the tracked kernel's, or the first untracked one's; the other's).

    ``first``: the kernel of interest is started first (the order alternates between pairs).
    ``setup`` runs in both kernels before anything is timed. ``audit``: the tracked kernel
    also records its cells in an audit spool there.
    """
    if first:
        ours = Kernel(url, root, tracked=tracked, cpus=KERNEL_CPUS, audit=audit)
        other = Kernel(url, root, tracked=False, cpus=KERNEL_CPUS)
    else:
        other = Kernel(url, root, tracked=False, cpus=KERNEL_CPUS)
        ours = Kernel(url, root, tracked=tracked, cpus=KERNEL_CPUS, audit=audit)
    kernels = (ours, other)
    try:
        for kernel in kernels:
            kernel.execute(setup)
            kernel.execute("x = 0")
        if tracked:
            _wait_for_run(ours)
        if first:  # and which of the two runs first in the ABBA order alternates too
            return _latencies(ours, other, cells)
        theirs, mine = _latencies(other, ours, cells)
        return mine, theirs
    finally:
        for kernel in kernels:
            kernel.close()


def _pairs(url: str, root: Path) -> dict[str, list[float]]:
    """Pooled cell times of ``PAIRS`` tracked/untracked pairs and as many untracked/untracked ones.

    ``tracked`` and ``neighbour`` come from the first kind, ``control`` (both kernels)
    from the second; the kinds alternate so that drift on the machine hits both alike.
    """
    pooled: dict[str, list[float]] = {"tracked": [], "neighbour": [], "a": [], "b": []}
    for pair in range(PAIRS):
        for tracked in (True, False) if pair % 2 == 0 else (False, True):
            ours, other = _pair(url, root, tracked, first=pair % 4 < 2)
            pooled["tracked" if tracked else "a"] += ours
            pooled["neighbour" if tracked else "b"] += other
    return pooled


def _tracked_pairs(url: str, root: Path, pairs: int, **options: Any) -> tuple[list[float], list[float]]:
    """Pooled cell times of ``pairs`` tracked/untracked pairs (``options`` as :func:`_pair`'s),
    which kernel starts first alternating: (the tracked kernels', their neighbours')."""
    tracked: list[float] = []
    neighbours: list[float] = []
    for pair in range(pairs):
        ours, other = _pair(url, root, True, first=pair % 2 == 0, **options)
        tracked += ours
        neighbours += other
    return tracked, neighbours


def _p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)]


def _rate(kernel: Kernel, n: int, setup: str = "", extra: str = "") -> float:
    out = kernel.execute(RATE.format(n=n, setup=setup, extra=extra))
    return float(out.split("RATE", 1)[1].split()[0])


def _one_round(url: str, root: Path) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The round's figures (first cells, rates, each sample's median) and its pooled cell times."""
    tracked = Kernel(url, root, tracked=True)
    plain = Kernel(url, root, tracked=False)
    try:
        figures: dict[str, float] = {}
        # The untracked kernel first: the tracked one's run opening would load the machine.
        figures["plain_first"], figures["plain_second"] = _first_cells(plain)
        figures["tracked_first"], figures["tracked_second"] = _first_cells(tracked)
        _wait_for_run(tracked)
        figures["ours_rate"] = _rate(tracked, 100_000)
        figures["plain_rate"] = _rate(plain, 300, setup="mlflow.start_run()")
        figures["async_rate"] = _rate(plain, 10_000, extra=", synchronous=False")
        plain.execute("mlflow.flush_async_logging(); mlflow.end_run()")
    finally:
        tracked.close()
        plain.close()
    with _on_cpus(CLIENT_CPUS):
        pooled = _pairs(url, root)
        pooled["control"] = pooled["a"] + pooled["b"]
        pooled["burst"], pooled["burst_neighbour"] = _pair(url, root, True, first=True, cells=BURST)
        pooled["imports"], pooled["imports_neighbour"] = _tracked_pairs(url, root, IMPORT_PAIRS, setup=IMPORTS)
        pooled["audited"], pooled["audited_neighbour"] = _tracked_pairs(url, root, AUDIT_PAIRS, audit=root / "audit")
    for key, samples in pooled.items():
        figures[f"{key}_median"] = statistics.median(samples)
    return figures, pooled


NO_TRACKING = "pairs of untracked kernels"


def run(repeat: int) -> list[Result]:
    """Latency (median, p99) and throughput (vs plain, vs async) Results, ``repeat`` rounds each."""
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-tracking-") as tmp:
        server = MlflowServer(Path(tmp))
        server.start()
        try:
            measured = [_one_round(server.url, Path(tmp)) for _ in range(repeat)]
            fit_results = fits.run_with(server.url, Path(tmp), repeat)
        finally:
            server.stop()

    rounds = [figures for figures, _ in measured]

    def col(key: str) -> list[float]:
        if key.endswith("_p99"):  # of every round's cells together
            return [_p99([x for _, pooled in measured for x in pooled[key.removesuffix("_p99")]])]
        return [r[key] for r in rounds]

    return [
        Result("first cell", "ms", col("tracked_first"), col("plain_first"), "untracked kernel"),
        Result("second cell, back to back", "ms", col("tracked_second"), col("plain_second"), "untracked kernel"),
        Result("cell latency median", "ms", col("tracked_median"), col("neighbour_median"), "untracked kernel"),
        Result("cell latency p99", "ms", col("tracked_p99"), col("neighbour_p99"), "untracked kernel"),
        Result("cell median vs no tracking", "ms", col("tracked_median"), col("control_median"), NO_TRACKING),
        Result("cell p99 vs no tracking", "ms", col("tracked_p99"), col("control_p99"), NO_TRACKING),
        Result("cell p99, 3,000-cell burst", "ms", col("burst_p99"), col("burst_neighbour_p99"), "untracked kernel"),
        Result(
            "cell median, pandas+sklearn in",
            "ms",
            col("imports_median"),
            col("imports_neighbour_median"),
            "untracked, same imports",
        ),
        Result(
            "cell p99, pandas+sklearn in",
            "ms",
            col("imports_p99"),
            col("imports_neighbour_p99"),
            "untracked, same imports",
        ),
        Result(
            "cell median, cell audit on",
            "ms",
            col("audited_median"),
            col("audited_neighbour_median"),
            "untracked kernel",
        ),
        Result("cell p99, cell audit on", "ms", col("audited_p99"), col("audited_neighbour_p99"), "untracked kernel"),
        Result("A/A control: median", "ms", col("a_median"), col("b_median"), "another untracked kernel"),
        Result("A/A control: p99", "ms", col("a_p99"), col("b_p99"), "another untracked kernel"),
        Result("log_metric calls/s vs plain", "/s", col("ours_rate"), col("plain_rate"), "plain log_metric"),
        Result("log_metric calls/s vs async", "/s", col("ours_rate"), col("async_rate"), "mlflow async logging"),
        *fit_results,
    ]
