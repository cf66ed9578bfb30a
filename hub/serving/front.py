"""The serving service's HTTP/1.1 server: scoring requests on a short path, the rest by tornado.

:class:`ServingFront` listens on the service's port in place of tornado's ``HTTPServer``
and reads every request itself (:mod:`.http1`). A scoring request
(``POST endpoints/<name>[/staging]/invocations``) whose token's outcome the application's
:class:`~.handlers.AccessCache` holds is answered here: refused with the cached 401 or
403, or forwarded by the router, with the headers, error bodies and log line the tornado
handler gives (both use the same pieces of :mod:`.handlers`). Every other request goes to
the tornado application through tornado's own connection interface
(:class:`tornado.httputil.HTTPConnection`), its handlers unchanged: the control API, the
health check, other methods on the scoring paths (405), and the scoring requests whose
token the cache does not hold (a token's first, which fills the cache, or none at all).

Why: through tornado's server and a ``RequestHandler``, a scoring request cost the router
about 600 µs of CPU in ``python -m bench serving`` (its stream, header objects, handler,
timeout and future machinery, a log record); here it costs half that, most of which is
the event loop and the system calls (the bench prints it).

Connections are kept alive (HTTP/1.1, or HTTP/1.0 asking for it). Requests on one
connection are answered one at a time, in order: a client that sends more meanwhile is
not read further once that passes ``max_header_size`` bytes, until its answer is out, and
one that does not read its answers is not read further until it does. A request the
front cannot read, or one over the limits (its line and fields: 431, its body: 413), is
answered with its status and one line of JSON, and the connection closed. A connection
idle for ``idle_timeout`` seconds is closed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import unquote_to_bytes

from tornado import httputil, web

from hubforge.errors import LaunchError, Refusal

from .handlers import (
    CACHE_CONTROL,
    CHALLENGE,
    INTERNAL_ERROR,
    JSON_TYPE,
    AccessCache,
    InvocationsHandler,
    error_body,
    header_token,
    refusal,
    scoring_headers,
)
from .http1 import BadRequest, ChunkedBody, RequestHead, body_length, http_date, parse_head, response_head, split_at
from .router import Router

__all__ = ["RequestLog", "ServingFront"]

#: Bodies smaller than this go out in one write with their head (one segment).
_SMALL = 64 * 1024
#: Seconds a closing connection still reads (and drops) what the client sends.
_LINGER = 2.0
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestLog:
    """The service's line per answer: status, method, path and milliseconds.

    Successful scoring requests and health checks are the bulk: with ``debug`` off no
    record is made of them at all (traitlets leaves its logger at DEBUG and filters in its
    handler, so the logger's own check would not spare the record); with it on they are
    debug lines. Other answers are info lines, 5xx errors.
    """

    def __init__(self, log: logging.Logger, debug: bool = False) -> None:
        self.log = log
        self.debug = debug

    def __call__(self, status: int, method: str, path: str, seconds: float, bulk: bool) -> None:
        """Log one answer; ``bulk``: its route is scoring or the health check."""
        quiet = bulk and status < 400
        if quiet and not self.debug:
            return
        level = self.log.error if status >= 500 else self.log.debug if quiet else self.log.info
        level("%d %s %s %.1fms", status, method, path, 1000 * seconds)

    def handler(self, handler: web.RequestHandler) -> None:
        """The same for an answer of the tornado application (its ``log_function``)."""
        request = handler.request
        bulk = isinstance(handler, InvocationsHandler) or request.path.endswith("/api/health")
        self(handler.get_status(), str(request.method), request.path, request.request_time(), bulk)

    def failed(self, method: str, path: str) -> None:
        """Log the exception being handled, which a request ran into."""
        self.log.error("Uncaught exception in %s %s", method, path, exc_info=True)


class ServingFront:
    """The HTTP/1.1 server of ``app`` (:func:`~.app.make_app`'s): see the module.

    ``max_body_size``: the largest request body, in bytes; ``max_header_size``: the largest
    request line and fields; ``idle_timeout``: seconds a connection may wait for a request;
    ``log``: the line per answer (default: the ``hubforge.serving`` logger's).
    """

    def __init__(
        self,
        app: web.Application,
        *,
        max_body_size: int = 32 * 1024 * 1024,
        max_header_size: int = 64 * 1024,
        idle_timeout: float = 3600.0,
        log: RequestLog | None = None,
    ) -> None:
        self.app = app
        self.router: Router = app.settings["router"]
        self.access_cache: AccessCache = app.settings["access_cache"]
        self.max_body_size = max_body_size
        self.max_header_size = max_header_size
        self.idle_timeout = idle_timeout
        self.log = log or RequestLog(logging.getLogger("hubforge.serving"))
        prefix = re.escape(app.settings["service_prefix"])
        self._scoring = re.compile(prefix + r"endpoints/([^/]+)/(?:(staging)/)?invocations")
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def listen(self, port: int, address: str = "") -> int:
        """Listen on ``address`` (every interface when empty) and ``port`` (0: a free one); the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), address or None, port)
        self._sweeper = loop.call_later(self.idle_timeout / 4, self._sweep)
        return int(self._server.sockets[0].getsockname()[1])

    def scoring_route(self, head: RequestHead) -> tuple[str, str, tuple[int, Any]] | None:
        """``(name, target, outcome)`` when the front answers ``head`` itself: a scoring request
        whose token's outcome is cached; None when tornado does."""
        if head.method != "POST":
            return None
        match = self._scoring.fullmatch(head.path)
        if match is None:
            return None
        token = header_token(head.headers.get("authorization"))
        outcome = self.access_cache.get(token) if token else None
        if outcome is None:
            return None
        name = match.group(1)
        if "%" in name:
            try:
                name = unquote_to_bytes(name).decode("utf-8")
            except UnicodeDecodeError:
                return None  # the handler's 400
        return name, match.group(2) or "production", outcome

    def _sweep(self) -> None:
        idle_since = time.monotonic() - self.idle_timeout
        for conn in list(self.connections):
            if not conn.busy and conn.last < idle_since:
                conn.transport.close()
        self._sweeper = asyncio.get_running_loop().call_later(self.idle_timeout / 4, self._sweep)

    async def close(self) -> None:
        """Stop listening and close every connection (an answer under way is not sent)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.transport.close()
            await self._server.wait_closed()


class _Connection(asyncio.Protocol):
    """One client's connection: its requests read, then answered one at a time."""

    transport: asyncio.Transport

    def __init__(self, front: ServingFront) -> None:
        self.front = front
        self.loop = asyncio.get_running_loop()
        self.buffer: bytes | bytearray = b""
        self.head: RequestHead | None = None  # read; its body not yet
        self.length = 0
        self.scanned = 0  # where the search for the end of the head goes on
        self.chunked: ChunkedBody | None = None
        self.started = 0.0
        self.busy = False  # a request is being answered
        self.advancing = False
        self.reading = True
        self.closing = False
        self.last = time.monotonic()
        self.task: asyncio.Task[None] | None = None  # held: the loop holds its tasks weakly
        self.exchange: _TornadoExchange | None = None
        self.drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.front.connections.discard(self)
        if self.exchange is not None:
            self.exchange.connection_lost()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.drained is not None:
            self.drained.set_result(None)
            self.drained = None
        if not self.busy:
            self._go_on()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last = time.monotonic()
        if not self.buffer:
            self.buffer = data
        else:
            if isinstance(self.buffer, bytes):
                self.buffer = bytearray(self.buffer)
            self.buffer += data
        if not self.busy and self.drained is None:
            self._advance()
        elif self.reading and len(self.buffer) > self.front.max_header_size:
            self.transport.pause_reading()
            self.reading = False

    def _advance(self) -> None:
        """Start the buffered requests, one at a time (the next once this one is answered)."""
        self.advancing = True
        try:
            while not self.busy and self.buffer and not self.closing:
                request = self._read()
                if request is None:
                    break
                self._start(*request)
        except BadRequest as exc:
            self._refuse(exc)
        finally:
            self.advancing = False

    def _read(self) -> tuple[RequestHead, bytes] | None:
        """The buffer's next whole request; None until all of it has arrived."""
        front, buf = self.front, self.buffer
        if self.head is None:
            start = 0
            while buf.startswith(b"\r\n", start):  # empty lines before a request are ignored
                start += 2
            end = buf.find(b"\r\n\r\n", max(start, self.scanned))
            if (end if end >= 0 else len(buf)) - start > front.max_header_size:
                raise BadRequest(431, f"the request line and headers are over {front.max_header_size} bytes")
            if end < 0:
                if start:
                    self.buffer = buf[start:]
                self.scanned = max(0, len(self.buffer) - 3)  # a head arriving in pieces is searched once
                return None
            self.scanned = 0
            self.head, self.started = parse_head(buf[start:end]), time.perf_counter()
            length = body_length(self.head, front.max_body_size)
            buf = self.buffer = buf[end + 4 :]
            if length is None:
                self.chunked = ChunkedBody(front.max_body_size)
            else:
                self.length = length
            if self.head.headers.get("expect", "").lower() == "100-continue" and (length is None or length > len(buf)):
                self.transport.write(_CONTINUE)
        if self.chunked is not None:
            used = self.chunked.consume(buf)
            if used:  # else a chunk still arriving: the buffer grows in place
                self.buffer = buf[used:]
            if not self.chunked.done:
                return None
            body, self.chunked = self.chunked.body(), None
        elif len(buf) < self.length:
            return None
        else:
            body, self.buffer = split_at(buf, self.length)
        head, self.head = self.head, None
        return head, body

    def _start(self, head: RequestHead, body: bytes) -> None:
        self.busy = True
        route = self.front.scoring_route(head)
        if route is None:
            self.task = self.loop.create_task(self._hand_over(head, body))
            return
        name, target, (status, found) = route
        if status == 200:
            self.task = self.loop.create_task(self._score(head, name, target, body))
        else:
            self._error(head, status, found)

    async def _score(self, head: RequestHead, name: str, target: str, body: bytes) -> None:
        """Forward a scoring request and answer as :class:`~.handlers.InvocationsHandler` does."""
        try:
            content_type = head.headers.get("content-type")
            answer, release, role = await self.front.router.invoke(name, target, body, content_type)
        except (Refusal, LaunchError) as exc:
            self._error(head, *refusal(exc))
        except Exception:
            self.front.log.failed(head.method, head.path)
            self._error(head, 500, INTERNAL_ERROR)
        else:
            self._answer(head, answer.status, scoring_headers(answer, release, role), answer.body)

    def _error(self, head: RequestHead, status: int, message: str, keep_alive: bool | None = None) -> None:
        headers = [("Content-Type", JSON_TYPE), CHALLENGE] if status == 401 else [("Content-Type", JSON_TYPE)]
        self._answer(head, status, headers, error_body(status, message), keep_alive)

    def _answer(
        self,
        head: RequestHead,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        keep_alive: bool | None = None,
    ) -> None:
        """Send an answer of the front's own, log it, and go on to the next request."""
        if keep_alive is None:
            keep_alive = head.keep_alive
        headers.append(CACHE_CONTROL)
        headers.append(("Date", http_date()))
        if status in (204, 304) or status < 200:
            body = b""
        else:
            headers.append(("Content-Length", str(len(body))))
        if head.version == "HTTP/1.1":
            if not keep_alive:
                headers.append(("Connection", "close"))
        elif keep_alive:
            headers.append(("Connection", "Keep-Alive"))
        data = response_head(status, headers)
        if not self.transport.is_closing():  # else the caller has gone
            if len(body) < _SMALL:
                self.transport.write(data + body)
            else:
                self.transport.write(data)
                self.transport.write(body)
        self.front.log(status, head.method, head.path, time.perf_counter() - self.started, True)
        self.answered(keep_alive)

    def _refuse(self, exc: BadRequest) -> None:
        """Answer a request that cannot be read with its status and line; close."""
        self.busy = True
        head = self.head or RequestHead("-", "-", "HTTP/1.1", {}, "")
        if self.head is None:
            self.started = time.perf_counter()
        self._error(head, exc.status, exc.message, keep_alive=False)

    async def _hand_over(self, head: RequestHead, body: bytes) -> None:
        """Have the tornado application answer the request."""
        exchange = self.exchange = _TornadoExchange(self, head)
        delegate = self.front.app.start_request(self, exchange)
        start_line = httputil.RequestStartLine(head.method, head.target, head.version)
        try:
            await _done(delegate.headers_received(start_line, httputil.HTTPHeaders.parse(head.fields)))
            if body:
                await _done(delegate.data_received(body))
            delegate.finish()
        except Exception:
            self.front.log.failed(head.method, head.path)
            self.transport.close()

    def answered(self, keep_alive: bool) -> None:
        """The answer is out (written to the transport): read the next request, or close."""
        self.busy = False
        self.task = self.exchange = None
        self.last = time.monotonic()
        if not keep_alive:
            self._close()
            return
        self._go_on()

    def _go_on(self) -> None:
        """Read and start the next request, unless the client is not reading its answers
        (the transport holds more than its limit): then once it has."""
        if self.drained is not None or self.closing:
            return
        if not self.reading:
            self.reading = True
            self.transport.resume_reading()
        if self.buffer and not self.advancing:
            self._advance()

    def _close(self) -> None:
        """End the connection after the answer: the sending side at once, the receiving side
        once the client has stopped sending too (``_LINGER`` seconds at most). Closing both
        with unread bytes in the kernel (a refused request's body) would reset the
        connection, and the client could lose the answer it has not read yet."""
        self.closing = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(_LINGER, self.transport.close)
        else:
            self.transport.close()

    def write(self, data: bytes) -> asyncio.Future[None]:
        """Send ``data``; a future done once the transport takes more."""
        if data and not self.transport.is_closing():
            self.transport.write(data)
        if self.drained is not None:
            return self.drained
        done = self.loop.create_future()
        done.set_result(None)
        return done

    def remote_ip(self) -> str:
        """The client's address, as tornado's request context gives it."""
        peer = self.transport.get_extra_info("peername")
        family = self.transport.get_extra_info("socket").family
        return str(peer[0]) if family in (socket.AF_INET, socket.AF_INET6) else "0.0.0.0"


async def _done(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


class _Context:
    """What tornado's request reads of the connection: the client's address and the protocol."""

    protocol = "http"

    def __init__(self, remote_ip: str) -> None:
        self.remote_ip = remote_ip


class _TornadoExchange(httputil.HTTPConnection):
    """Tornado's side of one request the front hands over: what its handler writes goes to
    the client, framed by its ``Content-Length`` (which ``RequestHandler.finish`` sets) or,
    lacking one, by closing the connection after it."""

    def __init__(self, conn: _Connection, head: RequestHead) -> None:
        self.conn = conn
        self.head = head
        self.context = _Context(conn.remote_ip())
        self.keep_alive = head.keep_alive
        self.close_callback: Callable[[], None] | None = None

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        """Tornado's: run ``callback`` if the client goes before the answer is out."""
        self.close_callback = callback

    def connection_lost(self) -> None:
        """The client went: tell the handler."""
        callback, self.close_callback = self.close_callback, None
        if callback is not None:
            callback()

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        """Send the status line and headers (the handler's, which refuses CR and LF in them)."""
        assert isinstance(start_line, httputil.ResponseStartLine)
        code = start_line.code
        if "Content-Length" not in headers and not (self.head.method == "HEAD" or code in (204, 304) or code < 200):
            self.keep_alive = False
        if self.head.version == "HTTP/1.1":
            if not self.keep_alive:
                headers["Connection"] = "close"
        elif self.keep_alive:
            headers["Connection"] = "Keep-Alive"
        return self.conn.write(response_head(code, list(headers.get_all()), start_line.reason) + (chunk or b""))

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        """Send a piece of the body."""
        return self.conn.write(chunk)

    def finish(self) -> None:
        """The answer is complete."""
        self.conn.answered(self.keep_alive)
