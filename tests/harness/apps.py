"""The apps service, served for real on a free port behind the tests' fake hub.

The store runs on SQLite and on the local PostgreSQL (``apps_store``); the hub is
:class:`harness.hub.FakeHub` with the users of :data:`USERS`, whose groups it also
answers to the service's own token (what the service asks to decide who sees an app).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from tornado import web

from harness.governance import LoopThread, close_hub_http_client, hub_user, serve
from harness.hub import FakeHub
from harness.platform import pg_databases
from hubforge.events.spool import EventSpool, read_spool
from hubforge.hub.apps.app import make_app
from hubforge.hub.apps.store import AppStore
from hubforge.hub.service_app import make_hub_oauth

PREFIX = "/services/apps/"
ACCESS = "access:services!service=apps"
SERVICE_TOKEN = "apps-service-secret"
COOKIE_SECRET = b"a" * 32


def _user(name: str, groups: list[str], admin: bool = False) -> dict[str, Any]:
    model = hub_user(name, groups, admin=admin)
    model["scopes"] = [ACCESS, *model["scopes"][1:]]
    return model


USERS: dict[str, dict[str, Any]] = {
    "alice-token": _user("alice", ["data-scientist"]),
    "bob-token": _user("bob", ["ml-engineer"]),
    "frank-token": _user("frank", ["analyst"]),
    "gina-token": _user("gina", ["analyst"]),
    "erin-token": _user("erin", ["platform-admin"], admin=True),
    "mallory-token": {"kind": "user", "name": "mallory", "groups": [], "scopes": []},
}


def notebook(
    title: str = "Churn by region", params: str = "region = 'eu'\nthreshold = 0.5", kernel: str | None = "python3"
) -> dict[str, Any]:
    """A small notebook as JupyterLab saves it: a heading, a parameters cell, a chart-less cell."""
    nb = nbformat.v4.new_notebook()
    if kernel is not None:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\nShows churn."),
        nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(region, threshold)"),
    ]
    return json.loads(nbformat.writes(nb))


@dataclass
class RunningApps:
    url: str
    hub: FakeHub
    app: web.Application
    store: AppStore
    audit: EventSpool

    def events(self, **match: Any) -> list[dict[str, Any]]:
        """The apps service's audit events so far whose fields equal ``match``."""
        self.audit.flush()
        return [e for e in read_spool(self.audit.directory) if all(e.get(k) == v for k, v in match.items())]

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url + PREFIX, headers=headers, timeout=30, **kwargs)

    def hub_env(self) -> dict[str, str]:
        return {
            "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN,
            "JUPYTERHUB_API_URL": self.hub.api_url,
            "JUPYTERHUB_CLIENT_ID": "service-apps",
            "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
            "JUPYTERHUB_SERVICE_NAME": "apps",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": PREFIX + "oauth_callback",
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([ACCESS]),
        }


@contextlib.contextmanager
def serving_apps(db_url: str, root: Path) -> Iterator[RunningApps]:
    """The apps service on ``db_url`` (files under ``root``) behind a fake hub of :data:`USERS`."""
    loop = LoopThread()
    hub = FakeHub(USERS, SERVICE_TOKEN).start()
    for model in USERS.values():
        hub.groups[model["name"]] = list(model.get("groups") or [])
    store = AppStore(db_url, root)
    audit = EventSpool(root.with_name(root.name + "-events"), "apps")
    running = RunningApps("", hub, None, store, audit)  # type: ignore[arg-type]
    running.app = make_app(
        store,
        PREFIX,
        hub_auth=make_hub_oauth("apps", PREFIX, running.hub_env()),
        kernels=["python3"],
        cookie_secret=COOKIE_SECRET,
        audit=audit,
    )
    server, port = loop.run(serve(running.app))
    running.url = f"http://127.0.0.1:{port}"
    try:
        yield running
    finally:
        server.stop()
        hub.shutdown()
        hub.server_close()
        store.dispose()
        audit.close()
        loop.run(close_hub_http_client())
        loop.stop()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def running_apps(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApps]:
    """The apps service on each backend, one per test module."""
    tmp = tmp_path_factory.mktemp("apps")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp / 'apps.sqlite'}"
        else:
            url = stack.enter_context(pg_databases("apps"))["apps"]
            url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
        yield stack.enter_context(serving_apps(url, tmp / "files"))
