"""What hubforge gives a JupyterHub 5.5 hub (the Zero to JupyterHub chart's) that 6.x has:
the wait for a managed service, against a real HTTP server on a free port, and PKCE only
where the hub's HubOAuth offers it. ``tests/platform/test_chart_hub.py`` runs the whole
platform on JupyterHub 5.5.
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from jupyterhub.app import JupyterHub
from jupyterhub.services.auth import HubOAuth

from harness.platform import free_port
from hubforge.hub import compat


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def answering_after(port: int, delay: float) -> Iterator[None]:
    """An HTTP server on ``port`` that starts answering ``delay`` seconds from now."""
    servers: list[http.server.HTTPServer] = []

    def serve() -> None:
        time.sleep(delay)
        server = http.server.HTTPServer(("127.0.0.1", port), _Quiet)
        servers.append(server)
        server.serve_forever(poll_interval=0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def service(port: int, status: int | None = None) -> SimpleNamespace:
    """A managed service as ``JupyterHub.start_service`` sees it: its server, its process."""

    async def poll() -> int | None:
        return status

    server = orm.Server(proto="http", ip="127.0.0.1", port=port, base_url="/services/slow/", cookie_name="slow")
    return SimpleNamespace(orm=SimpleNamespace(server=server), spawner=SimpleNamespace(poll=poll))


@pytest.fixture
def app(caplog: pytest.LogCaptureFixture) -> SimpleNamespace:
    caplog.set_level(logging.INFO, "compat-test")
    return SimpleNamespace(log=logging.getLogger("compat-test"))


def test_a_service_slower_than_ten_one_second_tries_is_waited_for(app: SimpleNamespace) -> None:
    port = free_port()
    with answering_after(port, 2.5):
        started = time.monotonic()
        assert asyncio.run(compat._answers(app, "slow", service(port), None, timeout=30))
    assert 2.0 < time.monotonic() - started < 15


def test_a_service_whose_process_ended_is_given_up_at_once(app: SimpleNamespace, caplog) -> None:
    started = time.monotonic()
    assert not asyncio.run(compat._answers(app, "gone", service(free_port(), status=3), None, timeout=60))
    assert time.monotonic() - started < 10
    assert "Service gone exited with status 3" in caplog.text


def test_a_service_that_never_answers_is_given_up_when_its_time_is_out(app: SimpleNamespace, caplog) -> None:
    assert not asyncio.run(compat._answers(app, "mute", service(free_port()), None, timeout=2))
    assert "Service mute did not answer within 2s" in caplog.text


def test_pkce_is_used_where_the_hub_offers_it() -> None:
    auth = HubOAuth(api_token="x" * 32, api_url="http://127.0.0.1:1/hub/api", oauth_client_id="service-mlflow")
    verifier, params = compat.pkce_challenge(auth)
    assert verifier and params["code_challenge_method"] == "S256" and params["code_challenge"] != verifier
    assert compat.pkce_challenge(SimpleNamespace()) == (None, {}), "a 5.5 HubOAuth has no PKCE"


def test_a_hub_with_the_timeout_field_keeps_its_own_start_service() -> None:
    assert compat.service_timeouts(), "JupyterHub 6 is the platform's own"
    before = JupyterHub.start_service
    assert compat.give_services_time(180) is False
    assert JupyterHub.start_service is before
