"""The whole deployment flow with the real parts: MLflow, governance, the serving router.

One fake hub knows everyone (alice the data scientist, carol the ML lead, and the
governance service's own token); a gated MLflow server, the serving router and the
governance service each run for real against it (:mod:`harness.deploy`). alice trains and registers a model,
writes its card and asks for production; carol approves in her browser session; the
governance service copies the version, has the router serve it, and points MLflow's
``production`` alias at it; the endpoint answers. Then a canary at 20%, carol's rollback,
and a model version changed after its approval, which is not served.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from harness.deploy import DeployPlatform, ask, deploy_platform, router_target
from harness.models import as_person
from hubforge.events.spool import read_spool

ROWS = {"dataframe_split": {"columns": ["x"], "data": [[3.0], [5.0]]}}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployPlatform]:
    tmp = tmp_path_factory.mktemp("flow")
    with deploy_platform(tmp, router_target(tmp)) as platform:
        yield platform


@pytest.fixture(scope="module")
def churn(platform: DeployPlatform) -> str:
    """alice's model: version 1 predicts ``x``, with a complete card."""
    return platform.register(slope=1.0)[0]


def new_version(platform: DeployPlatform, model: str, slope: float) -> str:
    return platform.register(model, slope=slope)[1]


def score(endpoint: str, token: str = "alice-token") -> httpx.Response:
    return httpx.post(endpoint, json=ROWS, headers={"Authorization": f"token {token}"}, timeout=120)


def test_alice_asks_carol_approves_and_the_endpoint_serves_it(platform: DeployPlatform, churn: str) -> None:
    request = ask(platform, churn, "1")
    approved = platform.decide_or_change("carol-token", request["id"], decision="approve", comment="ship it")
    assert approved.status_code == 200 and "You approved this request." in approved.text
    done = platform.deployed(request["id"])
    assert done["deployment"]["status"] == "deployed", done["deployment"]
    assert done["digest"].startswith("sha256:")
    answer = score(done["deployment"]["endpoint"])
    assert answer.status_code == 200, answer.text
    assert [round(p, 6) for p in answer.json()["predictions"]] == [3.0, 5.0]
    assert answer.headers["X-Hubforge-Model-Version"] == "1"
    assert platform.aliases(churn) == {"production": "1"}
    assert platform.audit.flush(10)
    executed = [e for e in read_spool(platform.audit.directory) if e.get("action") == "executed"]
    assert (executed[-1]["user"], executed[-1]["outcome"], executed[-1]["version"]) == ("carol", "success", "1")


def test_a_canary_takes_its_share_and_carol_rolls_it_back(platform: DeployPlatform, churn: str) -> None:
    version = new_version(platform, churn, slope=2.0)
    request = ask(platform, churn, version, canary_percent=20)
    assert platform.decide_or_change("carol-token", request["id"], decision="approve").status_code == 200
    done = platform.deployed(request["id"])
    assert done["deployment"]["status"] == "deployed", done["deployment"]
    assert platform.aliases(churn) == {"production": "1", "canary": version}
    served = {"1": 0, version: 0}
    with httpx.Client(headers={"Authorization": "token alice-token"}, timeout=60) as client:
        for _ in range(2000):
            served[client.post(done["deployment"]["endpoint"], json=ROWS).headers["X-Hubforge-Model-Version"]] += 1
    bound = 4 * math.sqrt(2000 * 0.2 * 0.8)  # four standard deviations of the binomial
    assert abs(served[version] - 400) < bound, served
    changed = platform.decide_or_change("carol-token", request["id"], action="rollback")
    assert changed.status_code == 200 and "You rolled back this deployment." in changed.text
    assert platform.request(request["id"])["deployment"]["status"] == "rolled_back"
    assert platform.aliases(churn) == {"production": "1"}
    assert score(done["deployment"]["endpoint"]).headers["X-Hubforge-Model-Version"] == "1"


def test_a_model_changed_after_its_approval_is_not_served(platform: DeployPlatform, churn: str, tmp_path: Path) -> None:
    from mlflow.tracking.artifact_utils import get_artifact_repository

    version = new_version(platform, churn, slope=3.0)
    request = ask(platform, churn, version)
    assert platform.decide_or_change("carol-token", request["id"], decision="approve").status_code == 200
    deployment = platform.deployed(request["id"])["deployment"]
    assert deployment["status"] == "deployed"
    # alice changes the version's files after the approval (she owns its logged model) ...
    (tmp_path / "extra.txt").write_text("changed after approval")
    with as_person(platform.tracking, "alice-token"):
        client = MlflowClient(platform.tracking, registry_uri=platform.tracking)
        source = client.get_model_version(churn, version).source  # models:/<logged model id>
        logged = client.get_logged_model(source.removeprefix("models:/"))
        get_artifact_repository(logged.artifact_location).log_artifact(str(tmp_path / "extra.txt"))
    # ... so deploying it again (as a restarted service resumes it) is refused: it needs a new approval
    approved = platform.store.get_request(request["id"])
    assert approved is not None
    platform.loop.run(platform.deployer.deploy(approved), timeout=300)
    failed = platform.request(request["id"])["deployment"]
    assert failed["status"] == "failed" and "needs a new approval" in failed["error"], failed
    # what serves is still the approved copy, taken when carol approved it
    answer = score(deployment["endpoint"])
    assert answer.headers["X-Hubforge-Model-Version"] == version
    assert [round(p, 6) for p in answer.json()["predictions"]] == [9.0, 15.0]
