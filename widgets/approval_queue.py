"""``ApprovalQueue``: the requests awaiting one's decision, with what an approver weighs.

For ML leads (production deployments), ML engineers (staging) and data stewards
(data access): each pending request of a kind one approves, that one did not submit,
with its justification, the deploy policy's word when it was submitted, the model
version's card (completeness, what it misses, risk) and its run's metrics beside those
of what is in production. The Approve and Reject buttons are links to the request's
decision page on the governance service, where the person decides in their browser:
the widget calls only ``GET`` on the governance API, and the server's token it holds
could not decide anyway.

What is "in production" is the version the registered model's ``production`` alias
(``staging`` for staging) names, which the deployments set; until one does, the version
of the newest approved request for that target. That comparison is
:mod:`hubforge.modelcard.compare`, the one the governance service's decision page shows.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from hubforge.errors import HubforgeError
from hubforge.modelcard import completeness
from hubforge.modelcard.compare import ALIASES, MetricChange, format_metric, metric_diff, production_version
from hubforge.personas import PERSONAS

from .client import Background, GovernanceClient, WidgetError, mlflow_client, one_line, translated

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "APPROVER_SCOPES",
    "ApprovalQueue",
    "MetricChange",
    "QueueRow",
    "VersionFacts",
    "approvable_kinds",
    "awaiting",
    "facts_of",
    "metric_diff",
    "production_version",
    "review_html",
]

#: The scope that lets one decide each kind of request (docs/reference/approvals.md).
APPROVER_SCOPES = {
    "deploy-staging": "custom:deploy:staging",
    "deploy-production": "custom:approve:production",
    "data-access": "custom:approve:data-access",
}
#: Requests shown with their evidence (MLflow is read for each), oldest first.
MAX_SHOWN = 50
_SPINNER = '<i class="fa fa-spinner fa-spin"></i> '
_LINK = (
    '<a class="jupyter-button widget-button {style}" href="{href}" target="_blank" rel="noopener noreferrer" '
    'style="text-decoration:none;padding:0 1em;line-height:28px;display:inline-block" title="{title}">{text}</a>'
)


# --- pure ---------------------------------------------------------------------------


def approvable_kinds(whoami: Mapping[str, Any]) -> tuple[str, ...]:
    """The kinds of request a person decides, from ``api/whoami``: the approver scopes their
    personas grant (a server's token does not carry them) or their token holds."""
    held = set(whoami.get("scopes") or ())
    for persona in whoami.get("personas") or ():
        if persona in PERSONAS:
            held.update(PERSONAS[persona].custom_scopes)
    return tuple(kind for kind, scope in APPROVER_SCOPES.items() if scope in held)


def awaiting(requests: Iterable[Mapping[str, Any]], me: str, kinds: Iterable[str]) -> list[dict[str, Any]]:
    """The pending requests of ``kinds`` not submitted by ``me``, oldest first."""
    wanted = set(kinds)
    found = [
        dict(r)
        for r in requests
        if r.get("status") == "pending" and r.get("kind") in wanted and r.get("requester") != me
    ]
    return sorted(found, key=lambda r: (str(r.get("created", "")), str(r.get("id", ""))))


@dataclass(frozen=True)
class VersionFacts:
    """What an approver weighs about one model version: its card and its run's metrics."""

    version: str
    card_present: bool = False
    score: float = 0.0
    missing: tuple[str, ...] = ()
    risk: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    problem: str = ""


def facts_of(
    version: str, card: Mapping[str, Any] | None, metrics: Mapping[str, float], problem: str = ""
) -> VersionFacts:
    """The facts of a version whose card (None: it has none) and metrics were read."""
    if card is None:
        return VersionFacts(version, metrics=dict(metrics), problem=problem)
    found = completeness(card)
    risk = card.get("risk_rating")
    return VersionFacts(version, True, found.score, tuple(found.missing), risk, dict(metrics), problem)


def _card_html(facts: VersionFacts) -> str:
    if not facts.card_present:
        return "<b>Model card:</b> none saved" + (f" ({html.escape(facts.problem)})" if facts.problem else "") + "."
    state = "complete" if not facts.missing else "missing: " + ", ".join(facts.missing)
    risk = f"; risk: {facts.risk}" if facts.risk else "; risk: not rated"
    return html.escape(f"Model card: {facts.score:.0%} ({state}){risk}.").replace(
        "Model card:", "<b>Model card:</b>", 1
    )


def _metrics_html(candidate: VersionFacts, production: VersionFacts | None) -> str:
    changes = metric_diff(candidate.metrics, production.metrics if production else None)
    if not changes:
        return "<p><i>The version's run logged no metrics.</i></p>"
    head = "<tr><th>metric</th><th>this version</th><th>production</th><th>change</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{format_metric(c.candidate)}</td><td>{format_metric(c.production)}</td>"
        f"<td>{format_metric(c.delta, sign=True)}</td></tr>"
        for c in changes
    )
    return f'<table style="border-collapse:collapse" border="1" cellpadding="3">{head}{rows}</table>'


def _policy_html(policy: Any) -> str:
    if not isinstance(policy, Mapping):
        return ""
    if policy.get("decision") == "allow":
        return "<p><b>Policy at submission:</b> allows.</p>"
    reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in policy.get("reasons") or [])
    return f"<p><b>Policy at submission:</b> denies:</p><ul>{reasons}</ul>"


def review_html(
    request: Mapping[str, Any],
    candidate: VersionFacts | None = None,
    production: VersionFacts | None = None,
    production_source: str = "",
) -> str:
    """One request as the approver reads it; every value from the request or MLflow escaped."""
    esc = html.escape
    kind, requester = str(request.get("kind")), str(request.get("requester"))
    created = str(request.get("created") or "")[:16].replace("T", " ")
    if request.get("model"):
        what = f"{request.get('model')} version {request.get('version')}"
        canary = request.get("canary_percent")
        what += f" (canary {canary}%)" if canary else ""
    else:
        what = str(request.get("target"))
        if request.get("duration_days"):
            what += f" for {request.get('duration_days')} days"
        if request.get("expires"):
            what += f" (access until {str(request.get('expires'))[:16].replace('T', ' ')} UTC)"
    parts = [
        f"<b>{esc(kind)}</b>: {esc(what)}, requested by <b>{esc(requester)}</b> on {esc(created)}",
        f'<div style="white-space:pre-wrap;margin:4px 0"><i>{esc(str(request.get("justification") or ""))}</i></div>',
        _policy_html(request.get("policy")),
    ]
    if candidate is not None:
        parts.append(f"<p>{_card_html(candidate)}</p>")
        if production is not None:
            parts.append(f"<p><b>In production:</b> version {esc(production.version)} ({esc(production_source)}).</p>")
        else:
            parts.append("<p><b>In production:</b> nothing yet.</p>")
        parts.append(_metrics_html(candidate, production))
        if candidate.problem and candidate.card_present:
            parts.append(f'<p style="color:#9a6700">{esc(candidate.problem)}</p>')
    return "\n".join(parts)


# --- MLflow -------------------------------------------------------------------------


def read_facts(client: MlflowClient, model: str, version: str) -> VersionFacts:
    """A version's card and metrics as the person may read them; a failure is a ``problem``."""
    from hubforge.modelcard.mlflow_store import load_card

    problem = ""
    try:
        card = load_card(client, model, version)
    except HubforgeError as exc:
        card, problem = None, str(exc)
    try:
        with translated(f"cannot read the metrics of {model} version {version}"):
            run_id = client.get_model_version(model, version).run_id
            metrics = dict(client.get_run(run_id).data.metrics) if run_id else {}
    except HubforgeError as exc:
        metrics, problem = {}, problem or str(exc)
    return facts_of(version, card, metrics, problem)


def alias_version(client: MlflowClient, model: str, alias: str) -> str | None:
    """The version ``alias`` names, None when it names none (or cannot be read)."""
    try:
        with translated(f"cannot read alias {alias} of {model}"):
            return str(client.get_model_version_by_alias(model, alias).version)
    except WidgetError:
        return None


@dataclass
class _Review:
    request: dict[str, Any]
    candidate: VersionFacts | None = None
    production: VersionFacts | None = None
    source: str = ""


def _review(gov: GovernanceClient, client: MlflowClient | None, request: dict[str, Any]) -> _Review:
    kind, model, version = str(request.get("kind")), request.get("model"), request.get("version")
    if kind not in ALIASES or not model or not version or client is None:
        return _Review(request)
    candidate = read_facts(client, model, str(version))
    try:
        approved = gov.list_requests(status="approved", kind=kind, model=model, limit=1)
    except HubforgeError:
        approved = []  # the alias may still say; else "nothing yet" rather than no queue at all
    found = production_version(alias_version(client, model, ALIASES[kind]), approved)
    if found is None:
        return _Review(request, candidate)
    production = candidate if found[0] == str(version) else read_facts(client, model, found[0])
    return _Review(request, candidate, production, found[1])


# --- the widget ---------------------------------------------------------------------


class QueueRow(widgets.VBox):
    """One request awaiting a decision: what to weigh, and links to its decision page."""

    def __init__(self, review: _Review, page_url: str) -> None:
        self.request, self.page_url = review.request, page_url
        text = review_html(review.request, review.candidate, review.production, review.source)
        self.details = widgets.HTML(text)
        href, rid = html.escape(page_url, quote=True), html.escape(str(review.request.get("id")), quote=True)
        self.approve = widgets.HTML(
            _LINK.format(style="mod-success", href=href, text="Approve…", title=f"Decide request {rid}")
        )
        self.reject = widgets.HTML(
            _LINK.format(style="mod-danger", href=href, text="Reject…", title=f"Decide request {rid}")
        )
        super().__init__([self.details, widgets.HBox([self.approve, self.reject])])
        self.layout = widgets.Layout(border="1px solid #d0d7de", padding="6px", margin="4px 0")


class ApprovalQueue(widgets.VBox):
    """The requests awaiting the person's decision.

    ``kinds``: the kinds to show (default: those the person approves, from ``api/whoami``).
    ``governance``: the client (default: :meth:`GovernanceClient.from_env`); ``mlflow``
    makes the MLflow client the cards and metrics are read with (None: not read).
    """

    def __init__(
        self,
        *,
        kinds: Sequence[str] | None = None,
        governance: GovernanceClient | None = None,
        mlflow: Callable[[], MlflowClient] | None = mlflow_client,
        load: bool = True,
    ) -> None:
        self._governance, self._mlflow, self._kinds = governance, mlflow, tuple(kinds or ())
        self.rows: list[QueueRow] = []
        self.title = widgets.HTML("<h3>Awaiting your decision</h3>")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.activity, self.status, self.items = widgets.HTML(""), widgets.HTML(""), widgets.VBox([])
        super().__init__([widgets.HBox([self.title, self.refresh_button]), self.activity, self.status, self.items])
        self._work = Background(self._busy)
        if load:
            self.refresh()

    def _busy(self, what: str) -> None:
        self.refresh_button.disabled = bool(what)
        self.activity.value = _SPINNER + html.escape(what) + "…" if what else ""

    def _gov(self) -> GovernanceClient:
        if self._governance is None:
            self._governance = GovernanceClient.from_env()
        return self._governance

    def refresh(self) -> None:
        """Read the pending requests and what to weigh about each, again."""
        self._work.run("Reading the requests awaiting your decision", self._gather, self._show, self._failed)

    def _gather(self) -> tuple[list[_Review], str]:
        gov = self._gov()
        who = gov.whoami()
        kinds = self._kinds or approvable_kinds(who)
        if not kinds:
            return [], "You decide no kind of request (your personas: " + (
                ", ".join(who.get("personas") or []) or "none"
            ) + ")."
        pending = awaiting(gov.list_requests(status="pending", limit=500), str(who.get("name")), kinds)
        note = f"{len(pending)} request(s) of kind {', '.join(kinds)} await your decision."
        client, problem = None, ""
        if self._mlflow is not None and any(r.get("kind") in ALIASES for r in pending):
            try:
                client = self._mlflow()
            except HubforgeError as exc:
                problem = f" Model cards and metrics are not shown: {exc}"
        shown = pending[:MAX_SHOWN]
        more = f" The oldest {MAX_SHOWN} are shown." if len(pending) > MAX_SHOWN else ""
        return [_review(gov, client, request) for request in shown], note + more + problem

    def _show(self, found: tuple[list[_Review], str]) -> None:
        reviews, note = found
        gov = self._gov()
        self.rows = [QueueRow(review, gov.page_url(str(review.request["id"]))) for review in reviews]
        self.items.children = self.rows
        self.title.value = f"<h3>Awaiting your decision: {len(self.rows)}</h3>"
        self.status.value = html.escape(note)

    def _failed(self, message: str) -> None:
        self.status.value = f'<span style="color:#cf222e">{html.escape(one_line(message, 400))}</span>'

    def row(self, request_id: str) -> QueueRow:
        """The row of request ``request_id``."""
        for row in self.rows:
            if row.request.get("id") == request_id:
                return row
        raise KeyError(f"request {request_id!r} is not in the queue")

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for the refresh under way; whether it ended within ``timeout`` seconds."""
        return self._work.wait(timeout)
