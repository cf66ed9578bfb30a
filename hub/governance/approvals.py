"""The approval requests API: submit, list, read, pre-check the deploy policy, decide.

Notebook code can request but never decide. People's servers and kernels hold a hub
token with ``custom:requests:submit`` and without any approver scope; and a decision is
taken only in a browser session of the person (the service's hub-login cookie, with its
XSRF token), on the decision page (:mod:`.decision_pages`) or through this API from it.
A token-authenticated decision is refused whatever the token holds. Deploy requests are
judged by the Rego deploy policy (:mod:`.rego`) when submitted (its word is kept with the
request, for the approver) and again when approved (a denial refuses the approval). Every
submission, decision and policy result goes to the audit trail.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

from jupyterhub.utils import url_path_join
from tornado import web

from hubforge.errors import HubforgeError, Invalid, Refusal

from . import events
from .api import APIHandler
from .auth import needs_scope
from .deploy_policy import policy_input, submission
from .evidence import Evidence, EvidenceSource, unavailable
from .model import KINDS, STATUSES, ApprovalRequest
from .openapi import Operation
from .policy import (
    APPROVER_SCOPES,
    NOT_FOUND_MESSAGE,
    SUBMIT_SCOPE,
    PolicyDenied,
    can_view,
    check_decision,
    visibility,
)
from .rego import DEPLOY_PACKAGE, PolicyEngine, PolicyResult
from .schemas import (
    APPROVAL_REQUEST,
    DECISION_BODY,
    DEPLOY_REQUEST_BODY,
    MODEL_NAME,
    NEW_REQUEST_BODY,
    POLICY_RESULT,
)
from .snapshots import SnapshotSource

__all__ = [
    "ApprovalRequestHandler",
    "ApprovalRequestsHandler",
    "DecisionHandler",
    "DeployPolicyHandler",
    "decide_request",
    "judge",
]

_LIST = {"type": "array", "items": APPROVAL_REQUEST}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Requests per page of the list, unless ``limit`` says otherwise.
PAGE_SIZE = 100
#: Why a token may not decide (the person decides in their browser).
TOKEN_DECISION = (
    "decisions are made by a person on the governance service's decision page "
    "(a hub login in the browser), never with a token: notebook code cannot decide"
)


#: A listing's position: the created time (microseconds since 1970, UTC) and id of the last
#: request of the previous page. Any such pair is a position, so any match is accepted.
CURSOR = {
    "type": "string",
    "pattern": r"^[0-9]{1,17}\.[A-Za-z0-9_-]{1,32}$",
    "description": "The previous page's X-Next-Cursor.",
}
_CURSOR = re.compile(CURSOR["pattern"])


def encode_cursor(request: ApprovalRequest) -> str:
    """The cursor that continues a listing after ``request``."""
    micros = (request.created - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{request.id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created, id) from a cursor; Invalid when it is not one."""
    if not _CURSOR.fullmatch(cursor):
        raise Invalid("query parameter 'cursor' must be <microseconds>.<request id>, as X-Next-Cursor gives it")
    micros, request_id = cursor.split(".", 1)
    return EPOCH + timedelta(microseconds=int(micros)), request_id


async def read_evidence(source: EvidenceSource, model: str, version: str) -> Evidence:
    """The evidence of a model version, read in a worker thread; a failure is unavailability."""
    try:
        return await asyncio.to_thread(source.evidence, model, version)
    except HubforgeError as exc:
        return unavailable(str(exc))


async def judge(
    settings: Mapping[str, Any],
    action: str,
    request: Mapping[str, Any],
    actor: Mapping[str, Any],
    scopes: frozenset[str],
) -> PolicyResult:
    """The deploy policy's word on ``action`` (submit, approve) of ``request`` by ``actor``."""
    engine: PolicyEngine = settings["policies"]
    evidence = await read_evidence(settings["evidence"], str(request["model"]), str(request["version"]))
    return await engine.decide(DEPLOY_PACKAGE, policy_input(action, request, actor, scopes, evidence))


class ApprovalRequestsHandler(APIHandler):
    """The approval requests collection."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "List the approval requests the caller may see, newest first",
            {200: _LIST},
            description=(
                "One's own requests; every request of the kinds one approves; all with custom:audit:read. "
                "A page holds at most `limit`; when more follow, the `Link` header names the next page "
                '(rel="next") and `X-Next-Cursor` its cursor.'
            ),
            query={
                "status": {"type": "string", "enum": list(STATUSES)},
                "kind": {"type": "string", "enum": list(KINDS)},
                "model": MODEL_NAME,
                "limit": {"type": "integer", "minimum": 1, "maximum": 500},
                "cursor": CURSOR,
            },
            errors=(400, 503),
        ),
        "post": Operation(
            "Submit an approval request",
            {201: APPROVAL_REQUEST},
            request=NEW_REQUEST_BODY,
            description=(
                "Deploy requests name model and version; the deploy policy's pre-check is kept in "
                "`policy` for the approver (a denial does not stop the submission)."
            ),
            errors=(503,),
        ),
    }

    def _listing(self) -> dict[str, Any]:
        limit_text = self.get_query_argument("limit", None)
        valid = limit_text is None or (limit_text.isascii() and limit_text.isdigit() and 1 <= int(limit_text) <= 500)
        if not valid:
            raise web.HTTPError(400, "query parameter 'limit' must be a whole number from 1 to 500")
        model = self.get_query_argument("model", None)
        if model is not None and (not model or len(model) > 256):
            raise web.HTTPError(400, "query parameter 'model' must be 1 to 256 characters")
        cursor = self.get_query_argument("cursor", None)
        try:
            after = decode_cursor(cursor) if cursor is not None else None
        except Invalid as exc:
            raise web.HTTPError(400, "%s", exc) from None
        return {
            "status": self.query_choice("status", STATUSES),
            "kind": self.query_choice("kind", KINDS),
            "model": model,
            "limit": int(limit_text) if limit_text else PAGE_SIZE,
            "after": after,
        }

    @needs_scope()
    async def get(self) -> None:
        """List a page of the visible requests."""
        listing = self._listing()
        limit = listing.pop("limit")
        visible = visibility(self.user_name, self.user_scopes)
        found = await self.call_store(self.store.list_requests, visible, limit=limit + 1, **listing)
        if len(found) > limit:
            found = found[:limit]
            cursor = encode_cursor(found[-1])
            self.set_header("X-Next-Cursor", cursor)
            args = {k: v for k in ("status", "kind", "model") if (v := self.get_query_argument(k, None))}
            query = urlencode({**args, "limit": str(limit), "cursor": cursor})
            self.set_header("Link", f'<{self.request.path}?{query}>; rel="next"')
        self.write_json([r.to_json() for r in found])

    @needs_scope(SUBMIT_SCOPE)
    async def post(self) -> None:
        """Create a pending request by the caller, with the deploy policy's pre-check."""
        try:
            new = submission(self.json_body())
        except Invalid as exc:
            raise web.HTTPError(400, "%s", exc) from None
        result = None
        if new.stage:
            proposed = {**new.store_fields(), "requester": self.user_name}
            result = await judge(self.settings, "submit", proposed, self.current_user, self.user_scopes)
        created = await self.call_store(
            self.store.create_request,
            requester=self.user_name,
            policy=result.to_json() if result else None,
            **new.store_fields(),
        )
        audit, client = self.settings.get("audit"), self.request.remote_ip or ""
        events.submitted(audit, created, client)
        if (webhook := self.settings.get("webhook")) is not None:
            webhook.request_event("request.submitted", created)
        if result is not None:
            events.evaluated(audit, self.user_name, created, result, "submit", client)
        self.log.info("%s submitted %s request %s for %r", self.user_name, created.kind, created.id, created.target)
        self.set_header("Location", url_path_join(self.settings["service_prefix"], "api/requests", created.id))
        self.write_json(created.to_json(), status=201)


class ApprovalRequestHandler(APIHandler):
    """One approval request."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "One approval request",
            {200: APPROVAL_REQUEST},
            description="A request the caller may not see answers 404, exactly as a missing one.",
            errors=(404, 503),
        )
    }

    @needs_scope()
    async def get(self, request_id: str) -> None:
        """Answer the request if the caller may see it, else 404."""
        found = await self.call_store(self.store.get_request, request_id)
        if found is None or not can_view(self.user_name, self.user_scopes, found):
            raise web.HTTPError(404, NOT_FOUND_MESSAGE)
        self.write_json(found.to_json())


class DeployPolicyHandler(APIHandler):
    """The deploy policy's pre-check of a request not yet submitted."""

    operations: ClassVar[dict[str, Operation]] = {
        "post": Operation(
            "Evaluate the deploy policy for a deploy request before submitting it",
            {200: POLICY_RESULT},
            request=DEPLOY_REQUEST_BODY,
            description="What an approver would be told now: the policy's decision and its reasons.",
            errors=(503,),
        )
    }

    @needs_scope(SUBMIT_SCOPE)
    async def post(self) -> None:
        """Answer the policy's result for the caller's proposed deploy request."""
        try:
            new = submission(self.json_body())
        except Invalid as exc:
            raise web.HTTPError(400, "%s", exc) from None
        proposed = {**new.store_fields(), "requester": self.user_name}
        result = await judge(self.settings, "submit", proposed, self.current_user, self.user_scopes)
        self.write_json(result.to_json())


async def approved_copy(handler: APIHandler, request: ApprovalRequest) -> str:
    """Take governance's copy of the request's model version; its digest (what the approval
    binds). When it cannot be taken the approval is not (503, saying why)."""
    source: SnapshotSource = handler.settings["snapshots"]
    try:
        snapshot = await asyncio.to_thread(source.take, str(request.model), str(request.version))
    except Refusal as exc:
        handler.log.error("No approved copy of %s version %s: %s", request.model, request.version, exc)
        raise web.HTTPError(503, "%s; the request stays pending", str(exc)) from None
    handler.log.info("Approved copy of %s version %s: %s", request.model, request.version, snapshot.digest)
    return snapshot.digest


async def decide_request(handler: APIHandler, request_id: str, decision: str, comment: str) -> ApprovalRequest:
    """Take the calling person's decision of a request: the whole check, the policy, the record.

    Shared by the API and the decision page. Raises ``web.HTTPError`` with the refusal.
    """
    if getattr(handler, "_token_authenticated", False):
        raise web.HTTPError(403, TOKEN_DECISION)
    found = await handler.call_store(handler.store.get_request, request_id)
    if found is None:
        raise web.HTTPError(404, NOT_FOUND_MESSAGE)
    audit, client = handler.settings.get("audit"), handler.request.remote_ip or ""
    digest = None
    try:
        check_decision(handler.user_name, handler.user_scopes, found)
        result = None
        if found.stage and decision == "approve":
            result = await judge(handler.settings, "approve", found.to_json(), handler.current_user,
                                 handler.user_scopes)  # fmt: skip
            events.evaluated(audit, handler.user_name, found, result, "approve", client)
            if not result.allow:
                raise PolicyDenied(403, "the deploy policy refuses: " + "; ".join(result.reasons))
            digest = await approved_copy(handler, found)
        decided = await handler.call_store(
            handler.store.decide,
            request_id,
            handler.user_name,
            decision,
            comment,
            record=lambda request: events.decided(audit, request, client),
            policy=result.to_json() if result else None,
            digest=digest,
        )
    except PolicyDenied as denied:  # the store's refusals came through call_store
        if denied.status != 404:  # one who may not see the request learns nothing, and it is no decision
            events.denied(audit, handler.user_name, found, denied.message, client)
        raise handler.refused(denied) from None
    handler.log.info("%s %s request %s (%s)", handler.user_name, decided.status, decided.id, decided.kind)
    if (webhook := handler.settings.get("webhook")) is not None:
        webhook.request_event("request.decided", decided)
    deployer = handler.settings.get("deployer")
    if deployer is not None and decided.stage and decided.status == "approved":
        deployer.start(decided)
    return decided


class DecisionHandler(APIHandler):
    """Approve or reject a request, from the person's browser session."""

    operations: ClassVar[dict[str, Operation]] = {
        "post": Operation(
            "Approve or reject a pending request (browser sessions only)",
            {200: APPROVAL_REQUEST},
            request=DECISION_BODY,
            description=(
                "Only in a browser session of the person (the hub-login cookie with its XSRF token): "
                "a token-authenticated call is refused (403) whatever the token holds. Needs the approver "
                "scope of the request's kind ("
                + "; ".join(f"{kind}: {scope}" for kind, scope in APPROVER_SCOPES.items())
                + "). Nobody decides their own request (403); approving a deployment needs the deploy "
                "policy's allow (403 with its reasons); a decided request cannot be decided again (409)."
            ),
            errors=(404, 409, 503),
        )
    }

    @needs_scope(*APPROVER_SCOPES.values())
    async def post(self, request_id: str) -> None:
        """Record the caller's decision."""
        body = self.json_body()
        decided = await decide_request(self, request_id, body["decision"], body.get("comment", ""))
        self.write_json(decided.to_json())
