"""The Kubernetes deploy target: :mod:`.kserve`'s InferenceServices applied with the Kubernetes client.

:class:`KServeTarget` reads the object (``GET``), works out the next one with the pure
transitions of :mod:`.kserve`, and creates it (``POST``) or sends the JSON merge patch
(``PATCH``, ``application/merge-patch+json``) that gets there. A merge patch, not a
JSON patch: ``null`` removes ``canaryTrafficPercent`` whether or not it is there (a
JSON patch's ``remove`` fails on an absent field), and the ``resourceVersion`` it
carries makes the API server answer 409 if someone changed the object since it was read.

Every answer of the cluster that is not a success is translated into a
:class:`~hubforge.errors.Refusal` with a one-line message: 400/422
:class:`~hubforge.errors.Invalid`, 401/403 :class:`~hubforge.errors.Forbidden`, 404
:class:`~hubforge.errors.NotFound`, 409 :class:`~hubforge.errors.Conflict`, anything
else (and a cluster that cannot be reached) :class:`~hubforge.errors.Unavailable`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from hubforge.errors import Conflict, Forbidden, Invalid, NotFound, Refusal, Unavailable

from .kserve import (
    API_GROUP,
    API_VERSION,
    PLURAL,
    KServeState,
    deployed,
    isvc_name,
    merge_patch,
    promoted,
    read_state,
    rolled_back,
)
from .model import TARGETS

__all__ = ["MERGE_PATCH", "KServeTarget"]

MERGE_PATCH = "application/merge-patch+json"
_REFUSALS: dict[int, type[Refusal]] = {400: Invalid, 422: Invalid, 401: Forbidden, 403: Forbidden, 404: NotFound}
_MESSAGE_LIMIT = 300


class KServeTarget:
    """Deploys registered models as KServe InferenceServices, one namespace per target.

    ``api_client``: a ``kubernetes_asyncio`` client for the cluster (the caller opens and
    closes it); ``namespaces``: target (``production``, ``staging``) -> namespace, one
    namespace each. ``runtime``, ``service_account`` and ``resources`` go into every
    object (:func:`~.kserve.inference_service`); ``timeout``: seconds per API call.
    """

    def __init__(
        self,
        api_client: ApiClient,
        namespaces: Mapping[str, str],
        *,
        runtime: str | None = None,
        service_account: str | None = None,
        resources: Mapping[str, Mapping[str, str | int]] | None = None,
        timeout: float = 30.0,
        log: logging.Logger | None = None,
    ) -> None:
        if not namespaces or not set(namespaces) <= set(TARGETS):
            raise Invalid(f"namespaces maps targets ({', '.join(TARGETS)}) to namespaces")
        if len(set(namespaces.values())) != len(namespaces):
            raise Invalid("each target needs a namespace of its own")
        self.api = CustomObjectsApi(api_client)
        self.namespaces = dict(namespaces)
        self.options = {"runtime": runtime, "service_account": service_account, "resources": resources}
        self.timeout = timeout
        self.log = log or logging.getLogger(__name__)

    async def deploy(
        self,
        model: str,
        version: str,
        model_uri: str,
        digest: str,
        target: str,
        *,
        canary_percent: int | None = None,
    ) -> KServeState:
        """Serve ``version`` of ``model`` (its MLflow folder at ``model_uri``) on ``target``.

        With ``canary_percent`` (1-100) as a canary beside the release serving now, else
        with all the traffic (see :func:`~.kserve.deployed` for what is refused).
        Returns what the object serves afterwards.
        """
        namespace = self._namespace(target)
        action = f"deploy {model!r} version {version} to {target}"
        current = await self._get(namespace, isvc_name(model), action)
        desired = deployed(
            current,
            model,
            namespace,
            model_uri,
            version=version,
            digest=digest,
            target=target,
            canary_percent=canary_percent,
            **self.options,
        )
        if current is None:
            created = await self._call(action, self.api.create_namespaced_custom_object, namespace, body=desired)
            self.log.info(
                "kserve: created %s/%s serving %s version %s", namespace, desired["metadata"]["name"], model, version
            )
            return read_state(created)
        return await self._apply(current, desired, action)

    async def promote(self, model: str, target: str = "production") -> KServeState:
        """Give the canary of ``model`` on ``target`` all the traffic."""
        action = f"promote the canary of {model!r} on {target}"
        current = await self._existing(model, target, action)
        return await self._apply(current, promoted(current), action)

    async def rollback(self, model: str, target: str = "production") -> KServeState:
        """Drop the canary of ``model`` on ``target``, or restore its previous release."""
        action = f"roll back {model!r} on {target}"
        current = await self._existing(model, target, action)
        return await self._apply(current, rolled_back(current), action)

    async def status(self, model: str, target: str = "production") -> KServeState:
        """What ``model``'s InferenceService on ``target`` serves (NotFound if there is none)."""
        return read_state(await self._existing(model, target, f"read {model!r} on {target}"))

    # --- the API calls -------------------------------------------------------------------------

    def _namespace(self, target: str) -> str:
        if target not in self.namespaces:
            raise Invalid(f"target must be one of {', '.join(self.namespaces)}, not {target!r}")
        return self.namespaces[target]

    async def _existing(self, model: str, target: str, action: str) -> dict[str, Any]:
        namespace, name = self._namespace(target), isvc_name(model)
        found = await self._get(namespace, name, action)
        if found is None:
            raise NotFound(f"{action}: no InferenceService {namespace}/{name}")
        return found

    async def _get(self, namespace: str, name: str, action: str) -> dict[str, Any] | None:
        """The object, None if there is none."""
        try:
            found: dict[str, Any] = await self._call(action, self.api.get_namespaced_custom_object, namespace, name)
        except NotFound:
            return None
        return found

    async def _apply(self, current: dict[str, Any], desired: dict[str, Any], action: str) -> KServeState:
        patch = merge_patch(current, desired)
        if not patch:
            return read_state(current)
        meta = current["metadata"]
        patched = await self._call(
            action,
            self.api.patch_namespaced_custom_object,
            meta["namespace"],
            meta["name"],
            patch,
            _content_type=MERGE_PATCH,
        )
        state = read_state(patched)
        self.log.info("kserve: %s: %s/%s now serves %s", action, meta["namespace"], meta["name"], state.aliases)
        return state

    async def _call(
        self, action: str, method: Callable[..., Awaitable[Any]], namespace: str, *args: Any, **kwargs: Any
    ) -> Any:
        """``method`` on InferenceServices in ``namespace``, its failures as refusals."""
        try:
            return await method(
                API_GROUP, API_VERSION, namespace, PLURAL, *args, _request_timeout=self.timeout, **kwargs
            )
        except ApiException as exc:
            raise _refusal(exc, action) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(
                f"{action}: cannot reach the Kubernetes API: {_one_line(str(exc) or type(exc).__name__)}"
            ) from exc


def _refusal(exc: ApiException, action: str) -> Refusal:
    """The refusal for the Kubernetes API's answer ``exc`` to ``action``."""
    status = int(exc.status or 0)
    message = _one_line(_status_message(exc) or str(exc.reason or "no answer"))
    if status == 409:
        return Conflict(f"{action}: the InferenceService changed meanwhile, try again ({message})")
    kind = _REFUSALS.get(status)
    if kind is None:
        return Unavailable(f"{action}: the Kubernetes API answered {status or 'nothing'}: {message}")
    return kind(f"{action}: {message}")


def _status_message(exc: ApiException) -> str | None:
    """The ``message`` of the ``Status`` object the API server answers errors with."""
    body = exc.body
    try:
        status = json.loads(body.decode() if isinstance(body, bytes) else body or "")
    except (ValueError, UnicodeDecodeError):
        return None
    message = status.get("message") if isinstance(status, dict) else None
    return message if isinstance(message, str) and message else None


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 1] + "…"
