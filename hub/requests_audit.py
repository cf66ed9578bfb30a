"""What the hub's own REST API and pages change, recorded after each request: logouts, and
who gained or lost a group (a persona, here) or admin.

JupyterHub emits no event for these, so the hub's request log hook (tornado's
``log_function``, which JupyterHub sets to its ``log_request``) is wrapped: after each
request it looks at the handler JupyterHub routed it to and the arguments JupyterHub
parsed (``path_args``; the body as ``get_json_body`` reads it), and at how the request
ended. The admin page uses the same API, so it is covered too. Refused and failed
requests are recorded (``denied``, ``failure``): an auditor asks who tried, too.

Access changes are security-critical: the handlers that make them are JupyterHub's own
classes with :class:`FailClosed` mixed in, routed ahead of JupyterHub's (through the
authenticator's handlers, :func:`access_handlers`), so that none is made while the
hub's audit spool cannot write.

Who is the authenticated user or service making the request; the person whose access
changed is ``target_user``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from jupyterhub.apihandlers.groups import GroupAPIHandler, GroupUsersAPIHandler
from jupyterhub.apihandlers.users import UserAPIHandler
from jupyterhub.handlers.login import LogoutHandler
from jupyterhub.log import log_request
from tornado import web

from hubforge.events.spool import open_spool

from .auth import LOGIN_SCHEMA

__all__ = ["ACCESS_SCHEMA", "FailClosed", "access_handlers", "audited_log_function", "observed"]

ACCESS_SCHEMA = "https://events.hubforge.dev/hub/access_change/v1"

Event = tuple[str, dict[str, Any]]


def _outcome(status: int) -> str:
    return "success" if status < 400 else ("denied" if status in (401, 403) else "failure")


def _actor(handler: Any) -> str:
    user = getattr(handler, "_jupyterhub_user", None)
    return str(getattr(user, "name", "") or "")


def _body(handler: Any) -> Any:
    try:
        return json.loads(handler.request.body.strip().decode("utf-8", "replace") or "null")
    except ValueError:
        return None


def _names(value: Any) -> list[str]:
    return [str(name) for name in value if isinstance(name, str)] if isinstance(value, list) else []


def _access(handler: Any, actor: str, action: str, resource: tuple[str, str], **fields: str) -> Event:
    origin = {"observer": "hub", "client_address": str(handler.request.remote_ip or "")}
    event = {"user": actor, "action": action, "resource": {"type": resource[0], "id": resource[1]},
             "outcome": _outcome(handler.get_status()), "origin": origin, **fields}  # fmt: skip
    return ACCESS_SCHEMA, event


def _group_changes(handler: Any, actor: str, method: str) -> Iterator[Event]:
    group = handler.path_args[0] if handler.path_args else ""
    body = _body(handler) if method == "POST" or isinstance(handler, GroupUsersAPIHandler) else None
    action = "group_added" if method == "POST" else "group_removed"
    users = _names(body.get("users")) if isinstance(body, dict) else []
    for user in users:
        yield _access(handler, actor, action, ("group", group), target_user=user, group=group)
    if not users and method == "DELETE" and isinstance(handler, GroupAPIHandler):
        yield _access(handler, actor, "group_removed", ("group", group), group=group)  # the group itself


def _admin_change(handler: Any, actor: str) -> Iterator[Event]:
    body = _body(handler)
    if isinstance(body, dict) and isinstance(body.get("admin"), bool):
        target = handler.path_args[0] if handler.path_args else ""
        action = "role_granted" if body["admin"] else "role_revoked"
        yield _access(handler, actor, action, ("user", target), target_user=target, role="admin")


def observed(handler: Any) -> list[Event]:
    """The audit events of a finished request (its handler), if it changed anyone's access or
    logged someone out."""
    method = handler.request.method
    actor = _actor(handler)
    if isinstance(handler, LogoutHandler):
        actor = getattr(handler, "logged_out", "")  # JupyterHub forgets the user before this
        if not actor:
            return []  # nobody was logged in
        origin = {"observer": "hub", "client_address": str(handler.request.remote_ip or "")}
        return [(LOGIN_SCHEMA, {"user": actor, "action": "logout", "resource": {"type": "user", "id": actor},
                                "outcome": _outcome(handler.get_status()), "origin": origin})]  # fmt: skip
    if isinstance(handler, GroupUsersAPIHandler) and method in ("POST", "DELETE"):
        return list(_group_changes(handler, actor, method))
    if isinstance(handler, GroupAPIHandler) and method in ("POST", "DELETE"):
        return list(_group_changes(handler, actor, method))
    if isinstance(handler, UserAPIHandler) and method in ("POST", "PATCH"):
        return list(_admin_change(handler, actor))
    return []


class FailClosed:
    """Mixed into the hub's handlers that change someone's access (groups, admin): a change is
    refused (503) while the hub's audit spool cannot write, so that no access changes while
    the trail cannot record it. The spool is the authenticator's ``audit_spool_dir``."""

    async def prepare(self) -> None:
        """JupyterHub's prepare, then the audit spool's health for a change."""
        await super().prepare()  # type: ignore[misc]
        handler: Any = self
        if handler.request.method in ("GET", "HEAD", "OPTIONS"):
            return
        folder = getattr(handler.authenticator, "audit_spool_dir", "")
        spool = open_spool(folder, "hub") if folder else None
        if folder and (spool is None or not spool.writable()):
            handler.log.error("Access change refused: the audit trail cannot record it (%s)",
                              spool.failure if spool is not None else "no spool")  # fmt: skip
            raise web.HTTPError(503, "the audit trail cannot record this now, so it was not done; try again later")


def access_handlers() -> list[tuple[str, type]]:
    """JupyterHub's handlers that change access, failing closed (:class:`FailClosed`), at their
    own routes: handlers an authenticator adds come before JupyterHub's, so these answer."""
    routes = [(r"/api/groups/([^/]+)/users", GroupUsersAPIHandler), (r"/api/groups/([^/]+)", GroupAPIHandler),
              (r"/api/users/([^/]+)", UserAPIHandler)]  # fmt: skip
    return [(path, type(f"Audited{cls.__name__}", (FailClosed, cls), {})) for path, cls in routes]


def audited_log_function(spool_dir: str) -> Callable[[Any], None]:
    """JupyterHub's request log, then the request's audit events into the hub's spool."""

    def log_function(handler: Any) -> None:
        log_request(handler)
        try:
            events = observed(handler)
        except Exception:  # the audit must never break the hub's request handling
            handler.log.warning("hubforge: a request was not recorded in the audit trail", exc_info=True)
            return
        spool = open_spool(spool_dir, "hub") if events else None
        for schema, event in events:
            if spool is not None:
                spool.emit(schema, event)

    return log_function
