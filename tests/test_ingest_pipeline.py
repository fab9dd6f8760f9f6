"""Accept, then apply: the API stores events once and answers; the worker applies them.

What must hold across the two steps: an accepted event is never lost (a crash of the API
after its 202, or of the worker before or during the drain, leaves it pending, and the next
worker applies it), never applied twice, and applied in the order it was accepted.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.app import create_app
from senders.applier import drain, pending
from senders.broker import setup_broker
from settings import Settings
from store.db import BUSY_TIMEOUT_MS, get_engine, read_only
from store.events import EventLog, apply_pending, event_t
from store.schemas import _PLAIN_HTTP_URL, EventIn
from store.stores import create_store
from store.types import utcnow
from tests.factories import cart_event, order_event
from tests.live import serve
from tests.pipeline import apply_accepted
from tests.processes import Proc, eventually, start_api, start_worker
from tests.test_api_events import auth
from tests.test_e2e import stack  # noqa: F401  (the real-process fixture: databases, Redis)


def scalar(settings: Settings, sql: str, **params: Any) -> Any:
    # Read-only: on SQLite a plain connection would queue for the write lock a drain holds.
    with read_only(get_engine(settings.sqlalchemy_url)) as conn:
        return conn.execute(sa.text(sql), params).scalar()


def carts(settings: Settings) -> dict[str, Any]:
    with read_only(get_engine(settings.sqlalchemy_url)) as conn:
        return {r.external_id: r for r in conn.execute(sa.text("SELECT * FROM cart"))}


def test_a_202_means_stored_and_the_worker_applies_it(
    client: TestClient, store_key: tuple[str, str], settings: Settings, broker: StubBroker
) -> None:
    # Given a cart event accepted by the API
    r = client.post("/v1/events", json=cart_event(value=50.0), headers=auth(store_key[1]))
    assert r.status_code == 202, r.text

    # Then it is stored, pending, and nothing is applied yet
    assert scalar(settings, "SELECT count(*) FROM event WHERE applied_at IS NULL") == 1
    assert carts(settings) == {}
    assert pending(get_engine(settings.sqlalchemy_url))

    # When the worker's applier drains
    assert apply_accepted(settings) == 1

    # Then the cart exists, the event is stamped applied, and the abandonment check is queued
    assert carts(settings)["c-1001"].value == pytest.approx(50.0)
    assert scalar(settings, "SELECT count(*) FROM event WHERE applied_at IS NULL") == 0
    assert not pending(get_engine(settings.sqlalchemy_url))
    assert [json.loads(m)["actor_name"] for q in broker.queues.values() for m in q.queue] == [
        "check_carts"
    ]
    # and a second drain finds nothing to do
    assert apply_accepted(settings) == 0


def test_events_apply_in_the_order_they_were_accepted_per_store(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    # Given two stores posting interleaved events for one cart and one customer each, the
    # customer's email changing every time (contacts merge in the order events are applied)
    _, key_a = store_key
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        _, key_b = create_store(conn, name="Other Shop")
    at = datetime.now(UTC) - timedelta(minutes=1)
    for i in range(6):
        for key, shift in ((key_a, 0.0), (key_b, 100.0)):
            event = cart_event(value=shift + i, occurred_at=at + timedelta(seconds=i))
            event["customer"]["email"] = f"shopper{int(shift)}-{i}@example.com"
            r = client.post("/v1/events", json=event, headers=auth(key))
            assert r.status_code == 202, r.text

    # When they are applied in one drain
    assert apply_accepted(settings) == 12

    # Then each store's cart and customer show its own last event
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT cart.value, cart.version, customer.email FROM cart "
                "JOIN customer ON customer.id = cart.customer_id ORDER BY cart.value"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (5.0, 6, "shopper0-5@example.com"),
        (105.0, 6, "shopper100-5@example.com"),
    ]


def test_a_drain_that_dies_before_its_commit_leaves_everything_pending(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    # Given accepted events: a cart, then its order
    _, key = store_key
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    for event in (cart_event(occurred_at=t0), order_event(value=238.0, occurred_at=t0)):
        assert client.post("/v1/events", json=event, headers=auth(key)).status_code == 202

    # When an applier applies them but its transaction never commits (the process died)
    engine = get_engine(settings.sqlalchemy_url)
    with engine.connect() as conn, conn.begin() as transaction:
        drained = apply_pending(conn, now=utcnow())
        assert drained is not None and drained.events == 2
        transaction.rollback()

    # Then nothing of it remains, and both events are still pending
    assert carts(settings) == {}
    assert scalar(settings, "SELECT count(*) FROM event WHERE applied_at IS NULL") == 2

    # And the next drain applies them, once
    assert apply_accepted(settings) == 2
    cart = carts(settings)["c-1001"]
    assert (cart.status, cart.order_id, cart.version) == ("converted", "o-1", 2)
    assert apply_accepted(settings) == 0


def test_an_event_that_no_longer_validates_is_kept_and_skipped(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    # Given two accepted events, the first of which a later version would refuse
    _, key = store_key
    for cart_id in ("c-old", "c-new"):
        r = client.post("/v1/events", json=cart_event(cart_id), headers=auth(key))
        assert r.status_code == 202
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        first = conn.execute(sa.select(sa.func.min(event_t.c.id))).scalar_one()
        conn.execute(
            sa.update(event_t)
            .where(event_t.c.id == first)
            .values(payload={"event_id": "x", "type": "cart.deleted"})
        )

    # When they are applied
    engine = get_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        drained = apply_pending(conn, now=utcnow())

    # Then the valid one is applied, the other kept but stamped, so it blocks nothing
    assert drained is not None and (drained.events, drained.invalid) == (2, 1)
    assert list(carts(settings)) == ["c-new"]
    assert scalar(settings, "SELECT count(*) FROM event WHERE applied_at IS NULL") == 0
    assert scalar(settings, "SELECT count(*) FROM event") == 2


def test_a_group_of_requests_is_stored_as_validated_each_event_once(
    store_key: tuple[str, str], settings: Settings
) -> None:
    # Given two stores' requests written as one group: the same event id in both stores, a
    # repeat within one request, times with an offset and as a Unix timestamp, and a field
    # the schema ignores
    engine = get_engine(settings.sqlalchemy_url)
    shop, _ = store_key
    with engine.begin() as conn:
        other, _ = create_store(conn, name="Other shop")
    seoul = cart_event("c-1", event_id="e-1", occurred_at=datetime(2026, 11, 23, 21, 0))
    seoul["occurred_at"] = "2026-11-23T21:00:00.250+09:00"
    seoul["cart"]["unknown"] = "dropped"
    epoch = cart_event("c-2", event_id="e-2")
    epoch["occurred_at"] = 1_795_000_000
    mine = [EventIn.model_validate(e) for e in (seoul, epoch, seoul)]
    theirs = [EventIn.model_validate(cart_event("c-9", event_id="e-1"))]
    now = utcnow()
    log = EventLog(engine)

    # When the log appends them, and the first request again
    try:
        first = log.append([(shop, mine), (other, theirs)], now)
        again = log.append([(shop, mine[:1])], now)
    finally:
        log.release()

    # Then each request learns which of its events were repeats, per store
    assert first == [[False, False, True], [False]]
    assert again == [[True]]
    # And three events are stored, pending, as validated: times as instants, the payload the
    # event's own JSON (what the applier validates again)
    with read_only(engine) as conn:
        rows = conn.execute(sa.select(event_t).order_by(event_t.c.id)).all()
    assert [(r.store_id, r.event_id, r.type) for r in rows] == [
        (shop, "e-1", "cart.updated"),
        (shop, "e-2", "cart.updated"),
        (other, "e-1", "cart.updated"),
    ]
    assert [r.occurred_at for r in rows[:2]] == [
        datetime(2026, 11, 23, 12, 0, 0, 250_000, tzinfo=UTC),
        datetime.fromtimestamp(1_795_000_000, UTC),
    ]
    assert all(r.received_at == now and r.applied_at is None for r in rows)
    for row, event in zip(rows, [mine[0], mine[1], theirs[0]], strict=True):
        assert row.payload == event.model_dump(mode="json", exclude_none=True)
        assert EventIn.model_validate(row.payload) == event
    assert "unknown" not in rows[0].payload["cart"]


def test_one_applier_at_a_time(store_key: tuple[str, str], settings: Settings) -> None:
    # Given an accepted event and an applier holding its transaction open
    engine = get_engine(settings.sqlalchemy_url)
    with TestClient(create_app(settings, broker=setup_broker(settings, stub=True))) as client:
        r = client.post("/v1/events", json=cart_event(), headers=auth(store_key[1]))
        assert r.status_code == 202
    with engine.connect() as first, first.begin():
        held = apply_pending(first, now=utcnow())
        assert held is not None and held.events == 1
        if engine.dialect.name == "postgresql":
            # Then a second applier on PostgreSQL steps aside at once, and a drain returns 0
            with engine.connect() as second, second.begin():
                assert apply_pending(second, now=utcnow()) is None
            assert drain(settings, engine) == 0
        else:
            # Then on SQLite a second applier waits for the write lock (and would see the
            # events applied once it gets it); here it gives up at once instead
            raw = engine.raw_connection()
            sqlite: Any = raw.driver_connection
            try:
                sqlite.execute("PRAGMA busy_timeout=0")
                with pytest.raises(Exception, match="locked"):
                    sqlite.execute("BEGIN IMMEDIATE")
            finally:
                sqlite.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                raw.close()
    # And after the first commits, nothing is left to apply twice
    assert drain(settings, engine) == 0
    assert carts(settings)["c-1001"].version == 1


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_api_keeps_serving_while_a_worker_holds_the_sqlite_write_lock(
    settings: Settings, store_key: tuple[str, str]
) -> None:
    # Given the API served for real, and another connection (a worker) holding the write lock
    broker = setup_broker(settings, stub=True)
    engine = get_engine(settings.sqlalchemy_url)
    with serve(create_app(settings, broker=broker)) as base, httpx.Client(base_url=base) as http:
        http.post("/v1/events", json=cart_event("c-warm"), headers=auth(store_key[1]))
        locked, release = threading.Event(), threading.Event()

        def worker_transaction() -> None:
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE store SET country = country"))
                locked.set()
                release.wait(20)

        holder = threading.Thread(target=worker_transaction)
        holder.start()
        assert locked.wait(10)
        answers: list[httpx.Response] = []
        poster = threading.Thread(
            target=lambda: answers.append(
                http.post("/v1/events", json=cart_event(), headers=auth(store_key[1]))
            )
        )
        try:
            # When an event is posted meanwhile
            poster.start()
            time.sleep(0.3)

            # Then its answer waits for the lock, but the event loop does not: another
            # request is answered while the lock is still held (a blocked loop would answer
            # only after the holder gives up, 20 s on, well past this request's timeout)
            assert not answers
            assert http.get("/healthz", timeout=10).status_code == 200
            assert holder.is_alive() and not answers
        finally:
            release.set()
            holder.join(20)
            poster.join(20)

        # And once the lock is free the event is accepted
        assert [a.status_code for a in answers] == [202]
    assert scalar(settings, "SELECT count(*) FROM event") == 2


def test_the_documented_routes_answer_like_the_served_ones(
    settings: Settings, store_key: tuple[str, str], broker: StubBroker
) -> None:
    # Given the FastAPI routes that document the event endpoints, reached through FastAPI's
    # own stack instead of the plain ASGI endpoints served ahead of it
    app = create_app(settings, broker=broker)

    async def through_fastapi(scope: Any, receive: Any, send: Any) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    headers = auth(store_key[1])
    with TestClient(through_fastapi) as documented:
        # When an event, a duplicate and an invalid event are posted there
        event = cart_event()
        first = documented.post("/v1/events", json=event, headers=headers)
        again = documented.post("/v1/events", json=event, headers=headers)
        event["cart"]["value"] = -1
        bad = documented.post("/v1/events/batch", json={"events": [event]}, headers=headers)

    # Then they answer as the served endpoints do
    assert (first.status_code, first.json()) == (202, {"accepted": True, "duplicate": False})
    assert again.json() == {"accepted": True, "duplicate": True}
    assert bad.status_code == 422 and "events.0.cart.value" in bad.json()["message"]


@given(st.text(max_size=40) | st.builds(lambda s: "http://" + s, st.text(max_size=30)))
def test_a_url_taken_without_urlsplit_is_one_urlsplit_would_take(value: str) -> None:
    if _PLAIN_HTTP_URL.match(value):
        parts = urlsplit(value)
        assert parts.scheme in ("http", "https") and parts.netloc


# --- real processes: a crash on each side ---------------------------------------------------


CARTS, ROUNDS = 1000, 8
APPLIED = "SELECT count(*) FROM event WHERE applied_at IS NOT NULL"


@pytest.mark.e2e
def test_accepted_events_survive_an_api_crash_and_a_worker_crash(
    stack: dict[str, Any],  # noqa: F811
    env: Any,
) -> None:
    settings: Settings = stack["settings"]
    logs: Path = stack["logs"]
    # No abandonment during the test (a year, scaled: hours of real time), so each open cart
    # still waits for its check at the end: only accepting and applying are under test here.
    settings = env(abandon_after_seconds=365 * 24 * 3600)
    headers = {"Authorization": f"Bearer {stack['key']}"}
    t0 = datetime.now(UTC) - timedelta(hours=1)

    # Given an API without a worker, which accepts 1,000 carts' 8 updates each and an order
    api, base = start_api(logs / "api.log")
    try:
        for round_ in range(ROUNDS):
            events = [
                cart_event(
                    f"c-{n}",
                    value=float(10 * round_ + 1),
                    occurred_at=t0 + timedelta(minutes=round_),
                    customer_id=f"cust-{n}",
                )
                for n in range(CARTS)
            ]
            for start in range(0, CARTS, 500):
                r = httpx.post(
                    f"{base}/v1/events/batch",
                    json={"events": events[start : start + 500]},
                    headers=headers,
                )
                assert r.status_code == 202 and r.json()["accepted"] == 500, r.text
        r = httpx.post(
            f"{base}/v1/events",
            json=order_event(
                "c-7", order_id="o-7", value=71.0, occurred_at=t0 + timedelta(hours=1)
            ),
            headers=headers,
        )
        assert r.status_code == 202
    finally:
        # When the API crashes right after answering
        api.kill()

    # Then every accepted event is stored, none applied yet
    total = ROUNDS * CARTS + 1
    assert scalar(settings, "SELECT count(*) FROM event WHERE applied_at IS NULL") == total
    assert scalar(settings, "SELECT count(*) FROM cart") == 0

    # When a worker starts draining them, and is killed as soon as it has applied anything
    # (the drain commits 2,000 events at a time, so usually part-way through)
    worker = Proc(logs / "worker-1.log", "worker", "--threads", "2")
    try:
        deadline = time.monotonic() + 60
        while not scalar(settings, APPLIED) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.kill()
    assert scalar(settings, APPLIED), "the first worker applied nothing"

    # And a new worker starts
    worker = start_worker(logs / "worker-2.log")
    try:
        # Then everything accepted is applied, once, with each cart's last state
        eventually(
            lambda: scalar(settings, "SELECT count(*) FROM event WHERE applied_at IS NULL") == 0,
            60,
            "events still pending",
        )
        found = carts(settings)
        assert len(found) == CARTS
        assert {c.version for k, c in found.items() if k != "c-7"} == {ROUNDS}
        assert {c.value for k, c in found.items() if k != "c-7"} == {10.0 * ROUNDS - 9}
        assert (found["c-7"].status, found["c-7"].order_id, found["c-7"].version) == (
            "converted",
            "o-7",
            ROUNDS + 1,
        )
        # and every open cart waits for its abandonment check
        assert all(c.check_pending for k, c in found.items() if k != "c-7")
        assert scalar(settings, "SELECT count(*) FROM customer") == CARTS
    finally:
        worker.stop()
