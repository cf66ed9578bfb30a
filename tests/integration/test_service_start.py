"""The hub's managed services started together, each waited for as JupyterHub 6 waits
(:mod:`hubforge.hub.service_start`), against real HTTP servers on free ports; and PKCE only
where the hub's HubOAuth offers it (:mod:`hubforge.hub.compat`).
``tests/platform/test_chart_hub.py`` runs the whole platform on JupyterHub 5.5.
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub import orm
from jupyterhub.services.auth import HubOAuth

from harness.platform import free_port
from hubforge.hub import compat, service_start


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def answering_once(started: threading.Event, port: int, delay: float) -> Iterator[None]:
    """An HTTP server on ``port`` that answers ``delay`` seconds after ``started`` is set."""
    servers: list[http.server.HTTPServer] = []

    def serve() -> None:
        if not started.wait(60):
            return
        time.sleep(delay)
        server = http.server.HTTPServer(("127.0.0.1", port), _Quiet)
        servers.append(server)
        server.serve_forever(poll_interval=0.05)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield
    finally:
        started.set()
        for server in servers:
            server.shutdown()
            server.server_close()


class Service:
    """A managed service as the hub's ``start_service`` sees it: its server, process and start."""

    def __init__(self, name: str, port: int, events: list[str], status: int | None = None) -> None:
        self.name, self.events, self.status = name, events, status
        self.managed, self.url, self.timeout = True, f"http://127.0.0.1:{port}", None
        server = orm.Server(proto="http", ip="127.0.0.1", port=port, base_url=f"/services/{name}/", cookie_name=name)
        self.orm = SimpleNamespace(server=server)
        self.spawner = SimpleNamespace(poll=self.poll)
        self.started = threading.Event()

    async def start(self) -> None:
        self.events.append(f"start {self.name}")
        self.started.set()

    async def poll(self) -> int | None:
        return self.status


@pytest.fixture
def app(caplog: pytest.LogCaptureFixture) -> SimpleNamespace:
    caplog.set_level(logging.INFO, "service-start-test")
    no_ssl = {"internal_ssl_key": None, "internal_ssl_cert": None, "internal_ssl_ca": None}
    return SimpleNamespace(log=logging.getLogger("service-start-test"), _service_map={}, **no_ssl)


async def hub_loop(app: Any, start_service: Any, events: list[str] | None = None) -> dict[str, bool]:
    """What JupyterHub's ``start()`` does with its services: each in turn, awaited."""
    answered = {}
    for name, service in app._service_map.items():
        answered[name] = await start_service(app, name, service)
        (events if events is not None else []).append(f"answered {name}")
    return answered


async def own_start(app: Any, name: str, service: Any, ssl_context: Any = None) -> bool:
    app.log.info("the hub's own start_service for %s", name)
    return True


def test_the_services_start_together_and_each_is_waited_for(app: SimpleNamespace) -> None:
    events: list[str] = []
    services = [Service(name, free_port(), events) for name in ("governance", "mlflow", "features")]
    app._service_map = {service.name: service for service in services}
    with ExitStack() as stack:
        for service in services:
            stack.enter_context(answering_once(service.started, int(service.url.rsplit(":", 1)[1]), 1.5))
        together = service_start._together(own_start, timeout=30)
        answered = asyncio.run(hub_loop(app, together, events))
    assert answered == {"governance": True, "mlflow": True, "features": True}
    # One after the other, each would start only once the one before had answered.
    starts = ["start governance", "start mlflow", "start features"]
    assert events == [*starts, "answered governance", "answered mlflow", "answered features"]


def test_a_service_whose_process_ended_is_given_up_at_once(app: SimpleNamespace, caplog) -> None:
    gone = Service("gone", free_port(), [], status=3)
    app._service_map = {"gone": gone}
    started = time.monotonic()
    assert asyncio.run(hub_loop(app, service_start._together(own_start, timeout=60))) == {"gone": False}
    assert time.monotonic() - started < 10
    assert "Service gone exited with status 3" in caplog.text


def test_a_service_that_never_answers_is_given_up_when_its_time_is_out(app: SimpleNamespace, caplog) -> None:
    mute = Service("mute", free_port(), [])
    mute.timeout = 2  # the field, where the hub knows it, before the default
    app._service_map = {"mute": mute}
    assert asyncio.run(hub_loop(app, service_start._together(own_start, timeout=60))) == {"mute": False}
    assert "Service mute did not answer within 2s" in caplog.text


def test_external_services_go_through_the_hubs_own_start(app: SimpleNamespace, caplog) -> None:
    external = Service("external", free_port(), [])
    external.managed = False
    app._service_map = {"external": external}
    assert asyncio.run(hub_loop(app, service_start._together(own_start, timeout=60))) == {"external": True}
    assert "the hub's own start_service for external" in caplog.text and not external.events


def test_pkce_is_used_where_the_hub_offers_it() -> None:
    auth = HubOAuth(api_token="x" * 32, api_url="http://127.0.0.1:1/hub/api", oauth_client_id="service-mlflow")
    verifier, params = compat.pkce_challenge(auth)
    assert verifier and params["code_challenge_method"] == "S256" and params["code_challenge"] != verifier
    assert compat.pkce_challenge(SimpleNamespace()) == (None, {}), "a 5.5 HubOAuth has no PKCE"
    assert compat.service_timeouts(), "the platform's own JupyterHub (6.x) has the services' timeout"
