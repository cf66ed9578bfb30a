"""The MLflow permission checks: hubforge's MLflow app against MLflow with no auth.

Two real ``mlflow server`` processes on SQLite, started for the run with the same
options: one as the hub starts it (``--app-name hubforge``: the request gate and
the guarded tracking store, behind a hub faked at the transport, as in
``tests/integration/test_mlflow_app.py``), one plain. The same person's requests go to both
request by request in ABBA order (gated, plain, plain, gated, ...) so that load on
a shared machine hits both alike: ``runs/get`` and ``log-batch`` (10 metrics) on a
run of their own. p50 and p99 per endpoint; the extra milliseconds at p99 are
printed too. Both databases lie on a memory file system where there is one
(``/dev/shm``): a disk's flush times are the same for both servers and would only
widen the tails that the checks' cost is read from. The slowest of a longer series of
log-batch requests is printed too: every few thousand requests CPython scans the whole
heap once, and hubforge's app freezes what the server built to start out of that scan.

The gate's own work is measured apart, in this process (``_in_process``): a request
through :class:`~hubforge.hub.mlflow.gate.HubGate` to an app that answers at once,
against the same request straight to that app, with the hub's answer about the token
kept as a logging client's requests find it. That figure has none of the servers' noise.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.report import Result
from harness.hub import FakeHub
from harness.mlflow_app import ACCESS, CLIENT_ID, HOST, PREFIX, SERVICE_TOKEN, mlflow_fake_hub, mlflow_server

__all__ = ["run"]

REQUESTS = 1000
#: log-batch requests per server for the slowest one: CPython scans the whole heap once every
#: few thousand of them (a full collection), and that request waits for the scan.
PAUSE_REQUESTS = 4000
#: Requests per side and round of the in-process measurement of the gate alone.
IN_PROCESS = 2000
TOKEN = {"Authorization": "token alice-token"}


@contextmanager
def _server(data: Path, gated: bool, hub: FakeHub) -> Iterator[httpx.Client]:
    data.mkdir(exist_ok=True)
    # One worker, as the platform runs MLflow: with two, which worker a request lands on
    # differs between the servers and shows up as a difference of its own.
    with mlflow_server(data, hub, gated) as url:
        headers = {"Host": HOST, **TOKEN}
        with httpx.Client(base_url=f"{url}{PREFIX}", headers=headers, timeout=60) as client:
            yield client


def _run_of_alices(client: httpx.Client) -> str:
    """A run of alice's in an experiment of hers, with the same rows in either server: the
    gate adds the owner tag and the run's creator when a request leaves them out, so the
    requests carry them, as MLflow's client sends ``user_id`` and ``mlflow.user``."""
    name = f"/Users/alice/bench-{time.time_ns()}"
    owner = [{"key": "hubforge.owner", "value": "alice"}]
    experiment = client.post("api/2.0/mlflow/experiments/create", json={"name": name, "tags": owner})
    experiment.raise_for_status()
    body = {
        "experiment_id": experiment.json()["experiment_id"],
        "user_id": "alice",
        "tags": [{"key": "mlflow.user", "value": "alice"}],
    }
    run = client.post("api/2.0/mlflow/runs/create", json=body)
    run.raise_for_status()
    return str(run.json()["run"]["info"]["run_id"])


def _timed(client: httpx.Client, endpoint: str, run_id: str, step: int) -> float:
    started = time.perf_counter()
    if endpoint == "runs/get":
        resp = client.get("api/2.0/mlflow/runs/get", params={"run_id": run_id})
    else:
        stamp = 1_700_000_000_000 + step
        metrics = [{"key": f"m{i}", "value": i, "timestamp": stamp, "step": step} for i in range(10)]
        resp = client.post("api/2.0/mlflow/runs/log-batch", json={"run_id": run_id, "metrics": metrics})
    took = (time.perf_counter() - started) * 1000
    resp.raise_for_status()
    return took


def _memory_fs() -> str | None:
    """A memory file system to keep the databases on, if the machine has one."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99) - 1]


def _one_round(gated: httpx.Client, plain: httpx.Client) -> dict[str, list[float]]:
    runs = {"gated": _run_of_alices(gated), "plain": _run_of_alices(plain)}
    clients = {"gated": gated, "plain": plain}
    samples: dict[str, list[float]] = {f"{side} {ep}": [] for side in clients for ep in ("runs/get", "log-batch")}
    for endpoint in ("runs/get", "log-batch"):
        for side in clients:  # warm-up: connections, caches, the token lookup
            for step in range(20):
                _timed(clients[side], endpoint, runs[side], REQUESTS + step)
        for step in range(REQUESTS):
            for side in ("gated", "plain") if step % 2 == 0 else ("plain", "gated"):
                samples[f"{side} {endpoint}"].append(_timed(clients[side], endpoint, runs[side], step))
    return samples


def _slowest(gated: httpx.Client, plain: httpx.Client) -> tuple[float, float]:
    """ms of the slowest of :data:`PAUSE_REQUESTS` log-batch requests to each server, in ABBA order."""
    runs = {"gated": _run_of_alices(gated), "plain": _run_of_alices(plain)}
    clients = {"gated": gated, "plain": plain}
    slowest = {"gated": 0.0, "plain": 0.0}
    # This process's own collections would land in whichever request was in flight.
    gc.collect()
    gc.disable()
    try:
        for step in range(PAUSE_REQUESTS):
            for side in ("gated", "plain") if step % 2 == 0 else ("plain", "gated"):
                slowest[side] = max(slowest[side], _timed(clients[side], "log-batch", runs[side], step))
    finally:
        gc.enable()
    return slowest["gated"], slowest["plain"]


def _in_process(hub: FakeHub, repeat: int) -> Result:
    """µs per ``runs/get`` through the gate alone vs straight to the app behind it."""
    from jupyterhub.services.auth import HubOAuth
    from starlette.responses import JSONResponse
    from starlette.types import Receive, Scope, Send

    from hubforge.hub.mlflow.gate import HubGate

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"run": {}})(scope, receive, send)

    hub_auth = HubOAuth(
        api_token=SERVICE_TOKEN, oauth_client_id=CLIENT_ID, api_url=hub.api_url,
        base_url=PREFIX, access_scopes={ACCESS},
    )  # fmt: skip
    apps = {"gated": HubGate(answer, hub_auth), "plain": answer}

    async def per_request(app: object) -> float:
        transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}", headers=TOKEN) as client:
            url, params = f"{PREFIX}api/2.0/mlflow/runs/get", {"run_id": "0" * 32}
            for _ in range(50):  # warm-up: the hub's answer
                (await client.get(url, params=params)).raise_for_status()
            started = time.perf_counter()
            for _ in range(IN_PROCESS):
                await client.get(url, params=params)
            return (time.perf_counter() - started) / IN_PROCESS * 1e6

    samples: dict[str, list[float]] = {"gated": [], "plain": []}
    for index in range(2 * repeat):  # ABBA
        for side in ("gated", "plain") if index % 2 == 0 else ("plain", "gated"):
            samples[side].append(asyncio.run(per_request(apps[side])))
    extra = statistics.median(samples["gated"]) - statistics.median(samples["plain"])
    print(f"mlflow gate: in process +{extra:.1f} µs a request", file=sys.stderr)
    return Result("MLflow gate alone, in process", "µs", samples["gated"], samples["plain"], "the same app, no gate")


def run(repeat: int) -> list[Result]:
    """p50 and p99 of runs/get and log-batch, gated vs plain, ``repeat`` rounds."""
    hub = mlflow_fake_hub().start()
    rounds: list[dict[str, list[float]]] = []
    try:
        alone = _in_process(hub, repeat)
        with (
            tempfile.TemporaryDirectory(prefix="hubforge-bench-gate-", dir=_memory_fs()) as tmp,
            _server(Path(tmp) / "gated", True, hub) as gated,
            _server(Path(tmp) / "plain", False, hub) as plain,
        ):
            rounds = [_one_round(gated, plain) for _ in range(repeat)]
            slowest = _slowest(gated, plain)
    finally:
        hub.shutdown()
        hub.server_close()
    results = [alone]
    for endpoint in ("runs/get", "log-batch"):
        for label, figure in (("p50", statistics.median), ("p99", _p99)):
            ours = [figure(r[f"gated {endpoint}"]) for r in rounds]
            base = [figure(r[f"plain {endpoint}"]) for r in rounds]
            results.append(Result(f"MLflow {endpoint} {label}", "ms", ours, base, "MLflow, no auth"))
            extra = statistics.median(ours) - statistics.median(base)
            print(f"mlflow gate: {endpoint} {label} +{extra:.2f} ms", file=sys.stderr)
    name = f"MLflow log-batch, slowest of {PAUSE_REQUESTS:,}"
    results.append(Result(name, "ms", [slowest[0]], [slowest[1]], "MLflow, no auth"))
    return results
