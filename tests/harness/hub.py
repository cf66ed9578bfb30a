"""The one fake hub of the tests: JupyterHub's REST endpoints a service calls, over HTTP.

Faked at the transport, so that the services' real ``HubAuth``/``HubOAuth`` run
unpatched: a threaded HTTP server on a free loopback port answering

- ``GET /hub/api/user``: the model of the token's owner (``Authorization: token|Bearer``),
  403 for a token it does not know, 500 for ``explode-token``;
- ``GET /hub/api/users/<name>`` with the service's own token: the user's groups and
  running servers (what the MLflow gate asks for its placement tags);
- ``POST /hub/api/oauth2/token``: a code the test set, exchanged with PKCE;
- ``POST /hub/api/users/<name>/tokens`` and ``DELETE .../tokens/<id>`` with the service's own
  token: a token of that person made (what the scheduler does for each run) and revoked.

The tests set ``tokens``, ``codes``, ``groups`` and ``servers``, and read ``calls`` (each
token asked about, in order), ``lookups`` (a count per token) and ``issued``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

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
        # Tokens made for people with the service's token (the scheduler's runs): id -> (token,
        # owner, expires_in, note); the token is a person's like any other until revoked.
        self.issued: dict[str, tuple[str, str, int, str]] = {}

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

    def _service_token(self) -> bool:
        match = _AUTH.fullmatch(self.headers.get("Authorization", "").strip())
        return bool(match) and match.group(1) == self.server.service_token

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        made = re.fullmatch(r"/hub/api/users/([^/]+)/tokens", self.path)
        if made and self._service_token():
            owner = unquote(made.group(1))
            model = next((m for m in self.server.tokens.values() if m.get("name") == owner), None)
            if model is None:
                return self._reply(403, {"status": 403, "message": "no permissions to generate tokens"})
            body = json.loads(raw or b"{}")
            token_id = f"a{len(self.server.issued) + 1}"
            token = f"{owner}-run-{uuid.uuid4().hex[:12]}"
            self.server.issued[token_id] = (token, owner, int(body.get("expires_in") or 0), str(body.get("note")))
            self.server.tokens[token] = model
            return self._reply(201, {"token": token, "id": token_id})
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        token, challenge = self.server.codes.pop(form.get("code", ""), ("", ""))
        verifier = form.get("code_verifier", "").encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        if self.path != "/hub/api/oauth2/token" or not token:
            return self._reply(400, {"error": "invalid_grant"})
        if form.get("client_secret") != self.server.service_token or digest.decode() != challenge:
            return self._reply(400, {"error": "invalid_client"})
        return self._reply(200, {"access_token": token, "token_type": "Bearer"})

    def do_DELETE(self) -> None:
        gone = re.fullmatch(r"/hub/api/users/([^/]+)/tokens/([^/]+)", self.path)
        if not gone or not self._service_token() or gone.group(2) not in self.server.issued:
            return self._reply(404, {"status": 404, "message": "no such token"})
        token = self.server.issued[gone.group(2)][0]
        self.server.tokens.pop(token, None)
        self.send_response(204)
        self.end_headers()

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        """Quiet: the test output is not the place for a request log."""
