"""WooCommerce webhooks: unpaid orders are abandoned checkouts, paid orders convert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient

from api.app import create_app
from senders.broker import setup_broker
from settings import Settings
from tests.factories import cart_event
from tests.pipeline import apply_accepted
from tests.webhook_helpers import count, fixture, rows, sign, with_secret, woocommerce


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    stub = setup_broker(settings, stub=True)
    assert isinstance(stub, StubBroker)
    with TestClient(create_app(settings, broker=stub)) as c:
        yield c


@pytest.fixture
def shop(settings: Settings, store_key: tuple[str, str]) -> tuple[str, str]:
    return store_key[0], with_secret(settings)


def paid(order: dict[str, Any]) -> dict[str, Any]:
    return {
        **order,
        "status": "processing",
        "date_paid_gmt": "2026-11-20T19:40:00",
        "date_modified_gmt": "2026-11-20T19:40:00",
    }


def test_pending_order_is_an_abandoned_checkout_with_its_payment_link(
    client: TestClient, settings: Settings, shop: tuple[str, str]
) -> None:
    # Given WooCommerce's example order, placed but not paid
    store_id, secret = shop
    order = fixture("woocommerce/order.json")

    # When it is delivered as order.created
    r = woocommerce(client, store_id, secret, "order.created", order)

    # Then it is a checkout whose restore link is the order's payment page
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "duplicates": 0}
    apply_accepted(settings)
    (cart,) = rows(settings, "SELECT * FROM cart")
    assert cart.external_id == "woo-order-727"
    assert cart.checkout_stage == "checkout"
    assert cart.value == pytest.approx(29.35)
    assert cart.restore_url == order["payment_url"]
    items = cart.items if isinstance(cart.items, list) else json.loads(cart.items)
    assert [(i["sku"], i["price"], i["quantity"]) for i in items] == [
        ("product-93", 3.0, 2),
        ("Bar3", 12.0, 1),
    ]
    # And the buyer is known by email; "(555) 555-5555" has no country code and is dropped
    (customer,) = rows(settings, "SELECT * FROM customer")
    assert (customer.external_id, customer.email, customer.phone) == (
        "email:john.doe@example.com",
        "john.doe@example.com",
        None,
    )
    assert customer.consent_email is None  # WooCommerce states no marketing consent


def test_paid_order_converts_its_checkout_and_the_shoppers_snippet_cart_once(
    client: TestClient, settings: Settings, shop: tuple[str, str], store_key: tuple[str, str]
) -> None:
    # Given a pending order, and a cart the same shopper left through the event API/snippet
    store_id, secret = shop
    order = fixture("woocommerce/order.json")
    woocommerce(client, store_id, secret, "order.created", order)
    event = cart_event("browser-cart-1", email="john.doe@example.com", customer_id="x")
    event["customer"].pop("id")
    r = client.post("/v1/events", json=event, headers={"Authorization": f"Bearer {store_key[1]}"})
    assert r.status_code == 202, r.text

    # When the order is paid (order.updated), and WooCommerce delivers it twice
    first = woocommerce(client, store_id, secret, "order.updated", paid(order))
    second = woocommerce(client, store_id, secret, "order.updated", paid(order))

    # Then both carts are converted by order 727, and the repeat is a duplicate
    assert first.json() == {"accepted": 2, "duplicates": 0}
    assert second.json() == {"accepted": 0, "duplicates": 2}
    apply_accepted(settings)
    carts = rows(settings, "SELECT external_id, status, order_id FROM cart ORDER BY external_id")
    assert [tuple(c) for c in carts] == [
        ("browser-cart-1", "converted", "727"),
        ("woo-order-727", "converted", "727"),
    ]


def test_a_late_pending_update_does_not_revive_a_paid_order(
    client: TestClient, settings: Settings, shop: tuple[str, str]
) -> None:
    # Given a paid order whose earlier "pending" delivery arrives after the payment
    store_id, secret = shop
    order = fixture("woocommerce/order.json")
    woocommerce(client, store_id, secret, "order.updated", paid(order))

    # When the pending version arrives late
    r = woocommerce(client, store_id, secret, "order.created", order)

    # Then it is stored but the cart stays converted
    assert r.status_code == 200
    apply_accepted(settings)
    (cart,) = rows(settings, "SELECT status FROM cart")
    assert cart.status == "converted"


@pytest.mark.parametrize("signature", [None, "bad", "tampered"])
def test_bad_signature_is_refused_and_nothing_stored(
    client: TestClient, settings: Settings, shop: tuple[str, str], signature: str | None
) -> None:
    # Given an order signed wrongly, or not signed
    store_id, secret = shop
    order = fixture("woocommerce/order.json")
    if signature == "tampered":
        signature = sign(secret, json.dumps({**order, "total": "0.01"}).encode())

    # When it is delivered
    r = woocommerce(client, store_id, None, "order.created", order, signature=signature)

    # Then it is refused, and nothing is stored
    assert r.status_code == 401, r.text
    assert "X-WC-Webhook-Signature" in r.json()["message"]
    assert count(settings, "event") == count(settings, "cart") == 0


def test_ping_cancelled_orders_and_other_topics(
    client: TestClient, settings: Settings, shop: tuple[str, str]
) -> None:
    store_id, secret = shop

    # Given WooCommerce saving a new webhook: it pings the URL, unsigned, and wants a 200
    r = client.post(
        f"/v1/webhooks/woocommerce/{store_id}",
        content=b"webhook_id=12",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and r.json() == {"ping": True}
    # (a ping to an unknown store is still a 404)
    r = client.post("/v1/webhooks/woocommerce/" + "0" * 32, content=b"webhook_id=12")
    assert r.status_code == 404

    # Given a cancelled order and a product topic, they are answered 200 and ignored
    cancelled = {**fixture("woocommerce/order.json"), "status": "cancelled"}
    assert woocommerce(client, store_id, secret, "order.updated", cancelled).json() == {
        "ignored": True
    }
    r = woocommerce(client, store_id, secret, "product.updated", {"id": 93})
    assert r.status_code == 200 and r.json()["ignored"] is True
    assert count(settings, "event") == 0
