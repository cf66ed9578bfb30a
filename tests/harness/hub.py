"""The one fake hub of the tests: JupyterHub's REST endpoints a service calls, over HTTP.

Faked at the transport, so that the services' real ``HubAuth``/``HubOAuth`` run
unpatched: a threaded HTTP server on a free loopback port answering

- ``GET /hub/api/user``: the model of the token's owner (``Authorization: token|Bearer``),
  403 for a token it does not know, 500 for ``explode-token``;
- ``GET /hub/api/users/<name>`` with the service's own token: the user's groups and
  running servers (what the MLflow gate asks for its placement tags);
- ``POST /hub/api/oauth2/token``: a code the test set, exchanged with PKCE.

The tests set ``tokens``, ``codes``, ``groups`` and ``servers``, and read ``calls`` (each
token asked about, in order) and ``lookups`` (a count per token).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["FakeHub", "running_hub"]

_AUTH = re.compile(r"(?:token|bearer)\s+(\S+)", re.IGNORECASE)


class FakeHub(ThreadingHTTPServer):
    """The hub's user, users and OAuth token endpoints, with the tokens the tests give it.

    ``service_token``: the token of the service under test (its ``JUPYTERHUB_API_TOKEN``
    and OAuth client secret).
    """

    daemon_threads = True

    def __init__(self, tokens: Mapping[str, dict[str, Any]], service_token: str) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.tokens: dict[str, dict[str, Any]] = dict(tokens)
        self.service_token = service_token
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (token, PKCE challenge)
        self.calls: list[str] = []  # every token looked up, in order
        self.lookups: dict[str, int] = {}
        self.groups: dict[str, list[str]] = {}  # a user's hub groups (default: data-science)
        self.servers: dict[str, dict[str, str]] = {}  # a user's running servers: name -> tier

    def start(self) -> FakeHub:
        """Serve in a daemon thread (until ``shutdown()``); the hub itself."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        """The hub's base URL (``http://127.0.0.1:<port>``)."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def api_url(self) -> str:
        """What a service gets as JUPYTERHUB_API_URL."""
        return f"{self.url}/hub/api"


@contextmanager
def running_hub(tokens: Mapping[str, dict[str, Any]], service_token: str) -> Iterator[FakeHub]:
    """A :class:`FakeHub` serving in a daemon thread until the block ends."""
    hub = FakeHub(tokens, service_token).start()
    try:
        yield hub
    finally:
        hub.shutdown()
        hub.server_close()


class _HubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def do_GET(self) -> None:
        match = _AUTH.fullmatch(self.headers.get("Authorization", "").strip())
        token = match.group(1) if match else ""
        if self.path.startswith("/hub/api/users/") and token == self.server.service_token:
            name = self.path.rsplit("/", 1)[1]
            groups = self.server.groups.get(name, ["data-science"])
            servers = {
                server: {"name": server, "user_options": {"profile": tier, "image": "scipy"}}
                for server, tier in self.server.servers.get(name, {}).items()
            }
            return self._reply(200, {"name": name, "groups": groups, "roles": ["data-scientist"], "servers": servers})
        if self.path.split("?")[0] != "/hub/api/user":
            return self._reply(404, {"message": "not found"})
        self.server.calls.append(token)
        self.server.lookups[token] = self.server.lookups.get(token, 0) + 1
        if token == "explode-token":
            return self._reply(500, {"message": "hub broke"})
        model = self.server.tokens.get(token)
        return self._reply(200, model) if model else self._reply(403, {"status": 403, "message": "unknown token"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        token, challenge = self.server.codes.pop(form.get("code", ""), ("", ""))
        verifier = form.get("code_verifier", "").encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        if self.path != "/hub/api/oauth2/token" or not token:
            return self._reply(400, {"error": "invalid_grant"})
        if form.get("client_secret") != self.server.service_token or digest.decode() != challenge:
            return self._reply(400, {"error": "invalid_client"})
        return self._reply(200, {"access_token": token, "token_type": "Bearer"})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        """Quiet: the test output is not the place for a request log."""
