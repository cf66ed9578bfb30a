"""A small HTTP/1.1 client for the scoring servers, keeping connections alive.

The scoring servers listen on Unix sockets (an address that is a path) in the service's
own folder; a port number means TCP on ``host``. Tornado's ``SimpleAsyncHTTPClient``
speaks neither Unix sockets nor keep-alive (a connection per request: a connect and an
accept on every scoring call); this client keeps idle connections per address and reuses
them. It speaks only what the router needs of MLflow's scoring server (uvicorn): one
request at a time per connection, bodies with ``Content-Length`` or chunked, and it
retries once, on a fresh connection, a request whose reused connection turned out to be
closed before any answer (uvicorn closes idle connections after a few seconds). The bench
(``bench/serving.py``) compares it with ``httpx.AsyncClient`` on the same socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from hubforge.errors import Unavailable

__all__ = ["Address", "Answer", "UpstreamError", "UpstreamPool"]

#: Where a scoring server listens: a Unix socket's path, or a TCP port on the pool's host.
Address = str | int
_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
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
        self._idle: dict[Address, list[_Conn]] = {}

    async def request(
        self, address: Address, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Answer:
        """Send one request to ``address`` and read its answer (UpstreamError if that fails)."""
        host = "localhost" if isinstance(address, str) else f"{self.host}:{address}"
        head = _request_head(host, method, path, len(body), headers or {})
        for attempt in (1, 2):
            conn, reused = await self._connection(address)
            try:
                async with asyncio.timeout(self.timeout):
                    answer, keep = await _exchange(conn, head, body)
            except _Stale:
                _close(conn)
                if reused and attempt == 1:
                    continue
                raise UpstreamError("the scoring server closed the connection without answering") from None
            except TimeoutError:
                _close(conn)
                raise UpstreamError(f"the scoring server did not answer in {self.timeout:g} s") from None
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                _close(conn)
                raise UpstreamError(f"the scoring server failed: {exc or type(exc).__name__}") from exc
            self._release(address, conn, keep)
            return answer
        raise AssertionError("unreachable")

    async def _connection(self, address: Address) -> tuple[_Conn, bool]:
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()
            if not conn[0].at_eof() and not conn[1].is_closing():
                return conn, True
            _close(conn)
        try:
            if isinstance(address, str):
                conn = await asyncio.open_unix_connection(address, limit=_HEAD_LIMIT)
            else:
                conn = await asyncio.open_connection(self.host, address, limit=_HEAD_LIMIT)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the scoring server: {exc.strerror}") from exc
        return conn, False

    def _release(self, address: Address, conn: _Conn, keep: bool) -> None:
        idle = self._idle.setdefault(address, [])
        if keep and len(idle) < self.max_idle:
            idle.append(conn)
        else:
            _close(conn)

    def forget(self, address: Address) -> None:
        """Close the idle connections to ``address`` (its server stopped)."""
        for conn in self._idle.pop(address, []):
            _close(conn)

    def close(self) -> None:
        """Close every idle connection."""
        for address in list(self._idle):
            self.forget(address)


class _Stale(Exception):
    """The connection was closed before any byte of an answer arrived."""


def _request_head(host: str, method: str, path: str, length: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise UpstreamError(f"header {name} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _exchange(conn: _Conn, head: bytes, body: bytes) -> tuple[Answer, bool]:
    """Write the request; read the answer, and whether the connection may be reused."""
    reader, writer = conn
    try:
        # One write (one segment) for the usual small body; no copy of a large one.
        if len(body) < _HEAD_LIMIT:
            writer.write(head + body)
        else:
            writer.write(head)
            writer.write(body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _Stale from None
        raise
    except (ConnectionResetError, BrokenPipeError):
        raise _Stale from None
    status, headers = _parse_head(head)
    if status in (204, 304) or 100 <= status < 200:
        data = b""
    elif "content-length" in headers:
        data = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        data = await _read_chunked(reader)
    else:
        return Answer(status, headers, await reader.read()), False
    keep = headers.get("connection", "").lower() != "close"
    return Answer(status, headers, data), keep


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise ValueError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(rest[:3]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


def _close(conn: _Conn) -> None:
    with contextlib.suppress(Exception):
        conn[1].close()
