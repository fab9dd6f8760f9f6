"""One keep-alive HTTP/1.1 connection to a provider's API, on the standard library.

A provider adapter sends one request after the other to one origin; ``requests`` spends about
a millisecond of CPU per request on machinery that serves no purpose here (re-reading proxy
settings from the environment, merging session settings, cookie jars), ``http.client`` about
a sixth of that. The environment's proxy (``HTTPS_PROXY``/``HTTP_PROXY``, ``NO_PROXY``) and CA
bundle (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``) are read once, when the client is made.

Errors: :class:`NotSent` when no connection could be opened (nothing left this process: safe
to retry); any other ``OSError`` or ``http.client.HTTPException`` means the outcome of the
request is unknown.
"""

from __future__ import annotations

import base64
import http.client
import os
import select
import socket
import ssl
import urllib.request
from typing import Any
from urllib.parse import unquote, urlsplit


class _Response(http.client.HTTPResponse):
    """``http.client``'s response, with the header block parsed directly.

    ``http.client`` hands the header lines to the ``email`` package's feed parser, which cost
    about a tenth of the CPU of an SMS send (~100 µs a response); a provider's answer has a
    dozen plain headers, read here into the same ``HTTPMessage`` in a few microseconds. The
    rest is :meth:`http.client.HTTPResponse.begin` as it is (framing, keep-alive).
    """

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            _header_lines(self.fp)  # a 100 Continue's own headers
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _parse_headers(self.fp)
        tr_enc = self.headers.get("transfer-encoding")
        self.chunked = bool(tr_enc and tr_enc.lower() == "chunked")
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


#: As http.client bounds them: a header line's length, and how many lines.
_MAX_LINE = 65536
_MAX_HEADERS = 100


def _header_lines(fp: Any) -> list[bytes]:
    lines: list[bytes] = []
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return lines
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")


def _parse_headers(fp: Any) -> http.client.HTTPMessage:
    """The header block as ``http.client.parse_headers`` reads it (ISO-8859-1, folded lines
    joined with a space), without the email parser."""
    message = http.client.HTTPMessage()
    fields: list[list[str]] = []
    for raw in _header_lines(fp):
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if line[:1] in (" ", "\t") and fields:
            fields[-1][1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            fields.append([name.strip(), value.strip()])
    for name, value in fields:
        message[name] = value
    return message


class NotSent(ConnectionError):
    """No connection to the provider (refused, unreachable, TLS handshake failed): the request
    never left."""


class KeepAlive:
    """Requests to the origin of ``base_url`` over one connection, reopened when needed."""

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        if self.scheme == "https":
            cafile = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
            self._context = ssl.create_default_context(cafile=cafile or None)
        self._proxy = _proxy_for(self.scheme, self.host)
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, url: str, *, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one request to this origin."""
        parts = urlsplit(url)
        if (parts.scheme, parts.hostname) != (self.scheme, self.host):
            raise ValueError(f"{url!r} is not on {self.scheme}://{self.host}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = dict(headers)
        if self._proxy is not None and self.scheme == "http":
            target = url  # a plain-HTTP proxy takes the absolute form
            if self._proxy[2]:
                headers["Proxy-Authorization"] = self._proxy[2]
        conn = self._connection()
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        answer = {name.lower(): value for name, value in response.getheaders()}
        if response.will_close:
            self.close()
        return response.status, answer, payload

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and (conn.sock is None or peer_closed(conn.sock)):
            self.close()  # the provider closed the idle connection: nothing was sent on it
            conn = None
        if conn is None:
            conn = self._open()
            try:
                conn.connect()
            except OSError as exc:
                conn.close()
                raise NotSent(f"{self.scheme}://{self.host}:{self.port}: {exc}") from exc
            self._conn = conn
        return conn

    def _open(self) -> http.client.HTTPConnection:
        host, port = self.host, self.port
        if self._proxy is not None:
            host, port = self._proxy[0], self._proxy[1]
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self._context
            )
            if self._proxy is not None:
                auth = {"Proxy-Authorization": self._proxy[2]} if self._proxy[2] else None
                conn.set_tunnel(self.host, self.port, headers=auth)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        conn.response_class = _Response
        return conn


def _proxy_for(scheme: str, host: str) -> tuple[str, int, str] | None:
    """The environment's proxy for this origin: (host, port, Proxy-Authorization or "")."""
    proxies = urllib.request.getproxies()
    url = proxies.get(scheme)
    if not url or urllib.request.proxy_bypass(host):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    auth = ""
    if parts.username:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
    return parts.hostname, parts.port or 80, auth


def peer_closed(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable was closed by the other end (EOF)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
