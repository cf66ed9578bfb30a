"""Approval -> endpoint ready, through the governance service, on one machine.

The deployment flow's real parts (:mod:`harness.deploy`: a fake hub, a gated MLflow, the
governance service, the serving router): alice registers a version of a small
scikit-learn model with a complete card and asks for production; the clock starts when
carol's approval (her browser session's form post) is sent and stops when the request
says ``deployed`` and its endpoint answers a scoring request. That covers the approval's
checks and governance's copy (downloaded from MLflow, digested), the policy, the
deployment's copy checked again, the router's own copy, the new scoring process started
until it answers, and the aliases. Each round deploys a new version beside the last, as
people do.

Baseline, in the same run: what a person would do by hand for the same version,
``mlflow models serve -m models:/<name>/<version> --env-manager local`` (MLflow
downloads the version itself) until it answers a scoring request.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.report import Result
from harness.deploy import DeployPlatform, ask, deploy_platform, router_target
from hubforge.hub.serving.scoring import clean_environment

__all__ = ["run"]

ROWS = {"dataframe_split": {"columns": ["x"], "data": [[3.0], [5.0]]}}
MLFLOW = os.path.join(os.path.dirname(sys.executable), "mlflow")


def _scores(url: str, client: httpx.Client, timeout: float = 180) -> None:
    """Wait until ``url`` answers a scoring request with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if client.post(url, json=ROWS, timeout=10).status_code == 200:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def _approved_until_ready(platform: DeployPlatform, model: str, version: str) -> float:
    """Seconds from carol's approval to the endpoint answering."""
    request = ask(platform, model, version)
    started = time.perf_counter()
    decided = platform.decide_or_change("carol-token", request["id"], decision="approve")
    decided.raise_for_status()
    deployment: dict[str, str] = {}
    while deployment.get("status") not in ("deployed", "failed"):
        time.sleep(0.02)
        deployment = platform.request(request["id"]).get("deployment") or {}
    if deployment["status"] != "deployed":
        raise RuntimeError(f"the deployment failed: {deployment.get('error')}")
    with httpx.Client(headers={"Authorization": "token alice-token"}) as client:
        _scores(deployment["endpoint"], client)
    return time.perf_counter() - started


def _by_hand(platform: DeployPlatform, model: str, version: str, home: Path) -> float:
    """Seconds from ``mlflow models serve -m models:/...`` to its first answer."""
    socket = home / "by-hand.sock"
    env = {
        **clean_environment(home, os.path.dirname(MLFLOW), socket),
        "MLFLOW_TRACKING_URI": platform.tracking,
        "MLFLOW_TRACKING_TOKEN": "alice-token",
    }
    command = [MLFLOW, "models", "serve", "-m", f"models:/{model}/{version}", "--env-manager", "local", "-w", "1"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket))) as client:
            _scores("http://localhost/invocations", client)
        return time.perf_counter() - started
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def run(repeat: int) -> list[Result]:
    """Approval -> ready through governance against serving the version by hand."""
    ours: list[float] = []
    plain: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="hubforge-bench-approval-") as tmp,
        deploy_platform(Path(tmp), router_target(Path(tmp))) as platform,
    ):
        home = Path(tmp) / "home"
        home.mkdir()
        model = ""
        for round_ in range(repeat):
            model, version = platform.register(model or None, slope=float(round_ + 1), prefix="bench")
            ours.append(_approved_until_ready(platform, model, version))
            plain.append(_by_hand(platform, model, version, home))
    return [Result("approval -> endpoint ready", "s", ours, plain, "mlflow models serve -m models:/ by hand")]
