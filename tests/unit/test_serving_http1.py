"""The serving front's pure parts: reading HTTP/1.1 requests, framing answers, the request log.

No socket: request heads and bodies are bytes in, values or :class:`BadRequest` out; the
request log writes to a logger the test reads.
"""

from __future__ import annotations

import logging

import pytest

from hubforge.hub.serving.front import RequestLog
from hubforge.hub.serving.http1 import (
    BadRequest,
    ChunkedBody,
    body_length,
    http_date,
    parse_head,
    response_head,
    split_at,
)

HEAD = (
    b"POST /services/serving/endpoints/churn/invocations?x=1 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8000\r\n"
    b"Authorization: token alice-token\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 12"
)


def refused(data: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_head(data)
    return caught.value


# --- the request line and fields ---------------------------------------------------------


def test_parse_head_reads_line_and_fields() -> None:
    head = parse_head(HEAD)
    assert (head.method, head.target, head.path, head.version) == (
        "POST",
        "/services/serving/endpoints/churn/invocations?x=1",
        "/services/serving/endpoints/churn/invocations",
        "HTTP/1.1",
    )
    assert head.headers == {
        "host": "127.0.0.1:8000",
        "authorization": "token alice-token",
        "content-type": "application/json",
        "content-length": "12",
    }
    assert head.fields.startswith("Host: 127.0.0.1:8000\r\n")


def test_repeated_fields_are_joined_as_tornado_joins_them() -> None:
    head = parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a:2 \r\nAccept:\t*/*\t")
    assert head.headers["x-a"] == "1,2"
    assert head.headers["accept"] == "*/*"


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        (b"POST /x\r\nHost: h", 400, "request line"),
        (b"POST  /x HTTP/1.1\r\nHost: h", 400, "request line"),
        (b"P(ST /x HTTP/1.1\r\nHost: h", 400, "request line"),
        (b"PRI * HTTP/2.0\r\nHost: h", 505, "HTTP version 2.0"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nNo colon here", 400, "header line"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded", 400, "header line"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX A: 1", 400, "header line"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\nb", 400, "header line"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b", 400, "header line"),
        (b"GET / HTTP/1.1\r\nAccept: */*", 400, "needs a Host"),
        (b"GET / HTTP/1.1\r\nHost: a b", 400, "invalid Host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400, "invalid Host"),
    ],
)
def test_malformed_heads_are_refused_in_one_line(data: bytes, status: int, needle: str) -> None:
    error = refused(data)
    assert error.status == status
    assert needle in error.message
    assert "\n" not in error.message


def test_http10_needs_no_host() -> None:
    assert parse_head(b"GET /x HTTP/1.0").headers == {}


@pytest.mark.parametrize(
    ("data", "keep"),
    [
        (b"GET / HTTP/1.1\r\nHost: h", True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close", False),
        (b"GET / HTTP/1.0", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive", True),
        (b"POST / HTTP/1.0\r\nConnection: keep-alive", False),  # no length: ends with the connection
        (b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2", True),
    ],
)
def test_keep_alive_follows_tornado(data: bytes, keep: bool) -> None:
    assert parse_head(data).keep_alive is keep


# --- body framing ------------------------------------------------------------------------


def framed(*fields: str) -> int | None:
    return body_length(parse_head("\r\n".join(["POST / HTTP/1.1", "Host: h", *fields]).encode()), 100)


def test_body_length_from_the_headers() -> None:
    assert framed() == 0
    assert framed("Content-Length: 100") == 100
    assert framed("Content-Length: 7", "Content-Length: 7") == 7  # a proxy's duplicate
    assert framed("Transfer-Encoding: Chunked") is None


@pytest.mark.parametrize(
    ("fields", "status", "needle"),
    [
        (("Content-Length: 101",), 413, "over 100 bytes"),
        (("Content-Length: 7", "Content-Length: 8"), 400, "not one whole number"),
        (("Content-Length: -1",), 400, "not one whole number"),
        (("Content-Length: 0x10",), 400, "not one whole number"),
        (("Content-Length: 5", "Transfer-Encoding: chunked"), 400, "not both"),
        (("Transfer-Encoding: gzip, chunked",), 501, "not supported"),
    ],
)
def test_bad_framing_is_refused(fields: tuple[str, ...], status: int, needle: str) -> None:
    with pytest.raises(BadRequest) as caught:
        framed(*fields)
    assert (caught.value.status, needle in caught.value.message) == (status, True)


def test_chunked_body_read_in_pieces() -> None:
    data = b"5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\nNEXT"
    for cut in range(len(data) - 4):
        body = ChunkedBody(100)
        used = body.consume(data[:cut])
        assert not body.done
        used += body.consume(data[used:])
        assert body.done, cut
        assert (body.body(), data[used:]) == (b"hello 0123456789", b"NEXT")


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        (b"z\r\n", 400, "hexadecimal"),
        (b"5;ext=1\r\nhello\r\n", 400, "hexadecimal"),
        (b"5\r\nhelloXX", 400, "CRLF"),
        (b"0\r\nTrailer: x\r\n\r\n", 400, "CRLF"),
        (b"65\r\n", 413, "over 100 bytes"),
        (b"0" * 70, 400, "too long"),
    ],
)
def test_bad_chunks_are_refused(data: bytes, status: int, needle: str) -> None:
    with pytest.raises(BadRequest) as caught:
        ChunkedBody(100).consume(data)
    assert (caught.value.status, needle in caught.value.message) == (status, True)


def test_chunked_body_limit_counts_every_chunk() -> None:
    body = ChunkedBody(10)
    body.consume(b"6\r\nabcdef\r\n")
    with pytest.raises(BadRequest, match="over 10 bytes"):
        body.consume(b"5\r\n")


def test_split_at_copies_once_and_keeps_the_rest() -> None:
    assert split_at(b"abcdef", 4) == (b"abcd", b"ef")
    first, rest = split_at(bytearray(b"abcdef"), 2)
    assert (type(first), first, rest) == (bytes, b"ab", bytearray(b"cdef"))


# --- answers -----------------------------------------------------------------------------


def test_response_head_frames_status_and_headers() -> None:
    assert response_head(200, [("A", "1"), ("B", "2")]) == b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"
    assert response_head(599, []) == b"HTTP/1.1 599 Unknown\r\n\r\n"
    assert response_head(404, [], "Gone Fishing").startswith(b"HTTP/1.1 404 Gone Fishing\r\n")


def test_http_date_is_an_imf_fixdate() -> None:
    assert http_date().endswith(" GMT")
    assert len(http_date()) == len("Sun, 06 Nov 1994 08:49:37 GMT")


# --- the request log ---------------------------------------------------------------------


def test_request_log_is_quiet_for_the_bulk_unless_debug(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("hubforge.test.serving")
    caplog.set_level(logging.DEBUG, logger=log.name)
    quiet, debug = RequestLog(log), RequestLog(log, debug=True)
    quiet(200, "POST", "/s/endpoints/a/invocations", 0.002, True)
    assert caplog.records == []
    quiet(200, "GET", "/s/api/endpoints", 0.002, False)
    quiet(404, "POST", "/s/endpoints/b/invocations", 0.002, True)
    quiet(502, "POST", "/s/endpoints/a/invocations", 0.002, True)
    debug(200, "POST", "/s/endpoints/a/invocations", 0.0021, True)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "200 GET /s/api/endpoints 2.0ms"),
        (logging.INFO, "404 POST /s/endpoints/b/invocations 2.0ms"),
        (logging.ERROR, "502 POST /s/endpoints/a/invocations 2.0ms"),
        (logging.DEBUG, "200 POST /s/endpoints/a/invocations 2.1ms"),
    ]
