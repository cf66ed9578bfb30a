"""The serving router: what it adds to a scoring request, and approval -> endpoint ready.

One tiny scikit-learn model saved with ``mlflow.sklearn.save_model``; the router run as
the hub runs it (``python -m hubforge.hub.serving``, its own process, behind a hub faked
at the transport), deployed to with the governance service's token:

- ``serving p50/p99 via router``: the same scoring request (two rows, ``dataframe_split``)
  sent through the router over TCP (read by its front, hub token checked against the
  access cache, release chosen, forwarded over a kept-alive connection to the scoring
  server's Unix socket) and straight to the scoring server's socket, request by request
  in ABBA order, :data:`REQUESTS` of each per round, after a warm-up; each side from a
  keep-alive ``httpx`` client of its own. Target: the router adds at most 1 ms at p99
  (printed, with the ratio, and the router process's CPU time per routed request). The
  machine's other processes shift both sides: compare the medians of several runs.
- ``serving deploy -> ready``: from the deploy request (``PUT api/endpoints/<name>``) to
  its answer, which comes once the new scoring process answers ``/ping`` (the copy of
  the model folder and its digest included), against starting ``mlflow models serve``
  by hand with the same options and environment until ``/ping`` answers.
- ``upstream client p50``: the router's keep-alive client (:mod:`hubforge.hub.serving.upstream`)
  against ``httpx.AsyncClient`` (keep-alive too) on the same socket, alternating, in one
  event loop. Tornado's ``AsyncHTTPClient`` speaks neither keep-alive nor Unix sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from bench.report import Result
from harness.hub import running_hub
from hubforge.hub.serving.digest import tree_digest
from hubforge.hub.serving.scoring import clean_environment
from hubforge.hub.serving.upstream import UpstreamPool
from hubforge.ports import free_port

__all__ = ["run"]

REQUESTS = 2000
WARMUP = 100
PREFIX = "/services/serving/"
ACCESS = "access:services!service=serving"
SERVICE_TOKEN = "serving-bench-secret"
TOKENS = {
    "governance-token": {"kind": "service", "name": "governance", "scopes": [ACCESS]},
    "alice-token": {"kind": "user", "name": "alice", "scopes": [ACCESS]},
}
BODY = b'{"dataframe_split": {"columns": ["x"], "data": [[3.0], [5.0]]}}'
JSON = {"Content-Type": "application/json"}
MLFLOW = os.path.join(os.path.dirname(sys.executable), "mlflow")


def _save_model(folder: Path) -> Path:
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LinearRegression

    x = np.arange(10, dtype=float).reshape(-1, 1)
    mlflow.sklearn.save_model(LinearRegression().fit(x, x[:, 0]), str(folder / "model"))
    return folder / "model"


def _wait(url: str, timeout: float = 180, client: httpx.Client | None = None) -> None:
    deadline = time.monotonic() + timeout
    get = client.get if client is not None else httpx.get
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


@contextlib.contextmanager
def _router(folder: Path, hub_api: str) -> Iterator[tuple[str, psutil.Process]]:
    """The router as its own process; its base URL and its process."""
    port = free_port()
    env = {
        **os.environ,
        "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN,
        "JUPYTERHUB_API_URL": hub_api,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
        "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
    }
    command = [sys.executable, "-m", "hubforge.hub.serving", "--state-dir", str(folder / "state")]
    with open(folder / "router.log", "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}{PREFIX}"
        _wait(url + "api/health", 60)
        yield url, psutil.Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def _deploy(client: httpx.Client, model: Path, digest: str) -> tuple[float, str]:
    """Seconds from the deploy request to its answer (the endpoint ready); the scoring socket."""
    body = {"version": "1", "model_path": str(model), "digest": digest}
    started = time.perf_counter()
    response = client.put("api/endpoints/bench", json=body, headers={"Authorization": "token governance-token"})
    took = time.perf_counter() - started
    response.raise_for_status()
    return took, str(response.json()["production"]["listen"]).removeprefix("unix:")


def _plain_start(model: Path, home: Path) -> float:
    """Seconds from starting ``mlflow models serve`` by hand to its ``/ping``."""
    command = [MLFLOW, "models", "serve", "-m", str(model), "--env-manager", "local", "-p", "0", "-w", "1"]
    socket = home / "plain.sock"
    env = clean_environment(home, os.path.dirname(MLFLOW), socket)
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket))) as client:
            _wait("http://localhost/ping", client=client)
        return time.perf_counter() - started
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _readiness(router: httpx.Client, model: Path, home: Path, repeat: int) -> tuple[list[float], list[float], str]:
    digest = tree_digest(model)
    ours: list[float] = []
    plain: list[float] = []
    socket = ""
    for round_ in range(repeat):
        if round_:
            router.delete("api/endpoints/bench", headers={"Authorization": "token governance-token"})
        took, socket = _deploy(router, model, digest)
        ours.append(took)
        plain.append(_plain_start(model, home))
    return ours, plain, socket


def _timed(client: httpx.Client, url: str) -> float:
    """Milliseconds of one scoring request."""
    started = time.perf_counter()
    response = client.post(url, content=BODY, headers=JSON)
    took = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return took


def _latencies(routed: httpx.Client, direct: httpx.Client) -> tuple[list[float], list[float]]:
    """Per-request ms through the router and straight to the scoring server, ABBA."""
    for _ in range(WARMUP):
        _timed(routed, "endpoints/bench/invocations")
        _timed(direct, "http://localhost/invocations")
    ours: list[float] = []
    base: list[float] = []
    for step in range(REQUESTS):
        for side in ("routed", "direct") if step % 2 == 0 else ("direct", "routed"):
            if side == "routed":
                ours.append(_timed(routed, "endpoints/bench/invocations"))
            else:
                base.append(_timed(direct, "http://localhost/invocations"))
    return ours, base


async def _clients(socket: str) -> tuple[list[float], list[float]]:
    """Per-request ms of the router's pooled client and of ``httpx.AsyncClient``, alternating."""
    pooled = UpstreamPool()
    ours: list[float] = []
    base: list[float] = []
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=socket)) as client:
        for step in range(WARMUP + REQUESTS // 2):
            started = time.perf_counter()
            await pooled.request(socket, "POST", "/invocations", BODY, JSON)
            middle = time.perf_counter()
            (await client.post("http://localhost/invocations", content=BODY, headers=JSON)).raise_for_status()
            if step >= WARMUP:
                ours.append((middle - started) * 1000)
                base.append((time.perf_counter() - middle) * 1000)
    pooled.close()
    return ours, base


def _cpu_ms(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return (times.user + times.system) * 1000


def _p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99) - 1]


def run(repeat: int) -> list[Result]:
    """Router overhead at p50 and p99, deploy -> ready, and the upstream clients."""
    rounds: list[tuple[list[float], list[float]]] = []
    cpu: list[float] = []  # the router's CPU µs per routed request, per round
    with (
        tempfile.TemporaryDirectory(prefix="hubforge-bench-serving-") as tmp,
        running_hub(TOKENS, SERVICE_TOKEN) as hub,
    ):
        folder = Path(tmp)
        model = _save_model(folder)
        (folder / "home").mkdir()
        with _router(folder, hub.api_url) as (url, proc), httpx.Client(base_url=url, timeout=180) as control:
            ready_ours, ready_plain, socket = _readiness(control, model, folder / "home", repeat)
            headers = {"Authorization": "token alice-token"}
            with (
                httpx.Client(base_url=url, headers=headers, timeout=60) as routed,
                httpx.Client(transport=httpx.HTTPTransport(uds=socket), timeout=60) as direct,
            ):
                for _ in range(repeat):
                    before = _cpu_ms(proc)
                    rounds.append(_latencies(routed, direct))
                    cpu.append((_cpu_ms(proc) - before) / (REQUESTS + WARMUP) * 1000)
            pooled, httpx_side = asyncio.run(_clients(socket))
    results = [Result("serving deploy -> ready", "s", ready_ours, ready_plain, "mlflow models serve by hand")]
    for label, figure in (("p50", statistics.median), ("p99", _p99)):
        ours, base = [figure(r[0]) for r in rounds], [figure(r[1]) for r in rounds]
        results.append(Result(f"serving {label} via router", "ms", ours, base, "scoring server called directly"))
        extra = statistics.median(ours) - statistics.median(base)
        print(f"serving router: {label} +{extra:.3f} ms ({statistics.median(ours) / statistics.median(base):.2f}x)",
              file=sys.stderr)  # fmt: skip
    print(f"serving router: {statistics.median(cpu):.0f} µs of the router's CPU per request", file=sys.stderr)
    results.append(Result("upstream client p50", "ms", [statistics.median(pooled)], [statistics.median(httpx_side)],
                          "httpx.AsyncClient, keep-alive"))  # fmt: skip
    return results
