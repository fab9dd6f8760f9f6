"""A small, fast HTTP/1.1 load generator for benchmarking an HTTP API on loopback.

Pure Python on asyncio (uvloop when importable).  The hot path uses the low-level protocol
API: every connection is an :class:`asyncio.Protocol` that writes one request, parses the
response incrementally with :class:`ResponseParser` and, on completion, immediately writes
the next request from its callback -- no coroutines, no stream readers, no third-party HTTP
client.  That keeps the client far from being the bottleneck (tens of thousands of requests a
second on one core against a trivial server).

Typical use::

    def make_request(i: int) -> tuple[str, str, dict[str, str], bytes]:
        return "POST", "/v1/events", {"Content-Type": "application/json"}, b'{"n": %d}' % i

    result = run_load("127.0.0.1", 8000, make_request, connections=32, duration=5.0)
    print(result.rps, result.p99_ms)

:func:`run_load_in_subprocess` does the same in a separate (spawned) Python process, optionally
pinned to one CPU, so that the load generator does not share a GIL with the code under test.

Semantics:

* ``connections`` keep-alive TCP connections each carry one request at a time (no pipelining).
* Request ``i`` is built by ``make_request(i)``; ``i`` is one counter shared by all connections,
  so every request gets a unique, increasing ``i`` starting at 0.
* The run lasts ``warmup + duration`` seconds at most.  Responses completed during the first
  ``warmup`` seconds are not part of the statistics (they are only counted in
  ``warmup_requests``/``warmup_errors``); the measured window is the ``duration`` seconds after.
* ``max_requests`` caps the total number of requests issued (warm-up ones included): the run
  ends as soon as that many requests have been answered or have failed, or at the deadline,
  whichever comes first.  With ``warmup=0`` every one of them is measured.
* A connection the server closes (``Connection: close``, end of a read-until-close body, or a
  drop) is reopened.  A request whose connection drops before its response is complete, or
  that gets no complete response within ``request_timeout`` seconds, counts as an error and is
  not retried (its ``i`` is consumed), as does every failed connection attempt.
* Only loopback targets are accepted: 127.0.0.0/8, ::1 and ``localhost``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import ipaddress
import math
import multiprocessing
import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, cast

__all__ = [
    "HTTPProtocolError",
    "LoadResult",
    "MakeRequest",
    "Request",
    "ResponseParser",
    "check_loopback",
    "run_load",
    "run_load_in_subprocess",
]

Request = tuple[str, str, dict[str, str], bytes]
"""``(method, path, headers, body)`` as returned by a ``make_request`` callable."""

MakeRequest = Callable[[int], Request]

# Extra seconds beyond ``warmup + duration`` after which a run is abandoned no matter what.
_GRACE_S = 30.0
# Extra seconds a spawned load generator gets for starting up (interpreter, imports).
_SPAWN_GRACE_S = 30.0
# Headers the generator writes itself; see _Run.build.
_MANAGED_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})
_MAX_HEAD_BYTES = 64 * 1024
_MAX_LINE_BYTES = 8 * 1024
_HEX_DIGITS = b"0123456789abcdefABCDEF"

# ResponseParser states.
_IDLE = 0
_HEAD = 1
_BODY_LENGTH = 2
_CHUNK_SIZE = 3
_CHUNK_DATA = 4
_CHUNK_CRLF = 5
_TRAILER = 6
_BODY_EOF = 7


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one load run measured; all figures cover the measured window only.

    ``requests`` is the number of responses completed in the window, ``seconds`` the window's
    length (up to the last response when ``max_requests`` ended the run early), ``rps`` their
    ratio, the ``*_ms`` fields are latency percentiles (nearest rank) in milliseconds,
    ``status_counts`` maps HTTP status to number of responses and ``errors`` counts failed
    connection attempts, dropped connections, timeouts and malformed responses.
    """

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    warmup_requests: int = 0
    warmup_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a plain dict (JSON-able apart from the int status keys)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadResult:
        """Rebuild a result from :meth:`to_dict` output (status keys may be strings)."""
        values = dict(data)
        values["status_counts"] = {int(k): int(v) for k, v in data["status_counts"].items()}
        return cls(**values)


# --------------------------------------------------------------------------------------------
# Response parsing
# --------------------------------------------------------------------------------------------


class HTTPProtocolError(Exception):
    """The server sent something that is not a valid HTTP/1.x response."""


class ResponseParser:
    """Incremental parser for the response to one request at a time.

    Call :meth:`start` when a request is sent, then :meth:`feed` with every piece of data
    received until it returns True; :attr:`status`, :attr:`keep_alive` and
    :attr:`body_bytes` then describe the response.  Handles interim 1xx responses,
    ``Content-Length`` bodies, chunked transfer-encoding (extensions and trailers included),
    bodies delimited by end of connection (see :meth:`feed_eof`) and body-less responses
    (HEAD, 204, 304).  The body itself is discarded.  Raises :class:`HTTPProtocolError` on
    malformed input or on data that arrives while no request is outstanding.
    """

    __slots__ = (
        "_buf",
        "_head_request",
        "_remaining",
        "_state",
        "body_bytes",
        "keep_alive",
        "status",
    )

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = _IDLE
        self._remaining = 0
        self._head_request = False
        self.status = 0
        self.keep_alive = True
        self.body_bytes = 0

    @property
    def busy(self) -> bool:
        """True while a response is expected but not complete."""
        return self._state != _IDLE

    def start(self, head_request: bool = False) -> None:
        """Expect the response to a new request (``head_request``: it was a HEAD request)."""
        if self._state != _IDLE:
            raise RuntimeError("the previous response is not complete")
        self._state = _HEAD
        self._head_request = head_request
        self.status = 0
        self.keep_alive = True
        self.body_bytes = 0

    def feed(self, data: bytes) -> bool:
        """Consume received bytes; return True once the response is complete."""
        if self._state == _IDLE:
            if data:
                raise HTTPProtocolError("data received while no request was outstanding")
            return False
        buf = self._buf
        buf += data
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD_BYTES:
                        raise HTTPProtocolError("response head too large")
                    return False
                head = bytes(buf[:end])
                del buf[: end + 4]
                if self._parse_head(head):
                    return self._complete()
            elif state == _BODY_LENGTH:
                size = len(buf)
                remaining = self._remaining
                if size < remaining:
                    self._remaining = remaining - size
                    self.body_bytes += size
                    buf.clear()
                    return False
                self.body_bytes += remaining
                del buf[:remaining]
                return self._complete()
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_LINE_BYTES:
                        raise HTTPProtocolError("chunk-size line too long")
                    return False
                text = bytes(buf[:end]).split(b";", 1)[0].strip(b" \t")
                del buf[: end + 2]
                if not text or len(text) > 16 or text.strip(_HEX_DIGITS):
                    raise HTTPProtocolError(f"bad chunk size {text!r}")
                size = int(text, 16)
                if size:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILER
            elif state == _CHUNK_DATA:
                size = len(buf)
                remaining = self._remaining
                if size < remaining:
                    self._remaining = remaining - size
                    self.body_bytes += size
                    buf.clear()
                    return False
                self.body_bytes += remaining
                del buf[:remaining]
                self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(buf) < 2:
                    return False
                if buf[0] != 13 or buf[1] != 10:
                    raise HTTPProtocolError("chunk data not followed by CRLF")
                del buf[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_LINE_BYTES:
                        raise HTTPProtocolError("trailer line too long")
                    return False
                del buf[: end + 2]
                if end == 0:
                    return self._complete()
            else:  # _BODY_EOF: everything up to the end of the connection is body.
                self.body_bytes += len(buf)
                buf.clear()
                return False

    def feed_eof(self) -> bool:
        """Signal end of connection; True if that completed a read-until-close body."""
        complete = self._state == _BODY_EOF
        self._state = _IDLE
        self._buf.clear()
        return complete

    def _complete(self) -> bool:
        self._state = _IDLE
        if self._buf:
            raise HTTPProtocolError("unexpected data after the response")
        return True

    def _parse_head(self, head: bytes) -> bool:
        """Parse status line and headers; set the body state; True if there is no body."""
        lines = head.split(b"\r\n")
        status_line = lines[0]
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if (
            version not in (b"HTTP/1.1", b"HTTP/1.0")
            or len(code) != 3
            or not code.isdigit()
            or rest[3:4] not in (b"", b" ")
        ):
            raise HTTPProtocolError(f"bad status line {status_line!r}")
        status = int(code)
        length: int | None = None
        encoded = chunked = close = keep_alive = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1:] in (b" ", b"\t"):
                raise HTTPProtocolError(f"bad header line {line!r}")
            key = name.lower()
            if key == b"content-length":
                text = value.strip(b" \t")
                if not text.isdigit() or (length is not None and int(text) != length):
                    raise HTTPProtocolError(f"bad Content-Length {value!r}")
                length = int(text)
            elif key == b"transfer-encoding":
                encoded = True
                chunked = value.lower().rsplit(b",", 1)[-1].strip(b" \t") == b"chunked"
            elif key == b"connection":
                tokens = {token.strip(b" \t") for token in value.lower().split(b",")}
                close = close or b"close" in tokens
                keep_alive = keep_alive or b"keep-alive" in tokens
        if status < 200:
            if status == 101:
                raise HTTPProtocolError("unexpected 101 Switching Protocols")
            return False  # Interim response: the real one follows; stay in _HEAD.
        self.status = status
        self.keep_alive = not close and (version == b"HTTP/1.1" or keep_alive)
        if self._head_request or status == 204 or status == 304:
            return True
        if encoded:
            if chunked:
                self._state = _CHUNK_SIZE
                return False
        elif length is not None:
            if length == 0:
                return True
            self._remaining = length
            self._state = _BODY_LENGTH
            return False
        self._state = _BODY_EOF
        self.keep_alive = False
        return False


# --------------------------------------------------------------------------------------------
# Target checking
# --------------------------------------------------------------------------------------------


def check_loopback(host: str) -> list[str]:
    """Return the loopback addresses to connect to for ``host``, or raise ValueError.

    Accepts IPv4 addresses in 127.0.0.0/8, ``::1`` (optionally in brackets) and
    ``localhost`` (which must resolve to loopback addresses only).
    """
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        if host.lower().rstrip(".") != "localhost":
            raise ValueError(f"refusing non-loopback target host {host!r}") from None
    else:
        if not _is_loopback(address):
            raise ValueError(f"refusing non-loopback target host {host!r}")
        return [str(address)]
    try:
        infos = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
    except OSError:
        return ["127.0.0.1", "::1"]
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for resolved in addresses:
        if not _is_loopback(ipaddress.ip_address(resolved.split("%", 1)[0])):
            raise ValueError(f"localhost resolves to non-loopback address {resolved}")
    return addresses or ["127.0.0.1"]


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        return address in ipaddress.IPv4Network("127.0.0.0/8")
    return address == ipaddress.IPv6Address("::1")


def _host_header(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


# --------------------------------------------------------------------------------------------
# The load run
# --------------------------------------------------------------------------------------------


class _Run:
    """State shared by all connections of one load run (lives in one event loop)."""

    def __init__(
        self,
        make_request: MakeRequest,
        host_header: str,
        addresses: list[str],
        port: int,
        connections: int,
        duration: float,
        warmup: float,
        max_requests: int | None,
        request_timeout: float,
    ) -> None:
        self.make_request = make_request
        self.host_header = host_header
        self.addresses = addresses
        self.port = port
        self.connections = connections
        self.duration = duration
        self.warmup = warmup
        self.max_requests = max_requests
        self.request_timeout = request_timeout
        self.issued = 0
        self.outstanding = 0
        self.latencies_ns: list[int] = []
        self.status_counts: dict[int, int] = {}
        self.errors = 0
        self.warmup_requests = 0
        self.warmup_errors = 0
        self.warm_end_ns = 0
        self.deadline_ns = 0
        self.end_ns = 0
        self.last_ns = 0
        self.finished = False
        self.failure: BaseException | None = None
        self.conns: set[_Connection] = set()
        self.done: asyncio.Future[None] | None = None

    @property
    def exhausted(self) -> bool:
        """True once ``max_requests`` requests have been issued."""
        return self.max_requests is not None and self.issued >= self.max_requests

    def begin(self, done: asyncio.Future[None]) -> None:
        """Start the clock."""
        self.done = done
        now = perf_counter_ns()
        self.warm_end_ns = now + int(self.warmup * 1e9)
        self.deadline_ns = self.warm_end_ns + int(self.duration * 1e9)
        self.last_ns = now

    def build(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        """Serialise one request; Host, Content-Length and Connection are added here."""
        host = self.host_header
        connection = "keep-alive"
        extra = ""
        if headers:
            lines = []
            for name, value in headers.items():
                key = name.lower()
                if key in _MANAGED_HEADERS:
                    if key == "host":
                        host = value
                    elif key == "connection":
                        connection = value
                    elif key == "transfer-encoding":
                        raise ValueError("Transfer-Encoding request bodies are not supported")
                    elif value.strip() != str(len(body)):
                        raise ValueError(f"Content-Length {value!r} does not match the body")
                    continue
                lines.append(f"{name}: {value}\r\n")
            extra = "".join(lines)
            expected = 5 + len(lines)
        else:
            expected = 5
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {connection}\r\n{extra}\r\n"
        )
        if head.count("\n") != expected or head.count("\r") != expected:
            raise ValueError(f"CR or LF inside the request line or a header: {head!r}")
        raw = head.encode("latin-1")
        return raw + body if body else raw

    def next_request(self) -> bytes | None:
        """Build the next request and count it as outstanding; None when there is none."""
        if self.finished or self.exhausted:
            return None
        i = self.issued
        try:
            method, path, headers, body = self.make_request(i)
            data = self.build(method, path, headers, body)
        except Exception as exc:
            self.abort(exc)
            return None
        self.issued = i + 1
        self.outstanding += 1
        return data

    def completed(self, status: int, latency_ns: int, now_ns: int) -> None:
        """Account for one complete response."""
        self.outstanding -= 1
        if self.finished:
            return
        if now_ns > self.deadline_ns:
            self.finish()
            return
        if now_ns >= self.warm_end_ns:
            self.latencies_ns.append(latency_ns)
            counts = self.status_counts
            counts[status] = counts.get(status, 0) + 1
        else:
            self.warmup_requests += 1
        self.last_ns = now_ns
        if self.outstanding == 0 and self.exhausted:
            self.finish()

    def failed(self) -> None:
        """Account for an outstanding request that got no (valid) response."""
        self.outstanding -= 1
        self.error()
        if not self.finished and self.outstanding == 0 and self.exhausted:
            self.last_ns = perf_counter_ns()
            self.finish()

    def error(self) -> None:
        """Count one error (connection failure, drop, timeout, protocol violation)."""
        if self.finished:
            return
        if perf_counter_ns() >= self.warm_end_ns:
            self.errors += 1
        else:
            self.warmup_errors += 1

    def abort(self, exc: BaseException) -> None:
        """Stop the run because of ``exc`` (re-raised by :func:`run_load`)."""
        if self.failure is None:
            self.failure = exc
        self.finish()

    def finish(self) -> None:
        """End the run: fix the window's end, drop every connection, wake the main task."""
        if self.finished:
            return
        self.finished = True
        if self.exhausted and self.outstanding == 0:
            self.end_ns = min(self.last_ns, self.deadline_ns)
        else:
            self.end_ns = min(perf_counter_ns(), self.deadline_ns)
        for conn in list(self.conns):
            conn.abort()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def connect(self, conn: _Connection) -> None:
        """Open a connection for ``conn``, trying each target address in turn."""
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        for index, address in enumerate(self.addresses):
            try:
                await loop.create_connection(lambda: conn, address, self.port)
            except OSError as exc:
                error = exc
                continue
            if index:  # Try the address that worked first next time.
                self.addresses.insert(0, self.addresses.pop(index))
            return
        assert error is not None
        raise error

    def result(self) -> LoadResult:
        """Summarise the measured window."""
        latencies = sorted(self.latencies_ns)
        seconds = max(0, self.end_ns - self.warm_end_ns) / 1e9
        return LoadResult(
            requests=len(latencies),
            seconds=seconds,
            rps=len(latencies) / seconds if seconds > 0 else 0.0,
            p50_ms=_percentile_ms(latencies, 0.50),
            p90_ms=_percentile_ms(latencies, 0.90),
            p99_ms=_percentile_ms(latencies, 0.99),
            max_ms=latencies[-1] / 1e6 if latencies else 0.0,
            status_counts=dict(sorted(self.status_counts.items())),
            errors=self.errors,
            warmup_requests=self.warmup_requests,
            warmup_errors=self.warmup_errors,
        )


def _percentile_ms(sorted_ns: list[int], quantile: float) -> float:
    if not sorted_ns:
        return 0.0
    rank = max(1, math.ceil(quantile * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


class _Connection(asyncio.Protocol):
    """One TCP connection: send a request, parse its response, send the next one."""

    __slots__ = ("_parser", "_run", "_transport", "closed", "inflight", "responses", "sent_ns")

    def __init__(self, run: _Run, closed: asyncio.Future[None]) -> None:
        self._run = run
        self._parser = ResponseParser()
        self._transport: asyncio.Transport | None = None
        self.closed = closed
        self.inflight = False
        self.responses = 0
        self.sent_ns = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if self._run.finished:
            self._transport.abort()
            return
        self._run.conns.add(self)
        self._send()

    def _send(self) -> None:
        data = self._run.next_request()
        if data is None:
            return
        assert self._transport is not None
        self._parser.start(data.startswith(b"HEAD "))
        self.inflight = True
        self.sent_ns = perf_counter_ns()
        self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        try:
            if not parser.feed(data):
                return
        except HTTPProtocolError:
            self.fail()
            return
        now = perf_counter_ns()
        self.inflight = False
        self.responses += 1
        self._run.completed(parser.status, now - self.sent_ns, now)
        if parser.keep_alive:
            self._send()
        elif self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self._run
        run.conns.discard(self)
        if self.inflight:
            self.inflight = False
            if self._parser.feed_eof():
                now = perf_counter_ns()
                self.responses += 1
                run.completed(self._parser.status, now - self.sent_ns, now)
            else:
                run.failed()
        if not self.closed.done():
            self.closed.set_result(None)

    def fail(self) -> None:
        """Count an error for this connection and drop it (it will be reopened)."""
        if self.inflight:
            self.inflight = False
            self._run.failed()
        else:
            self._run.error()
        self.abort()

    def abort(self) -> None:
        """Close the connection immediately."""
        if self._transport is not None:
            self._transport.abort()


async def _keep_connected(run: _Run) -> None:
    """Keep one connection open until the run ends, reopening it whenever it closes."""
    loop = asyncio.get_running_loop()
    backoff = 0.0
    while not run.finished and not run.exhausted:
        if backoff:
            await asyncio.sleep(backoff)
            if run.finished:
                break
        conn = _Connection(run, loop.create_future())
        try:
            async with asyncio.timeout(run.request_timeout):
                await run.connect(conn)
        except OSError:  # Includes TimeoutError.
            run.error()
            backoff = min(max(2 * backoff, 0.01), 0.5)
            continue
        await conn.closed
        # A server that closes connections without answering must not make us spin.
        backoff = 0.0 if conn.responses else min(max(2 * backoff, 0.01), 0.5)


async def _watchdog(run: _Run) -> None:
    """Fail requests that have waited longer than ``request_timeout``."""
    timeout_ns = int(run.request_timeout * 1e9)
    interval = min(0.25, max(0.005, run.request_timeout / 4))
    while True:
        await asyncio.sleep(interval)
        now = perf_counter_ns()
        for conn in list(run.conns):
            if conn.inflight and now - conn.sent_ns > timeout_ns:
                conn.fail()


async def _drive(run: _Run) -> None:
    loop = asyncio.get_running_loop()
    run.begin(loop.create_future())
    assert run.done is not None
    # A little late on purpose: the loop clock and perf_counter differ slightly, and
    # completions past the deadline end the run themselves (see _Run.completed).
    timer = loop.call_later(run.warmup + run.duration + 0.005, run.finish)
    watchdog = loop.create_task(_watchdog(run))
    slots = [loop.create_task(_keep_connected(run)) for _ in range(run.connections)]
    try:
        async with asyncio.timeout(run.warmup + run.duration + _GRACE_S):
            await asyncio.shield(run.done)
    except TimeoutError:
        pass
    finally:
        timer.cancel()
        run.finish()
        watchdog.cancel()
        # Slots end by themselves once their (aborted) connection reports it is lost.
        await asyncio.wait(slots, timeout=2.0)
        for task in slots:
            task.cancel()
        outcomes = await asyncio.gather(watchdog, *slots, return_exceptions=True)
    if run.failure is not None:
        raise run.failure
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)


def run_load(
    host: str,
    port: int,
    make_request: MakeRequest,
    *,
    connections: int = 32,
    duration: float = 10.0,
    warmup: float = 1.0,
    max_requests: int | None = None,
    request_timeout: float = 10.0,
    use_uvloop: bool = True,
) -> LoadResult:
    """Generate HTTP/1.1 load against ``host:port`` (loopback only) and measure it.

    Opens ``connections`` keep-alive connections, each with one request in flight at a time;
    request ``i`` (unique across connections, counting from 0) is ``make_request(i)``, which
    returns ``(method, path, headers, body)``.  Runs for ``warmup + duration`` seconds, or
    until ``max_requests`` requests (warm-up included) have been answered or have failed.
    A request without a complete response after ``request_timeout`` seconds counts as an
    error.  Runs its own event loop (uvloop if ``use_uvloop`` and importable), so it must not
    be called from a running event loop.  An exception raised by ``make_request`` stops the
    run and propagates.  Raises ValueError for a non-loopback host or bad arguments.
    """
    addresses = check_loopback(host)
    if not 0 < port < 65536:
        raise ValueError(f"bad port {port}")
    if connections < 1:
        raise ValueError("connections must be at least 1")
    if not duration > 0 or not warmup >= 0 or not request_timeout > 0:
        raise ValueError("duration and request_timeout must be > 0 and warmup >= 0")
    if max_requests is not None and max_requests < 1:
        raise ValueError("max_requests must be at least 1")
    run = _Run(
        make_request,
        _host_header(host, port),
        addresses,
        port,
        connections,
        duration,
        warmup,
        max_requests,
        request_timeout,
    )
    with asyncio.Runner(loop_factory=_loop_factory(use_uvloop)) as runner:
        runner.run(_drive(run))
    return run.result()


# --------------------------------------------------------------------------------------------
# Running in a separate process
# --------------------------------------------------------------------------------------------


def _import_callable(spec: str) -> MakeRequest:
    module_name, _, attribute = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return cast(MakeRequest, target)


def _subprocess_main(
    conn: Any,
    host: str,
    port: int,
    make_request: str,
    options: tuple[int, float, float, int | None, float, bool],
    cpu: int | None,
) -> None:
    """Entry point of the spawned load generator: run, then send the result back."""
    connections, duration, warmup, max_requests, request_timeout, use_uvloop = options
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        result = run_load(
            host,
            port,
            _import_callable(make_request),
            connections=connections,
            duration=duration,
            warmup=warmup,
            max_requests=max_requests,
            request_timeout=request_timeout,
            use_uvloop=use_uvloop,
        )
        conn.send(("ok", result.to_dict()))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_load_in_subprocess(
    host: str,
    port: int,
    make_request: str,
    *,
    connections: int = 32,
    duration: float = 10.0,
    warmup: float = 1.0,
    max_requests: int | None = None,
    request_timeout: float = 10.0,
    use_uvloop: bool = True,
    cpu: int | None = None,
) -> LoadResult:
    """Like :func:`run_load`, but in a freshly spawned Python process.

    ``make_request`` is a ``"package.module:function"`` string importable in the child
    (which inherits ``sys.path``).  ``cpu`` pins the child to that CPU.  The child is killed
    if it has not reported after ``warmup + duration`` plus a minute (TimeoutError); a
    failure inside it is re-raised as RuntimeError carrying the child's traceback.
    """
    check_loopback(host)
    module_name, colon, attribute = make_request.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"make_request must be 'module:function', got {make_request!r}")
    options = (connections, duration, warmup, max_requests, request_timeout, use_uvloop)
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_subprocess_main,
        args=(sender, host, port, make_request, options, cpu),
        name="loadgen",
        daemon=True,
    )
    try:
        process.start()
        sender.close()
        if not receiver.poll(warmup + duration + _GRACE_S + _SPAWN_GRACE_S):
            raise TimeoutError("the load generator process did not finish in time")
        try:
            kind, payload = receiver.recv()
        except EOFError:
            process.join(5)
            raise RuntimeError(
                f"the load generator process died (exit code {process.exitcode})"
            ) from None
    finally:
        receiver.close()
        sender.close()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
    if kind != "ok":
        raise RuntimeError(f"the load generator process failed:\n{payload}")
    return LoadResult.from_dict(payload)
