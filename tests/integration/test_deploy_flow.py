"""The whole deployment flow with the real parts: MLflow, governance, the serving router.

One fake hub knows everyone (alice the data scientist, carol the ML lead, and the
governance service's own token); a gated MLflow server, the serving router and the
governance service each run for real against it. alice trains and registers a model,
writes its card and asks for production; carol approves in her browser session; the
governance service copies the version, has the router serve it, and points MLflow's
``production`` alias at it; the endpoint answers. Then a canary at 20%, carol's rollback,
and a model version changed after its approval, which is not served.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from tornado import web

from harness.cards import complete_card
from harness.governance import ACCESS as GOVERNANCE_ACCESS
from harness.governance import LoopThread, close_hub_http_client, hub_user, serve
from harness.hub import running_hub
from harness.mlflow_app import PREFIX as MLFLOW_PREFIX
from harness.mlflow_app import SERVICE_TOKEN, mlflow_server
from harness.models import as_person, register_model
from harness.platform import wait_for
from hubforge.events.spool import EventSpool, read_spool
from hubforge.hub.governance.app import make_app as governance_app
from hubforge.hub.governance.app import make_hub_auth as governance_auth
from hubforge.hub.governance.deployments import Deployer, MlflowAliases, ServingClient
from hubforge.hub.governance.mlflow_evidence import MlflowEvidence
from hubforge.hub.governance.snapshots import ModelSnapshots
from hubforge.hub.governance.store import GovernanceStore
from hubforge.hub.serving.app import make_app as serving_app
from hubforge.hub.serving.app import make_hub_auth as serving_auth
from hubforge.hub.serving.router import Router
from hubforge.hub.serving.scoring import ScoringPool, ScoringSettings
from hubforge.hub.serving.state import ServingState
from hubforge.hub.serving.upstream import UpstreamPool
from hubforge.modelcard.mlflow_store import save_card

MLFLOW_ACCESS = "access:services!service=mlflow"
SERVING_ACCESS = "access:services!service=serving"
GOV = "/services/governance/"
SERVING = "/services/serving/"
COOKIE_SECRET = b"c" * 32
ROWS = {"dataframe_split": {"columns": ["x"], "data": [[3.0], [5.0]]}}


def person(name: str, groups: list[str]) -> dict[str, Any]:
    user = hub_user(name, groups)
    user["scopes"] += [MLFLOW_ACCESS, SERVING_ACCESS]
    return user


TOKENS = {
    "alice-token": person("alice", ["data-scientist"]),
    "carol-token": person("carol", ["ml-lead"]),
    # the governance service's own token, with its hubforge-governance role's scopes
    "governance-token": {
        "kind": "service",
        "name": "governance",
        "scopes": [MLFLOW_ACCESS, SERVING_ACCESS, "custom:audit:read"],
    },
}


@dataclass
class Platform:
    tracking: str
    governance: str
    serving: str
    store: GovernanceStore
    deployer: Deployer
    audit: EventSpool
    loop: LoopThread

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.governance, headers={"Authorization": f"token {token}"}, timeout=60)

    def decide_or_change(self, token: str, request_id: str, **form: str) -> httpx.Response:
        """Post the request page's form as the person, in their browser session (cookie + XSRF)."""
        value = web.create_signed_value(COOKIE_SECRET, "service-governance", token).decode()
        with httpx.Client(base_url=self.governance, timeout=300) as browser:
            browser.cookies.set("service-governance", value, path=GOV)
            page = browser.get(f"requests/{request_id}", headers={"Sec-Fetch-Mode": "navigate"})
            assert page.status_code == 200, page.text
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
            assert xsrf, "the page offers the person a form"
            return browser.post(f"requests/{request_id}", data={**form, "_xsrf": xsrf.group(1)})

    def request(self, request_id: str) -> dict[str, Any]:
        with self.api("alice-token") as c:
            return c.get(f"api/requests/{request_id}").json()

    def deployed(self, request_id: str) -> dict[str, Any]:
        """The request once its deployment has ended (deployed or failed)."""

        def ended() -> dict[str, Any] | None:
            found = self.request(request_id)
            deployment = found.get("deployment") or {}
            return found if deployment.get("status") in ("deployed", "failed") else None

        return wait_for(ended, 240, f"the deployment of request {request_id}", interval=0.5)

    def aliases(self, model: str) -> dict[str, str]:
        with as_person(self.tracking, "alice-token"):
            return dict(MlflowClient(self.tracking, registry_uri=self.tracking).get_registered_model(model).aliases)


async def start_services(hub_env: dict[str, str], tmp: Path, tracking: str) -> tuple[list[Any], str, str, Any]:
    state = ServingState(tmp / "serving")
    settings = ScoringSettings(home=state.home, logs=state.logs, sockets=state.sockets, start_timeout=120)
    router = Router(state, ScoringPool(settings, UpstreamPool(timeout=30), state.verify), draw=random.Random(7).random)
    router.load()
    await router.restore()
    serving_server, serving_port = await serve(serving_app(router, SERVING, hub_auth=serving_auth(SERVING, hub_env)))
    serving_url = f"http://127.0.0.1:{serving_port}{SERVING}"
    store = GovernanceStore(f"sqlite:///{tmp / 'governance.sqlite'}")
    store.upgrade()
    audit = EventSpool(tmp / "events" / "governance", "governance")
    snapshots = ModelSnapshots(tmp / "deployments", tracking)
    deployer = Deployer(
        store,
        ServingClient(serving_url, "governance-token"),
        snapshots,
        public_url=f"http://127.0.0.1:{serving_port}/",
        aliases=MlflowAliases(tracking),
        audit=audit,
    )
    env = {**hub_env, "JUPYTERHUB_CLIENT_ID": "service-governance", "JUPYTERHUB_SERVICE_NAME": "governance",
           "JUPYTERHUB_OAUTH_ACCESS_SCOPES": f'["{GOVERNANCE_ACCESS}"]'}  # fmt: skip
    app = governance_app(
        store,
        GOV,
        hub_auth=governance_auth(GOV, env),
        group_personas={"data-scientist": ["data-scientist"], "ml-lead": ["ml-lead"]},
        cookie_secret=COOKIE_SECRET,
        audit=audit,
        evidence=MlflowEvidence(tracking),
        snapshots=snapshots,
        deployer=deployer,
    )
    governance_server, governance_port = await serve(app)
    servers = [serving_server, governance_server]
    return servers, f"http://127.0.0.1:{governance_port}{GOV}", serving_url, (router, store, deployer, audit)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("flow")
    monkeypatch = pytest.MonkeyPatch()
    with contextlib.ExitStack() as stack:
        hub = stack.enter_context(running_hub(TOKENS, SERVICE_TOKEN))
        (tmp / "mlflow").mkdir()
        tracking = stack.enter_context(mlflow_server(tmp / "mlflow", hub)) + MLFLOW_PREFIX.rstrip("/")
        # The governance service's MLflow calls carry its own token (as configure_mlflow_client sets it).
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "governance-token")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        stack.callback(monkeypatch.undo)
        loop = LoopThread()
        hub_env = {"JUPYTERHUB_API_TOKEN": SERVICE_TOKEN, "JUPYTERHUB_API_URL": hub.api_url}
        servers, governance, serving, (router, store, deployer, audit) = loop.run(
            start_services(hub_env, tmp, tracking), timeout=120
        )
        yield Platform(tracking, governance, serving, store, deployer, audit, loop)
        for server in servers:
            server.stop()
        loop.run(deployer.close(), timeout=200)
        loop.run(router.close(), timeout=60)
        loop.run(close_hub_http_client())
        loop.stop()
        audit.close()


@pytest.fixture(scope="module")
def churn(platform: Platform) -> str:
    """alice's model: version 1 predicts ``x``, with a complete card."""
    model = register_model(platform.tracking, "alice-token", "alice", prefix="churn", slope=1.0)
    with as_person(platform.tracking, "alice-token"):
        client = MlflowClient(platform.tracking, registry_uri=platform.tracking)
        save_card(client, model.name, model.version, complete_card(model.name))
    return model.name


def new_version(platform: Platform, model: str, slope: float) -> str:
    registered = register_model(platform.tracking, "alice-token", "alice", slope=slope, name=model)
    with as_person(platform.tracking, "alice-token"):
        client = MlflowClient(platform.tracking, registry_uri=platform.tracking)
        save_card(client, model, registered.version, complete_card(model))
    return registered.version


def ask(platform: Platform, model: str, version: str, **fields: Any) -> dict[str, Any]:
    body = {"kind": "deploy-production", "model": model, "version": version, "justification": "better", **fields}
    with platform.api("alice-token") as c:
        r = c.post("api/requests", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["policy"]["decision"] == "allow", r.json()["policy"]
    return r.json()


def score(endpoint: str, token: str = "alice-token") -> httpx.Response:
    return httpx.post(endpoint, json=ROWS, headers={"Authorization": f"token {token}"}, timeout=120)


def test_alice_asks_carol_approves_and_the_endpoint_serves_it(platform: Platform, churn: str) -> None:
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


def test_a_canary_takes_its_share_and_carol_rolls_it_back(platform: Platform, churn: str) -> None:
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


def test_a_model_changed_after_its_approval_is_not_served(platform: Platform, churn: str, tmp_path: Path) -> None:
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
