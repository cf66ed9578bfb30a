"""A scheduled run as Kubernetes objects: a Secret holding the run's token and a ``batch/v1``
Job that runs the notebook on the job's tier.

The Job's pod is the pod KubeSpawner would make for the job's owner on that tier (its own
``get_pod_manifest``, rendered offline, the tier checked against the owner's groups as at
a spawn): the tier's image, CPU and memory, GPU limits, node selector, tolerations and
priority class. What makes it a run and not a server:

- its container runs ``hubforge schedule execute`` (:func:`hubforge.schedule.execute_run`):
  the run's notebook from the scheduler, papermill through hubforge's engine, kept run
  data to MLflow, the output notebook back to the scheduler, papermill's exit status;
- its environment is the run's (:func:`.runner.run_environment`: the owner's name, the
  services as people's pods reach them, the job and the run, nothing of the platform's),
  with the run's token from the Secret, never written into the Job;
- the Job never retries (``backoffLimit: 0``; retries are the job's policy, made by the
  scheduler), ends at the job's timeout (``activeDeadlineSeconds``) and is removed an hour
  after it ends; its pod restarts never;
- a queued tier's Kueue label (``kueue.x-k8s.io/queue-name``) moves from the pod to the Job,
  which is created suspended: Kueue's Job integration admits it within the tier's
  ClusterQueue and fair share, as it admits the tier's servers;
- its pod keeps the labels of a person's server (``component: singleuser-server``), so the
  chart's network policies for people's pods hold for it too, and carries the one that lets
  it reach the hub's Service (the scheduler, MLflow); its name is no server's, so no
  spawner ever takes it for one.

:class:`KubeRuns` is how the scheduler runs on Kubernetes: it creates the Job and then the
Secret (owned by the Job, so it goes with it), follows the Job to its end through the
Kubernetes API as the hub pod's service account (whose Role in the user namespace is
rendered by ``hubforge k8s render``), and deletes the Job when the scheduler stops or the
run is given up: no run outlives the scheduler's record of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from tornado import web

from hubforge.catalog import ChoiceError, load_catalog, tier_env
from hubforge.config import PlatformConfig
from hubforge.spawner_profiles.kubernetes.spawner import QUEUE_LABEL, TIER_LABEL, offline_spawner

from .runner import Outcome, last_error_line, run_environment
from .store import Job, Run

__all__ = ["JOB_LABEL", "RUN_LABEL", "KubeRuns", "job_name", "run_manifests"]

JOB_LABEL = "hubforge.dev/job"
RUN_LABEL = "hubforge.dev/run"
#: z2jh's label for pods the hub's NetworkPolicy lets in.
HUB_ACCESS = {"hub.jupyter.org/network-access-hub": "true"}
#: The home of the user image's account (the Jupyter Docker Stacks' ``jovyan``).
POD_HOME = PurePosixPath("/home/jovyan")
#: The spool of a person's server under that home (jupyter's data dir, ``hubforge/spool``).
POD_SPOOL = POD_HOME / ".local/share/jupyter/hubforge/spool"
WORKDIR = PurePosixPath("/tmp/hubforge-run")
#: Seconds a finished Job (and its pod's log) stays for people to look at.
KEEP_FINISHED_S = 3600
TOKEN_KEY = "token"
#: Seconds a run may wait for its tier's queue (Kueue) before it is given up.
ADMISSION_WAIT_S = 6 * 3600


def job_name(run: Run) -> str:
    """The Job's and the Secret's name: the run's id is lower-case hex behind ``r-``."""
    return f"hubforge-{run.id}"


async def run_manifests(
    cfg: PlatformConfig,
    job: Job,
    run: Run,
    groups: list[str],
    services: Mapping[str, str],
    token: str,
    options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """[Secret, Job] for ``run`` of ``job``, as its owner (in hub groups ``groups``); ``services``:
    the variables naming the services as people's pods reach them. ChoiceError when the
    owner may not use the job's tier (or ``options``) any more."""
    catalog = load_catalog(cfg)
    tier = catalog.get(job.tier)
    if tier is None:
        raise ChoiceError(f"job {job.id}: the tier {job.tier!r} is gone from the platform", status=409)
    async with offline_spawner(cfg, job.owner, catalog, groups) as spawner:
        spawner.user_options = {"profile": job.tier, **(options or {})}
        try:
            await spawner.load_user_options()
        except web.HTTPError as exc:
            raise ChoiceError(exc.get_message() or str(exc), status=exc.status_code) from exc
        pod = spawner.api.api_client.sanitize_for_serialization(await spawner.get_pod_manifest())
        namespace = spawner.namespace
    name = job_name(run)
    env = run_environment(
        job.owner,
        "",
        services,
        job=job.id,
        run=run.id,
        home=Path(str(POD_HOME)),
        spool=Path(str(POD_SPOOL)),
        tracking=tier.tracking,
    )
    env.pop("JUPYTERHUB_API_TOKEN")
    env.pop("PATH")  # the image's, where its hubforge and papermill are
    env.update(tier_env(tier))
    spec = pod["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "notebook"]
    for key in ("args", "ports", "lifecycle"):
        container.pop(key, None)
    container["command"] = ["hubforge", "schedule", "execute", "--workdir", str(WORKDIR)]
    container["env"] = [{"name": key, "value": value} for key, value in sorted(env.items())] + [
        {"name": "JUPYTERHUB_API_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": TOKEN_KEY}}}
    ]
    spec["restartPolicy"] = "Never"
    spec.pop("activeDeadlineSeconds", None)  # a server's lifetime; the Job's deadline is the job's timeout
    marks = {JOB_LABEL: job.id, RUN_LABEL: run.id}
    # The queue KubeSpawner named for the owner's pod (their group's on the tier) goes on the Job.
    queue = pod["metadata"].get("labels", {}).get(QUEUE_LABEL)
    pod_labels = {k: v for k, v in pod["metadata"].get("labels", {}).items() if k != QUEUE_LABEL}
    pod_labels.update(HUB_ACCESS)
    pod_labels.update(marks)
    job_labels = {TIER_LABEL: tier.slug, **marks, **({QUEUE_LABEL: queue} if tier.queue and queue else {})}
    owner = {"hubforge.dev/owner": job.owner}
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": job_labels, "annotations": owner},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": job.timeout_s,
            "ttlSecondsAfterFinished": KEEP_FINISHED_S,
            "suspend": bool(tier.queue),
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {**pod["metadata"].get("annotations", {}), **owner}},
                "spec": spec,
            },
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": marks},
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }
    return [secret, manifest]


class KubeRuns:
    """Runs as Jobs in the user namespace (see the module's docstring).

    ``groups``: owner -> their hub groups (the tier is checked against them at each run);
    ``services``: the variables naming the services as people's pods reach them;
    ``api_client``: makes the kubernetes_asyncio ``ApiClient`` (in the hub pod, its service
    account's), on the first run: inside the event loop its HTTP session belongs to.
    """

    def __init__(
        self,
        cfg: PlatformConfig,
        groups: Callable[[str], Awaitable[frozenset[str]]],
        services: Mapping[str, str],
        api_client: Callable[[], Any],
        *,
        poll_s: float = 5.0,
        admission_wait_s: float = ADMISSION_WAIT_S,
    ) -> None:
        self.cfg, self.groups, self.services = cfg, groups, dict(services)
        self.api_client = api_client
        self.poll_s, self.admission_wait_s = poll_s, admission_wait_s
        self._apis: tuple[Any, Any] | None = None

    @property
    def batch(self) -> Any:
        return self._connect()[0]

    @property
    def core(self) -> Any:
        return self._connect()[1]

    def _connect(self) -> tuple[Any, Any]:
        if self._apis is None:
            from kubernetes_asyncio import client

            made = self.api_client()
            self._apis = client.BatchV1Api(made), client.CoreV1Api(made)
        return self._apis

    async def execute(self, job: Job, run: Run, token: str) -> Outcome:
        """Run ``run`` as a Job with ``token`` (the owner's, for the run); how it ended."""
        groups = sorted(await self.groups(job.owner))
        secret, manifest = await run_manifests(self.cfg, job, run, groups, self.services, token)
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        created = await self.batch.create_namespaced_job(namespace, manifest)
        try:
            secret["metadata"]["ownerReferences"] = [
                {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": created.metadata.uid}
            ]
            await self.core.create_namespaced_secret(namespace, secret)
            outcome = await self._follow(namespace, name, job)
        except BaseException:  # stopped, or the API failed: the Job goes, its pod with it
            await self._delete(namespace, name)
            raise
        if outcome.state != "succeeded":
            await self._delete(namespace, name)
        return outcome

    async def _follow(self, namespace: str, name: str, job: Job) -> Outcome:
        began = time.monotonic()
        while True:
            found = await self.batch.read_namespaced_job_status(name, namespace)
            for condition in found.status.conditions or ():
                if condition.status != "True":
                    continue
                if condition.type == "Complete":
                    return Outcome("succeeded")
                if condition.type == "Failed":
                    if condition.reason == "DeadlineExceeded":
                        return Outcome("timed_out", f"stopped after its timeout of {job.timeout_s} s")
                    return Outcome("failed", await self._why(namespace, name, condition))
            if found.spec.suspend and time.monotonic() - began > self.admission_wait_s:
                hours = self.admission_wait_s / 3600
                return Outcome("failed", f"waited more than {hours:g} h for the {job.tier} tier's queue")
            await asyncio.sleep(self.poll_s)

    async def _why(self, namespace: str, name: str, condition: Any) -> str:
        """The line of the pod's log that says why papermill failed, else the Job's reason."""
        fallback = f"the run's pod failed ({condition.reason}: {condition.message or 'no message'})"[:500]
        try:
            pods = await self.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")
            for pod in pods.items:
                log = await self.core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=200)
                return last_error_line(log) if log else fallback
        except Exception:  # the log is gone with its node: the Job's own reason says enough
            return fallback
        return fallback

    async def _delete(self, namespace: str, name: str) -> None:
        # Already gone; or the API is away, and the Job ends at its deadline all the same.
        with contextlib.suppress(Exception):
            await asyncio.shield(self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background"))
