"""Filtered searches: what one person may see of 10,000 runs of 50 people, gated vs plain MLflow.

One SQLite tracking database is filled once in this process through MLflow's own
SQL store (50 people, 2 experiments each, 100 runs per experiment with a param,
two metrics and a tag: 10,000 runs; five of other people's experiments shared
with alice's group) and copied to two real ``mlflow server`` processes started
with the same options: one as the hub starts it (``--app-name hubforge``, the
request gate, the filtered searches and the guarded stores, behind a hub faked
at the transport), one plain with no auth. Alice's requests go to both in
alternating blocks:

- ``experiments/search`` (max 1000): gated, MLflow's answer is filtered to the 7
  experiments she may read, paging through all 100; plain answers all 100.
- ``runs/search`` over those 7 experiments (700 runs, max 1000), ordered by a
  metric: gated, every experiment id is checked; plain, the same request.

Both searches answer the same runs, so the ratio is the price of filtering.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.mlflow_gate import _server
from bench.report import Result
from harness.mlflow_app import mlflow_fake_hub

__all__ = ["run"]

PEOPLE = 50
EXPERIMENTS_EACH = 2
RUNS_EACH = 100
SHARED = 5
REQUESTS = 60
BLOCK = 10
GROUP = "data-science"  # alice's group, as the faked hub says


def _fill(data: Path) -> None:
    """The database both servers start from: 10,000 runs of 50 people."""
    from mlflow.entities import ExperimentTag, Metric, Param, RunTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    data.mkdir(parents=True)
    store = SqlAlchemyStore(f"sqlite:///{data}/mlflow.sqlite", "mlflow-artifacts:/")
    people = ["alice", *(f"user{i:02d}" for i in range(1, PEOPLE))]
    shared = 0
    for person in people:
        for k in range(EXPERIMENTS_EACH):
            tags = []
            if person != "alice" and k == 0 and shared < SHARED:
                tags.append(ExperimentTag("hubforge.shared_with", GROUP))
                shared += 1
            exp = store.create_experiment(f"/Users/{person}/project-{k}", tags=tags)
            for r in range(RUNS_EACH):
                run = store.create_run(exp, person, 1_700_000_000_000 + r, [RunTag("mlflow.user", person)], f"r{r}")
                rid = run.info.run_id
                store.log_batch(
                    rid,
                    metrics=[Metric("loss", 1.0 / (r + 1), 1_700_000_000_000, 0), Metric("acc", r / 100, 0, 0)],
                    params=[Param("alpha", str(r % 7))],
                    tags=[RunTag("stage", "dev")],
                )
    store.engine.dispose()


def _readable(client: httpx.Client) -> list[str]:
    resp = client.post("api/2.0/mlflow/experiments/search", json={"max_results": 1000})
    resp.raise_for_status()
    return [e["experiment_id"] for e in resp.json().get("experiments", [])]


def _timed(client: httpx.Client, endpoint: str, ids: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    if endpoint == "experiments/search":
        resp = client.post("api/2.0/mlflow/experiments/search", json={"max_results": 1000})
        key = "experiments"
    else:
        body = {"experiment_ids": ids, "max_results": 1000, "order_by": ["metrics.loss ASC"]}
        resp = client.post("api/2.0/mlflow/runs/search", json=body)
        key = "runs"
    took = (time.perf_counter() - started) * 1000
    resp.raise_for_status()
    return took, len(resp.json().get(key, []))


def _one_round(clients: dict[str, httpx.Client], ids: list[str]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    for endpoint in ("experiments/search", "runs/search"):
        for client in clients.values():  # warm-up: connections, caches, the token lookup
            for _ in range(3):
                _timed(client, endpoint, ids)
        for block in range(REQUESTS // BLOCK):
            order = ("gated", "plain") if block % 4 in (0, 3) else ("plain", "gated")
            for side in order:
                for _ in range(BLOCK):
                    took, _count = _timed(clients[side], endpoint, ids)
                    samples.setdefault(f"{side} {endpoint}", []).append(took)
    return samples


def run(repeat: int) -> list[Result]:
    """p50 of alice's filtered experiments/search and runs/search, gated vs plain, ``repeat`` rounds."""
    hub = mlflow_fake_hub().start()
    try:
        with tempfile.TemporaryDirectory(prefix="hubforge-bench-search-") as tmp:
            seed = Path(tmp) / "seed"
            _fill(seed)
            for side in ("gated", "plain"):
                shutil.copytree(seed, Path(tmp) / side)
            with (
                _server(Path(tmp) / "gated", True, hub) as gated,
                _server(Path(tmp) / "plain", False, hub) as plain,
            ):
                ids = _readable(gated)
                assert len(ids) == EXPERIMENTS_EACH + SHARED, f"alice reads {len(ids)} experiments"
                assert len(_readable(plain)) == PEOPLE * EXPERIMENTS_EACH + 1  # and Default
                got = {side: _timed(c, "runs/search", ids)[1] for side, c in (("gated", gated), ("plain", plain))}
                assert got == {"gated": len(ids) * RUNS_EACH, "plain": len(ids) * RUNS_EACH}, got
                rounds = [_one_round({"gated": gated, "plain": plain}, ids) for _ in range(repeat)]
    finally:
        hub.shutdown()
        hub.server_close()
    results = []
    for endpoint, label in (
        ("experiments/search", "experiments/search, filtered"),
        ("runs/search", "runs/search 10k runs, filtered"),
    ):
        ours = [statistics.median(r[f"gated {endpoint}"]) for r in rounds]
        base = [statistics.median(r[f"plain {endpoint}"]) for r in rounds]
        results.append(Result(label, "ms", ours, base, "MLflow, no auth, unfiltered"))
    return results
