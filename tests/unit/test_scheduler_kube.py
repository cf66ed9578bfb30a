"""A scheduled run as a Kubernetes Job on its job's tier: the pod KubeSpawner makes for the
owner (GPU limits, node selector, tolerations, priority class), the run's command and
environment, the token only through a Secret, Kueue's label on the Job of a queued tier, and
both objects valid against the Kubernetes schema. No cluster: KubeSpawner renders offline."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hubforge.catalog import ChoiceError, load_catalog
from hubforge.config import PlatformConfig, default_config_text, validate
from hubforge.hub.scheduler.kube import JOB_LABEL, RUN_LABEL, run_manifests
from hubforge.hub.scheduler.schedule import parse_schedule
from hubforge.hub.scheduler.store import Job, Run
from hubforge.spawner_profiles.kubernetes.spawner import QUEUE_LABEL, TIER_LABEL

K8S_VERSION = "1.35.0"
SERVICES = {
    "HUBFORGE_MLFLOW_URL": "http://hub:10102/services/mlflow",
    "HUBFORGE_SCHEDULER_URL": "http://hub:10106/services/scheduler",
}
NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)


def config() -> PlatformConfig:
    data = yaml.safe_load(default_config_text())
    validate(data, "platform.yaml")
    return PlatformConfig(data=data, source="platform.yaml", data_dir=Path("/nonexistent"))


def job(tier: str, owner: str = "alice", timeout_s: int = 1800) -> Job:
    return Job(
        id="j-0a1b2c3d4e5f", owner=owner, name="nightly", notebook="f" * 64, notebook_name="report.ipynb",
        parameters={"region": "emea"}, schedule=parse_schedule({"cron": "0 2 * * *"}), tier=tier,
        timeout_s=timeout_s, retries=1, backoff_s=60, concurrency="skip", catch_up="none", notify_url="",
        paused=False, next_due=NOW, created=NOW,
    )  # fmt: skip


RUN = Run(id="r-00aa11bb22cc", job="j-0a1b2c3d4e5f", scheduled_for=NOW, attempt=1, state="running", not_before=NOW)


def render(tier: str, groups: list[str], **options: str) -> list[dict[str, Any]]:
    return asyncio.run(run_manifests(config(), job(tier), RUN, groups, SERVICES, "run-token-secret", options))


@pytest.mark.parametrize(("tier", "options"), [("interactive", {}), ("training", {"gpus": "4"}), ("hpo", {})])
def test_a_run_is_a_valid_job_on_its_tier(tier: str, options: dict[str, str]) -> None:
    secret, manifest = render(tier, ["data-scientist"], **options)
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    spec = load_catalog(config()).get(tier)
    assert spec is not None
    assert manifest["metadata"]["name"] == secret["metadata"]["name"] == "hubforge-r-00aa11bb22cc"
    assert manifest["metadata"]["namespace"] == secret["metadata"]["namespace"] == "hubforge"
    job_spec = manifest["spec"]
    assert (job_spec["backoffLimit"], job_spec["activeDeadlineSeconds"]) == (0, 1800)
    pod = job_spec["template"]
    assert pod["spec"]["restartPolicy"] == "Never" and "activeDeadlineSeconds" not in pod["spec"]
    # The tier's placement, as a server of the owner's on it would have it.
    assert pod["spec"]["nodeSelector"] == spec.node_selector
    assert pod["spec"]["tolerations"] == list(spec.tolerations)
    assert pod["spec"].get("priorityClassName") == spec.priority_class
    (container,) = pod["spec"]["containers"]
    assert container["image"] == spec.image(spec.default_image).image
    gpus = int(options.get("gpus", spec.resources.gpus.default))
    limits = container["resources"]["limits"]
    assert limits.get(spec.resources.gpu_resource or "-") == (str(gpus) if gpus else None)
    # Kueue queues the Job (suspended until admitted), not its pod, in the owner's group's queue.
    labels, pod_labels = manifest["metadata"]["labels"], pod["metadata"]["labels"]
    assert labels.get(QUEUE_LABEL) == (f"{spec.queue}-data-scientist" if spec.queue else None)
    assert QUEUE_LABEL not in pod_labels
    assert job_spec["suspend"] is bool(spec.queue)
    assert labels[TIER_LABEL] == tier and (labels[JOB_LABEL], labels[RUN_LABEL]) == (RUN.job, RUN.id)
    # The network rules of people's pods hold for it; it may reach the hub's Service.
    assert pod_labels["component"] == "singleuser-server"
    assert pod_labels["hub.jupyter.org/network-access-hub"] == "true"


def test_the_pod_runs_the_run_as_its_owner_with_the_token_only_in_the_secret() -> None:
    secret, manifest = render("training", ["data-scientist"])
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["hubforge", "schedule", "execute", "--workdir", "/tmp/hubforge-run"]
    assert "args" not in container and "ports" not in container
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["JUPYTERHUB_API_TOKEN"] == {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "token"}}
    assert secret["stringData"] == {"token": "run-token-secret"}
    assert "run-token-secret" not in yaml.safe_dump(manifest)
    assert (env["JUPYTERHUB_USER"], env["HUBFORGE_JOB"], env["HUBFORGE_JOB_RUN"]) == ("alice", RUN.job, RUN.id)
    assert (env["HUBFORGE_ORIGIN"], env["HUBFORGE_TIER"]) == ("scheduler", "training")
    assert env["HUBFORGE_MLFLOW_URL"] == SERVICES["HUBFORGE_MLFLOW_URL"]
    assert env["HUBFORGE_SPOOL_DIR"].startswith("/home/jovyan/") and "PATH" not in env  # the image's PATH
    # The pod KubeSpawner made for a server carried the hub's server settings; none is left.
    assert not [name for name in env if "DB_URL" in name or name.startswith("JUPYTERHUB_SERVICE")]
    assert not [name for name in env if name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_CLIENT_ID", "HUBFORGE_DATA")]


def test_a_job_on_a_tier_its_owner_may_no_longer_use_is_refused() -> None:
    with pytest.raises(ChoiceError, match="finetune"):
        render("finetune", ["data-scientist"])  # fine-tuning is the ML engineers'
    with pytest.raises(ChoiceError):
        render("training", ["data-scientist"], gpus="64")


# --- the scheduler's runs as Jobs, against the API's answers ---------------------------------


class Api:
    """The calls KubeRuns makes of BatchV1Api and CoreV1Api, answered as an API server would;
    every object sent is checked against the Kubernetes schema. ``states``: the Job's status
    at each read (the last one repeats)."""

    def __init__(self, states: list[dict[str, Any]], log: str = "") -> None:
        self.states, self.log = list(states), log
        self.jobs: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []

    async def create_namespaced_job(self, namespace: str, body: dict[str, Any]) -> Any:
        kubernetes_validate.validate(body, K8S_VERSION, strict=True)
        self.jobs[body["metadata"]["name"]] = body
        return SimpleNamespace(metadata=SimpleNamespace(uid="6f1c-uid"))

    async def create_namespaced_secret(self, namespace: str, body: dict[str, Any]) -> Any:
        kubernetes_validate.validate(body, K8S_VERSION, strict=True)
        assert body["metadata"]["name"] in self.jobs, "the Secret is made after the Job that owns it"
        self.secrets[body["metadata"]["name"]] = body

    async def read_namespaced_job_status(self, name: str, namespace: str) -> Any:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        conditions = [SimpleNamespace(status="True", message="", **c) for c in state.get("conditions", [])]
        return SimpleNamespace(spec=SimpleNamespace(suspend=state.get("suspend", False)),
                               status=SimpleNamespace(conditions=conditions))  # fmt: skip

    async def delete_namespaced_job(self, name: str, namespace: str, propagation_policy: str) -> None:
        assert propagation_policy == "Background"  # its pod goes with it
        self.deleted.append(name)

    async def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        return SimpleNamespace(items=[SimpleNamespace(metadata=SimpleNamespace(name=label_selector[9:] + "-x7k2p"))])

    async def read_namespaced_pod_log(self, name: str, namespace: str, tail_lines: int) -> str:
        return self.log


def kube_runs(api: Api, **kwargs: Any) -> Any:
    from hubforge.hub.scheduler.kube import KubeRuns

    async def groups(owner: str) -> frozenset[str]:
        return frozenset({"data-scientist", "scheduler"})

    runs = KubeRuns(config(), groups, SERVICES, lambda: None, poll_s=0.01, **kwargs)
    runs._apis = (api, api)
    return runs


QUEUED = {"suspend": True}
GOING: dict[str, Any] = {}


def test_a_run_is_a_job_that_completes() -> None:
    api = Api([QUEUED, QUEUED, GOING, {"conditions": [{"type": "Complete", "reason": ""}]}])
    outcome = asyncio.run(kube_runs(api).execute(job("training"), RUN, "run-token-secret"))
    assert (outcome.state, outcome.error) == ("succeeded", "")
    name = "hubforge-r-00aa11bb22cc"
    assert api.jobs[name]["spec"]["suspend"] is True  # Kueue admits it
    assert api.secrets[name]["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "6f1c-uid"}
    ]
    assert api.deleted == []  # a finished Job stays an hour for its log, then goes by itself


def test_a_failed_run_says_why_in_its_pods_words_and_its_job_goes() -> None:
    log = "Executing: 100%\nTraceback (most recent call last):\n  ...\nValueError: no sales data for apac\n"
    api = Api([GOING, {"conditions": [{"type": "Failed", "reason": "BackoffLimitExceeded"}]}], log=log)
    outcome = asyncio.run(kube_runs(api).execute(job("interactive"), RUN, "t"))
    assert (outcome.state, outcome.error) == ("failed", "ValueError: no sales data for apac")
    assert api.deleted == ["hubforge-r-00aa11bb22cc"]


def test_a_run_past_its_timeout_or_too_long_in_the_queue_is_stopped() -> None:
    api = Api([GOING, {"conditions": [{"type": "Failed", "reason": "DeadlineExceeded"}]}])
    outcome = asyncio.run(kube_runs(api).execute(job("interactive", timeout_s=600), RUN, "t"))
    assert (outcome.state, outcome.error) == ("timed_out", "stopped after its timeout of 600 s")
    api = Api([QUEUED])
    outcome = asyncio.run(kube_runs(api, admission_wait_s=0.05).execute(job("hpo"), RUN, "t"))
    assert outcome.state == "failed" and "for the hpo tier's queue" in outcome.error
    assert api.deleted == ["hubforge-r-00aa11bb22cc"]


def test_a_stopping_scheduler_takes_its_runs_jobs_with_it() -> None:
    api = Api([GOING])

    async def stop_midway() -> None:
        task = asyncio.create_task(kube_runs(api).execute(job("training"), RUN, "t"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stop_midway())
    assert api.deleted == ["hubforge-r-00aa11bb22cc"]
