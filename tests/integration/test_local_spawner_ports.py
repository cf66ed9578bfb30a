"""The one-machine spawner hands the hub a server only once that server listens on its port.

A local server's port is chosen free and bound seconds later; any process may take it in
between. The hub's own readiness check takes any answer from the port below 500 as the
server, so it would route a person's URL to whatever answered. Driven as the hub drives it,
on JupyterHub's own ``User`` and ORM (``harness.spawner``), with a stand-in for the platform's
server program: a script of the same name that serves HTTP on the port the hub gives it and
exits, as jupyter-server does with ``port_retries=0``, when that port is taken.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tornado import web

from harness.spawner import hub_db, spawner_for
from hubforge.spawner_profiles.local.listeners import Listener, listener_of, port_held

SERVER = """#!{python}
import http.server, os, sys, time, urllib.parse
with open(os.path.join(os.path.dirname(sys.argv[0]), "argv.log"), "a") as log:
    log.write(repr(sys.argv[1:]) + "\\n")
if {exit_status} is not None:
    sys.exit({exit_status})
if {silent}:
    time.sleep(3600)
url = urllib.parse.urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"the server")

http.server.HTTPServer((url.hostname, url.port), Handler).serve_forever()
"""


def server_program(folder: Path, exit_status: int | None = None, silent: bool = False) -> str:
    """A script named as the platform's server program (``hubforge-singleuser``); it exits with
    ``exit_status``, or never listens (``silent``), or serves. Each start's arguments go to
    ``argv.log`` beside it, a line each."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / "hubforge-singleuser"
    program.write_text(SERVER.format(python=sys.executable, exit_status=exit_status, silent=silent))
    program.chmod(0o755)
    return str(program)


def listening(family: socket.AddressFamily, host: str) -> socket.socket:
    """A socket of this process listening on a free port of ``host``."""
    sock = socket.socket(family)
    sock.bind((host, 0))
    sock.listen()
    return sock


def alices(tmp_path: Path, **traits: Any) -> Any:
    """alice's spawner for the interactive tier, running the stand-in server program."""
    spawner = spawner_for(hub_db(), "alice", tmp_path, cmd=[server_program(tmp_path / "bin")], **traits)
    spawner.user_options = {"profile": "interactive"}
    return spawner


async def started(spawner: Any) -> tuple[int, Listener, int]:
    """Start ``spawner`` as the hub does, then stop it: the port it handed over, who listens
    there, and the status of a request to it."""
    try:
        ip, port = await spawner.start()
        return port, listener_of(port, spawner.pid), httpx.get(f"http://{ip}:{port}/").status_code
    finally:
        await spawner.stop(now=True)


def test_a_port_taken_before_the_server_binds_it_is_given_up_for_another(tmp_path: Path) -> None:
    taker = listening(socket.AF_INET, "127.0.0.1")
    taken = taker.getsockname()[1]
    spawner = alices(tmp_path, port=taken)

    try:
        port, listener, status = asyncio.run(started(spawner))
    finally:
        still_listening = listener_of(taken, os.getpid())
        taker.close()
    assert port != taken, "the server moved off the port another process holds"
    assert listener is Listener.OURS, "the port handed to the hub is the server's own"
    assert status == 200
    assert still_listening is Listener.OURS, "the process that took the port (this test) keeps it"
    first, second = (tmp_path / "bin" / "argv.log").read_text().splitlines()
    assert "--ServerApp.shutdown_no_activity_timeout" in first, "the tier's idle timeout is passed"
    assert second == first, "the second start passes the same options, each once"


def test_a_listener_on_the_same_port_of_another_address_leaves_the_server_its_port(tmp_path: Path) -> None:
    """Another process listening on ``[::1]:P`` does not stop a server binding ``127.0.0.1:P``:
    the spawn keeps P (it used to take that listener for a taker and kill the server)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    taker = listening(socket.AF_INET6, "::1")
    number = taker.getsockname()[1]
    spawner = alices(tmp_path, port=number)

    try:
        port, listener, status = asyncio.run(started(spawner))
    finally:
        taker.close()
    assert (port, listener, status) == (number, Listener.OURS, 200)
    assert len((tmp_path / "bin" / "argv.log").read_text().splitlines()) == 1, "one start, not a retry"


def test_a_spawner_started_again_passes_its_options_once(tmp_path: Path) -> None:
    """The hub keeps a person's spawner after a start that failed (its page shows the error), and
    the person's next start runs on it again; a start that moved ports starts twice in one."""
    spawner = spawner_for(hub_db(), "alice", tmp_path, cmd=[server_program(tmp_path / "bin")])

    async def twice() -> None:
        for _ in range(2):
            spawner.user_options = {"profile": "interactive"}
            await spawner.start()
            await spawner.stop(now=True)
            spawner.port = 0

    asyncio.run(twice())
    first, second = (tmp_path / "bin" / "argv.log").read_text().splitlines()
    assert first.count("--ServerApp.shutdown_no_activity_timeout") == 1
    assert second == first


def test_a_port_that_became_a_connections_local_end_is_given_up_for_another(tmp_path: Path) -> None:
    """An outgoing connection takes its local port from the range the hub chooses free ports
    from; one that got the server's port makes the server's bind fail (it exits with status 1,
    as jupyter-server does): the spawn goes on with another port, not a failed start."""
    peer = socket.socket()
    peer.bind(("127.0.0.1", 0))
    peer.listen()
    connection = socket.socket()
    connection.bind(("127.0.0.1", 0))
    taken = connection.getsockname()[1]
    connection.connect(peer.getsockname())
    spawner = spawner_for(hub_db(), "alice", tmp_path, cmd=[server_program(tmp_path / "bin")], port=taken)
    spawner.user_options = {"profile": "interactive"}

    try:
        assert port_held(taken) and listener_of(taken, os.getpid()) is Listener.NOBODY
        port, listener, status = asyncio.run(started(spawner))
    finally:
        connection.close()
        peer.close()
    assert port != taken
    assert listener is Listener.OURS
    assert status == 200


def test_a_server_that_exits_as_it_starts_fails_the_spawn_with_its_status(tmp_path: Path) -> None:
    spawner = spawner_for(hub_db(), "alice", tmp_path, cmd=[server_program(tmp_path / "bin", exit_status=3)])
    spawner.user_options = {"profile": "interactive"}

    async def spawn() -> None:
        try:
            await spawner.start()
        finally:
            await spawner.stop(now=True)

    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(spawn())
    assert refused.value.status_code == 500
    assert "your server exited with status 3 as it started" in str(refused.value.log_message)


def test_a_server_that_never_listens_is_left_to_the_hubs_wait_within_the_start_timeout(tmp_path: Path) -> None:
    """The hub gives start() ``start_timeout`` in all (the GPU queue's wait included): the wait
    for the listener ends short of it, and the hub's own wait for the server takes over."""
    program = server_program(tmp_path / "bin", silent=True)
    spawner = spawner_for(hub_db(), "alice", tmp_path, cmd=[program], start_timeout=3, http_timeout=30)
    spawner.user_options = {"profile": "interactive"}

    async def spawn() -> Listener:
        try:
            # as the hub runs it: a start() still going at start_timeout is cancelled, and fails
            _ip, port = await asyncio.wait_for(spawner.start(), spawner.start_timeout)
            return listener_of(port, spawner.pid)
        finally:
            await spawner.stop(now=True)

    assert asyncio.run(spawn()) is Listener.NOBODY, "start() returned, the port still unbound"
