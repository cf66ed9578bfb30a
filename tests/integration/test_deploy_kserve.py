"""The deployment flow on Kubernetes: governance's copy in the object store, served by KServe.

The same real parts as the one-machine flow (:mod:`harness.deploy`: a gated MLflow, the
governance service, carol deciding in her browser session), with the Kubernetes deploy
target the platform builds from its settings (:meth:`KServeDeploy.from_settings`: the
kubeconfig's cluster, the object store at ``s3://``). Kubernetes and S3 do not run here:
the cluster is :class:`harness.kserve.FakeCluster` (the API server's answers, the vendored
CRD's validation, KServe's controller in a few lines) and S3 is moto's S3 server, reached
through boto3 exactly as a bucket would be.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from harness.deploy import Closer, DeployPlatform, ask, deploy_platform
from harness.kserve import FakeCluster, cluster_url, kubeconfig
from hubforge.config import KServeSettings
from hubforge.hub.governance.deployments import DeployTarget
from hubforge.hub.governance.kserve_deploy import KServeDeploy
from hubforge.hub.serving.digest import tree_digest
from hubforge.hub.serving.kserve import DIGEST_ANNOTATION

BUCKET = "models"
STORE = f"s3://{BUCKET}/hubforge"
SETTINGS = KServeSettings(
    namespaces={"production": "models-prod", "staging": "models-staging"},
    service_account="models-s3",
    runtime="",
    ready_timeout=5,
)


@dataclass
class Kube:
    platform: DeployPlatform
    cluster: FakeCluster
    s3: Any
    target: KServeDeploy

    def isvc(self, name: str) -> dict[str, Any]:
        return self.cluster.objects[("models-prod", name)]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server with the bucket; boto3 (and MLflow's S3 repository) pointed at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "governance")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "governance-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        monkeypatch.undo()
        server.stop()


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Kube]:
    tmp = tmp_path_factory.mktemp("kserve")
    cluster = FakeCluster()
    made: list[KServeDeploy] = []
    monkeypatch = pytest.MonkeyPatch()

    async def kserve(hub_env: dict[str, str]) -> tuple[DeployTarget, str, list[Closer]]:
        serving = contextlib.AsyncExitStack()
        url = await serving.enter_async_context(cluster_url(cluster))
        # Out of the cluster, the platform's target reads the kubeconfig, as kubectl does.
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp / "kubeconfig", url)))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        target = KServeDeploy.from_settings(STORE, SETTINGS)
        target.poll = 0.05
        made.append(target)
        return target, "https://hub.example.org/", [serving.aclose]

    try:
        with deploy_platform(tmp, kserve) as platform:
            yield Kube(platform, cluster, boto3.client("s3", endpoint_url=s3_endpoint), made[0])
    finally:
        monkeypatch.undo()


@pytest.fixture(scope="module")
def churn(kube: Kube) -> str:
    return kube.platform.register(slope=1.0, prefix="kchurn")[0]


def stored_digest(kube: Kube, uri: str) -> str:
    """The digest of the files under ``uri`` in the bucket, downloaded as KServe would."""
    prefix = uri.removeprefix(f"s3://{BUCKET}/") + "/"
    with tempfile.TemporaryDirectory() as tmp:
        listing = kube.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        for item in listing.get("Contents", []):
            local = Path(tmp) / item["Key"].removeprefix(prefix)
            local.parent.mkdir(parents=True, exist_ok=True)
            kube.s3.download_file(BUCKET, item["Key"], str(local))
        return tree_digest(Path(tmp))


def test_carol_approves_and_kserve_serves_governances_copy(kube: Kube, churn: str) -> None:
    platform = kube.platform
    request = ask(platform, churn, "1")
    approved = platform.decide_or_change("carol-token", request["id"], decision="approve", comment="ship it")
    assert approved.status_code == 200 and "You approved this request." in approved.text
    done = platform.deployed(request["id"])
    assert done["deployment"]["status"] == "deployed", done["deployment"]
    name = kube.isvc(churn)["metadata"]["name"]
    assert done["deployment"]["endpoint"] == f"http://{name}.models-prod.example.com/v2/models/{name}/infer"
    isvc = kube.isvc(churn)
    model = isvc["spec"]["predictor"]["model"]
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "models-s3"
    # what KServe downloads is governance's copy under its own prefix, named by its digest ...
    digest = done["digest"]
    assert model["storageUri"].startswith(f"{STORE}/deployments/")
    assert model["storageUri"].endswith(f"/v1-{digest.removeprefix('sha256:')[:16]}")
    assert isvc["metadata"]["annotations"][DIGEST_ANNOTATION] == digest
    # ... and the bucket holds exactly the approved files
    assert stored_digest(kube, model["storageUri"]) == digest
    assert platform.aliases(churn) == {"production": "1"}


def test_a_canary_waits_for_ready_and_carol_rolls_it_back(kube: Kube, churn: str) -> None:
    platform = kube.platform
    _, version = platform.register(churn, slope=2.0)
    kube.cluster.reads_until_ready = 3  # KServe takes a while to roll the new revision out
    try:
        request = ask(platform, churn, version, canary_percent=20)
        assert platform.decide_or_change("carol-token", request["id"], decision="approve").status_code == 200
        done = platform.deployed(request["id"])
    finally:
        kube.cluster.reads_until_ready = 0
    assert done["deployment"]["status"] == "deployed", done["deployment"]
    predictor = kube.isvc(churn)["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["model"]["storageUri"].endswith(f"/v{version}-{done['digest'].removeprefix('sha256:')[:16]}")
    assert platform.aliases(churn) == {"production": "1", "canary": version}
    changed = platform.decide_or_change("carol-token", request["id"], action="rollback")
    assert changed.status_code == 200 and "You rolled back this deployment." in changed.text
    assert platform.request(request["id"])["deployment"]["status"] == "rolled_back"
    assert platform.aliases(churn) == {"production": "1"}
    traffic = kube.isvc(churn)["status"]["components"]["predictor"]["traffic"]
    assert [t["percent"] for t in traffic] == [100]


def test_a_version_kserve_cannot_run_fails_with_kserves_reason(kube: Kube, churn: str) -> None:
    platform = kube.platform
    _, version = platform.register(churn, slope=3.0)
    kube.cluster.unready = "Revision failed: the container exited with code 1"
    try:
        request = ask(platform, churn, version)
        assert platform.decide_or_change("carol-token", request["id"], decision="approve").status_code == 200
        failed = platform.deployed(request["id"])["deployment"]
    finally:
        kube.cluster.unready = None
    assert failed["status"] == "failed"
    assert "was not ready after 5 s: Revision failed: the container exited with code 1" in failed["error"]
    assert platform.aliases(churn) == {"production": "1"}  # the aliases say what serves


def test_an_unreachable_object_store_deploys_nothing(kube: Kube, churn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = kube.platform
    _, version = platform.register(churn, slope=4.0)
    before = kube.isvc(churn)["metadata"]["resourceVersion"]
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    request = ask(platform, churn, version)
    assert platform.decide_or_change("carol-token", request["id"], decision="approve").status_code == 200
    failed = platform.deployed(request["id"])["deployment"]
    assert failed["status"] == "failed" and "cannot copy" in failed["error"], failed
    assert kube.isvc(churn)["metadata"]["resourceVersion"] == before  # the cluster was not touched
