"""The Kubernetes deploy target against a fake Kubernetes API server on a free port.

:class:`FakeCluster` is a tornado app that answers what the API server answers for
``/apis/serving.kserve.io/v1beta1/namespaces/<ns>/inferenceservices[/<name>]`` (GET,
POST, PATCH with ``application/merge-patch+json``, ``Status`` objects for errors,
``resourceVersion`` conflicts), validates what it stores against the vendored CRD
schema, and plays KServe's controller in a few lines: a new revision when the model
changes, and the traffic split ``canaryTrafficPercent`` asks for. The client under
test is a real ``kubernetes_asyncio`` client pointed at it; nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from hubforge.errors import Conflict, Forbidden, Invalid, NotFound, Refusal, Unavailable
from hubforge.hub.serving.kserve import KServeRelease, read_state
from hubforge.hub.serving.kserve_client import KServeTarget

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "kserve" / "inferenceservices.v1beta1.json"
NAMESPACES = {"production": "models-prod", "staging": "models-staging"}
V1 = KServeRelease("1", "s3://models/churn/1", "sha256:" + "1" * 64)
V2 = KServeRelease("2", "s3://models/churn/2", "sha256:" + "2" * 64)
V3 = KServeRelease("3", "s3://models/churn/3", "sha256:" + "3" * 64)
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
        status["conditions"] = [{"type": "Ready", "status": "True"}]
        status["components"] = {"predictor": {"traffic": [t for t in traffic if t["percent"]]}}

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


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@contextlib.asynccontextmanager
async def target_on(cluster: FakeCluster) -> AsyncIterator[KServeTarget]:
    """A :class:`KServeTarget` whose client talks to ``cluster`` on a free port."""
    sock, port = bind_unused_port()
    server = HTTPServer(cluster.app())
    server.add_sockets([sock])
    try:
        async with ApiClient(Configuration(host=f"http://127.0.0.1:{port}")) as api:
            yield KServeTarget(api, NAMESPACES, runtime="kserve-mlserver", timeout=10)
    finally:
        server.stop()
        await server.close_all_connections()


def run(cluster: FakeCluster, scenario: Callable[[KServeTarget], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with target_on(cluster) as target:
            return await scenario(target)

    return asyncio.run(main())


async def deploy(target: KServeTarget, release: KServeRelease, percent: int | None = None, model: str = "churn") -> Any:
    return await target.deploy(
        model, release.version, release.uri, release.digest, "production", canary_percent=percent
    )


def stored(cluster: FakeCluster, name: str = "churn") -> dict[str, Any]:
    return cluster.objects[("models-prod", name)]


# --- rollouts -------------------------------------------------------------------------------


def test_create_canary_promote(cluster: FakeCluster) -> None:
    async def scenario(target: KServeTarget) -> None:
        state = await deploy(target, V1)
        assert (state.production, state.canary, state.ready) == (V1, None, True)
        assert stored(cluster)["spec"]["predictor"]["model"] == {
            "modelFormat": {"name": "mlflow"},
            "protocolVersion": "v2",
            "runtime": "kserve-mlserver",
            "storageUri": V1.uri,
        }
        state = await deploy(target, V2, 20)
        predictor = stored(cluster)["spec"]["predictor"]
        assert predictor["canaryTrafficPercent"] == 20 and predictor["model"]["storageUri"] == V2.uri
        assert state.aliases == {"production": "1", "canary": "2"}
        assert dict(state.traffic) == {"churn-predictor-00002": 20, "churn-predictor-00001": 80}
        state = await target.promote("churn")
        assert "canaryTrafficPercent" not in stored(cluster)["spec"]["predictor"]
        assert state.aliases == {"production": "2"} and state.history == (V1,)
        assert dict(state.traffic) == {"churn-predictor-00002": 100}
        assert await target.status("churn") == state

    run(cluster, scenario)
    assert [method for method, _, _ in cluster.requests] == ["GET", "POST", "GET", "PATCH", "GET", "PATCH", "GET"]
    patches = {content_type for method, _, content_type in cluster.requests if method == "PATCH"}
    assert patches == {"application/merge-patch+json"}
    assert {path for _, path, _ in cluster.requests} == {
        "/apis/serving.kserve.io/v1beta1/namespaces/models-prod/inferenceservices",
        "/apis/serving.kserve.io/v1beta1/namespaces/models-prod/inferenceservices/churn",
    }


def test_rollback_of_a_canary(cluster: FakeCluster) -> None:
    async def scenario(target: KServeTarget) -> None:
        await deploy(target, V1)
        await deploy(target, V2, 20)
        state = await target.rollback("churn")
        predictor = stored(cluster)["spec"]["predictor"]
        assert predictor["canaryTrafficPercent"] == 0 and predictor["model"]["storageUri"] == V1.uri
        # All traffic back on the revision rolled out before the canary, at once.
        assert dict(state.traffic) == {"churn-predictor-00001": 100}
        assert (state.production, state.canary, state.aliases) == (V1, None, {"production": "1"})
        with pytest.raises(Conflict, match="has no canary to promote"):
            await target.promote("churn")

    run(cluster, scenario)


def test_rollback_of_a_promoted_release(cluster: FakeCluster) -> None:
    async def scenario(target: KServeTarget) -> None:
        await deploy(target, V1)
        await deploy(target, V2)
        state = await target.rollback("churn")
        assert stored(cluster)["spec"]["predictor"]["model"]["storageUri"] == V1.uri
        assert (state.production, state.history) == (V1, ())
        with pytest.raises(Conflict, match="no canary and no previous release to roll back to"):
            await target.rollback("churn")

    run(cluster, scenario)


def test_targets_have_their_own_namespaces(cluster: FakeCluster) -> None:
    async def scenario(target: KServeTarget) -> None:
        await target.deploy("Churn Model", V3.version, V3.uri, V3.digest, "staging")
        state = await target.status("Churn Model", "staging")
        assert state.aliases == {"staging": "3"} and state.namespace == "models-staging"
        with pytest.raises(NotFound, match="read 'Churn Model' on production: no InferenceService models-prod/"):
            await target.status("Churn Model")

    run(cluster, scenario)
    ((namespace, name),) = cluster.objects
    assert namespace == "models-staging" and name.startswith("churn-model-")


def test_refusals_before_any_call(cluster: FakeCluster) -> None:
    async def scenario(target: KServeTarget) -> None:
        with pytest.raises(Invalid, match="target must be one of production, staging, not 'prod'"):
            await target.deploy("churn", "1", V1.uri, V1.digest, "prod")
        with pytest.raises(Conflict, match="churn has no production release yet"):
            await deploy(target, V1, 20)
        with pytest.raises(Invalid, match="canary_percent must be a whole number from 0 to 100, not True"):
            await deploy(target, V1, True)

    run(cluster, scenario)
    assert not cluster.objects
    with pytest.raises(Invalid, match="each target needs a namespace of its own"):
        KServeTarget(None, {"production": "models", "staging": "models"})  # type: ignore[arg-type]


# --- the cluster's answers, translated ------------------------------------------------------


def refused(cluster: FakeCluster, scenario: Callable[[KServeTarget], Awaitable[Any]]) -> Refusal:
    with pytest.raises(Refusal) as info:
        run(cluster, scenario)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message and "HTTP response" not in message
    return info.value


def test_a_missing_object_is_404(cluster: FakeCluster) -> None:
    err = refused(cluster, lambda target: target.promote("churn"))
    assert isinstance(err, NotFound) and err.status == 404
    assert str(err) == "promote the canary of 'churn' on production: no InferenceService models-prod/churn"


def test_a_concurrent_change_is_409(cluster: FakeCluster) -> None:
    async def scenario(target: KServeTarget) -> None:
        await deploy(target, V1)
        cluster.meddler = True
        await deploy(target, V2, 20)

    err = refused(cluster, scenario)
    assert isinstance(err, Conflict) and err.status == 409
    assert str(err).startswith(
        "deploy 'churn' version 2 to production: the InferenceService changed meanwhile, try again "
        '(Operation cannot be fulfilled on inferenceservices.serving.kserve.io "churn"'
    )
    assert stored(cluster)["spec"]["predictor"]["model"]["storageUri"] == V1.uri


def test_an_object_created_meanwhile_is_409(cluster: FakeCluster) -> None:
    cluster.fail_next("POST", 409, 'inferenceservices.serving.kserve.io "churn" already exists', "AlreadyExists")
    err = refused(cluster, lambda target: deploy(target, V1))
    assert isinstance(err, Conflict)
    assert "the InferenceService changed meanwhile, try again (inferenceservices" in str(err)


def test_a_server_error_is_503(cluster: FakeCluster) -> None:
    cluster.fail_next("GET", 500, "etcdserver: request timed out", "InternalError")
    err = refused(cluster, lambda target: target.status("churn"))
    assert isinstance(err, Unavailable) and err.status == 503
    assert str(err) == "read 'churn' on production: the Kubernetes API answered 500: etcdserver: request timed out"


def test_an_answer_that_is_not_a_status(cluster: FakeCluster) -> None:
    cluster.failures["GET"] = (502, b"<html>\n<h1>Bad Gateway</h1>\n</html>")
    err = refused(cluster, lambda target: target.status("churn"))
    assert isinstance(err, Unavailable)
    assert str(err) == "read 'churn' on production: the Kubernetes API answered 502: Bad Gateway"


@pytest.mark.parametrize(
    ("status", "kind"), [(400, Invalid), (422, Invalid), (401, Forbidden), (403, Forbidden), (429, Unavailable)]
)
def test_other_answers(cluster: FakeCluster, status: int, kind: type[Refusal]) -> None:
    cluster.fail_next("POST", status, "denied\n  by   policy")
    err = refused(cluster, lambda target: deploy(target, V1))
    assert type(err) is kind
    assert str(err).startswith("deploy 'churn' version 1 to production: ")
    assert "denied by policy" in str(err)


def test_a_missing_namespace(cluster: FakeCluster) -> None:
    cluster.namespaces = set()
    err = refused(cluster, lambda target: deploy(target, V1))
    assert isinstance(err, NotFound)
    assert str(err) == "deploy 'churn' version 1 to production: namespaces \"models-prod\" not found"


def test_an_object_someone_else_manages(cluster: FakeCluster) -> None:
    async def scenario(target: KServeTarget) -> None:
        await deploy(target, V1)
        stored(cluster)["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "helm"
        await deploy(target, V2)

    err = refused(cluster, scenario)
    assert isinstance(err, Conflict)
    assert str(err) == "InferenceService models-prod/churn is not managed by hubforge"


def test_an_unreachable_cluster_is_503(cluster: FakeCluster) -> None:
    async def scenario(_: KServeTarget) -> None:
        sock, port = bind_unused_port()
        sock.close()  # nobody listens there now
        async with ApiClient(Configuration(host=f"http://127.0.0.1:{port}")) as api:
            await KServeTarget(api, NAMESPACES, timeout=5).status("churn")

    err = refused(cluster, scenario)
    assert isinstance(err, Unavailable)
    assert str(err).startswith("read 'churn' on production: cannot reach the Kubernetes API: ")


def test_the_stored_objects_read_back(cluster: FakeCluster) -> None:
    run(cluster, lambda target: deploy(target, V1))
    assert read_state(stored(cluster)).production == V1
