"""What happens once a deployment is approved: governance's copy served, aliases set, recorded.

:class:`Deployer` runs after the approval commits, off the request: it hands the approved
copy (:mod:`.snapshots`) and its digest to the deploy target (:class:`DeployTarget`): on
one machine the serving router's control API, called as the governance service
(:class:`ServingClient`; the router checks the digest again), on Kubernetes KServe, through
the object store (:mod:`.kserve_deploy`). It records the deployment on the request
(``deploying`` -> ``deployed`` with the endpoint, or ``failed`` with why) and in the audit
trail (``executed``), and points MLflow's reserved aliases (``production``, ``canary``,
``staging``) at the version, so that MLflow always says what is deployed where. A service
restarted in the middle resumes the deployments left ``deploying``. :meth:`Deployer.change`
promotes or rolls back on the same target, for the people who decide the request's kind.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from hubforge.errors import Conflict, HubforgeError, Invalid, NotFound, Refusal, Unavailable

from . import events
from .model import ApprovalRequest
from .snapshots import Snapshot, SnapshotSource
from .store import GovernanceStore

__all__ = ["AliasKeeper", "DeployTarget", "Deployer", "MlflowAliases", "ServingClient", "ServingRefused"]

log = logging.getLogger(__name__)

#: Seconds the router may take to answer a deploy: it starts a scoring process and waits for it.
DEPLOY_TIMEOUT = 180.0


class ServingRefused(Refusal):
    """The serving router refused or failed a change; ``status`` is its answer's."""


class ServingClient:
    """The serving router's control API, called with the governance service's own hub token."""

    def __init__(self, url: str, token: str, timeout: float = DEPLOY_TIMEOUT) -> None:
        self.url = url.rstrip("/") + "/"
        self.client = httpx.AsyncClient(headers={"Authorization": f"token {token}"}, timeout=timeout)

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer = await self.client.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the serving service cannot be reached: {exc or type(exc).__name__}") from exc
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if answer.is_success:
            return body if isinstance(body, dict) else {}
        message = body.get("message") if isinstance(body, dict) else None
        text = f"the serving service answered {answer.status_code}: {message or answer.reason_phrase}"
        raise ServingRefused(text, status=answer.status_code)

    async def deploy(self, request: ApprovalRequest, snapshot: Snapshot) -> dict[str, Any]:
        """Serve ``request``'s approved copy ``snapshot``; the endpoint's status."""
        body = {
            "target": request.stage,
            "model": request.model,
            "version": request.version,
            "model_path": str(snapshot.path),
            "digest": request.digest,
            "canary_percent": request.canary_percent or 0,
        }
        return await self._call("PUT", f"api/endpoints/{quote(str(request.model), safe='')}", json=body)

    async def change(self, model: str, target: str, action: str) -> dict[str, Any]:
        """``promote`` or ``rollback`` the endpoint of ``model`` on ``target``; its status."""
        path = f"api/endpoints/{quote(model, safe='')}/{action}"
        return await self._call("POST", path, params={"target": target})

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


class DeployTarget(Protocol):
    """Where approved copies are served: the one-machine router (:class:`ServingClient`) or
    KServe (:class:`~.kserve_deploy.KServeDeploy`). Both answer an endpoint's status as the
    router does (``target``; ``production`` and ``canary``, each None or with its ``version``),
    and KServe's adds the ``endpoint`` people score at."""

    async def deploy(self, request: ApprovalRequest, snapshot: Snapshot) -> dict[str, Any]: ...

    async def change(self, model: str, target: str, action: str) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class AliasKeeper(Protocol):
    """Points MLflow's reserved aliases at what serves (blocking; run in a worker thread)."""

    def point(self, model: str, status: Mapping[str, Any]) -> None: ...


class MlflowAliases:
    """Sets ``production``, ``canary`` and ``staging`` from an endpoint's status, as governance."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri

    def point(self, model: str, status: Mapping[str, Any]) -> None:
        """Make the aliases say what ``status`` (the router's answer) serves."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        staging = status.get("target") == "staging"
        wanted = {"staging": status.get("production")} if staging else {
            "production": status.get("production"),
            "canary": status.get("canary"),
        }  # fmt: skip
        try:
            for alias, release in wanted.items():
                if isinstance(release, Mapping) and release.get("version"):
                    client.set_registered_model_alias(model, alias, str(release["version"]))
                elif alias in client.get_registered_model(model).aliases:
                    client.delete_registered_model_alias(model, alias)
        except MlflowException as exc:
            raise Unavailable(f"cannot set {model!r}'s aliases in MLflow: {exc.message.splitlines()[0][:300]}") from exc


def endpoint_url(public_url: str, status: Mapping[str, Any]) -> str:
    """The address people score at: the target's own (KServe's), else the hub's public origin
    and the router's invocations path."""
    if status.get("endpoint"):
        return str(status["endpoint"])
    parts = urlsplit(public_url)
    return f"{parts.scheme}://{parts.netloc}{status.get('invocations', '')}"


class Deployer:
    """Deploys approved requests through the router, records how it went."""

    def __init__(
        self,
        store: GovernanceStore,
        serving: DeployTarget,
        snapshots: SnapshotSource,
        *,
        public_url: str,
        aliases: AliasKeeper | None = None,
        audit: Any = None,
        webhook: Any = None,
    ) -> None:
        self.store, self.serving, self.snapshots = store, serving, snapshots
        self.public_url, self.aliases, self.audit, self.webhook = public_url, aliases, audit, webhook
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, request: ApprovalRequest) -> None:
        """Deploy ``request`` (approved, with its digest) in the background."""
        task = asyncio.get_running_loop().create_task(self.deploy(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def resume(self) -> None:
        """Start again the deployments a stopped service left ``deploying``."""
        for request in await asyncio.to_thread(self.store.deployments, "deploying"):
            log.info("Resuming the deployment of request %s (%s version %s)", request.id, request.model,
                     request.version)  # fmt: skip
            self.start(request)

    async def deploy(self, request: ApprovalRequest) -> None:
        """Serve the approved copy; record ``deployed`` (with the endpoint) or ``failed``."""
        await asyncio.to_thread(self.store.set_deployment, request.id, "deploying")
        try:
            snapshot = await asyncio.to_thread(self.snapshots.take, str(request.model), str(request.version))
            if snapshot.digest != request.digest:
                raise Conflict(
                    f"model {request.model!r} version {request.version} changed since it was approved "
                    f"({snapshot.digest} is not the approved {request.digest}): it needs a new approval"
                )
            status = await self.serving.deploy(request, snapshot)
        except HubforgeError as exc:
            await self._record(request, "failed", str(exc))
            return
        endpoint = endpoint_url(self.public_url, status)
        await self._point_aliases(str(request.model), status)
        await self._record(request, "deployed", endpoint)

    async def change(self, request: ApprovalRequest, action: str, user: str, client: str) -> dict[str, Any]:
        """``rollback`` or ``promote`` the endpoint ``request`` deployed to, for ``user``."""
        if request.deploy_status not in ("deployed", "rolled_back"):
            raise Invalid(f"request {request.id} was not deployed, so there is nothing to {action}")
        status = await self.serving.change(str(request.model), str(request.stage), action)
        await self._point_aliases(str(request.model), status)
        if action == "rollback":
            request = await asyncio.to_thread(
                self.store.set_deployment, request.id, "rolled_back", json.dumps(status)[:2000]
            )
        if self.webhook is not None:
            self.webhook.request_event("deployment.changed", request, action=action, by=user)
        events.deployment_changed(self.audit, request, user, "rolled_back" if action == "rollback" else "executed",
                                  "success", client)  # fmt: skip
        return status

    async def _point_aliases(self, model: str, status: Mapping[str, Any]) -> None:
        if self.aliases is None:
            return
        try:
            await asyncio.to_thread(self.aliases.point, model, status)
        except HubforgeError as exc:  # what serves is served; the aliases are retried on the next change
            log.error("Deployed, but %s", exc)

    async def _record(self, request: ApprovalRequest, status: str, detail: str) -> None:
        try:
            request = await asyncio.to_thread(self.store.set_deployment, request.id, status, detail)
        except (NotFound, Unavailable) as exc:
            log.error("Could not record the deployment of request %s as %s: %s", request.id, status, exc)
        if self.webhook is not None and status != "deploying":
            self.webhook.request_event("deployment.changed", request)
        outcome = "success" if status == "deployed" else "failure"
        # The approver's decision is what deployed it: the trail says so, with the outcome.
        events.deployment_changed(self.audit, request, str(request.decided_by), "executed", outcome, "", detail)
        (log.info if status == "deployed" else log.error)(
            "Deployment of request %s (%s version %s to %s): %s %s",
            request.id, request.model, request.version, request.stage, status, detail,
        )  # fmt: skip

    async def close(self) -> None:
        """Wait for deployments under way, then close the client."""
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=DEPLOY_TIMEOUT)
        await self.serving.close()
