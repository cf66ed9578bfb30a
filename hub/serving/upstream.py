"""A small HTTP/1.1 client for the scoring servers, keeping connections alive.

The scoring servers listen on Unix sockets (an address that is a path) in the service's
own folder; a port number means TCP on ``host``. Tornado's ``SimpleAsyncHTTPClient``
speaks neither Unix sockets nor keep-alive (a connection per request: a connect and an
accept on every scoring call); this client keeps idle connections per address and reuses
them. Each connection is an asyncio protocol that reads the answer as it arrives and
settles one future with it: no stream reader, no task woken per piece (uvicorn writes a
head and a body apart). It speaks only what the router needs of MLflow's scoring server
(uvicorn): one request at a time per connection, answers framed by ``Content-Length``,
chunked, or ended by the connection's close, and it retries once, on a fresh connection,
a request whose reused connection turned out to be closed before any answer (uvicorn
closes idle connections after a few seconds). The bench (``bench/serving.py``) compares
it with ``httpx.AsyncClient`` on the same socket.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from hubforge.errors import Unavailable

from .http1 import BadRequest, ChunkedBody, split_at

__all__ = ["Address", "Answer", "UpstreamError", "UpstreamPool"]

#: Where a scoring server listens: a Unix socket's path, or a TCP port on the pool's host.
Address = str | int
#: The largest status line and header block read from a scoring server.
_HEAD_LIMIT = 64 * 1024


class UpstreamError(Unavailable):
    """A scoring server could not be reached, or answered something that is not HTTP/1.1: the
    router is a proxy whose upstream failed, 502."""

    status = 502


@dataclass(frozen=True)
class Answer:
    """A scoring server's answer: status, headers (lowercase names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


class UpstreamPool:
    """Keep-alive connections per address; ``timeout``: seconds for a whole request."""

    def __init__(self, host: str = "127.0.0.1", *, timeout: float = 60.0, max_idle: int = 64) -> None:
        self.host = host
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: dict[Address, list[_Link]] = {}

    async def request(
        self, address: Address, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Answer:
        """Send one request to ``address`` and read its answer (UpstreamError if that fails)."""
        host = "localhost" if isinstance(address, str) else f"{self.host}:{address}"
        head = _request_head(host, method, path, len(body), headers or {})
        for attempt in (1, 2):
            link = self._idle_link(address)
            reused = link is not None
            if link is None:
                link = await self._connect(address)
            keep = False
            try:
                answer, keep = await link.exchange(head, body, self.timeout)
            except _Stale:
                if reused and attempt == 1:
                    continue
                raise UpstreamError("the scoring server closed the connection without answering") from None
            except TimeoutError:
                raise UpstreamError(f"the scoring server did not answer in {self.timeout:g} s") from None
            except (OSError, ValueError) as exc:
                raise UpstreamError(f"the scoring server failed: {exc or type(exc).__name__}") from exc
            finally:
                self._release(address, link, keep)  # closed unless kept: cancelled too
            return answer
        raise AssertionError("unreachable")

    def _idle_link(self, address: Address) -> _Link | None:
        idle = self._idle.get(address)
        while idle:
            link = idle.pop()
            if not link.closed:
                return link
        return None

    async def _connect(self, address: Address) -> _Link:
        loop = asyncio.get_running_loop()
        try:
            if isinstance(address, str):
                _, link = await loop.create_unix_connection(_Link, address)
            else:
                _, link = await loop.create_connection(_Link, self.host, address)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the scoring server: {exc.strerror}") from exc
        return link

    def _release(self, address: Address, link: _Link, keep: bool) -> None:
        idle = self._idle.setdefault(address, [])
        if keep and not link.closed and len(idle) < self.max_idle:
            idle.append(link)
        else:
            link.close()

    def forget(self, address: Address) -> None:
        """Close the idle connections to ``address`` (its server stopped)."""
        for link in self._idle.pop(address, []):
            link.close()

    def close(self) -> None:
        """Close every idle connection."""
        for address in list(self._idle):
            self.forget(address)


class _Stale(Exception):
    """The connection was closed before any byte of an answer arrived."""


class _Link(asyncio.Protocol):
    """One connection to a scoring server: a request written, its answer read as it arrives."""

    transport: asyncio.Transport

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self._answer: asyncio.Future[tuple[Answer, bool]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._buffer: bytes | bytearray = b""
        self._status = 0
        self._headers: dict[str, str] | None = None  # the answer's, once read
        self._length: int | None = None  # of its body; None: until the connection closes
        self._chunked: ChunkedBody | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def exchange(self, head: bytes, body: bytes, timeout: float) -> asyncio.Future[tuple[Answer, bool]]:
        """Send a request; a future of its answer and whether the connection may be reused."""
        self._answer = answer = self.loop.create_future()
        self._buffer, self._headers, self._chunked = b"", None, None
        if self.closed:
            answer.set_exception(_Stale())
            return answer
        self._timer = self.loop.call_later(timeout, self._fail, TimeoutError())
        # One write (one segment) for the usual small body; no copy of a large one.
        if len(body) < _HEAD_LIMIT:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)
        return answer

    def data_received(self, data: bytes) -> None:
        if self._answer is None:
            self.close()  # bytes no request asked for: the connection is out of step
            return
        if not self._buffer:
            self._buffer = data
        else:
            if isinstance(self._buffer, bytes):
                self._buffer = bytearray(self._buffer)
            self._buffer += data
        try:
            answer = self._read()
        except (ValueError, BadRequest) as exc:
            self._fail(ValueError(str(exc)))
            return
        if answer is not None:
            self._settle(answer)

    def _read(self) -> tuple[Answer, bool] | None:
        """The answer once all of it is in the buffer."""
        buf = self._buffer
        if self._headers is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _HEAD_LIMIT:
                    raise ValueError(f"the status line and headers are over {_HEAD_LIMIT} bytes")
                return None
            self._status, self._headers = _parse_head(bytes(buf[: end + 4]))
            self._length, self._chunked = _framing(self._status, self._headers)
            buf = self._buffer = buf[end + 4 :]
        if self._chunked is not None:
            used = self._chunked.consume(buf)
            if used:  # else a chunk still arriving: the buffer grows in place
                self._buffer = buf[used:]
            if not self._chunked.done:
                return None
            body = self._chunked.body()
        elif self._length is None or len(buf) < self._length:
            return None
        else:
            body, self._buffer = split_at(buf, self._length)
        keep = self._headers.get("connection", "").lower() != "close" and not self._buffer
        return Answer(self._status, self._headers, body), keep

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is None:
            return
        if self._headers is not None and self._length is None and self._chunked is None:
            self._settle((Answer(self._status, self._headers, bytes(self._buffer)), False))
        elif self._headers is None and not self._buffer:
            self._fail(_Stale())
        else:
            self._fail(ConnectionError("the scoring server closed the connection in the middle of its answer"))

    def _settle(self, answer: tuple[Answer, bool]) -> None:
        future, self._answer = self._answer, None
        if self._timer is not None:
            self._timer.cancel()
        if future is not None and not future.done():
            future.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        future, self._answer = self._answer, None
        if self._timer is not None:
            self._timer.cancel()
        if future is not None and not future.done():
            future.set_exception(exc)
        self.close()

    def close(self) -> None:
        """Close the connection (an answer still awaited fails)."""
        self.transport.close()


def _request_head(host: str, method: str, path: str, length: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise UpstreamError(f"header {name} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise ValueError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if "\r" in line or "\n" in line:
            raise ValueError(f"a header line holds a bare CR or LF: {line[:80]!r}")
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(rest[:3]), headers


def _framing(status: int, headers: dict[str, str]) -> tuple[int | None, ChunkedBody | None]:
    """The body's length, or its chunked reader; ``(None, None)``: it ends with the connection."""
    if status in (204, 304) or 100 <= status < 200:
        return 0, None
    if "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit():
            raise ValueError(f"Content-Length {length[:40]!r} is not a number")
        return int(length), None
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None, ChunkedBody(sys.maxsize)
    return None, None
