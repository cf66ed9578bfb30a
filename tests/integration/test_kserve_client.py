"""The Kubernetes deploy target against a fake Kubernetes API server on a free port.

The fake (:class:`harness.kserve.FakeCluster`) answers as the API server does and plays
KServe's controller in a few lines. The client under test is a real
``kubernetes_asyncio`` client pointed at it; nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration
from tornado.testing import bind_unused_port

from harness.kserve import NAMESPACES, FakeCluster, cluster_url
from hubforge.errors import Conflict, Forbidden, Invalid, NotFound, Refusal, Unavailable
from hubforge.hub.serving.kserve import KServeRelease, read_state
from hubforge.hub.serving.kserve_client import KServeTarget

V1 = KServeRelease("1", "s3://models/churn/1", "sha256:" + "1" * 64)
V2 = KServeRelease("2", "s3://models/churn/2", "sha256:" + "2" * 64)
V3 = KServeRelease("3", "s3://models/churn/3", "sha256:" + "3" * 64)


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@contextlib.asynccontextmanager
async def target_on(cluster: FakeCluster) -> AsyncIterator[KServeTarget]:
    """A :class:`KServeTarget` whose client talks to ``cluster`` on a free port."""
    async with cluster_url(cluster) as url, ApiClient(Configuration(host=url)) as api:
        yield KServeTarget(api, NAMESPACES, runtime="kserve-mlserver", timeout=10)


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
