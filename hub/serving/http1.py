"""HTTP/1.1 requests as the serving front reads them: pure parsing, no sockets.

:mod:`.front` reads every request on the service's port with these functions. They
accept what tornado's HTTP/1.1 server accepts, and no more: a request line of a token
method, a target and ``HTTP/1.x``; field lines of a token name and a value of visible
characters, spaces and tabs (no line folding), each line ending in CRLF; a ``Host`` on
HTTP/1.1; a body framed by ``Content-Length`` or by ``Transfer-Encoding: chunked``
(never both, no chunk extensions or trailers). What they refuse is a :class:`BadRequest`
with its status and one line, which the front answers before it closes the connection.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from http.client import responses

__all__ = [
    "BadRequest",
    "ChunkedBody",
    "RequestHead",
    "body_length",
    "http_date",
    "parse_head",
    "response_head",
    "split_at",
]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VISIBLE = r"[\x21-\x7e\x80-\xff]"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ({_VISIBLE}+) (HTTP/[0-9]\.[0-9])")
_FIELD = re.compile(rf"({_TOKEN}):[ \t]*((?:{_VISIBLE}(?:[ \t]*{_VISIBLE})*)?)[ \t]*")
# RFC 3986's host and port, simplified as tornado does; no comma: two Host headers joined.
_HOST = re.compile(r"(?:[\[\]:A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})*(?::[0-9]*)?")
_LENGTH = re.compile(r"[0-9]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
#: The longest chunk-size line read (tornado's limit too).
_SIZE_LINE = 64


class BadRequest(Exception):
    """A request the front will not read further: its ``status`` and one line, ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestHead:
    """A request line and its fields: ``headers`` by lowercase name, repeated values joined
    by ``,`` (as tornado's ``HTTPHeaders`` gives them); ``fields``: the field lines as sent."""

    __slots__ = ("fields", "headers", "method", "path", "target", "version")

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str], fields: str) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.fields = fields
        self.path = target.partition("?")[0]

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the answer (tornado's rule)."""
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.1":
            return connection != "close"
        framed = "content-length" in self.headers or "transfer-encoding" in self.headers
        return connection == "keep-alive" and (framed or self.method in ("GET", "HEAD"))


def parse_head(data: bytes | bytearray) -> RequestHead:
    """The request line and fields ``data`` holds (without the blank line ending them)."""
    text = data.decode("latin-1")
    line, _, fields = text.partition("\r\n")
    request = _REQUEST_LINE.fullmatch(line)
    if request is None:
        raise BadRequest(400, "malformed HTTP request line")
    method, target, version = request.groups()
    if not version.startswith("HTTP/1."):
        raise BadRequest(505, f"HTTP version {version[5:]} is not supported: send HTTP/1.1")
    headers: dict[str, str] = {}
    for field in fields.split("\r\n") if fields else ():
        match = _FIELD.fullmatch(field)
        if match is None:
            raise BadRequest(400, f"malformed header line {field[:40]!r}")
        name, value = match.group(1).lower(), match.group(2)
        known = headers.get(name)
        headers[name] = value if known is None else f"{known},{value}"
    host = headers.get("host")
    if host is None and version == "HTTP/1.1":
        raise BadRequest(400, "an HTTP/1.1 request needs a Host header")
    if host is not None and not _HOST.fullmatch(host):
        raise BadRequest(400, f"invalid Host header {host[:80]!r}")
    return RequestHead(method, target, version, headers, fields)


def body_length(head: RequestHead, limit: int) -> int | None:
    """The body's length in bytes (0 without one), None when it is chunked.

    A body over ``limit`` bytes is refused (413), and so is a framing a proxy and this
    server could read two ways (both headers, unequal lengths: 400).
    """
    encoding = head.headers.get("transfer-encoding")
    length = head.headers.get("content-length")
    if encoding is not None:
        if length is not None:
            raise BadRequest(400, "a request has Content-Length or Transfer-Encoding, not both")
        if encoding.lower() != "chunked":
            raise BadRequest(501, f"Transfer-Encoding {encoding[:40]!r} is not supported: send chunked")
        return None
    if length is None:
        return 0
    values = set(re.split(r",[ \t]*", length))
    if len(values) != 1 or not _LENGTH.fullmatch(value := values.pop()):
        raise BadRequest(400, f"Content-Length {length[:40]!r} is not one whole number")
    if int(value) > limit:
        raise BadRequest(413, f"the body is over {limit} bytes")
    return int(value)


class ChunkedBody:
    """A chunked body read as it arrives: :meth:`consume` the buffer, until :attr:`done`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.done = False
        self._parts: list[bytes] = []
        self._left: int | None = None  # the data bytes of the current chunk, once its size is read

    def consume(self, data: bytes | bytearray) -> int:
        """Read what ``data`` holds of the body; how many of its bytes that was."""
        pos = 0
        while not self.done:
            if self._left is None:
                end = data.find(b"\r\n", pos, pos + _SIZE_LINE + 2)
                if end < 0:
                    if len(data) - pos > _SIZE_LINE:
                        raise BadRequest(400, "a chunk size line is too long")
                    return pos
                if not _CHUNK_SIZE.fullmatch(data, pos, end):
                    raise BadRequest(400, "a chunk size is not a hexadecimal number")
                self._left = int(data[pos:end], 16)
                self.size += self._left
                if self.size > self.limit:
                    raise BadRequest(413, f"the body is over {self.limit} bytes")
                pos = end + 2
            left = self._left
            if len(data) - pos < left + 2:
                return pos
            if data[pos + left : pos + left + 2] != b"\r\n":
                raise BadRequest(400, "a chunk does not end with CRLF")
            if left:
                self._parts.append(bytes(memoryview(data)[pos : pos + left]))
            self.done = left == 0
            self._left = None
            pos += left + 2
        return pos

    def body(self) -> bytes:
        """The body read so far, joined."""
        return self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)


def split_at(data: bytes | bytearray, n: int) -> tuple[bytes, bytes | bytearray]:
    """``data``'s first ``n`` bytes, copied once (not at all when that is all of it), and the rest."""
    if isinstance(data, bytes):
        return data[:n], data[n:]
    return bytes(memoryview(data)[:n]), data[n:]


def response_head(status: int, headers: list[tuple[str, str]], reason: str | None = None) -> bytes:
    """A status line and ``headers`` (no CR or LF in them), ending with the blank line;
    ``reason``: the phrase, the status's own by default."""
    lines = [f"HTTP/1.1 {status} {reason or responses.get(status, 'Unknown')}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class _Clock:
    """``Date``'s value, formatted once a second rather than once a request."""

    second = -1
    text = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.text = second, formatdate(second, usegmt=True)
        return cls.text


def http_date() -> str:
    """The time now as a ``Date`` header's value."""
    return _Clock.now()
