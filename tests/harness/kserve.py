"""A fake Kubernetes API server for KServe ``InferenceService`` objects, on a free port.

:class:`FakeCluster` is a tornado app that answers what the API server answers for
``/apis/serving.kserve.io/v1beta1/namespaces/<ns>/inferenceservices[/<name>]`` (GET,
POST, PATCH with ``application/merge-patch+json``, ``Status`` objects for errors,
``resourceVersion`` conflicts), validates what it stores against the vendored CRD
schema, and plays KServe's controller in a few lines: a new revision when the model
changes, the traffic split ``canaryTrafficPercent`` asks for, ``observedGeneration``
and the ``Ready`` condition (which :attr:`FakeCluster.unready` holds back). Clients
under test are real ``kubernetes_asyncio`` clients pointed at it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

__all__ = ["NAMESPACES", "FakeCluster", "cluster_url", "kubeconfig", "merge"]

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "kserve" / "inferenceservices.v1beta1.json"
NAMESPACES = {"production": "models-prod", "staging": "models-staging"}
PATH = r"/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?"


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386: ``target`` after the JSON merge patch ``patch``."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class FakeCluster:
    """The state of the fake API server, and switches that make it misbehave."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.namespaces = set(NAMESPACES.values())
        self.requests: list[tuple[str, str, str]] = []
        #: method -> (status, body) answered once to the next request with that method.
        self.failures: dict[str, tuple[int, bytes]] = {}
        #: When set, someone else writes the object right after each GET.
        self.meddler = False
        #: When set, no new spec becomes Ready: its Ready condition says this message.
        self.unready: str | None = None
        #: GETs of an object after a change before its new spec is Ready.
        self.reads_until_ready = 0
        self._pending: dict[tuple[str, str], int] = {}
        self._version = 0
        schema = json.loads(SCHEMA.read_text())
        schema.pop("$comment")
        self.validator = jsonschema.Draft7Validator(schema)

    def fail_next(self, method: str, status: int, message: str, reason: str = "") -> None:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason}
        self.failures[method] = (status, json.dumps({**body, "code": status}).encode())

    def next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def reconcile(self, obj: dict[str, Any], before: dict[str, Any] | None) -> None:
        """KServe's controller, as its canary docs describe it: revisions and their traffic."""
        status = obj.setdefault("status", {})
        model_changed = before is None or before["spec"]["predictor"]["model"] != obj["spec"]["predictor"]["model"]
        revision = status.get("latestRevision", 0) + (1 if model_changed else 0)
        name = obj["metadata"]["name"]
        percent = obj["spec"]["predictor"].get("canaryTrafficPercent")
        if percent is None:
            status["rolledOut"] = revision
        traffic = [{"revisionName": f"{name}-predictor-{revision:05d}", "percent": 100 if percent is None else percent}]
        if percent is not None and status["rolledOut"] != revision:
            traffic.append({"revisionName": f"{name}-predictor-{status['rolledOut']:05d}", "percent": 100 - percent})
        status.update(latestRevision=revision, url=f"http://{name}.{obj['metadata']['namespace']}.example.com")
        status["components"] = {"predictor": {"traffic": [t for t in traffic if t["percent"]]}}
        status["observedGeneration"] = obj["metadata"]["generation"]
        key = (obj["metadata"]["namespace"], name)
        if self.unready is not None:
            status["conditions"] = [{"type": "Ready", "status": "False", "reason": "RevisionFailed",
                                     "message": self.unready}]  # fmt: skip
        elif self.reads_until_ready:
            self._pending[key] = self.reads_until_ready
            status["conditions"] = [{"type": "Ready", "status": "Unknown", "reason": "RevisionMissing"}]
        else:
            status["conditions"] = [{"type": "Ready", "status": "True"}]

    def read(self, key: tuple[str, str]) -> None:
        """A GET of ``key``: one read nearer to Ready, for a change :attr:`reads_until_ready` holds."""
        if key in self._pending:
            self._pending[key] -= 1
            if not self._pending[key]:
                del self._pending[key]
                self.objects[key]["status"]["conditions"] = [{"type": "Ready", "status": "True"}]

    def app(self) -> Application:
        return Application([(PATH, InferenceServices, {"cluster": self})])


class InferenceServices(RequestHandler):
    """The API server's InferenceService endpoints."""

    def initialize(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def prepare(self) -> None:
        content_type = self.request.headers.get("Content-Type", "")
        self.cluster.requests.append((self.request.method or "", self.request.path, content_type))
        failure = self.cluster.failures.pop(self.request.method or "", None)
        if failure is not None:
            self.set_status(failure[0])
            self.set_header("Content-Type", "application/json")
            self.finish(failure[1])

    def answer(self, status: int, obj: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(obj))

    def refuse(self, status: int, reason: str, message: str) -> None:
        self.answer(
            status, {"kind": "Status", "status": "Failure", "message": message, "reason": reason, "code": status}
        )

    def not_found(self, namespace: str, name: str) -> None:
        self.refuse(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found')

    def invalid(self, obj: dict[str, Any]) -> bool:
        errors = list(self.cluster.validator.iter_errors(obj))
        if errors:
            self.refuse(422, "Invalid", f"InferenceService is invalid: {errors[0].message}")
        return bool(errors)

    def get(self, namespace: str, name: str | None) -> None:
        obj = self.cluster.objects.get((namespace, name or ""))
        if obj is None:
            return self.not_found(namespace, name or "")
        self.cluster.read((namespace, name or ""))
        self.answer(200, obj)
        if self.cluster.meddler:
            obj["metadata"]["resourceVersion"] = self.cluster.next_version()

    def post(self, namespace: str, name: str | None) -> None:
        if namespace not in self.cluster.namespaces:
            return self.refuse(404, "NotFound", f'namespaces "{namespace}" not found')
        obj = json.loads(self.request.body)
        key = (namespace, obj["metadata"]["name"])
        if key in self.cluster.objects:
            return self.refuse(409, "AlreadyExists", f'inferenceservices.serving.kserve.io "{key[1]}" already exists')
        if self.invalid(obj):
            return None
        obj["metadata"].update(namespace=namespace, resourceVersion=self.cluster.next_version(), generation=1)
        self.cluster.reconcile(obj, None)
        self.cluster.objects[key] = obj
        self.answer(201, obj)

    def patch(self, namespace: str, name: str | None) -> None:
        if self.request.headers.get("Content-Type") != "application/merge-patch+json":
            return self.refuse(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
        before = self.cluster.objects.get((namespace, name or ""))
        if before is None:
            return self.not_found(namespace, name or "")
        patch = json.loads(self.request.body)
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        if expected is not None and expected != before["metadata"]["resourceVersion"]:
            message = (
                f'Operation cannot be fulfilled on inferenceservices.serving.kserve.io "{name}": '
                "the object has been modified; please apply your changes to the latest version and try again"
            )
            return self.refuse(409, "Conflict", message)
        after = merge(before, patch)
        if self.invalid(after):
            return None
        after["metadata"].update(
            resourceVersion=self.cluster.next_version(), generation=before["metadata"]["generation"] + 1
        )
        self.cluster.reconcile(after, before)
        self.cluster.objects[(namespace, name or "")] = after
        self.answer(200, after)


@contextlib.asynccontextmanager
async def cluster_url(cluster: FakeCluster) -> AsyncIterator[str]:
    """``cluster`` served on a free port (in the running loop); its URL."""
    sock, port = bind_unused_port()
    server = HTTPServer(cluster.app())
    server.add_sockets([sock])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        await server.close_all_connections()


def kubeconfig(path: Path, url: str) -> Path:
    """A kubeconfig at ``path`` naming the cluster at ``url`` (no credentials: the fake takes none)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "governance", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "governance"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
    return path
