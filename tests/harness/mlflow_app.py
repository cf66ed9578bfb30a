"""MLflow's server with hubforge's app (``mlflow server --app-name hubforge``) behind a fake hub.

The hub is the tests' one fake hub (:mod:`harness.hub`), with this module's users. Used by the integration tests of the
gate (through tests/integration/conftest.py, which registers the fixtures here) and by bench/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from harness.hub import FakeHub, running_hub
from harness.mlflow import migrated_database
from harness.mlflow_cli import CliServer
from harness.platform import PROBE, free_port, wait_for
from hubforge.hub.services import MLFLOW_KEEP_ALIVE_S

PREFIX = "/services/mlflow/"
HOST = "hub.example.test"
ORIGIN = f"http://{HOST}"
ACCESS = "access:services!service=mlflow"
SERVICE_TOKEN = "service-" + uuid.uuid4().hex
CLIENT_ID = "service-mlflow"


def user_model(name: str, access: bool = True) -> dict:
    """A hub user model as ``GET /hub/api/user`` returns it: scopes expanded."""
    scopes = [f"read:users:name!user={name}", *([ACCESS, "custom:experiments:write"] if access else [])]
    return {"name": name, "kind": "user", "scopes": scopes}


#: The users the MLflow tests' hub knows, by token.
TOKENS = {
    "alice-token": user_model("alice"),
    "carol-token": user_model("carol"),
    "mallory-token": user_model("mallory", access=False),
    # the governance service reads model cards and metrics (its hubforge-governance role)
    "governance-token": {"name": "governance", "kind": "service", "scopes": [ACCESS, "custom:audit:read"]},
    # a person named like a service must not pass for one
    "imposter-token": {**user_model("service:governance"), "scopes": [ACCESS, "custom:audit:read"]},
}


def mlflow_fake_hub() -> FakeHub:
    """The fake hub (not started) with :data:`TOKENS` and the MLflow service's token."""
    return FakeHub(TOKENS, SERVICE_TOKEN)


@pytest.fixture(scope="module")
def fake_hub() -> Iterator[FakeHub]:
    with running_hub(TOKENS, SERVICE_TOKEN) as hub:
        yield hub


def service_env(hub: FakeHub) -> dict[str, str]:
    """The environment JupyterHub gives a managed service named mlflow."""
    return {
        **os.environ,
        "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN,
        "JUPYTERHUB_API_URL": hub.api_url,
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_CLIENT_ID": CLIENT_ID,
        "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([ACCESS]),
        "JUPYTERHUB_OAUTH_CALLBACK_URL": PREFIX + "oauth_callback",
        "JUPYTERHUB_SERVICE_NAME": "mlflow",
        "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # as the hub's default config has it
        "DO_NOT_TRACK": "true",
    }


def mlflow_command(data: Path, port: int, workers: int = 1) -> list[str]:
    """``mlflow server``'s arguments as the hub starts it, behind a proxy that keeps the Host header."""
    return [
        "server", "--app-name", "hubforge",
        "--backend-store-uri", f"sqlite:///{data}/mlflow.sqlite",
        "--artifacts-destination", str(data / "mlartifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--uvicorn-opts", f"--timeout-keep-alive {MLFLOW_KEEP_ALIVE_S}",
        "--static-prefix", PREFIX.rstrip("/"),
        "--allowed-hosts", f"{HOST},127.0.0.1:*", "--cors-allowed-origins", ORIGIN,
    ]  # fmt: skip


@contextmanager
def mlflow_server(data: Path, hub: FakeHub, gated: bool = True, workers: int = 1) -> Iterator[str]:
    """``mlflow server`` as the hub starts it in ``data`` (without hubforge's app unless
    ``gated``), until the block ends; its URL (reach it with ``Host: HOST``). One worker, as
    the hub starts it; the gate's own tests ask for two (``gate_workers``), so that what one
    worker learns the other must not need."""
    port = free_port()
    migrated_database(data / "mlflow.sqlite")
    command = mlflow_command(data, port, workers)
    if not gated:
        command = [part for part in command if part not in ("--app-name", "hubforge")]
    log_path = data / "server.log"
    log_path.write_bytes(b"")
    proc = CliServer(command, service_env(hub), log_path)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited:\n{log_path.read_text()[-3000:]}")
        try:
            return PROBE.get(f"{url}{PREFIX}health", headers={"Host": HOST}, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 120, "mlflow server", interval=0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def gate_workers() -> int:
    """How many workers ``mlflow_url``'s server runs: one, as the hub starts it. A module that
    tests what the workers must not keep to themselves (the gate's) overrides it with two."""
    return 1


@pytest.fixture(scope="module")
def mlflow_url(fake_hub: FakeHub, tmp_path_factory: pytest.TempPathFactory, gate_workers: int) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow"), fake_hub, workers=gate_workers) as url:
        yield url


@pytest.fixture
def browser(mlflow_url: str) -> Iterator[httpx.Client]:
    """A client with its own cookie jar that reaches MLflow as the proxy forwards it."""
    with httpx.Client(base_url=mlflow_url, headers={"Host": HOST}, timeout=30) as client:
        yield client


def api(token: str, scheme: str = "token") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def create_experiment(client: httpx.Client, headers: dict[str, str]) -> str:
    name = f"exp-{uuid.uuid4().hex[:8]}"
    resp = client.post(
        f"{PREFIX}api/2.0/mlflow/experiments/create",
        json={"name": name},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["experiment_id"])


def start_trace(
    browser: httpx.Client,
    token: str,
    experiment_id: str,
    tags: dict[str, str] | None = None,
) -> str:
    """A trace logged in ``experiment_id`` as the token's owner; its id."""
    trace_id = f"tr-{uuid.uuid4().hex}"
    info = {
        "trace_id": trace_id,
        "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
        "request_time": "2026-12-01T10:00:00Z",
        "state": "OK",
        "tags": tags or {},
    }
    resp = browser.post(f"{PREFIX}api/3.0/mlflow/traces", json={"trace": {"trace_info": info}}, headers=api(token))
    assert resp.status_code == 200, resp.text
    return trace_id
