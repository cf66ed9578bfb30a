"""``DeployPanel``: ask for a model version's deployment, and follow it until it serves.

Pick the model, version, target and canary percent; the panel shows the deploy policy's
pre-check as the choice changes (``POST api/policy/deploy``); one click submits the
request (``POST api/requests``); then the panel follows it (``GET api/requests/<id>``)
with a progress bar until it is deployed, rejected or failed, and shows the endpoint
with a box to score a sample. A person decides the request on the governance service's
decision page: nothing here can.

:func:`deploy_progress` maps a request to its step. The request JSON gains deployment
fields once approved deployments are executed; until then a request goes as far as
"approved, waiting for deployment".
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import ipywidgets as widgets

from hubforge.errors import HubforgeError

from .client import Background, GovernanceClient, describe, mlflow_client, one_line, pretty, translated

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["FINAL_STEPS", "TARGETS", "DeployPanel", "Progress", "body_problems", "deploy_body", "deploy_progress"]

#: A deploy target -> the kind of request that asks for it.
TARGETS = {"staging": "deploy-staging", "production": "deploy-production"}
#: Who approves each kind (the decision pages say so too).
_APPROVER = {"deploy-staging": "an ML engineer", "deploy-production": "an ML lead"}
#: Steps after which nothing changes any more.
FINAL_STEPS = frozenset({"deployed", "rejected", "failed"})
_BAR = {"deployed": "success", "rejected": "danger", "failed": "danger"}
#: A deployment's status words (the serving side's) that mean it is under way.
_UNDER_WAY = frozenset({"deploying", "starting", "pending", "queued", "in-progress"})
#: Following a request stops after this many failed reads in a row (Refresh starts again).
MAX_FAILURES = 5
_SPINNER = '<i class="fa fa-spinner fa-spin"></i> '


class Progress(NamedTuple):
    """Where a deploy request stands: ``step``, the share of the way done, and in words."""

    step: str
    fraction: float
    text: str


def deployment_of(request: Mapping[str, Any]) -> tuple[str, str, str]:
    """(status, endpoint, error) of a request's deployment, "" for what it does not say.

    Read from ``deployment: {status, endpoint, error}``, or from top-level
    ``deployment_status``, ``endpoint`` and ``deployment_error``.
    """
    found = request.get("deployment")
    deployment = found if isinstance(found, Mapping) else {}

    def text(*values: Any) -> str:
        return next((str(value) for value in values if value), "")

    status = text(deployment.get("status"), request.get("deployment_status")).lower()
    endpoint = text(deployment.get("endpoint"), request.get("endpoint"))
    error = text(deployment.get("error"), deployment.get("message"), request.get("deployment_error"))
    return status, endpoint, error


def deploy_progress(request: Mapping[str, Any]) -> Progress:
    """The step of a deploy request: submitted -> approved -> deploying -> deployed; or
    rejected, or failed."""
    status, by = request.get("status"), request.get("decided_by") or "someone"
    if status == "rejected":
        comment = one_line(str(request.get("comment") or ""), 300)
        return Progress("rejected", 1.0, f"Rejected by {by}" + (f": {comment}" if comment else "."))
    if status != "approved":
        approver = _APPROVER.get(str(request.get("kind")), "an approver")
        return Progress("submitted", 0.25, f"Submitted; waiting for {approver} to decide.")
    deployment, endpoint, error = deployment_of(request)
    if deployment == "failed":
        reason = one_line(error, 300) or "no reason given"
        return Progress("failed", 1.0, f"Approved by {by}, but the deployment failed: {reason}")
    if deployment in ("deployed", "ready", "serving") or (endpoint and deployment not in _UNDER_WAY):
        return Progress("deployed", 1.0, f"Deployed: serving at {endpoint}." if endpoint else "Deployed.")
    if deployment in _UNDER_WAY:
        return Progress("deploying", 0.75, f"Approved by {by}; deploying…")
    return Progress("approved", 0.5, f"Approved by {by}; waiting for deployment.")


def deploy_body(model: str, version: str, target: str, canary_percent: int, justification: str) -> dict[str, Any]:
    """The JSON body of a deploy request (and of its pre-check)."""
    return {
        "kind": TARGETS.get(target, target),
        "model": model.strip(),
        "version": str(version).strip(),
        "canary_percent": canary_percent,
        "justification": justification.strip(),
    }


def body_problems(body: Mapping[str, Any], *, submitting: bool) -> list[str]:
    """What keeps ``body`` from being sent, in words (the service checks it again)."""
    problems = []
    if not body.get("model"):
        problems.append("pick a model")
    version = str(body.get("version", ""))
    if not (version.isascii() and version.isdigit() and not version.startswith("0")):
        problems.append("pick a version (1, 2, ...)")
    if body.get("kind") not in TARGETS.values():
        problems.append("pick a target: " + " or ".join(TARGETS))
    if not 0 <= int(body.get("canary_percent", 0)) <= 100:
        problems.append("the canary percent is 0 to 100")
    if submitting and not body.get("justification"):
        problems.append("say why, for the approver")
    return problems


def policy_html(result: Mapping[str, Any] | None) -> str:
    """The deploy policy's word on a request, for the requester."""
    if not result:
        return ""
    if result.get("decision") == "allow":
        return '<p style="color:#1a7f37">✔ The deploy policy allows this request.</p>'
    reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in result.get("reasons") or [])
    return (
        '<p style="color:#9a6700">✖ The deploy policy denies it now. You can still submit; '
        f"nobody can approve it until this changes:</p><ul>{reasons}</ul>"
    )


class DeployPanel(widgets.VBox):
    """Ask for a deployment of ``model`` ``version`` to ``target`` and follow it.

    ``governance``: the client (default: :meth:`GovernanceClient.from_env`, the server's
    token); ``mlflow`` makes the MLflow client that lists the models one may see.
    ``poll_interval`` and ``follow_for`` (seconds): how often and how long a submitted
    request is followed.
    """

    def __init__(
        self,
        model: str = "",
        version: str | int = "",
        *,
        target: str = "staging",
        canary_percent: int = 0,
        justification: str = "",
        governance: GovernanceClient | None = None,
        mlflow: Callable[[], MlflowClient] | None = mlflow_client,
        poll_interval: float = 5.0,
        follow_for: float = 3600.0,
    ) -> None:
        self._governance, self._mlflow = governance, mlflow
        self.poll_interval, self.follow_for = poll_interval, follow_for
        self.request: dict[str, Any] | None = None
        self.step: Progress | None = None
        self._running: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._init_choice(model, str(version), target, canary_percent, justification)
        self._init_status()
        super().__init__(
            [
                self.model, self.version, self.target, self.canary, self.justification,
                widgets.HBox([self.check_button, self.submit_button]),
                self.activity, self.status, self.policy, self.request_link,
                widgets.HBox([self.progress, self.progress_text, self.refresh_button]),
                self.scoring,
            ]
        )  # fmt: skip
        self._checks, self._submits = Background(self._busy("check")), Background(self._busy("submit"))
        self._models, self._versions = Background(self._busy("models")), Background(self._busy("versions"))
        self._scores = Background(self._busy("score"))
        for widget in (self.model, self.version, self.target, self.canary):
            widget.observe(self._choice_changed, names="value")
        self.justification.observe(lambda _: self._enable_submit(), names="value")
        if mlflow is not None:
            self._list_models()
        if body_problems(self.body(), submitting=False) == []:
            self.precheck()

    def _init_choice(self, model: str, version: str, target: str, canary: int, justification: str) -> None:
        style = {"description_width": "8em"}
        # Each change asks MLflow or the policy: on Enter or leaving the field, not per keystroke.
        once = {"ensure_option": False, "continuous_update": False, "style": style}
        self.model = widgets.Combobox(value=model, description="Model", **once)
        self.version = widgets.Combobox(value=version, description="Version", **once)
        self.target = widgets.ToggleButtons(options=list(TARGETS), value=target, description="Target", style=style)
        self.canary = widgets.IntSlider(
            value=canary, min=0, max=100, description="Canary %", continuous_update=False, style=style
        )
        self.canary.tooltip = "The share of traffic the new version gets at first (0: it replaces what is served)"
        self.justification = widgets.Textarea(
            value=justification, description="Why", placeholder="For the approver", style=style
        )
        self.check_button = widgets.Button(description="Check policy", icon="check")
        self.submit_button = widgets.Button(description="Submit", icon="paper-plane", button_style="primary")
        self.check_button.on_click(lambda _: self.precheck())
        self.submit_button.on_click(lambda _: self.submit())

    def _init_status(self) -> None:
        self.activity = widgets.HTML("")
        self.status = widgets.HTML("")
        self.policy = widgets.HTML("")
        self.request_link = widgets.HTML("")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="Progress")
        self.progress.layout.display = "none"
        self.progress_text = widgets.HTML("")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", tooltip="Read the request again")
        self.refresh_button.layout.display = "none"
        self.refresh_button.on_click(lambda _: self.refresh())
        self.endpoint = widgets.HTML("")
        self.sample = widgets.Textarea(
            value='{"dataframe_records": []}', description="Sample", layout=widgets.Layout(width="98%", height="6em")
        )
        self.score_button = widgets.Button(description="Score", icon="play")
        self.score_button.on_click(lambda _: self.score())
        self.score_result = widgets.HTML("")
        self.scoring = widgets.VBox([self.endpoint, self.sample, self.score_button, self.score_result])
        self.scoring.layout.display = "none"

    # --- reporting ------------------------------------------------------------------

    def _busy(self, key: str) -> Callable[[str], None]:
        def busy(what: str) -> None:
            with self._lock:  # the workers report from their threads
                if what:
                    self._running[key] = what
                else:
                    self._running.pop(key, None)
                doing = "; ".join(self._running.values())
            self.activity.value = _SPINNER + html.escape(doing) + "…" if doing else ""

        return busy

    def _say(self, text: str, error: bool = False) -> None:
        color = "#cf222e" if error else "#1f2328"
        self.status.value = f'<span style="color:{color}">{html.escape(one_line(text, 400))}</span>' if text else ""

    def _gov(self) -> GovernanceClient:
        with self._lock:
            if self._governance is None:
                self._governance = GovernanceClient.from_env()
            return self._governance

    def body(self) -> dict[str, Any]:
        """The request the panel would submit now."""
        return deploy_body(
            self.model.value, self.version.value, self.target.value, self.canary.value, self.justification.value
        )

    # --- choosing -------------------------------------------------------------------

    def _choice_changed(self, change: Mapping[str, Any]) -> None:
        self._enable_submit()
        if change.get("owner") is self.model and self._mlflow is not None:
            self._list_versions()
        if not body_problems(self.body(), submitting=False):
            self.precheck()

    def _enable_submit(self) -> None:
        self.submit_button.disabled = self._submits.running
        self.submit_button.description = "Submit"

    def _list_models(self) -> None:
        def job() -> list[str]:
            assert self._mlflow is not None
            with translated("cannot list the registered models"):
                return sorted(m.name for m in self._mlflow().search_registered_models(max_results=500))

        self._models.run("Listing your models", job, lambda names: setattr(self.model, "options", names), self._note)

    def _list_versions(self) -> None:
        model = self.model.value.strip()
        if not model or "'" in model:
            return

        def job() -> list[str]:
            assert self._mlflow is not None
            with translated(f"cannot list the versions of {model}"):
                found = self._mlflow().search_model_versions(f"name = '{model}'")
            return sorted((str(v.version) for v in found), key=int, reverse=True)

        self._versions.run(f"Listing the versions of {model}", job, self._show_versions, self._note)

    def _show_versions(self, versions: list[str]) -> None:
        self.version.options = versions
        if not self.version.value and versions:
            self.version.value = versions[0]

    def _note(self, message: str) -> None:
        """A listing that failed: typing the names still works."""
        self._say(f"{message} (type the model and version instead)")

    # --- the policy and the request -------------------------------------------------

    def precheck(self) -> None:
        """Show what the deploy policy says of the request now."""
        body = self.body()
        problems = body_problems(body, submitting=False)
        if problems:
            self._say("To check the policy: " + "; ".join(problems) + ".", error=True)
            return
        # The pre-check takes a justification; the policy does not weigh it.
        body["justification"] = body["justification"] or "pre-check"
        self._checks.run(
            "Checking the deploy policy",
            lambda: self._gov().precheck(body),
            lambda result: setattr(self.policy, "value", policy_html(result)),
            lambda message: self._say(message, error=True),
        )

    def submit(self) -> None:
        """Submit the request (once per click), then follow it."""
        body = self.body()
        problems = body_problems(body, submitting=True)
        if problems:
            self._say("Before submitting: " + "; ".join(problems) + ".", error=True)
            return
        self.submit_button.disabled = True
        self._submits.run(
            f"Submitting the request to deploy {body['model']} version {body['version']}",
            lambda: self._gov().submit(body),
            self._submitted,
            self._submit_failed,
        )

    def _submitted(self, request: dict[str, Any]) -> None:
        self.submit_button.description = "Submitted"
        self._say(f"Request {request['id']} submitted.")
        self.policy.value = policy_html(request.get("policy"))
        self.follow(request)

    def _submit_failed(self, message: str) -> None:
        self._say(message, error=True)
        self.submit_button.disabled = False

    # --- following ------------------------------------------------------------------

    def follow(self, request: Mapping[str, Any] | str) -> None:
        """Show a request (its JSON, or its id) and follow it until its last step."""
        self._stop.set()
        self._stop = stop = threading.Event()
        request_id = request if isinstance(request, str) else str(request["id"])
        if not isinstance(request, str):
            self._show(request)
        self._follower = threading.Thread(
            target=self._follow, args=(request_id, stop), name=f"hubforge-follow-{request_id}", daemon=True
        )
        self._follower.start()

    def refresh(self) -> None:
        """Read the request again, and follow it again."""
        if self.request is not None:
            self.follow(str(self.request["id"]))

    def _follow(self, request_id: str, stop: threading.Event) -> None:
        deadline, failures = time.monotonic() + self.follow_for, 0
        while not stop.is_set():
            try:
                request = self._gov().get_request(request_id)
                if stop.is_set() or self._show(request).step in FINAL_STEPS:
                    return
                failures = 0
            except Exception as exc:  # in a thread: one line in the panel, never a traceback
                failures += 1
                if failures >= MAX_FAILURES:
                    said = str(exc) if isinstance(exc, HubforgeError) else describe(exc)
                    self._stopped(f"Stopped following request {request_id}: {said}")
                    return
            if time.monotonic() >= deadline:
                self._stopped(f"Stopped following request {request_id} after {self.follow_for:.0f} s")
                return
            stop.wait(self.poll_interval)

    def _stopped(self, message: str) -> None:
        self._say(message + ". Refresh to look again.", error=True)

    def _show(self, request: Mapping[str, Any]) -> Progress:
        step = deploy_progress(request)
        page = html.escape(self._gov().page_url(str(request["id"])), quote=True)
        what = f"{request.get('kind')} of {request.get('model')} version {request.get('version')}"
        self.request_link.value = f'Request <a href="{page}" target="_blank" rel="noopener">{html.escape(what)}</a>'
        self.progress.layout.display = self.refresh_button.layout.display = ""
        self.progress.value = step.fraction
        self.progress.bar_style = _BAR.get(step.step, "info")
        self.progress_text.value = html.escape(step.text)
        endpoint = deployment_of(request)[1]
        if step.step == "deployed" and endpoint:
            url = html.escape(self._gov().endpoint_url(endpoint), quote=True)
            self.endpoint.value = f'Endpoint: <a href="{url}" target="_blank" rel="noopener">{url}</a>'
            self.scoring.layout.display = ""
        # Last: whoever sees the new step (a test, the score button) sees the panel showing it.
        self.request, self.step = dict(request), step
        return step

    # --- scoring --------------------------------------------------------------------

    def score(self) -> None:
        """POST the sample (JSON) to the deployed endpoint and show the answer."""
        endpoint = deployment_of(self.request or {})[1]
        if not endpoint:
            self.score_result.value = "<i>Nothing is deployed yet.</i>"
            return
        try:
            payload = json.loads(self.sample.value)
        except ValueError as exc:
            self.score_result.value = (
                f'<span style="color:#cf222e">The sample is no JSON: {html.escape(str(exc))}</span>'
            )
            return
        self._scores.run(
            "Scoring the sample",
            lambda: self._gov().score(endpoint, payload),
            lambda answer: setattr(self.score_result, "value", f"<pre>{html.escape(pretty(answer))}</pre>"),
            lambda message: setattr(
                self.score_result, "value", f'<span style="color:#cf222e">{html.escape(message)}</span>'
            ),
        )

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for the calls under way (not the following); whether they ended in ``timeout`` s."""
        end, workers = (
            time.monotonic() + timeout,
            (self._models, self._versions, self._checks, self._submits, self._scores),
        )
        # One call's answer may start another (a version listed -> a pre-check): until all are done.
        while any(w.running for w in workers) and time.monotonic() < end:
            for worker in workers:
                worker.wait(max(0.0, end - time.monotonic()))
        return not any(w.running for w in workers)

    def close(self) -> None:
        """Stop following, and close the widget."""
        self._stop.set()
        super().close()
