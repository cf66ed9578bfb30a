"""Approved deployments on Kubernetes: governance's copy in the object store, served by KServe.

:class:`KServeDeploy` is the Kubernetes side of :class:`~.deployments.DeployTarget`: it
puts the approved copy in the object store (:class:`~.object_store.ObjectStoreCopies`),
applies the model's ``InferenceService`` in the target's namespace
(:class:`hubforge.hub.serving.kserve_client.KServeTarget`, with the digest recorded on the
object), and waits until KServe says the new spec is ``Ready``, so that a deployment is
recorded as deployed only once it answers, and as failed with KServe's own reason when it
does not become ready in ``ready_timeout`` seconds. Its answers have the shape of the
one-machine router's (``target``, ``production``/``canary`` with their ``version``), which
is what :class:`~.deployments.MlflowAliases` points the aliases by, plus ``endpoint``: the
InferenceService's V2 inference URL.

The Kubernetes client is made on first use, inside the service's event loop: in the
cluster from the pod's service account, elsewhere from the kubeconfig (``KUBECONFIG``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hubforge.config import KServeSettings
from hubforge.errors import Unavailable
from hubforge.hub.serving.kserve import KServeState
from hubforge.hub.serving.kserve_client import KServeTarget

from .model import ApprovalRequest
from .object_store import ObjectStoreCopies
from .snapshots import Snapshot

__all__ = ["KServeDeploy", "status_of"]

log = logging.getLogger(__name__)

#: Seconds between looks at an InferenceService that is not ready yet.
POLL_S = 2.0

TargetFactory = Callable[[], Awaitable[tuple[KServeTarget, Any]]]


def status_of(state: KServeState) -> dict[str, Any]:
    """The router-shaped status of what an InferenceService serves."""
    canary = state.canary if state.canary is not None and state.canary_percent > 0 else None
    endpoint = f"{state.url.rstrip('/')}/v2/models/{state.name}/infer" if state.url else ""
    return {
        "name": state.model,
        "target": state.target,
        "namespace": state.namespace,
        "production": {"version": state.production.version, "digest": state.production.digest},
        "canary": None if canary is None else {"version": canary.version, "digest": canary.digest},
        "canary_percent": state.canary_percent if canary is not None else 0,
        "ready": state.ready,
        "url": state.url,
        "endpoint": endpoint,
    }


async def kube_target(settings: KServeSettings) -> tuple[KServeTarget, Any]:
    """A :class:`KServeTarget` on the cluster this runs in, or the kubeconfig's; and its client."""
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.config import ConfigException

    try:
        try:
            config.load_incluster_config()
        except ConfigException:
            # Read now, not at import as the library's default is: the service's own environment.
            await config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    except (ConfigException, OSError) as exc:
        raise Unavailable(f"no Kubernetes cluster to deploy to: {str(exc).splitlines()[0][:200]}") from exc
    api = client.ApiClient()
    target = KServeTarget(
        api,
        settings.namespaces,
        runtime=settings.runtime or None,
        service_account=settings.service_account or None,
    )
    return target, api


class KServeDeploy:
    """Deploys approved copies as KServe InferenceServices, through the object store."""

    def __init__(
        self,
        copies: ObjectStoreCopies,
        make_target: TargetFactory,
        *,
        ready_timeout: float = 600.0,
        poll: float = POLL_S,
    ) -> None:
        self.copies = copies
        self.make_target = make_target
        self.ready_timeout = ready_timeout
        self.poll = poll
        self._target: tuple[KServeTarget, Any] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, store_url: str, settings: KServeSettings) -> KServeDeploy:
        """The platform's KServe target: ``backends.object_store_url`` and ``services.serving.kserve``."""
        return cls(
            ObjectStoreCopies(store_url),
            lambda: kube_target(settings),
            ready_timeout=settings.ready_timeout,
        )

    async def target(self) -> KServeTarget:
        """The cluster's target, made on first use."""
        async with self._lock:
            if self._target is None:
                self._target = await self.make_target()
            return self._target[0]

    async def deploy(self, request: ApprovalRequest, snapshot: Snapshot) -> dict[str, Any]:
        """Put ``snapshot`` in the object store, apply it, wait until it is ready; its status."""
        uri = await asyncio.to_thread(self.copies.publish, snapshot)
        target = await self.target()
        await target.deploy(
            str(request.model),
            str(request.version),
            uri,
            snapshot.digest,
            str(request.stage),
            canary_percent=request.canary_percent or None,
        )
        return await self._ready(target, str(request.model), str(request.stage), str(request.version))

    async def change(self, model: str, target: str, action: str) -> dict[str, Any]:
        """``promote`` or ``rollback`` ``model``'s InferenceService on ``target``; its status."""
        kserve = await self.target()
        changes = {"promote": kserve.promote, "rollback": kserve.rollback}
        state = await changes[action](model, target)
        return status_of(state)

    async def _ready(self, kserve: KServeTarget, model: str, target: str, version: str) -> dict[str, Any]:
        """The status once KServe has the spec as applied ``Ready`` (Unavailable after the timeout)."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            state = await kserve.status(model, target)
            if state.ready:
                return status_of(state)
            if time.monotonic() >= deadline:
                why = state.message or "KServe reported nothing"
                raise Unavailable(
                    f"{state.namespace}/{state.name} serving {model!r} version {version} "
                    f"was not ready after {self.ready_timeout:.0f} s: {why}"
                )
            await asyncio.sleep(self.poll)

    async def close(self) -> None:
        """Close the Kubernetes client, if one was made."""
        if self._target is not None:
            await self._target[1].close()
