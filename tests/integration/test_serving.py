"""The serving router for real: MLflow scoring processes behind the router, a fake hub in front.

Two versions of one tiny scikit-learn model (``y = x`` and ``y = 2x``) saved with
``mlflow.sklearn.save_model``; the router app served as the service serves it, behind
its front (``ServingFront``), on a free port on a loop thread
(``harness.governance.LoopThread``), HubAuth unpatched against the tests' fake hub
(``harness.hub.FakeHub``). The tests run in file order and share one service, so that
each scoring process starts as few times as it can (a start takes seconds): v1 starts
for production, v2 for staging and is reused as the canary, v1 again after the
rollback, both again when the router restarts.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from harness.governance import LoopThread, close_hub_http_client
from harness.hub import FakeHub
from harness.platform import still_running
from hubforge.hub.mlflow.internals import SCORING_APP, SCORING_MODEL_ENV
from hubforge.hub.serving.app import make_app, make_hub_auth
from hubforge.hub.serving.digest import tree_digest
from hubforge.hub.serving.front import ServingFront
from hubforge.hub.serving.router import Router
from hubforge.hub.serving.scoring import FIXED_ENV, ScoringPool, ScoringSettings
from hubforge.hub.serving.state import ServingState
from hubforge.hub.serving.upstream import UpstreamPool

PREFIX = "/services/serving/"
ACCESS = "access:services!service=serving"
SERVICE_TOKEN = "serving-secret"
TOKENS: dict[str, dict[str, Any]] = {
    "governance-token": {"kind": "service", "name": "governance", "scopes": [ACCESS]},
    "alice-token": {"kind": "user", "name": "alice", "groups": ["data-scientist"], "scopes": [ACCESS]},
    "erin-token": {"kind": "user", "name": "erin", "groups": ["platform-admin"], "admin": True, "scopes": [ACCESS]},
    "robot-token": {"kind": "service", "name": "robot", "scopes": [ACCESS]},
    "mallory-token": {"kind": "user", "name": "mallory", "groups": [], "scopes": []},
}
#: What the test process holds and a scoring process must not.
PLATFORM_ENV = {"JUPYTERHUB_API_TOKEN": "leaked-token", "HUBFORGE_CONFIG": "/secret/platform.yaml"}
ROWS = {"dataframe_split": {"columns": ["x"], "data": [[3.0], [5.0]]}}


@dataclass
class Service:
    """The router under test, its fake hub and its models."""

    loop: LoopThread
    hub: FakeHub
    state_dir: Path
    models: dict[str, Path]
    url: str = ""
    router: Router | None = None
    front: ServingFront | None = None
    digests: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        """Start (or restart) the router on the state folder, restoring its routes."""
        self.router, self.front, port = self.loop.run(self._start(), timeout=180)
        self.url = f"http://127.0.0.1:{port}{PREFIX}"

    async def _start(self) -> tuple[Router, ServingFront, int]:
        state = ServingState(self.state_dir)
        settings = ScoringSettings(home=state.home, logs=state.logs, sockets=state.sockets, start_timeout=120)
        upstream = UpstreamPool(timeout=30)
        router = Router(state, ScoringPool(settings, upstream, state.verify), draw=random.Random(12).random)
        router.load()
        await router.restore()
        environ = {"JUPYTERHUB_API_TOKEN": SERVICE_TOKEN, "JUPYTERHUB_API_URL": self.hub.api_url}
        app = make_app(router, PREFIX, hub_auth=make_hub_auth(PREFIX, environ=environ))
        front = ServingFront(app)
        return router, front, await front.listen(0, "127.0.0.1")

    def stop(self) -> None:
        """Stop the router and every scoring process."""
        if self.front is not None and self.router is not None:
            self.loop.run(self.front.close())
            self.loop.run(self.router.close(), timeout=60)

    def client(self, token: str | None = "alice-token") -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=180)

    def deploy(self, version: str, target: str = "production", percent: int = 0, **extra: Any) -> httpx.Response:
        body = {
            "target": target,
            "model": "churn",
            "version": version,
            "model_path": str(self.models[version]),
            "digest": self.digests[version],
            "canary_percent": percent,
            **extra,
        }
        with self.client("governance-token") as client:
            return client.put("api/endpoints/churn", json=body)


def save_models(root: Path) -> dict[str, Path]:
    """Version 1 predicts ``x``, version 2 ``2x``."""
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LinearRegression

    x = np.arange(10, dtype=float).reshape(-1, 1)
    folders = {}
    for version, slope in (("1", 1.0), ("2", 2.0)):
        folders[version] = root / f"v{version}"
        mlflow.sklearn.save_model(LinearRegression().fit(x, slope * x[:, 0]), str(folders[version]))
    return folders


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    models = save_models(tmp_path_factory.mktemp("models"))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in PLATFORM_ENV.items():
            patch.setenv(name, value)
        loop = LoopThread()
        hub = FakeHub(TOKENS, SERVICE_TOKEN).start()
        running = Service(loop, hub, tmp_path_factory.mktemp("serving") / "state", models)
        running.digests = {version: tree_digest(path) for version, path in models.items()}
        running.start()
        try:
            yield running
        finally:
            running.stop()
            hub.shutdown()
            hub.server_close()
            loop.run(close_hub_http_client())
            loop.stop()


def score(service: Service, path: str = "endpoints/churn/invocations", token: str = "alice-token") -> httpx.Response:
    with service.client(token) as client:
        return client.post(path, json=ROWS)


def assert_error(response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert needle in response.json()["message"], response.text


def test_deploy_production_then_score(service: Service) -> None:
    response = service.deploy("1")
    assert response.status_code == 201, response.text
    status = response.json()
    assert status["ready"] is True
    assert status["production"]["version"] == "1"
    assert status["production"]["state"] == "ready"
    assert status["production"]["listen"].startswith(f"unix:{service.state_dir}/run/")
    assert status["invocations"] == f"{PREFIX}endpoints/churn/invocations"
    answer = score(service)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [3.0, 5.0]}
    assert answer.headers["X-Hubforge-Model-Version"] == "1"
    assert answer.headers["X-Hubforge-Release"] == "production"
    assert service.deploy("1").status_code == 200  # a retry changes nothing


def test_staging_is_its_own_endpoint(service: Service) -> None:
    assert_error(score(service, "endpoints/churn/staging/invocations"), 404, "no staging endpoint named 'churn'")
    assert service.deploy("2", target="staging").status_code == 201
    answer = score(service, "endpoints/churn/staging/invocations")
    assert answer.json() == {"predictions": [6.0, 10.0]}
    assert answer.headers["X-Hubforge-Model-Version"] == "2"
    assert score(service).headers["X-Hubforge-Model-Version"] == "1"


def test_canary_takes_its_share(service: Service) -> None:
    response = service.deploy("2", percent=20)
    assert response.status_code == 200, response.text
    assert (response.json()["canary"]["version"], response.json()["canary_percent"]) == ("2", 20)
    n, canary = 2000, 0
    with service.client() as client:
        for _ in range(n):
            answer = client.post("endpoints/churn/invocations", json=ROWS)
            assert answer.status_code == 200
            version, role = answer.headers["X-Hubforge-Model-Version"], answer.headers["X-Hubforge-Release"]
            assert answer.json()["predictions"][0] == (6.0 if version == "2" else 3.0)
            assert role == ("canary" if version == "2" else "production")
            canary += version == "2"
    assert abs(canary - 0.2 * n) <= 4 * math.sqrt(n * 0.2 * 0.8), canary
    assert service.hub.lookups["alice-token"] <= 2  # the token's lookup is cached, not made per request


def test_only_governance_changes_routes(service: Service) -> None:
    for token in ("alice-token", "erin-token", "robot-token"):
        with service.client(token) as client:
            assert_error(client.post("api/endpoints/churn/promote"), 403, "only the governance service")
            assert_error(client.post("api/endpoints/churn/rollback"), 403, "only the governance service")
            assert_error(client.delete("api/endpoints/churn"), 403, "only the governance service")
            assert_error(client.put("api/endpoints/churn", json={"version": "9"}), 403, "only the governance service")
            assert client.get("api/endpoints/churn").status_code == 200
    with service.client(None) as client:
        assert_error(client.post("endpoints/churn/invocations", json=ROWS), 401, "authentication required")
        assert_error(client.get("api/endpoints"), 401, "authentication required")
        assert client.get("api/health").json() == {"status": "ok"}
    assert_error(score(service, token="mallory-token"), 403, "may not use this service")
    assert_error(score(service, token="unknown-token"), 401, "authentication required")


def test_bad_control_input_names_the_field(service: Service) -> None:
    good = {"version": "3", "model_path": "/x", "digest": service.digests["1"]}
    with service.client("governance-token") as client:
        cases = [
            ({**good, "digest": "sha256:x"}, "field 'digest'"),
            ({"version": "3", "digest": service.digests["1"]}, "field 'model_path' is required"),
            ({**good, "canary_percent": 101}, "field 'canary_percent'"),
            ({**good, "target": "prod"}, "field 'target'"),
            ({**good, "colour": 1}, "field 'colour'"),
        ]
        for body, needle in cases:
            assert_error(client.put("api/endpoints/churn", json=body), 400, needle)
        assert_error(client.put("api/endpoints/churn", content=b'{"version": 1, "version": 2}',
                                headers={"Content-Type": "application/json"}), 400, "repeated")  # fmt: skip
        assert_error(client.put("api/endpoints/churn", content=b"version=1"), 415, "application/json")
        assert_error(client.post("api/endpoints/nothing/promote"), 404, "no production endpoint named 'nothing'")
        assert_error(client.get("api/endpoints/churn", params={"target": "prod"}), 400, "query parameter 'target'")
    # production as its own canary
    assert_error(service.deploy("1", percent=10), 409, "already")


def test_tampered_model_folder_is_refused(service: Service, tmp_path: Path) -> None:
    tampered = tmp_path / "v3"
    shutil.copytree(service.models["1"], tampered)
    (tampered / "README.md").write_text("version 3\n")  # content of its own: not v1's copy
    digest = tree_digest(tampered)
    (tampered / "MLmodel").write_text((tampered / "MLmodel").read_text() + "# changed\n")
    service.models["3"], service.digests["3"] = tampered, digest
    assert_error(service.deploy("3", target="staging"), 409, "not the approved")
    assert_error(service.deploy("3", target="staging", model_path=str(tmp_path)), 400, "not an MLflow model folder")
    assert score(service, "endpoints/churn/staging/invocations").headers["X-Hubforge-Model-Version"] == "2"


def test_promote_then_rollback(service: Service) -> None:
    with service.client("governance-token") as client:
        promoted = client.post("api/endpoints/churn/promote")
        assert promoted.status_code == 200, promoted.text
        assert (promoted.json()["production"]["version"], promoted.json()["canary"]) == ("2", None)
        assert {score(service).headers["X-Hubforge-Model-Version"] for _ in range(20)} == {"2"}
        rolled = client.post("api/endpoints/churn/rollback")
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["production"]["version"] == "1"
        assert rolled.json()["ready"] is True
        answer = score(service)
        assert (answer.headers["X-Hubforge-Model-Version"], answer.json()) == ("1", {"predictions": [3.0, 5.0]})
        assert_error(client.post("api/endpoints/churn/rollback"), 409, "no previous release")


def test_rollback_drops_a_canary(service: Service) -> None:
    assert service.deploy("2", percent=50).status_code == 200
    with service.client("governance-token") as client:
        rolled = client.post("api/endpoints/churn/rollback")
    assert (rolled.json()["production"]["version"], rolled.json()["canary"]) == ("1", None)
    assert {score(service).headers["X-Hubforge-Model-Version"] for _ in range(20)} == {"1"}


def test_scoring_processes_hold_no_platform_environment(service: Service) -> None:
    assert service.router is not None
    processes = list(service.router.pool.processes.values())
    assert len(processes) == 2  # v1 (production) and v2 (staging)
    for proc in processes:
        assert proc.pid is not None
        top = psutil.Process(proc.pid)
        for member in [top, *top.children(recursive=True)]:
            env = _environ(member.pid)
            leaked = [k for k in env if k.startswith(("JUPYTERHUB_", "HUBFORGE_")) or k in PLATFORM_ENV]
            assert leaked == [], (member.cmdline(), leaked)
            assert "leaked-token" not in "".join(env.values())
        env = _environ(proc.pid)
        assert set(env) == {"PATH", "HOME", "LANG", "LC_ALL", "UVICORN_UDS", SCORING_MODEL_ENV, *FIXED_ENV}
        assert env[SCORING_MODEL_ENV] == proc.release.path
        # uvicorn is the process, with one worker in it: no MLflow CLI waits beside it
        assert top.cmdline()[-1] == SCORING_APP and top.children(recursive=True) == []
        assert os.getpgid(proc.pid) == proc.pid  # its own process group
        # no TCP listener: only the service's account reaches the scoring server
        assert [c for m in [top, *top.children(recursive=True)] for c in m.net_connections("inet")] == []
        assert (proc.socket.parent.stat().st_mode & 0o777) == 0o700


def test_the_scoring_server_is_started_as_mlflow_models_serve_starts_it(tmp_path: Path) -> None:
    """What ``mlflow models serve --env-manager local`` would run for a model: the same app,
    told the model's folder in the same variable (MLflow's own command builder asked)."""
    from mlflow.pyfunc import scoring_server

    command, env = scoring_server.get_cmd(str(tmp_path / "model"))
    assert command.split()[0] == "uvicorn" and command.split()[-1] == SCORING_APP
    assert env[SCORING_MODEL_ENV].endswith(str(tmp_path / "model"))


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_restart_restores_routes_and_refuses_a_changed_copy(service: Service) -> None:
    assert service.router is not None
    members = [psutil.Process(proc.pid) for proc in service.router.pool.processes.values() if proc.pid]
    members += [child for top in members for child in top.children(recursive=True)]
    staging = service.router.endpoint("churn", "staging").production
    service.stop()
    assert not any(still_running(member) for member in members)
    # someone with access to the service's copy of v2 changes it while the router is down
    (Path(staging.path) / "MLmodel").write_text("flavors: {}\n")
    service.start()
    answer = score(service)
    assert (answer.status_code, answer.headers["X-Hubforge-Model-Version"]) == (200, "1")
    assert_error(score(service, "endpoints/churn/staging/invocations"), 503, "is refused")
    with service.client() as client:
        listed = client.get("api/endpoints").json()
    assert [(e["name"], e["target"], e["production"]["version"]) for e in listed] == [
        ("churn", "production", "1"),
        ("churn", "staging", "2"),
    ]
    assert listed[1]["production"]["state"] == "failed"
    assert listed[1]["ready"] is False


def test_delete_stops_the_endpoint(service: Service) -> None:
    with service.client("governance-token") as client:
        assert client.delete("api/endpoints/churn", params={"target": "staging"}).status_code == 204
        assert client.delete("api/endpoints/churn").status_code == 204
        assert client.get("api/endpoints").json() == []
    assert_error(score(service), 404, "no production endpoint named 'churn'")
    assert service.router is not None
    assert service.router.pool.processes == {}
    assert list((service.state_dir / "models").iterdir()) == []


def test_service_refuses_to_start_outside_the_hub(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    command = [sys.executable, "-m", "hubforge.hub.serving", "--state-dir", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "JUPYTERHUB_API_TOKEN not set" in done.stderr
    assert "Traceback" not in done.stderr
