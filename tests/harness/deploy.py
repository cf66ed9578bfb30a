"""The deployment flow's real parts, shared by its tests on one machine and on Kubernetes.

One fake hub (:func:`harness.hub.running_hub`) knows everyone: alice the data scientist,
carol the ML lead, and the governance service's own token. A gated MLflow server
(:func:`deploy_platform`) and the governance service run for real against it; the deploy
target (the one-machine router, or KServe through the object store) is the test's.
People act as they would: alice asks over the REST API with her token, carol decides in
her browser session on the request's page (cookie and XSRF form).
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from tornado import web
from tornado.httpserver import HTTPServer

from harness.cards import complete_card
from harness.governance import ACCESS as GOVERNANCE_ACCESS
from harness.governance import LoopThread, close_hub_http_client, hub_user, serve
from harness.hub import running_hub
from harness.mlflow_app import PREFIX as MLFLOW_PREFIX
from harness.mlflow_app import SERVICE_TOKEN, mlflow_server
from harness.models import as_person, register_model
from harness.platform import wait_for
from hubforge.events.spool import EventSpool
from hubforge.hub.governance.app import make_app as governance_app
from hubforge.hub.governance.app import make_hub_auth as governance_auth
from hubforge.hub.governance.deployments import Deployer, DeployTarget, MlflowAliases, ServingClient
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

__all__ = ["GOV", "TOKENS", "Closer", "DeployPlatform", "ask", "deploy_platform", "person", "router_target"]

MLFLOW_ACCESS = "access:services!service=mlflow"
SERVING_ACCESS = "access:services!service=serving"
GOV = "/services/governance/"
SERVING = "/services/serving/"
COOKIE_SECRET = b"c" * 32


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

#: What a deploy target needs done at the end, in the services' loop.
Closer = Callable[[], Awaitable[Any]]
#: Makes the deploy target in the services' loop, given the hub's environment: the target,
#: the public URL endpoints are reached at, and its closers (after the deployer's).
TargetFactory = Callable[[dict[str, str]], Awaitable[tuple[DeployTarget, str, list[Closer]]]]


@dataclass
class DeployPlatform:
    tracking: str
    governance: str
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

    def register(self, model: str | None = None, *, slope: float, prefix: str = "churn") -> tuple[str, str]:
        """alice registers a version (``x * slope``) with a complete card: (model, version)."""
        registered = register_model(self.tracking, "alice-token", "alice", prefix=prefix, slope=slope, name=model)
        with as_person(self.tracking, "alice-token"):
            client = MlflowClient(self.tracking, registry_uri=self.tracking)
            save_card(client, registered.name, registered.version, complete_card(registered.name))
        return registered.name, registered.version


def router_target(tmp: Path, *, seed: int = 7) -> TargetFactory:
    """The serving router on a free port (its state under ``tmp``, canary draws seeded), and
    the governance service's client of it."""

    async def make(hub_env: dict[str, str]) -> tuple[DeployTarget, str, list[Closer]]:
        state = ServingState(tmp / "serving")
        settings = ScoringSettings(home=state.home, logs=state.logs, sockets=state.sockets, start_timeout=120)
        pool = ScoringPool(settings, UpstreamPool(timeout=30), state.verify)
        router = Router(state, pool, draw=random.Random(seed).random)
        router.load()
        await router.restore()
        server, port = await serve(serving_app(router, SERVING, hub_auth=serving_auth(SERVING, hub_env)))

        async def stop() -> None:
            server.stop()
            await router.close()

        client = ServingClient(f"http://127.0.0.1:{port}{SERVING}", "governance-token")
        return client, f"http://127.0.0.1:{port}/", [stop]

    return make


async def _start(
    hub_env: dict[str, str], tmp: Path, tracking: str, make_target: TargetFactory
) -> tuple[HTTPServer, list[Closer], str, GovernanceStore, Deployer, EventSpool]:
    target, public_url, closers = await make_target(hub_env)
    store = GovernanceStore(f"sqlite:///{tmp / 'governance.sqlite'}")
    store.upgrade()
    audit = EventSpool(tmp / "events" / "governance", "governance")
    snapshots = ModelSnapshots(tmp / "deployments", tracking)
    deployer = Deployer(store, target, snapshots, public_url=public_url, aliases=MlflowAliases(tracking), audit=audit)
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
    server, port = await serve(app)
    return server, closers, f"http://127.0.0.1:{port}{GOV}", store, deployer, audit


@contextlib.contextmanager
def deploy_platform(tmp: Path, make_target: TargetFactory) -> Iterator[DeployPlatform]:
    """The fake hub, a gated MLflow and the governance service deploying to ``make_target``'s target."""
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
        server, closers, governance, store, deployer, audit = loop.run(
            _start(hub_env, tmp, tracking, make_target), timeout=120
        )
        yield DeployPlatform(tracking, governance, store, deployer, audit, loop)
        server.stop()
        loop.run(deployer.close(), timeout=200)
        for close in closers:
            loop.run(close(), timeout=60)
        loop.run(close_hub_http_client())
        loop.stop()
        audit.close()


def ask(platform: DeployPlatform, model: str, version: str, **fields: Any) -> dict[str, Any]:
    """alice asks for ``version`` of ``model`` in production; the request (the policy allows it)."""
    body = {"kind": "deploy-production", "model": model, "version": version, "justification": "better", **fields}
    with platform.api("alice-token") as c:
        r = c.post("api/requests", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["policy"]["decision"] == "allow", r.json()["policy"]
    return r.json()
