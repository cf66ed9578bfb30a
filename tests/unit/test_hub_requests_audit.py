"""The hub's requests that change someone's access, or log someone out, become audit events.

Each case is a finished request as JupyterHub's own handler classes hold it (the routed
handler, its parsed path arguments, the body, the status it ended with), mapped by
:func:`observed` without a running hub; the platform tests drive the real hub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.apihandlers.groups import GroupAPIHandler, GroupUsersAPIHandler
from jupyterhub.apihandlers.users import UserAPIHandler, UserServerAPIHandler
from jupyterhub.handlers.login import LogoutHandler
from tornado import web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from hubforge.events.spool import open_spool
from hubforge.hub.auth import AuditedLogout, audited_logout
from hubforge.hub.requests_audit import ACCESS_SCHEMA, FailClosed, access_handlers, observed


def finished(cls: type, method: str, args: tuple[str, ...] = (), body: Any = None, status: int = 200,
             actor: str | None = "erin") -> Any:  # fmt: skip
    handler = object.__new__(cls)
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    line = RequestStartLine(method, "/hub/api/x", "HTTP/1.1")
    headers = HTTPHeaders({"Host": "hub.example.org"})
    handler.request = HTTPServerRequest(start_line=line, headers=headers, body=raw)
    handler.request.remote_ip = "10.0.0.7"
    handler.path_args = list(args)
    handler._status_code = status
    handler._jupyterhub_user = SimpleNamespace(name=actor) if actor else None
    return handler


def test_users_added_to_a_group_are_each_recorded_with_who_added_them() -> None:
    events = observed(finished(GroupUsersAPIHandler, "POST", ("ml-lead",), {"users": ["alice", "bob"]}))
    assert [e[0] for e in events] == [ACCESS_SCHEMA, ACCESS_SCHEMA]
    first = events[0][1]
    assert (first["user"], first["action"], first["target_user"], first["group"]) == (
        "erin",
        "group_added",
        "alice",
        "ml-lead",
    )
    assert first["resource"] == {"type": "group", "id": "ml-lead"} and first["outcome"] == "success"
    assert first["origin"] == {"observer": "hub", "client_address": "10.0.0.7"}
    assert events[1][1]["target_user"] == "bob"


def test_removals_refusals_and_failures_are_recorded_as_they_ended() -> None:
    (removed,) = observed(finished(GroupUsersAPIHandler, "DELETE", ("admins",), {"users": ["carol"]}, status=403,
                                   actor="alice"))  # fmt: skip
    assert (removed[1]["user"], removed[1]["action"], removed[1]["outcome"]) == ("alice", "group_removed", "denied")
    (failed,) = observed(finished(GroupUsersAPIHandler, "POST", ("nope",), {"users": ["carol"]}, status=404))
    assert failed[1]["outcome"] == "failure"


def test_a_group_made_with_members_and_a_group_deleted_are_recorded() -> None:
    made = observed(finished(GroupAPIHandler, "POST", ("stewards",), {"users": ["dan"]}, status=201))
    assert [(e[1]["action"], e[1]["target_user"]) for e in made] == [("group_added", "dan")]
    (deleted,) = observed(finished(GroupAPIHandler, "DELETE", ("stewards",), status=204))
    assert (deleted[1]["action"], deleted[1]["resource"]["id"]) == ("group_removed", "stewards")
    assert "target_user" not in deleted[1]


@pytest.mark.parametrize(("admin", "action"), [(True, "role_granted"), (False, "role_revoked")])
def test_admin_granted_or_revoked_is_a_role_change(admin: bool, action: str) -> None:
    (event,) = observed(finished(UserAPIHandler, "PATCH", ("bob",), {"admin": admin}))
    assert (event[1]["action"], event[1]["target_user"], event[1]["role"]) == (action, "bob", "admin")


def test_requests_that_change_no_access_are_not_recorded() -> None:
    assert observed(finished(UserAPIHandler, "PATCH", ("bob",), {"name": "robert"})) == []
    assert observed(finished(UserAPIHandler, "PATCH", ("bob",), b"{not json")) == []
    assert observed(finished(UserServerAPIHandler, "POST", ("bob", ""), {"profile": "interactive"})) == []
    assert observed(finished(GroupUsersAPIHandler, "POST", ("g",), {"users": "alice"})) == [], "not a list"


def test_a_logout_is_recorded_for_whoever_was_logged_in() -> None:
    handler = finished(audited_logout([])[0][1], "GET", actor=None, status=302)
    handler.logged_out = "alice"  # noted by AuditedLogout.handle_logout: JupyterHub forgets the user
    (event,) = observed(handler)
    assert event[0].endswith("/hub/authentication/v1")
    assert (event[1]["user"], event[1]["action"], event[1]["outcome"]) == ("alice", "logout", "success")
    assert observed(finished(LogoutHandler, "GET", actor=None)) == []


def test_the_authenticators_logout_handler_notes_who_logs_out() -> None:
    class OwnLogout(LogoutHandler):
        pass

    (path, handler), *_ = audited_logout([("/logout", OwnLogout)])
    assert path == "/logout" and issubclass(handler, OwnLogout) and issubclass(handler, AuditedLogout)
    (added,) = audited_logout([("/login", object)])[1:]
    assert added[0] == "/logout" and issubclass(added[1], LogoutHandler) and issubclass(added[1], AuditedLogout)


class Prepared:
    """JupyterHub's handler prepare, done: the request is authenticated."""

    async def prepare(self) -> None:
        self.prepared = True


def fail_closed(method: str, spool_dir: str) -> Any:
    handler = object.__new__(type("H", (FailClosed, Prepared), {}))
    handler.request = SimpleNamespace(method=method)
    handler.authenticator = SimpleNamespace(audit_spool_dir=spool_dir)
    handler.log = logging.getLogger("test")
    return handler


def test_no_access_changes_while_the_audit_spool_cannot_write(tmp_path: Path) -> None:
    folder = str(tmp_path / "hub")
    asyncio.run(fail_closed("POST", folder).prepare())  # writable: the change goes ahead
    spool = open_spool(folder, "hub")
    assert spool is not None
    spool.failure = OSError(28, "No space left on device")  # what the writer sets when the disk is full
    try:
        with pytest.raises(web.HTTPError) as refused:
            asyncio.run(fail_closed("DELETE", folder).prepare())
        assert refused.value.status_code == 503
        asyncio.run(fail_closed("GET", folder).prepare())  # reading changes nothing: allowed
    finally:
        spool.failure = None


def test_the_access_handlers_are_jupyterhubs_own_failing_closed() -> None:
    routes = dict(access_handlers())
    assert issubclass(routes[r"/api/groups/([^/]+)/users"], GroupUsersAPIHandler)
    assert issubclass(routes[r"/api/groups/([^/]+)"], GroupAPIHandler)
    assert issubclass(routes[r"/api/users/([^/]+)"], UserAPIHandler)
    assert all(issubclass(cls, FailClosed) for cls in routes.values())


def test_jupyterhub_routes_access_changes_and_logouts_to_the_audited_handlers(tmp_path: Path) -> None:
    from jupyterhub.app import JupyterHub

    from hubforge.hub.auth import DemoAuthenticator

    hub = JupyterHub()
    hub.authenticator = DemoAuthenticator(audit_spool_dir=str(tmp_path / "hub"))
    hub.init_handlers()  # JupyterHub's own routing: the authenticator's handlers, then its own

    def routed(path: str) -> type:
        return next(cls for pattern, cls, *_ in hub.handlers if re.fullmatch(pattern, path))

    for path in ("/hub/api/groups/g/users", "/hub/api/groups/g", "/hub/api/users/bob"):
        assert issubclass(routed(path), FailClosed), path
    assert issubclass(routed("/hub/logout"), AuditedLogout)
    assert routed("/hub/api/users/bob/server") is UserServerAPIHandler, "nothing else is taken over"
