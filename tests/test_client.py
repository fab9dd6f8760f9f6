"""The Python client against the real API over HTTP: retries are safe, 4xx are not retried.

Failures are real: a small HTTP proxy in front of the API drops connections (after the API
has stored the request, or before it sees it) or answers 503/429 for the first requests.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import orjson
import pytest
from dramatiq.brokers.stub import StubBroker

from api.app import create_app
from nudge.client import NudgeClient, NudgeError, NudgeUnavailable
from senders.broker import setup_broker
from settings import Settings
from tests.live import serve
from tests.pipeline import apply_accepted
from tests.services import free_port
from tests.webhook_helpers import count, rows

ITEMS = [{"sku": "TENT-2P", "name": "Two-person tent", "price": 189.0, "quantity": 1}]


class FlakyProxy:
    """Forwards HTTP/1.1 requests to ``upstream``; the first requests fail as ``faults`` say:

    * ``"drop-after"``: forwarded (the API stores it), then the connection is closed unanswered;
    * ``"drop-before"``: closed before anything is forwarded;
    * ``"503"`` / ``"429"``: answered so, with ``Retry-After: 0`` / ``1``, not forwarded.
    """

    def __init__(self, upstream: str, faults: list[str]) -> None:
        self.upstream = upstream
        self.faults = list(faults)
        self.bodies: list[bytes] = []
        self.port = free_port()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.05)  # so the loop notices close() promptly
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        with httpx.Client(base_url=self.upstream) as upstream:
            while not self._stop:
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(10)
                with conn:
                    self._one(conn, upstream)

    def _one(self, conn: socket.socket, upstream: httpx.Client) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int({k.lower(): v for k, v in headers.items()}.get("content-length", 0))
        while len(body) < length:
            body += conn.recv(65536)
        self.bodies.append(body)
        fault = self.faults.pop(0) if self.faults else None
        if fault == "drop-before":
            return
        if fault in ("503", "429"):
            after = "0" if fault == "503" else "1"
            payload = b'{"error":"unavailable","message":"try again"}'
            conn.sendall(
                f"HTTP/1.1 {fault} X\r\nContent-Type: application/json\r\nRetry-After: {after}"
                f"\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            return
        keep = {"authorization", "content-type"}
        response = upstream.request(
            method,
            path,
            content=body,
            headers={k: v for k, v in headers.items() if k.lower() in keep},
        )
        if fault == "drop-after":
            return
        conn.sendall(
            f"HTTP/1.1 {response.status_code} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(response.content)}\r\nConnection: close\r\n\r\n".encode()
            + response.content
        )


@pytest.fixture
def api_url(settings: Settings) -> Iterator[str]:
    stub = setup_broker(settings, stub=True)
    assert isinstance(stub, StubBroker)
    with serve(create_app(settings, broker=stub)) as url:
        yield url


@contextmanager
def proxy(api_url: str, *faults: str) -> Iterator[FlakyProxy]:
    p = FlakyProxy(api_url, list(faults))
    try:
        yield p
    finally:
        p.close()


def ids(p: FlakyProxy) -> list[str]:
    return [orjson.loads(b)["event_id"] for b in p.bodies]


def test_a_response_lost_after_storing_is_retried_and_stored_once(
    api_url: str, settings: Settings, store_key: tuple[str, str]
) -> None:
    # Given a connection that drops after the API stored the event, then one refused outright
    with proxy(api_url, "drop-after", "drop-before") as p:
        client = NudgeClient(p.url, store_key[1], backoff=0.01)

        # When the client sends a cart
        sent = client.cart_updated(
            "c-1", currency="USD", items=ITEMS, customer={"email": "jane@example.com"}
        )

    # Then it tried three times with the same event id, and the event is stored once
    assert len(p.bodies) == 3
    assert ids(p) == [sent.event_id] * 3
    assert sent.duplicate is True  # the first attempt had stored it
    assert count(settings, "event") == 1
    assert apply_accepted(settings) == 1
    (cart,) = rows(settings, "SELECT value FROM cart")
    assert cart.value == pytest.approx(189.0)


def test_5xx_and_429_are_retried_honouring_retry_after(
    api_url: str, settings: Settings, store_key: tuple[str, str]
) -> None:
    # Given an API that first answers 503, then 429 with Retry-After: 1
    with proxy(api_url, "503", "429") as p:
        client = NudgeClient(p.url, store_key[1], backoff=0.01)

        # When an order is sent
        started = time.monotonic()
        sent = client.order_completed("o-1", 189.0, cart_id="c-1")
        elapsed = time.monotonic() - started

    # Then it arrived on the third attempt, after waiting as told, stored once
    assert sent.duplicate is False
    assert len(p.bodies) == 3 and len(set(ids(p))) == 1
    assert elapsed >= 1.0
    apply_accepted(settings)
    assert [tuple(r) for r in rows(settings, "SELECT status, order_id FROM cart")] == [
        ("converted", "o-1")
    ]


def test_4xx_is_not_retried(api_url: str, settings: Settings, store_key: tuple[str, str]) -> None:
    with proxy(api_url) as p:
        # Given a wrong key, one request is made and the API's reason is raised
        with pytest.raises(NudgeError) as refused:
            NudgeClient(p.url, "sk_wrong", backoff=0.01).contact_captured({"email": "a@b.co"})
        assert refused.value.status == 401 and refused.value.code == "unauthorized"
        assert len(p.bodies) == 1

        # Given an invalid event, the field is named and nothing is retried
        client = NudgeClient(p.url, store_key[1], backoff=0.01)
        with pytest.raises(NudgeError) as invalid:
            client.cart_updated("c-1", currency="dollars", items=ITEMS)
        assert invalid.value.status == 422 and "cart.currency" in str(invalid.value)
        assert len(p.bodies) == 2
    assert count(settings, "event") == 0


def test_batch_is_sent_in_chunks_of_500(
    api_url: str, settings: Settings, store_key: tuple[str, str]
) -> None:
    # Given 1,100 events, one of them repeated
    from nudge.client import new_event

    events = [
        new_event(
            "cart.updated",
            cart={"id": f"c-{i}", "currency": "USD", "value": 10.0, "items": ITEMS},
        )
        for i in range(1100)
    ]
    events.append(dict(events[7]))
    with proxy(api_url, "drop-after") as p:
        client = NudgeClient(p.url, store_key[1], backoff=0.01)

        # When they are sent as a batch (the first request's answer is lost)
        results = client.batch(events)

    # Then three requests of ≤500 went out (plus the retried first one), all stored once
    sizes = [len(orjson.loads(b)["events"]) for b in p.bodies]
    assert sizes == [500, 500, 500, 101]
    assert len(results) == 1101
    assert sum(r.duplicate for r in results) == 500 + 1  # the retried chunk, and the repeat
    assert count(settings, "event") == 1100


def test_an_unreachable_api_gives_up_after_the_retries() -> None:
    port = free_port()  # nothing listens here
    client = NudgeClient(f"http://127.0.0.1:{port}", "sk_x", max_retries=2, backoff=0.01)
    with pytest.raises(NudgeUnavailable, match="3 attempts"):
        client.contact_captured({"email": "a@b.co"})
