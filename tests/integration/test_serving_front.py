"""The serving front on the wire: raw HTTP/1.1 against the router, a scoring server of the tests' own.

The router (``make_app`` behind :class:`ServingFront`) runs on a loop thread on free
ports, HubAuth unpatched against the tests' fake hub. Its scoring processes are real
processes started by the router's pool, but of a small script standing in for
uvicorn with MLflow's scoring app (:data:`FAKE_SCORING`): it listens on ``UVICORN_UDS``, writes a
head and then a body as uvicorn does, and answers ``/invocations`` as its body asks
(an echo by default; ``close``, ``chunked``, ``until-close``, ``bad-header``, ``slow``,
``extra``, ``teapot`` and ``drop-next`` for the upstream's cases). Requests are written on plain
sockets where the framing is what is tested, with httpx elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
from tornado import web

from harness.governance import LoopThread, close_hub_http_client
from harness.hub import FakeHub
from hubforge.hub.serving.app import make_app, make_hub_auth
from hubforge.hub.serving.digest import tree_digest
from hubforge.hub.serving.front import RequestLog, ServingFront
from hubforge.hub.serving.router import Router
from hubforge.hub.serving.scoring import ScoringPool, ScoringSettings
from hubforge.hub.serving.state import ServingState
from hubforge.hub.serving.upstream import UpstreamPool

PREFIX = "/services/serving/"
ACCESS = "access:services!service=serving"
SERVICE_TOKEN = "serving-secret"
TOKENS: dict[str, dict[str, Any]] = {
    "governance-token": {"kind": "service", "name": "governance", "scopes": [ACCESS]},
    "alice-token": {"kind": "user", "name": "alice", "scopes": [ACCESS]},
    "erin-token": {"kind": "user", "name": "erin", "scopes": [ACCESS]},
    "mallory-token": {"kind": "user", "name": "mallory", "scopes": []},
}
MAX_BODY = 4096
LOG = "tests.serving.front"
SCORE = f"{PREFIX}endpoints/echo/invocations"

FAKE_SCORING = """#!{python}
import asyncio, json, os, pathlib, sys

if (pathlib.Path(__file__).parent / "refuse-start").exists():
    sys.exit("not starting: the test said so")


class Scoring(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer, self.drop_next = transport, b"", False

    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\\r\\n\\r\\n")) >= 0:
            lines = self.buffer[:end].decode("latin-1").split("\\r\\n")
            fields = dict(line.lower().split(": ", 1) for line in lines[1:])
            length = int(fields.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
            self.answer(lines[0].split(" ")[1], fields, body)

    def answer(self, path, fields, body):
        if self.drop_next or body == b"close":
            self.transport.close()
            return
        self.drop_next = body == b"drop-next"
        payload = json.dumps({{"body": body.decode(), "type": fields.get("content-type")}}).encode()
        if path == "/ping":
            self.send(200, b"\\n")
        elif body == b"chunked":
            self.transport.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\n"
                                 b"transfer-encoding: chunked\\r\\n\\r\\n")
            self.transport.write(b"%x\\r\\n%s\\r\\n0\\r\\n\\r\\n" % (len(payload), payload))
        elif body == b"until-close":
            self.transport.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\n\\r\\n" + payload)
            self.transport.close()
        elif body == b"bad-header":
            self.transport.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: text/plain\\nx-injected: 1\\r\\n"
                                 b"content-length: 2\\r\\n\\r\\nno")
        elif body == b"slow":
            asyncio.get_running_loop().call_later(5, self.send, 200, payload)
        elif body == b"extra":  # an answer, and one more nobody asked for
            self.transport.write(b"".join(
                b"HTTP/1.1 200 OK\\r\\ncontent-length: %d\\r\\n\\r\\n%s" % (len(data), data)
                for data in (payload, b'{{"bogus": true}}')))
        elif body == b"teapot":
            self.send(418, b'{{"error": "short and stout"}}')
        else:
            self.send(200, payload)

    def send(self, status, payload):
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 %d X\\r\\ncontent-type: application/json\\r\\n"
                                 b"content-length: %d\\r\\n\\r\\n" % (status, len(payload)))
            self.transport.write(payload)


async def main():
    server = await asyncio.get_running_loop().create_unix_server(Scoring, os.environ["UVICORN_UDS"])
    await server.serve_forever()


asyncio.run(main())
"""


@dataclass
class Reply:
    """One answer read off a socket."""

    status: int
    headers: dict[str, str]
    body: bytes

    def message(self) -> str:
        assert self.headers["content-type"] == "application/json; charset=utf-8"
        assert self.body.count(b"\n") == 0
        data = json.loads(self.body)
        assert data["status"] == self.status
        return str(data["message"])


@dataclass
class Service:
    """The router behind its front, its fake hub and its fake scoring script."""

    loop: LoopThread
    hub: FakeHub
    router: Router
    app: web.Application
    port: int
    script: Path
    fronts: list[ServingFront] = field(default_factory=list)

    def client(self, token: str | None = "alice-token") -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}{PREFIX}", headers=headers, timeout=30)

    def front(self, **settings: Any) -> int:
        """Another front on the same application, with ``settings``; its port."""
        front = ServingFront(self.app, **settings)
        self.fronts.append(front)
        return self.loop.run(front.listen(0, "127.0.0.1"))

    def deploy(self, name: str, folder: Path) -> httpx.Response:
        body = {"version": "1", "model_path": str(folder), "digest": tree_digest(folder)}
        with self.client("governance-token") as client:
            return client.put(f"api/endpoints/{name}", json=body)


def model_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "MLmodel").write_text(f"# {name}\nflavors: {{}}\n")
    return folder


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("front")
    script = root / "bin" / "uvicorn"
    script.parent.mkdir()
    script.write_text(FAKE_SCORING.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    loop = LoopThread()
    hub = FakeHub(TOKENS, SERVICE_TOKEN).start()

    async def start() -> tuple[Router, web.Application, ServingFront, int]:
        state = ServingState(root / "state")
        settings = ScoringSettings(state.home, state.logs, state.sockets, uvicorn=str(script), start_timeout=30)
        router = Router(state, ScoringPool(settings, UpstreamPool(timeout=1), state.verify))
        environ = {"JUPYTERHUB_API_TOKEN": SERVICE_TOKEN, "JUPYTERHUB_API_URL": hub.api_url}
        app = make_app(router, PREFIX, hub_auth=make_hub_auth(PREFIX, environ=environ))
        front = ServingFront(app, max_body_size=MAX_BODY, log=RequestLog(logging.getLogger(LOG)))
        return router, app, front, await front.listen(0, "127.0.0.1")

    router, app, front, port = loop.run(start())
    running = Service(loop, hub, router, app, port, script, [front])
    try:
        for name in ("echo", "fragile"):
            assert running.deploy(name, model_folder(root, name)).status_code == 201
        yield running
    finally:
        for front in running.fronts:
            loop.run(front.close())
        loop.run(router.close(), timeout=60)
        hub.shutdown()
        hub.server_close()
        loop.run(close_hub_http_client())
        loop.stop()


def request(
    body: bytes = b'{"x": 1}',
    path: str = SCORE,
    method: str = "POST",
    token: str | None = "alice-token",
    version: str = "HTTP/1.1",
    fields: Iterable[str] = (),
) -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    lines += [f"Authorization: token {token}"] if token else []
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_reply(reader: BinaryIO, head: bool = False) -> Reply:
    status = int(reader.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if head or status < 200 or status in (204, 304):
        return Reply(status, headers, b"")
    length = headers.get("content-length")
    return Reply(status, headers, reader.read(int(length)) if length is not None else reader.read())


@contextlib.contextmanager
def connection(port: int) -> Iterator[tuple[socket.socket, BinaryIO]]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock.makefile("rb") as reader:
            yield sock, reader


def exchange(port: int, *pieces: bytes, answers: int = 1) -> list[Reply]:
    """Send ``pieces`` one by one on a new connection; read ``answers`` answers."""
    with connection(port) as (sock, reader):
        for piece in pieces:
            sock.sendall(piece)
        return [read_reply(reader) for _ in range(answers)]


def closed(reader: BinaryIO) -> bool:
    return reader.read() == b""


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def echo(reply: Reply, body: str, content_type: str | None = "application/json") -> bool:
    return reply.status == 200 and json.loads(reply.body) == {"body": body, "type": content_type}


# --- the same answers as the handler -----------------------------------------------------


def test_the_front_answers_a_scoring_request_as_the_handler_does(service: Service) -> None:
    with service.client("erin-token") as client:
        first, second = (client.post("endpoints/echo/invocations", json={"x": 1}) for _ in range(2))
        assert [e["name"] for e in client.get("api/endpoints").json()] == ["echo", "fragile"]
    assert service.hub.lookups["erin-token"] == 1
    assert "server" in first.headers and "server" not in second.headers  # the handler, then the front
    for answer in (first, second):
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"body": '{"x":1}', "type": "application/json"}
        assert answer.headers["X-Hubforge-Model-Version"] == "1"
        assert answer.headers["X-Hubforge-Release"] == "production"
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Content-Type"] == "application/json"
        assert "date" in answer.headers


def test_auth_failures_are_the_same_from_the_cache(service: Service) -> None:
    cases = [(None, 401, "authentication required"), ("stolen-token", 401, "authentication required"),
             ("mallory-token", 403, "may not use this service")]  # fmt: skip
    for token, status, needle in cases:
        first, second = exchange(service.port, request(token=token), request(token=token), answers=2)
        assert first.status == second.status == status
        assert needle in first.message() and first.body == second.body
        assert (first.headers.get("www-authenticate"), second.headers.get("www-authenticate")) == (
            ('token realm="jupyterhub"',) * 2 if status == 401 else (None, None)
        )
    assert service.hub.lookups["stolen-token"] == 1
    assert service.hub.lookups["mallory-token"] == 1


def test_other_methods_on_the_scoring_paths_are_405(service: Service) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        (reply,) = exchange(service.port, request(b"", method=method))
        assert reply.status == 405 and reply.message() == "Method Not Allowed"
    with connection(service.port) as (sock, reader):
        sock.sendall(request(b"", path=f"{PREFIX}endpoints/echo/staging/invocations", method="HEAD"))
        reply = read_reply(reader, head=True)
        assert reply.status == 405
        sock.sendall(request())  # the HEAD answer had no body: the connection is still in step
        assert echo(read_reply(reader), '{"x": 1}')


# --- framing -----------------------------------------------------------------------------


def test_keep_alive_and_pipelined_requests_are_answered_in_order(service: Service) -> None:
    health = f"GET {PREFIX}api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    pipelined = b"\r\n".join([request(b"a"), health, request(b"b", fields=["Content-Type: text/csv"])])
    a, ok, b = exchange(service.port, pipelined, answers=3)
    assert echo(a, "a")
    assert (ok.status, json.loads(ok.body)) == (200, {"status": "ok"})
    assert echo(b, "b", "application/json,text/csv")  # repeated fields joined, as tornado joins them


def test_a_client_reading_its_answers_late_gets_them_all_in_order(service: Service) -> None:
    port = service.front(max_body_size=1024 * 1024)
    bodies = [f"{i:04d}".encode() * 200_000 for i in range(24)]  # 19 MB of answers: more than the kernel holds
    with socket.socket() as sock:
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        sender = threading.Thread(target=sock.sendall, args=(b"".join(map(request, bodies)),))
        sender.start()
        sender.join(timeout=1)  # reading nothing meanwhile: the front stops reading, then goes on
        with sock.makefile("rb") as reader:
            replies = [read_reply(reader) for _ in bodies]
        sender.join()
    assert all(echo(reply, body.decode()) for reply, body in zip(replies, bodies, strict=True))


def test_a_request_split_anywhere_is_read_whole(service: Service) -> None:
    data = request(b'{"rows": [1, 2, 3]}')
    (reply,) = exchange(service.port, *(data[i : i + 1] for i in range(len(data))))
    assert echo(reply, '{"rows": [1, 2, 3]}')


def test_a_chunked_body_is_forwarded_whole(service: Service) -> None:
    head = request(b"", fields=["Transfer-Encoding: chunked"]).replace(b"Content-Length: 0\r\n", b"")
    body = [b"4\r\nabcd\r\n", b"3\r", b"\nefg", b"\r\n0\r\n", b"\r\n"]
    (reply,) = exchange(service.port, head, *body)
    assert echo(reply, "abcdefg")


def test_large_bodies_go_through_whole_both_ways(service: Service) -> None:
    port = service.front(max_body_size=8 * 1024 * 1024)
    big = "ab" * (1024 * 1024)
    with httpx.Client(headers={"Authorization": "token alice-token"}, timeout=30) as client:
        url = f"http://127.0.0.1:{port}{SCORE}"
        assert client.post(url, content=b"{}").status_code == 200  # alice's outcome cached: the front answers
        framed = client.post(url, content=big, headers={"Content-Type": "text/plain"})
        chunked = client.post(url, content=iter([big[:5000].encode(), big[5000:].encode()]))
    assert framed.json() == {"body": big, "type": "text/plain"}
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert chunked.json() == {"body": big, "type": None}


def test_http10_keeps_the_connection_only_when_asked(service: Service) -> None:
    with connection(service.port) as (sock, reader):
        sock.sendall(request(version="HTTP/1.0"))
        assert echo(read_reply(reader), '{"x": 1}')
        assert closed(reader)
    with connection(service.port) as (sock, reader):
        for _ in range(2):
            sock.sendall(request(version="HTTP/1.0", fields=["Connection: keep-alive"]))
            reply = read_reply(reader)
            assert echo(reply, '{"x": 1}') and reply.headers["connection"] == "Keep-Alive"


def test_expect_100_continue_is_answered_before_the_body(service: Service) -> None:
    data = request(b"later", fields=["Expect: 100-continue"])
    with connection(service.port) as (sock, reader):
        sock.sendall(data[: -len(b"later")])
        assert read_reply(reader).status == 100
        sock.sendall(b"later")
        assert echo(read_reply(reader), "later")


def test_a_connection_close_is_honoured(service: Service) -> None:
    with connection(service.port) as (sock, reader):
        sock.sendall(request(fields=["Connection: close"]))
        reply = read_reply(reader)
        assert echo(reply, '{"x": 1}') and reply.headers["connection"] == "close"
        assert closed(reader)


# --- what the front will not read --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        (b"GARBAGE\r\n\r\n", 400, "malformed HTTP request line"),
        (b"POST /x HTTP/1.1\r\nHost: h\r\n folded: x\r\n\r\n", 400, "malformed header line"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", 400, "needs a Host header"),
        (b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "not both"),
        (b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not supported"),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "send HTTP/1.1"),
        (request(fields=[f"X-Big: {'a' * 70_000}"]), 431, "over 65536 bytes"),
        (request(b"a" * (MAX_BODY + 1)), 413, f"over {MAX_BODY} bytes"),
        (b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n", 413, f"over {MAX_BODY}"),
        (b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "hexadecimal"),
    ],
)
def test_unreadable_requests_get_one_line_and_a_closed_connection(
    service: Service, data: bytes, status: int, needle: str
) -> None:
    with connection(service.port) as (sock, reader):
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(data)
        reply = read_reply(reader)
        assert reply.status == status
        assert needle in reply.message()
        assert reply.headers["connection"] == "close"
        assert closed(reader)


def test_an_idle_connection_is_closed(service: Service) -> None:
    port = service.front(idle_timeout=0.4)
    with connection(port) as (_, quiet), connection(port) as (sock, partial):
        sock.sendall(request()[:20])
        assert closed(quiet) and closed(partial)  # read() returns at the server's close
    (reply,) = exchange(port, request())
    assert echo(reply, '{"x": 1}')


# --- the scoring server's answers and failures -------------------------------------------


def test_scoring_answers_pass_through_however_framed(service: Service) -> None:
    with service.client() as client:
        for body in ("chunked", "until-close"):
            answer = client.post("endpoints/echo/invocations", content=body, headers={"Content-Type": "text/plain"})
            assert answer.json() == {"body": body, "type": "text/plain"}, answer.text
        # bytes after an answer: its connection is not used again, the next answer is the next one's
        assert client.post("endpoints/echo/invocations", content="extra").json()["body"] == "extra"
        assert client.post("endpoints/echo/invocations", content="after").json()["body"] == "after"
        teapot = client.post("endpoints/echo/invocations", content="teapot")
        assert (teapot.status_code, teapot.json()) == (418, {"error": "short and stout"})
        assert teapot.headers["X-Hubforge-Model-Version"] == "1"
        # the scoring server closes a kept-alive connection as the next request arrives: sent again
        assert client.post("endpoints/echo/invocations", content="drop-next").status_code == 200
        assert client.post("endpoints/echo/invocations", content="again").json()["body"] == "again"


def test_failures_are_answered_with_their_status_and_line(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    assert exchange(service.port, request())[0].status == 200  # alice's outcome is cached: the front answers
    caplog.set_level("INFO", logger=LOG)
    cases = [
        (b"{}", f"{PREFIX}endpoints/nope/invocations", 404, "no production endpoint named 'nope'"),
        (b"{}", f"{PREFIX}endpoints/echo/staging/invocations", 404, "no staging endpoint named 'echo'"),
        (b"close", SCORE, 502, "closed the connection without answering"),
        (b"bad-header", SCORE, 502, "bare CR or LF"),
        (b"slow", SCORE, 502, "did not answer in 1 s"),
    ]
    for body, path, status, needle in cases:
        (reply,) = exchange(service.port, request(body, path=path))
        assert (reply.status, needle in reply.message()) == (status, True), reply
    # the line is logged once the answer is out: on the loop's thread, maybe after the test read it
    assert wait_for(lambda: len([r for r in caplog.records if r.name == LOG]) == len(cases))
    lines = [(r.levelname, r.getMessage().rsplit(" ", 1)[0]) for r in caplog.records if r.name == LOG]
    assert lines[:2] == [("INFO", f"404 POST {PREFIX}endpoints/nope/invocations"),
                         ("INFO", f"404 POST {PREFIX}endpoints/echo/staging/invocations")]  # fmt: skip
    assert lines[2:] == [("ERROR", f"502 POST {SCORE}")] * 3
    caplog.clear()
    answers = exchange(service.port, request(), request(path=f"{PREFIX}endpoints/nope/invocations"), answers=2)
    assert [a.status for a in answers] == [200, 404]
    assert wait_for(lambda: any(r.name == LOG for r in caplog.records))
    assert [r.getMessage()[:3] for r in caplog.records if r.name == LOG] == ["404"]  # a success: no record


def test_a_scoring_process_that_cannot_start_is_503(service: Service) -> None:
    release = service.router.endpoint("fragile", "production").production
    proc = service.router.pool.processes[release.key]
    assert proc.proc is not None
    refuse = service.script.parent / "refuse-start"
    refuse.touch()
    try:
        os.killpg(proc.proc.pid, signal.SIGKILL)
        assert wait_for(lambda: not proc.alive)
        (reply,) = exchange(service.port, request(path=f"{PREFIX}endpoints/fragile/invocations"))
        assert reply.status == 503
        assert "version 1 of fragile is not available" in reply.message()
        assert "exited" in reply.message()
    finally:
        refuse.unlink()
