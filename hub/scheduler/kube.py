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
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from tornado import web

from hubforge.catalog import ChoiceError, load_catalog, tier_env
from hubforge.config import PlatformConfig
from hubforge.spawner_profiles.kubernetes.spawner import QUEUE_LABEL, TIER_LABEL, offline_spawner

from .runner import run_environment
from .store import Job, Run

__all__ = ["JOB_LABEL", "RUN_LABEL", "job_name", "run_manifests"]

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
    pod_labels = {k: v for k, v in pod["metadata"].get("labels", {}).items() if k != QUEUE_LABEL}
    pod_labels.update(HUB_ACCESS)
    pod_labels.update(marks)
    job_labels = {TIER_LABEL: tier.slug, **marks, **({QUEUE_LABEL: tier.queue} if tier.queue else {})}
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
