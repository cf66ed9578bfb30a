"""The decision pages: where a person sees requests and approves or rejects them.

``<prefix>requests`` lists the requests the viewer may see, with a badge counting those
awaiting their decision; ``<prefix>requests/<id>`` shows one request; for a deploy request,
its model version's card and metrics against what is in production (:mod:`.compare`: what
MLflow cannot answer is a note, never a failed page); what the deploy policy said when it
was submitted and what it says now of the viewer approving it; and, to whoever may decide
it, a form to approve or reject with a comment. The form posts back to the same page in
the person's browser session (the hub-login cookie and its XSRF token), which is the only
way a decision is taken (:func:`~.approvals.decide_request`): no token, so no notebook
code, can decide. Pages are server-rendered HTML without script under the audit page's
Content-Security-Policy; every value is escaped, and the markdown people wrote in a model
card is rendered sanitized (:func:`~hubforge.modelcard.render_markdown`).

:func:`render_list`, :func:`render_request` and :func:`render_evidence` are pure; the
handlers are the HTTP edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from tornado import web

from hubforge.errors import Refusal
from hubforge.modelcard import render_markdown, validate_card
from hubforge.modelcard.compare import format_metric

from .api import APIHandler
from .approvals import TOKEN_DECISION, decide_request, judge
from .auth import needs_scope
from .compare import Comparison, MetricRow, Threshold, compare, metric_rows
from .evidence import Evidence
from .model import DATA_ACCESS, DECISIONS, DEFAULT_GRANT_DAYS, STATUSES, ApprovalRequest
from .openapi import Operation
from .policy import (
    APPROVER_SCOPES,
    NOT_FOUND_MESSAGE,
    PolicyDenied,
    can_view,
    check_decision,
    has_scope,
    visibility,
)
from .rego import PolicyResult
from .report_html import CSP, esc, html_page

__all__ = ["RequestListPage", "RequestPage", "awaiting", "render_evidence", "render_list", "render_request"]

#: Approved requests of the model looked through for the newest deployed one, when no alias
#: says what is in production.
DEPLOYED_SCAN = 50


def awaiting(user: str, scopes: frozenset[str], requests: Sequence[ApprovalRequest]) -> list[ApprovalRequest]:
    """The pending requests ``user`` may decide (not their own, of kinds they approve)."""
    found = []
    for request in requests:
        try:
            check_decision(user, scopes, request)
        except PolicyDenied:
            continue
        found.append(request)
    return found


def _what(request: ApprovalRequest) -> str:
    if request.model:
        canary = f", canary {request.canary_percent}%" if request.canary_percent else ""
        return f"{request.model} version {request.version}{canary}"
    return request.target


def _access(request: ApprovalRequest) -> list[tuple[str, str]]:
    """A data-access request's duration, and once approved, until when access lasts."""
    if request.kind != DATA_ACCESS:
        return []
    days = request.duration_days
    fields = [("Access for", f"{DEFAULT_GRANT_DAYS} days (the default)" if days is None else f"{days} days")]
    if request.expires is not None:
        fields.append(("Access until", request.expires.strftime("%Y-%m-%d %H:%M UTC")))
    return fields


def render_list(prefix: str, user: str, requests: Sequence[ApprovalRequest], mine: Sequence[ApprovalRequest]) -> str:
    """The list page: the badge of requests awaiting ``user``, then every visible request."""
    badge = f'<span class="badge">{len(mine)}</span>' if mine else '<span class="badge none">0</span>'
    rows = []
    for r in requests:
        css = ' class="awaiting"' if r in mine else ""
        link = f'<a href="{esc(prefix + "requests/" + r.id)}">{esc(r.id[:8])}…</a>'
        cells = (r.kind, _what(r), r.requester, r.status, r.created.strftime("%Y-%m-%d %H:%M UTC"))
        rows.append(f"<tr{css}><td>{link}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("Request", "Kind", "What", "Requested by", "Status", "Created"))
    table = (
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
        if rows
        else '<p class="none">No requests.</p>'
    )
    return html_page(
        "Approval requests",
        f"<h1>Approval requests {badge}</h1>\n"
        f'<p class="meta">Logged in as {esc(user)}. {len(mine)} awaiting your decision.</p>\n{table}',
    )


def _policy(title: str, result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    reasons = "".join(f"<li>{esc(r)}</li>" for r in result.get("reasons") or [])
    verdict = "allows" if result.get("decision") == "allow" else "denies"
    return f'<h2>{esc(title)}</h2>\n<p class="policy {esc(verdict)}">The policy {verdict}.</p>\n' + (
        f"<ul>{reasons}</ul>" if reasons else ""
    )


def _owner(owner: Mapping[str, str]) -> str:
    return owner["name"] + (f" ({owner['contact']})" if owner.get("contact") else "")


def _card_fields(card: Mapping[str, Any]) -> str:
    """What people wrote in a valid card that an approver weighs: markdown sanitized, text escaped."""
    details, considerations = card["model_details"], card.get("considerations", {})
    limits = "".join(f"<li>{esc(item['description'])}</li>" for item in considerations.get("limitations", []))
    fields = [
        ("Owners", esc(", ".join(_owner(owner) for owner in details.get("owners", [])))),
        ("Overview", render_markdown(details.get("overview", ""))),
        ("Intended use", render_markdown(card.get("intended_use", ""))),
        ("Out-of-scope use", render_markdown(card.get("out_of_scope_use", ""))),
        ("Limitations", f"<ul>{limits}</ul>" if limits else ""),
        ("Risk notes", render_markdown(card.get("risk_notes", ""))),
    ]
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in fields if value)
    return f'<table class="card">{rows}</table>' if rows else ""


def _card(evidence: Evidence) -> str:
    """The model card section: how complete it is for production, its risk, then its text."""
    parts = ["<h2>The model card</h2>"]
    if not evidence.card_present:
        return "\n".join([*parts, '<p class="none">No model card is saved with this version.</p>'])
    state = "complete" if not evidence.missing else "missing: " + ", ".join(evidence.missing)
    summary = f"{evidence.completeness:.0%} filled for production ({state}); risk: {evidence.risk or 'not rated'}."
    parts.append(f"<p>{esc(summary)}</p>")
    if evidence.card is not None and validate_card(evidence.card):
        parts.append('<p class="meta">The card does not follow the model card schema, so its text is not shown.</p>')
    elif evidence.card is not None:
        parts.append(_card_fields(evidence.card))
    return "\n".join(parts)


def _requirement(limit: Threshold) -> str:
    return " and ".join(f"{sign} {limit[key]:g}" for key, sign in (("min", "≥"), ("max", "≤")) if key in limit)


def _metric_row(row: MetricRow, with_thresholds: bool) -> str:
    c = row.change
    cells = [esc(c.name), format_metric(c.candidate), format_metric(c.production), format_metric(c.delta, sign=True)]
    if with_thresholds:
        verdict = f" <strong>fails: {esc(row.problem)}</strong>" if row.problem else " met"
        cells.append(esc(_requirement(row.limit)) + verdict if row.limit is not None else "")
    css = ' class="breach"' if row.problem else ""
    return f"<tr{css}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _metric_table(rows: Sequence[MetricRow], stage: str, with_thresholds: bool) -> str:
    if not rows:
        return '<p class="none">The version\'s run logged no metrics.</p>'
    head = ["Metric", "This version", stage.capitalize(), "Change"] + (["Threshold"] if with_thresholds else [])
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "\n".join(_metric_row(row, with_thresholds) for row in rows)
    return f'<table class="metrics">\n<thead><tr>{header}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _metrics(comparison: Comparison, stage: str, thresholds: Mapping[str, Threshold]) -> str:
    """The metrics section: what is in ``stage``, then each metric of both versions side by side."""
    there = comparison.production
    if comparison.problem:
        where = f'<p class="meta">{esc(comparison.problem)}</p>'
    elif there is None:
        where = f"<p>Nothing is in {stage} yet.</p>"
    else:
        where = f"<p>In {stage}: version {esc(comparison.version)} ({esc(comparison.source)}).</p>"
        if not there.available:
            where += f'\n<p class="meta">Its metrics could not be read: {esc("; ".join(there.problems))}.</p>'
    table = _metric_table(metric_rows(comparison, thresholds), stage, bool(thresholds))
    return f"<h2>Metrics against {stage}</h2>\n{where}\n{table}"


def render_evidence(request: ApprovalRequest, comparison: Comparison, thresholds: Mapping[str, Threshold]) -> str:
    """A deploy request's model card and metrics against what is in its stage; one note
    instead when the version's evidence could not be read."""
    candidate = comparison.candidate
    if not candidate.available:
        why = esc("; ".join(candidate.problems))
        return f'<h2>The model card and metrics</h2>\n<p class="meta">They could not be read: {why}.</p>'
    return _card(candidate) + "\n" + _metrics(comparison, str(request.stage), thresholds)


def render_request(
    prefix: str,
    request: ApprovalRequest,
    *,
    may_decide: bool,
    xsrf: str,
    now: PolicyResult | None = None,
    message: str = "",
    may_change: bool = False,
    comparison: Comparison | None = None,
    thresholds: Mapping[str, Threshold] | None = None,
) -> str:
    """One request's page; with the decision form when the viewer ``may_decide``, and the
    rollback (and promote, for a canary) form when they ``may_change`` its deployment.

    ``comparison``: a deploy request's evidence against what is in its stage, with the
    metrics that miss ``thresholds`` marked."""
    fields = [
        ("Kind", request.kind),
        ("What", _what(request)),
        ("Requested by", request.requester),
        ("Justification", request.justification),
        *_access(request),
        ("Status", request.status),
        ("Created", request.created.isoformat()),
    ]
    if request.decided_by:
        fields += [("Decided by", request.decided_by), ("Comment", request.comment or "")]
    if request.digest:
        fields.append(("Approved digest", request.digest))
    deployment = request.deployment_json()
    if deployment:
        fields.append(("Deployment", deployment["status"]))
        if deployment["endpoint"] or deployment["error"]:
            fields.append(("Endpoint" if deployment["endpoint"] else "Deployment error",
                           deployment["endpoint"] or deployment["error"]))  # fmt: skip
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in fields)
    parts = [f"<h1>Request {esc(request.id)}</h1>"]
    if message:
        parts.append(f'<p class="message">{esc(message)}</p>')
    parts.append(f"<table>{rows}</table>")
    if comparison is not None:
        parts.append(render_evidence(request, comparison, thresholds or {}))
    parts.append(_policy("The policy when it was submitted", request.policy))
    if request.pending and now is not None:
        parts.append(_policy("The policy now, if you approve", now.to_json()))
    if may_decide:
        parts.append(
            f'<form method="post" action="{esc(prefix + "requests/" + request.id)}">\n'
            f'<input type="hidden" name="_xsrf" value="{esc(xsrf)}">\n'
            '<label>Comment <textarea name="comment" maxlength="2000"></textarea></label>\n'
            '<button type="submit" name="decision" value="approve">Approve</button>\n'
            '<button type="submit" name="decision" value="reject">Reject</button>\n</form>'
        )
    if may_change and request.deploy_status == "deployed":
        promote = (
            '<button type="submit" name="action" value="promote">Promote the canary to 100%</button>\n'
            if request.canary_percent
            else ""
        )
        parts.append(
            f'<h2>The deployment</h2>\n<form method="post" action="{esc(prefix + "requests/" + request.id)}">\n'
            f'<input type="hidden" name="_xsrf" value="{esc(xsrf)}">\n{promote}'
            '<button type="submit" name="action" value="rollback">Roll back</button>\n</form>'
        )
    parts.append(f'<p><a href="{esc(prefix + "requests")}">All requests</a></p>')
    return html_page(f"Request {request.id}", "\n".join(p for p in parts if p))


class _Page(APIHandler):
    """A page of the service: HTML, but its errors are the service's JSON errors."""

    def set_default_headers(self) -> None:
        """HTML, never cached, no script, never framed."""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")


class RequestListPage(_Page):
    """The requests a person may see, and the badge of those awaiting them."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "The approval requests as a page, with a badge of those awaiting the viewer's decision",
            {200: {"type": "string"}, 302: None},
            description="HTML without script. Browsers without a session are sent to the hub login (302).",
            query={"status": {"type": "string", "enum": list(STATUSES)}},
            errors=(400, 503),
            media_type="text/html",
        )
    }

    @needs_scope()
    async def get(self) -> None:
        """Render the list."""
        status = self.get_query_argument("status", None)
        if status is not None and status not in STATUSES:
            raise web.HTTPError(400, f"query parameter 'status' must be one of {', '.join(STATUSES)}")
        store = self.settings["store"]
        found = await self.call_store(store.list_requests, visibility(self.user_name, self.user_scopes), status=status)
        mine = awaiting(self.user_name, self.user_scopes, found)
        self.finish(render_list(self.settings["service_prefix"], self.user_name, found, mine))


class RequestPage(_Page):
    """One request, and the person's decision of it."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "One request as a page; the decision form for whoever may decide it",
            {200: {"type": "string"}, 302: None},
            description="A request the viewer may not see answers 404, as a missing one.",
            errors=(404, 503),
            media_type="text/html",
        ),
        "post": Operation(
            "Approve or reject the request (the page's form, in the person's browser session)",
            {200: {"type": "string"}},
            description=(
                "Form fields decision (approve, reject), comment and _xsrf; only a browser session "
                "(the hub-login cookie with its XSRF token) may decide, never a token. Needs the "
                "approver scope of the request's kind."
            ),
            errors=(400, 403, 404, 409, 503),
            media_type="text/html",
        ),
    }

    async def _visible(self, request_id: str) -> ApprovalRequest:
        found = await self.call_store(self.settings["store"].get_request, request_id)
        if found is None or not can_view(self.user_name, self.user_scopes, found):
            raise web.HTTPError(404, NOT_FOUND_MESSAGE)
        return found

    async def _render(self, request: ApprovalRequest, message: str = "") -> str:
        try:
            check_decision(self.user_name, self.user_scopes, request)
            may_decide = True
        except PolicyDenied:
            may_decide = False
        now, comparison = await asyncio.gather(self._now(request, may_decide), self._compare(request))
        token = self.xsrf_token
        xsrf = token.decode() if isinstance(token, bytes) else str(token)
        prefix = self.settings["service_prefix"]
        may_change = self._may_change(request)
        # the thresholds are the policy's data, which weighs them for production only
        policy_data = self.settings["policies"].data["hubforge"]
        thresholds = policy_data.get("thresholds") if request.stage == "production" else None
        return render_request(prefix, request, may_decide=may_decide, xsrf=xsrf, now=now, message=message,
                              may_change=may_change, comparison=comparison, thresholds=thresholds)  # fmt: skip

    async def _now(self, request: ApprovalRequest, may_decide: bool) -> PolicyResult | None:
        """The policy's word on the viewer approving a deploy request they may decide."""
        if not (may_decide and request.stage):
            return None
        return await judge(self.settings, "approve", request.to_json(), self.current_user, self.user_scopes)

    async def _compare(self, request: ApprovalRequest) -> Comparison | None:
        """A deploy request's evidence against what is in its stage; None for other kinds.

        Without an alias, what is in the stage is the newest deployed request of the model
        among those the viewer may see: the page tells nobody of requests hidden from them.
        """
        if not (request.stage and request.model and request.version):
            return None
        store, seen = self.settings["store"], visibility(self.user_name, self.user_scopes)

        async def deployed() -> list[ApprovalRequest]:
            found = await self.call_store(store.list_requests, seen, status="approved", kind=request.kind,
                                          model=request.model, limit=DEPLOYED_SCAN)  # fmt: skip
            return [r for r in found if r.deploy_status == "deployed"]

        return await compare(self.settings["evidence"], request, deployed)

    def _may_change(self, request: ApprovalRequest) -> bool:
        """Whether the viewer may roll back or promote the request's deployment: who decides its kind."""
        approver = APPROVER_SCOPES.get(request.kind)
        return bool(
            request.stage
            and self.settings.get("deployer") is not None
            and approver
            and has_scope(self.user_scopes, approver)
        )

    @needs_scope()
    async def get(self, request_id: str) -> None:
        """Render the request."""
        self.finish(await self._render(await self._visible(request_id)))

    @needs_scope(*APPROVER_SCOPES.values())
    async def post(self, request_id: str) -> None:
        """Take the decision the form sent, then show the request as it now stands."""
        action = self.get_body_argument("action", "")
        if action:
            await self._change(request_id, action)
            return
        decision = self.get_body_argument("decision", "")
        comment = self.get_body_argument("comment", "")
        if decision not in DECISIONS:
            raise web.HTTPError(400, "field 'decision' must be one of approve, reject")
        if len(comment) > 2000 or "\x00" in comment:
            raise web.HTTPError(400, "field 'comment' must be at most 2000 characters, without NUL")
        decided = await decide_request(self, request_id, decision, comment)
        self.finish(await self._render(decided, message=f"You {decided.status} this request."))

    async def _change(self, request_id: str, action: str) -> None:
        """Roll back or promote the request's deployment, in the person's browser session."""
        if action not in ("rollback", "promote"):
            raise web.HTTPError(400, "field 'action' must be one of rollback, promote")
        if getattr(self, "_token_authenticated", False):
            raise web.HTTPError(403, TOKEN_DECISION)
        request = await self._visible(request_id)
        deployer = self.settings.get("deployer")
        if deployer is None or not self._may_change(request):
            raise web.HTTPError(403, f"changing a {request.kind} deployment needs {APPROVER_SCOPES[request.kind]}")
        client = self.request.remote_ip or ""
        try:
            await deployer.change(request, action, self.user_name, client)
        except Refusal as exc:
            raise self.refused(exc) from None
        self.log.info("%s: %s of request %s (%s version %s)", self.user_name, action, request.id, request.model,
                      request.version)  # fmt: skip
        done = "rolled back" if action == "rollback" else "promoted"
        fresh = await self._visible(request_id)
        self.finish(await self._render(fresh, message=f"You {done} this deployment."))
