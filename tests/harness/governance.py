"""The governance service, served for real on a free port, behind a fake hub API on another.

The service runs once on SQLite and once on the local PostgreSQL (the
``backend_store`` fixture). The hub is the tests' one fake hub (:mod:`harness.hub`)
with the users of ``USERS`` (403 for other tokens), so HubOAuth runs unpatched:
faked at the transport, not in its internals. The service runs on an asyncio loop in
a background thread (``LoopThread``); tests call it with plain synchronous httpx
clients (``Running.client``). The fixtures ``backend_store`` and
``running`` are module-scoped: each module that uses them gets a service of its own
(tests/integration/conftest.py registers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from jupyterhub.httpclient import JupyterHubHTTPClient
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from harness.hub import FakeHub
from harness.platform import pg_databases
from hubforge.config import load_config
from hubforge.events.spool import EventSpool
from hubforge.hub.governance.app import MAX_BODY_SIZE, make_app, make_hub_auth
from hubforge.hub.governance.audit import AuditLog, load_signing_key
from hubforge.hub.governance.evidence import Evidence
from hubforge.hub.governance.snapshots import Snapshot, SnapshotFailed
from hubforge.hub.governance.store import GovernanceStore
from hubforge.personas import PERSONAS

PREFIX = "/services/governance/"
ACCESS = "access:services!service=governance"
COOKIE_SECRET = b"s" * 32
SERVICE_TOKEN = "service-secret"
T = TypeVar("T")


def hub_user(name: str, groups: list[str], admin: bool = False, scopes: tuple[str, ...] = ()) -> dict[str, Any]:
    """A user model as the hub's /hub/api/user returns it: persona scopes of the groups."""
    persona_scopes = [s for g in groups if g in PERSONAS for s in PERSONAS[g].custom_scopes]
    return {
        "kind": "user",
        "name": name,
        "groups": groups,
        "admin": admin,
        "scopes": [ACCESS, f"read:users:name!user={name}", *persona_scopes, *scopes],
    }


USERS: dict[str, dict[str, Any]] = {
    "alice-token": hub_user("alice", ["data-scientist"]),
    "bob-token": hub_user("bob", ["ml-engineer"]),
    "carol-token": hub_user("carol", ["ml-lead"]),
    "cathy-token": hub_user("cathy", ["ml-lead"]),
    "dan-token": hub_user("dan", ["data-steward"]),
    "erin-token": hub_user("erin", ["platform-admin"], admin=True),
    "ana-token": hub_user("ana", ["analyst"]),
    "max-token": hub_user("max", ["data-steward", "data-scientist", "not-a-persona-group"]),
    # a filter the service cannot resolve must not grant the approval
    "fran-token": {
        "kind": "user",
        "name": "fran",
        "groups": [],
        "scopes": [
            ACCESS,
            "custom:requests:submit",
            "custom:approve:production!group=other",
        ],
    },
    # a service's token: services record events through their own spools
    "robot-token": {"kind": "service", "name": "robot", "scopes": [ACCESS]},
    # the features service's token: its hubforge-features role checks anyone's data-access grants
    "features-token": {"kind": "service", "name": "features", "scopes": [ACCESS, "custom:grants:read"]},
    # a hub user the hub did not let into the service
    "mallory-token": {
        "kind": "user",
        "name": "mallory",
        "groups": [],
        "scopes": ["custom:audit:read"],
    },
}


class FixedEvidence:
    """The evidence source of the API tests: every model version has a complete card and
    the metrics in ``metrics`` unless ``cards`` says otherwise, and ``aliases`` (model, alias)
    -> version says what is deployed (the deploy policy's own tests read real MLflow)."""

    def __init__(self, metrics: dict[str, float] | None = None) -> None:
        self.metrics = metrics if metrics is not None else {"accuracy": 0.9}
        self.cards: dict[tuple[str, str], Evidence] = {}
        self.aliases: dict[tuple[str, str], str] = {}

    def evidence(self, model: str, version: str) -> Evidence:
        default = Evidence(available=True, card_present=True, completeness=1.0, risk="low", metrics=self.metrics)
        return self.cards.get((model, version), default)

    def alias_version(self, model: str, alias: str) -> str | None:
        return self.aliases.get((model, alias))


class FixedSnapshots:
    """The approved-copy source of the API tests: a digest per model version, no files (the
    real copies are taken from MLflow in test_deploy_evidence); ``failing`` names versions
    whose copy cannot be made."""

    def __init__(self) -> None:
        self.failing: set[tuple[str, str]] = set()

    def take(self, model: str, version: str) -> Snapshot:
        if (model, version) in self.failing:
            raise SnapshotFailed(f"cannot copy model {model!r} version {version} from MLflow: it is away")
        digest = "sha256:" + hashlib.sha256(f"{model}/{version}".encode()).hexdigest()
        return Snapshot(model, version, Path("/nonexistent"), digest)


def cookie_client(running: Running, token: str) -> httpx.Client:
    """A browser-like client holding the service's OAuth cookie for ``token`` (no token header)."""
    auth = running.app.settings["hub_auth"]
    value = web.create_signed_value(COOKIE_SECRET, auth.cookie_name, token).decode()
    client = running.client()
    client.cookies.set(auth.cookie_name, value, path=PREFIX)
    return client


class LoopThread:
    """An asyncio loop in a daemon thread, for servers that synchronous tests call over HTTP."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def serve(app: web.Application) -> tuple[HTTPServer, int]:
    """Serve ``app`` on a free loopback port."""
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app, max_body_size=MAX_BODY_SIZE)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


@dataclass
class Running:
    """The running service and fake hub."""

    url: str
    hub: FakeHub
    app: web.Application
    loop: LoopThread
    audit: EventSpool
    trail: AuditLog | None = None
    servers: list[HTTPServer] = field(default_factory=list)

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url + PREFIX, headers=headers, timeout=10, **kwargs)

    @property
    def hub_calls(self) -> list[str]:
        """Every token the service asked the hub about, in order."""
        return self.hub.calls

    def hub_env(self) -> dict[str, str]:
        return {
            "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN,
            "JUPYTERHUB_API_URL": self.hub.api_url,
            "JUPYTERHUB_CLIENT_ID": "service-governance",
            "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
            "JUPYTERHUB_SERVICE_NAME": "governance",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": PREFIX + "oauth_callback",
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([ACCESS]),
        }

    def decide(
        self, token: str, request_id: str, decision: str = "approve", comment: str | None = None
    ) -> httpx.Response:
        """Decide as a person does: in a browser session of ``token``'s user (cookie + XSRF)."""
        body = {"decision": decision, **({"comment": comment} if comment is not None else {})}
        with cookie_client(self, token) as c:
            c.get("requests", headers={"Sec-Fetch-Mode": "navigate"})  # a page view sets _xsrf
            xsrf = c.cookies.get("_xsrf") or ""
            return c.post(f"api/requests/{request_id}/decision", json=body, headers={"X-XSRFToken": xsrf})

    def serve_app(self, app: web.Application) -> str:
        """Serve another app on the same loop; its base URL."""
        server, port = self.loop.run(serve(app))
        self.servers.append(server)
        return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GovernanceStore]:
    """A migrated store on each backend: PostgreSQL refuses text (NUL) that SQLite keeps."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('gov') / 'governance.sqlite'}"
        else:
            url = stack.enter_context(pg_databases("governance"))["governance"]
        store = GovernanceStore(url)
        store.upgrade()
        stack.callback(store.dispose)
        yield store


@contextlib.contextmanager
def serving_governance(store: GovernanceStore, tmp: Path) -> Iterator[Running]:
    """The governance service on ``store`` behind a fake hub of :data:`USERS`, in a loop thread."""
    for folder in ("events", "key"):
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    loop = LoopThread()
    hub = FakeHub(USERS, SERVICE_TOKEN).start()
    audit = EventSpool(tmp / "events" / "governance", "governance")
    key = load_signing_key(tmp / "key" / "audit-signing-key.pem", create=True)
    trail = AuditLog(store, key)
    running = Running(url="", hub=hub, app=None, loop=loop, audit=audit, trail=trail)  # type: ignore[arg-type]
    running.app = make_app(
        store,
        PREFIX,
        hub_auth=make_hub_auth(PREFIX, environ=running.hub_env()),
        group_personas=load_config(environ={}).group_personas(),
        cookie_secret=COOKIE_SECRET,
        audit=audit,
        trail=trail,
        evidence=FixedEvidence(),
        snapshots=FixedSnapshots(),
    )
    running.url = running.serve_app(running.app)
    try:
        yield running
    finally:
        for server in running.servers:
            server.stop()
        hub.shutdown()
        hub.server_close()
        audit.close()
        # HubOAuth's aiohttp session belongs to this loop: close it here, not at exit.
        loop.run(close_hub_http_client())
        loop.stop()


@pytest.fixture(scope="module")
def running(backend_store: GovernanceStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with serving_governance(backend_store, tmp_path_factory.mktemp("governance")) as running:
        yield running


async def close_hub_http_client() -> None:
    await JupyterHubHTTPClient.loop_instance().close()
