"""Tests for the loopback HTTP/1.1 load generator in ``benchmarks/loadgen.py``.

A real ``http.server.ThreadingHTTPServer`` on 127.0.0.1 answers with every framing the
generator has to handle (Content-Length, chunked with extensions and trailers, body-less,
interim 1xx, read-until-close, ``Connection: close``, dropped connections, hangs) and records
every request it receives, so the tests can check that what arrived is exactly what
``make_request`` produced.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from benchmarks.loadgen import (
    HTTPProtocolError,
    LoadResult,
    Request,
    ResponseParser,
    run_load,
    run_load_in_subprocess,
)

# Response kinds; request i asks for KINDS[i % len(KINDS)] through its path.
KINDS = [
    "length",
    "chunked",
    "split",
    "empty",
    "notfound",
    "close",
    "eof",
    "head",
    "interim",
    "drop",
]
EXPECTED_STATUS = {
    "length": 200,
    "chunked": 201,
    "split": 200,
    "empty": 204,
    "notfound": 404,
    "close": 200,
    "eof": 200,
    "head": 200,
    "interim": 202,
}


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    index: int
    body: bytes
    host: str
    connection: str


class Handler(BaseHTTPRequestHandler):
    """Answers ``/<i>/<kind>`` requests with the framing ``kind`` names."""

    protocol_version = "HTTP/1.1"
    server: TestServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _, index, kind = self.path.split("/")
        self.server.received.append(
            Received(
                self.command,
                self.path,
                int(self.headers["X-Index"]),
                body,
                self.headers["Host"],
                self.headers["Connection"],
            )
        )
        payload = f"reply to {index}".encode()
        if kind == "hang":
            self.server.release.wait(5)
            self.close_connection = True
        elif kind == "drop":
            self.close_connection = True
        elif kind in ("length", "notfound", "close", "head"):
            self.send_response(404 if kind == "notfound" else 200)
            self.send_header("Content-Length", str(len(payload)))
            if kind == "close":
                self.send_header("Connection", "close")
            self.end_headers()
            if kind != "head":
                self.wfile.write(payload)
        elif kind == "chunked":
            self.wfile.write(
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nreply\r\n"
                b"1;ext=1\r\n \r\n"
                + f"{len(payload) - 6:x}\r\n".encode()
                + payload[6:]
                + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
            )
        elif kind == "split":
            # Small separate writes so the client sees the response in pieces.
            for piece in (b"HTTP/1.1 200 OK\r\nTransfer-", b"Encoding: chunked\r\n\r", b"\n3"):
                self.wfile.write(piece)
                time.sleep(0.002)
            for piece in (b"\r\nab", b"c\r", b"\n0\r\n", b"\r\n"):
                self.wfile.write(piece)
                time.sleep(0.002)
        elif kind == "empty":
            self.send_response(204)
            self.end_headers()
        elif kind == "eof":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload)
            self.close_connection = True
        elif kind == "interim":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:  # pragma: no cover - test bug
            raise AssertionError(kind)


class TestServer(ThreadingHTTPServer):
    """Threaded HTTP/1.1 server that records requests; ``release`` ends hanging ones."""

    __test__ = False  # Not a pytest test class.
    daemon_threads = True
    request_queue_size = 128  # The default of 5 drops SYNs when 32 connections open at once.

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.received: list[Received] = []
        self.release = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients aborting at the end of a run are expected; anything else is not."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def server() -> Iterator[TestServer]:
    srv = TestServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        thread.join()
        srv.server_close()


def body_for(i: int) -> bytes:
    if i == 7 * len(KINDS) + 1:  # One large body, written in several pieces.
        return bytes(range(256)) * 1024
    return f"body-{i}-".encode() * (i % 5)


def make_mixed_request(i: int) -> Request:
    kind = KINDS[i % len(KINDS)]
    method = "HEAD" if kind == "head" else ("POST", "PUT", "GET")[i % 3]
    headers = {"X-Index": str(i), "Content-Type": "application/octet-stream"}
    return method, f"/{i}/{kind}", headers, b"" if method == "HEAD" else body_for(i)


def make_simple_request(i: int) -> Request:
    """Used by the subprocess test through its ``module:function`` name."""
    return "POST", f"/{i}/length", {"X-Index": str(i)}, f"item {i}".encode()


def check_latencies(result: LoadResult) -> None:
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms
    assert result.seconds > 0
    assert result.rps == pytest.approx(result.requests / result.seconds)


@pytest.mark.parametrize("use_uvloop", [True, False], ids=["uvloop", "asyncio"])
def test_delivers_exactly_the_requests_made(server: TestServer, use_uvloop: bool) -> None:
    total = 300
    result = run_load(
        "127.0.0.1",
        server.port,
        make_mixed_request,
        connections=8,
        duration=15.0,
        warmup=0.0,
        max_requests=total,
        use_uvloop=use_uvloop,
    )

    received = sorted(server.received, key=lambda r: r.index)
    assert [r.index for r in received] == list(range(total))
    for r in received:
        method, path, _, body = make_mixed_request(r.index)
        assert (r.method, r.path, r.body) == (method, path, body)
        assert (r.host, r.connection) == (f"127.0.0.1:{server.port}", "keep-alive")

    kinds = [KINDS[i % len(KINDS)] for i in range(total)]
    drops = kinds.count("drop")
    expected = Counter(EXPECTED_STATUS[k] for k in kinds if k != "drop")
    assert result.status_counts == dict(expected)
    assert result.requests == total - drops
    assert result.errors == drops
    assert result.warmup_requests == result.warmup_errors == 0
    check_latencies(result)
    assert result.to_dict()["status_counts"] == dict(expected)


def test_duration_and_warmup(server: TestServer) -> None:
    started = time.perf_counter()
    result = run_load(
        "127.0.0.1",
        server.port,
        lambda i: ("GET", f"/{i}/length", {"X-Index": str(i)}, b""),
        connections=4,
        duration=0.6,
        warmup=0.3,
    )
    elapsed = time.perf_counter() - started
    assert 0.85 < elapsed < 3.0
    assert result.warmup_requests > 0 and result.requests > 0
    assert result.seconds == pytest.approx(0.6, abs=0.05)
    assert result.status_counts == {200: result.requests}
    assert result.errors == 0
    check_latencies(result)
    indexes = [r.index for r in server.received]
    assert len(indexes) == len(set(indexes))


def test_request_timeout_counts_an_error(server: TestServer) -> None:
    def make(i: int) -> Request:
        return "GET", f"/{i}/{'hang' if i == 0 else 'length'}", {"X-Index": str(i)}, b""

    result = run_load(
        "127.0.0.1",
        server.port,
        make,
        connections=2,
        warmup=0.0,
        max_requests=20,
        request_timeout=0.3,
    )
    assert result.errors == 1
    assert result.status_counts == {200: 19}


def test_unreachable_server_does_not_hang() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # Nothing listens here once the socket is closed.
    started = time.perf_counter()
    result = run_load(
        "127.0.0.1", port, make_simple_request, connections=2, duration=0.3, warmup=0.0
    )
    assert time.perf_counter() - started < 3.0
    assert result.requests == 0 and result.rps == 0.0
    assert result.errors > 0


def test_make_request_errors_propagate(server: TestServer) -> None:
    def make(i: int) -> Request:
        if i == 5:
            raise RuntimeError("broken request factory")
        return make_simple_request(i)

    with pytest.raises(RuntimeError, match="broken request factory"):
        run_load("127.0.0.1", server.port, make, connections=2, warmup=0.0, duration=5.0)


def test_bad_headers_are_rejected(server: TestServer) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        run_load(
            "127.0.0.1",
            server.port,
            lambda i: ("GET", "/0/length", {"X-Index": "0\r\nX-Evil: 1"}, b""),
            warmup=0.0,
            max_requests=1,
        )


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "192.168.1.20", "0.0.0.0", "::2", "::ffff:127.0.0.1", "example.com"]
)
def test_non_loopback_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        run_load(host, 80, make_simple_request, duration=0.1, warmup=0.0)
    with pytest.raises(ValueError, match="non-loopback"):
        run_load_in_subprocess(host, 80, f"{__name__}:make_simple_request", duration=0.1)


def test_run_load_in_subprocess(server: TestServer) -> None:
    cpu = min(os.sched_getaffinity(0))
    result = run_load_in_subprocess(
        "localhost",
        server.port,
        f"{__name__}:make_simple_request",
        connections=4,
        duration=10.0,
        warmup=0.0,
        max_requests=50,
        cpu=cpu,
    )
    assert isinstance(result, LoadResult)
    assert result.requests == 50 and result.errors == 0
    assert result.status_counts == {200: 50}
    check_latencies(result)
    received = sorted(server.received, key=lambda r: r.index)
    assert [(r.index, r.body) for r in received] == [(i, f"item {i}".encode()) for i in range(50)]
    assert {r.host for r in received} == {f"localhost:{server.port}"}


def test_subprocess_failures_are_reported(server: TestServer) -> None:
    with pytest.raises(RuntimeError, match="no_such_module"):
        run_load_in_subprocess(
            "127.0.0.1", server.port, "no_such_module:make", duration=1.0, warmup=0.0
        )


# --- the response parser, fed one byte at a time ---------------------------------------------


def feed_bytewise(parser: ResponseParser, data: bytes) -> bool:
    for offset in range(len(data)):
        if parser.feed(data[offset : offset + 1]):
            assert offset == len(data) - 1, "completed before the end of the response"
            return True
    return False


@pytest.mark.parametrize(
    ("raw", "head_request", "status", "body_bytes", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False, 200, 5, True),
        (b"HTTP/1.1 200 OK\r\ncontent-length:0\r\n\r\n", False, 200, 0, True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False, 204, 0, True),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", False, 304, 0, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", True, 200, 0, True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 99\r\n\r\n"
            b"4;name=value\r\nWiki\r\n0b\r\npedia in \r\n\r\nA\r\nchunks.xyz\r\n0\r\n"
            b"Expires: never\r\nX-More: 1\r\n\r\n",
            False,
            200,
            25,
            True,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            False,
            201,
            2,
            False,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", False, 200, 1, False),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: Keep-Alive\r\n\r\nx",
            False,
            200,
            1,
            True,
        ),
    ],
)
def test_parser_bytewise(
    raw: bytes, head_request: bool, status: int, body_bytes: int, keep_alive: bool
) -> None:
    parser = ResponseParser()
    for _ in range(2):  # The same parser serves consecutive requests.
        parser.start(head_request)
        assert feed_bytewise(parser, raw)
        assert (parser.status, parser.body_bytes, parser.keep_alive) == (
            status,
            body_bytes,
            keep_alive,
        )
        assert not parser.busy
    parser.start(head_request)
    assert parser.feed(raw)  # All at once.


def test_parser_body_until_close() -> None:
    parser = ResponseParser()
    parser.start()
    assert not feed_bytewise(parser, b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nsome body")
    assert parser.feed_eof()
    assert (parser.status, parser.body_bytes, parser.keep_alive) == (200, 9, False)
    parser.start()
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab")
    assert not parser.feed_eof()  # Truncated response: not complete.


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 20x OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_parser_rejects_malformed_responses(raw: bytes) -> None:
    parser = ResponseParser()
    parser.start()
    with pytest.raises(HTTPProtocolError):
        parser.feed(raw)


def test_parser_rejects_unsolicited_data() -> None:
    with pytest.raises(HTTPProtocolError):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\n\r\n")
