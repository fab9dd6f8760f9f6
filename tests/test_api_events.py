"""The event API: accepted once, refused clearly, isolated per store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient

from settings import Settings
from store.db import get_engine
from store.stores import create_store
from tests.factories import cart_event, order_event
from tests.pipeline import apply_accepted


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def count(settings: Settings, table: str) -> int:
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        return int(conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one())


def cart_row(settings: Settings, external_id: str) -> Any:
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        return conn.execute(
            sa.text("SELECT * FROM cart WHERE external_id = :e"), {"e": external_id}
        ).first()


def queued(broker: StubBroker) -> list[str]:
    """Actor names of the messages waiting on the stub broker (immediate and delayed)."""
    names = []
    for queue in broker.queues.values():
        names += [json.loads(m)["actor_name"] for m in list(queue.queue)]
    return names


def test_event_is_accepted_once_and_applied_once(
    client: TestClient, store_key: tuple[str, str], settings: Settings, broker: StubBroker
) -> None:
    # Given a cart event
    _, key = store_key
    event = cart_event()

    # When it is posted twice
    first = client.post("/v1/events", json=event, headers=auth(key))
    second = client.post("/v1/events", json=event, headers=auth(key))

    # Then both are accepted, the second as a duplicate, and the cart changed once
    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": True, "duplicate": False}
    assert second.status_code == 202
    assert second.json() == {"accepted": True, "duplicate": True}
    assert apply_accepted(settings) == 1
    cart = cart_row(settings, "c-1001")
    assert cart.version == 1
    assert cart.value == pytest.approx(238.0)
    assert count(settings, "event") == 1
    # and one abandonment check is on the broker
    assert queued(broker) == ["check_carts"]


def test_cart_changes_reuse_the_pending_abandonment_check(
    client: TestClient, store_key: tuple[str, str], settings: Settings, broker: StubBroker
) -> None:
    _, key = store_key
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    for i in range(3):
        r = client.post(
            "/v1/events",
            json=cart_event(occurred_at=t0 + timedelta(minutes=i), value=10.0 + i),
            headers=auth(key),
        )
        assert r.status_code == 202
        apply_accepted(settings)
    cart = cart_row(settings, "c-1001")
    assert cart.version == 3
    assert cart.value == pytest.approx(12.0)
    # One check, which re-schedules itself from the cart's newest activity when it runs.
    assert queued(broker) == ["check_carts"]


def test_late_event_is_stored_but_changes_nothing(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    _, key = store_key
    now = datetime.now(UTC)
    client.post("/v1/events", json=cart_event(occurred_at=now, value=50.0), headers=auth(key))
    apply_accepted(settings)
    late = cart_event(occurred_at=now - timedelta(minutes=10), value=5.0)
    assert client.post("/v1/events", json=late, headers=auth(key)).json()["duplicate"] is False
    apply_accepted(settings)
    assert cart_row(settings, "c-1001").value == pytest.approx(50.0)
    assert count(settings, "event") == 2


def test_batch_gives_one_result_per_event(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    _, key = store_key
    events = [cart_event(f"c-{i}", customer_id=f"cust-{i}") for i in range(20)]
    events.append(events[3])  # a retry inside the batch
    r = client.post("/v1/events/batch", json={"events": events}, headers=auth(key))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 20 and body["duplicates"] == 1
    assert [x["duplicate"] for x in body["results"]] == [False] * 20 + [True]
    assert apply_accepted(settings) == 20
    assert count(settings, "cart") == 20
    assert count(settings, "customer") == 20


def test_order_converts_the_cart(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    _, key = store_key
    client.post("/v1/events", json=cart_event(), headers=auth(key))
    r = client.post("/v1/events", json=order_event(value=238.0), headers=auth(key))
    assert r.status_code == 202
    apply_accepted(settings)
    cart = cart_row(settings, "c-1001")
    assert (cart.status, cart.order_id, cart.order_value) == ("converted", "o-1", 238.0)


def test_an_order_without_a_cart_converts_the_customers_open_carts(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    # Given two open carts of one customer, one of another, applied already
    _, key = store_key
    for cart_id, customer in (("c-1", "cust-1"), ("c-2", "cust-1"), ("c-3", "cust-2")):
        event = cart_event(cart_id, customer_id=customer, email=f"{customer}@example.com")
        assert client.post("/v1/events", json=event, headers=auth(key)).status_code == 202
    apply_accepted(settings)
    # When an order names the customer but no cart
    order = {**order_event(value=99.0), "cart": None, "customer": {"id": "cust-1"}}
    assert client.post("/v1/events", json=order, headers=auth(key)).status_code == 202
    apply_accepted(settings)
    # Then both of that customer's carts are converted, and only those
    assert [cart_row(settings, c).status for c in ("c-1", "c-2", "c-3")] == [
        "converted",
        "converted",
        "active",
    ]


@pytest.mark.parametrize(
    ("mutate", "status", "mentions"),
    [
        (lambda e: e.update(type="cart.deleted"), 422, "type"),
        (lambda e: e.pop("event_id"), 422, "event_id"),
        (lambda e: e["cart"].pop("currency"), 422, "cart.currency"),
        (lambda e: e["cart"].update(value=-1), 422, "cart.value"),
        (lambda e: e["cart"]["items"][0].update(quantity=0), 422, "cart.items.0.quantity"),
        (lambda e: e["cart"].update(currency="dollars"), 422, "cart.currency"),
        (lambda e: e["cart"].update(restore_url="javascript:alert(1)"), 422, "restore_url"),
        (lambda e: e["customer"].update(email="not-an-email"), 422, "customer.email"),
        (lambda e: e["customer"].update(timezone="Mars/Olympus"), 422, "customer.timezone"),
        (lambda e: e.update(occurred_at="2026-11-23T12:00:00"), 422, "occurred_at"),
        (lambda e: e.pop("cart"), 422, "needs a cart"),
    ],
)
def test_bad_event_is_refused_with_a_reason_and_nothing_stored(
    client: TestClient,
    store_key: tuple[str, str],
    settings: Settings,
    mutate: Any,
    status: int,
    mentions: str,
) -> None:
    _, key = store_key
    event = cart_event()
    mutate(event)
    r = client.post("/v1/events", json=event, headers=auth(key))
    assert r.status_code == status, r.text
    assert mentions in r.json()["message"]
    assert count(settings, "event") == count(settings, "cart") == count(settings, "customer") == 0


def test_malformed_json_and_oversized_body(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    _, key = store_key
    headers = {**auth(key), "Content-Type": "application/json"}
    r = client.post("/v1/events", content=b'{"event_id": "x", ', headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    huge = cart_event(
        items=[{"sku": f"S{i}", "name": "x" * 400, "price": 1, "quantity": 1} for i in range(100)]
    )
    r = client.post("/v1/events", json=huge, headers=auth(key))
    assert r.status_code == 413 and str(settings.max_event_bytes) in r.json()["message"]
    r = client.post("/v1/events", content=b"", headers=headers)
    assert r.status_code == 400
    assert count(settings, "event") == 0


def test_nul_characters_are_refused_on_both_databases(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    _, key = store_key
    # Given text with a NUL character, which PostgreSQL cannot store
    event = cart_event()
    event["cart"]["items"][0]["name"] = "Tent\x00"
    # When it is posted alone or in a batch
    single = client.post("/v1/events", json=event, headers=auth(key))
    batch = client.post("/v1/events/batch", json={"events": [event]}, headers=auth(key))
    # Then both are refused with a reason and nothing is stored
    for r in (single, batch):
        assert r.status_code == 422, r.text
        assert "NUL" in r.json()["message"]
    assert count(settings, "event") == 0
    # A literal backslash-u0000 is ordinary text and is accepted
    event["cart"]["items"][0]["name"] = "Tent \\u0000"
    ok = client.post("/v1/events", json=event, headers=auth(key))
    assert ok.status_code == 202, ok.text


def test_batch_with_one_bad_event_stores_nothing(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    _, key = store_key
    events = [cart_event(f"c-{i}") for i in range(5)]
    events[3]["cart"]["value"] = -5
    r = client.post("/v1/events/batch", json={"events": events}, headers=auth(key))
    assert r.status_code == 422
    assert "events.3.cart.value" in r.json()["message"]
    r = client.post(
        "/v1/events/batch",
        json={"events": [cart_event(f"c-{i}") for i in range(settings.max_batch_events + 1)]},
        headers=auth(key),
    )
    assert r.status_code == 413, r.text
    assert count(settings, "event") == 0


@pytest.mark.usefixtures("store_key")
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer sk_wrong", "Basic abc"])
def test_wrong_or_missing_key_is_refused(
    client: TestClient, settings: Settings, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.post("/v1/events", json=cart_event(), headers=headers)
    assert r.status_code == 401
    assert "API key" in r.json()["message"]
    assert count(settings, "event") == 0


def test_stores_cannot_see_each_others_events(
    client: TestClient, store_key: tuple[str, str], settings: Settings
) -> None:
    # Given two stores
    _, key_a = store_key
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        _, key_b = create_store(conn, name="Other Shop")
    event = cart_event(value=100.0)

    # When both post the same event id and cart id
    a = client.post("/v1/events", json=event, headers=auth(key_a))
    event_b = {**event, "cart": {**event["cart"], "value": 7.0}}
    b = client.post("/v1/events", json=event_b, headers=auth(key_b))

    # Then neither is a duplicate of the other, and each store has its own cart
    assert a.json()["duplicate"] is False and b.json()["duplicate"] is False
    apply_accepted(settings)
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        values = sorted(conn.execute(sa.text("SELECT value FROM cart")).scalars())
    assert values == [7.0, 100.0]


def test_openapi_documents_the_event_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert "event_id" in json.dumps(body)
    assert client.get("/docs").status_code == 200
