"""Shopify webhooks: signed deliveries become carts, contacts and orders, once each."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient

from api.app import create_app
from senders.broker import setup_broker
from settings import Settings
from tests.pipeline import apply_accepted
from tests.webhook_helpers import count, fixture, rows, shopify, sign, with_secret

CART_TOKEN = "eeafa272cebfd4b22385bc4b645e762c"


@pytest.fixture
def broker(settings: Settings) -> StubBroker:
    stub = setup_broker(settings, stub=True)
    assert isinstance(stub, StubBroker)
    return stub


@pytest.fixture
def client(settings: Settings, broker: StubBroker) -> Iterator[TestClient]:
    with TestClient(create_app(settings, broker=broker)) as c:
        yield c


@pytest.fixture
def shop(settings: Settings, store_key: tuple[str, str]) -> tuple[str, str]:
    """(store id, webhook secret) of a store connected to Shopify."""
    return store_key[0], with_secret(settings)


def cart(settings: Settings) -> dict[str, object]:
    found = rows(settings, "SELECT * FROM cart WHERE external_id = :e", e=CART_TOKEN)
    assert len(found) == 1, f"expected the checkout's cart, found {found}"
    return dict(found[0]._mapping)


def test_checkout_becomes_a_cart_with_restore_link_contact_and_consent(
    client: TestClient, settings: Settings, shop: tuple[str, str], broker: StubBroker
) -> None:
    # Given Shopify's example checkout, where the buyer accepted email and SMS marketing and
    # gave a phone number in E.164
    store_id, secret = shop
    checkout = fixture("shopify/checkout.json")
    checkout.update(buyer_accepts_marketing=True, buyer_accepts_sms_marketing=True)
    checkout["phone"] = "+1 613-555-1212"

    # When it is delivered as checkouts/create
    r = shopify(client, store_id, secret, "checkouts/create", checkout)

    # Then it is accepted and recorded as a checkout on the cart token
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "duplicates": 0}
    apply_accepted(settings)
    row = cart(settings)
    assert row["checkout_stage"] == "checkout"
    assert row["value"] == pytest.approx(398.0)
    assert row["currency"] == "USD"
    assert row["restore_url"] == checkout["abandoned_checkout_url"]
    items = row["items"] if isinstance(row["items"], list) else json.loads(str(row["items"]))
    assert items == [
        {"sku": "IPOD2008PINK", "name": "IPod Nano - 8GB", "price": 199.0, "quantity": 1},
        {"sku": "variant-457924702", "name": "IPod Nano - 8GB", "price": 199.0, "quantity": 1},
    ]
    # And the buyer is the Shopify customer, with the checkout's contact and consents
    (customer,) = rows(settings, "SELECT * FROM customer")
    assert customer.external_id == "603851970716743426"
    assert customer.email == "example@email.com"
    assert customer.phone == "+16135551212"
    assert (customer.consent_email, customer.consent_sms) == (True, True)
    assert row["customer_id"] == customer.id
    # And an abandonment check is on its way
    assert any(broker.queues.values())


def test_replayed_delivery_is_stored_once(
    client: TestClient, settings: Settings, shop: tuple[str, str]
) -> None:
    # Given a delivered checkout
    store_id, secret = shop
    checkout = fixture("shopify/checkout.json")
    first = shopify(client, store_id, secret, "checkouts/update", checkout, webhook_id="wh-1")

    # When Shopify retries the same delivery (same X-Shopify-Webhook-Id)
    again = shopify(client, store_id, secret, "checkouts/update", checkout, webhook_id="wh-1")

    # Then it is answered 200 as a duplicate, and the cart changed once
    assert first.json() == {"accepted": 1, "duplicates": 0}
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 1}
    assert count(settings, "event") == 1
    assert apply_accepted(settings) == 1
    assert cart(settings)["version"] == 1
    (event,) = rows(settings, "SELECT event_id FROM event")
    assert event.event_id == "shopify:wh-1"


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("wrong secret", "does not match"),
        ("tampered body", "does not match"),
        ("missing header", "missing X-Shopify-Hmac-Sha256"),
        ("not base64", "does not match"),
    ],
)
def test_bad_signature_is_refused_and_nothing_stored(
    client: TestClient, settings: Settings, shop: tuple[str, str], how: str, message: str
) -> None:
    # Given a checkout signed wrongly (or not at all)
    store_id, secret = shop
    checkout = fixture("shopify/checkout.json")
    body = json.dumps(checkout).encode()
    signature = {
        "wrong secret": sign("whsec_someone_elses_secret", body),
        "tampered body": sign(secret, body.replace(b"398.00", b"1.00")),
        "missing header": None,
        "not base64": "%%%",
    }[how]

    # When it is delivered
    r = shopify(
        client,
        store_id,
        None,
        "checkouts/create",
        checkout,
        signature=signature,
    )

    # Then it is refused with a clear reason, and nothing is stored
    assert r.status_code == 401, r.text
    assert message in r.json()["message"]
    assert count(settings, "event") == count(settings, "cart") == count(settings, "customer") == 0


def test_checkout_without_email_records_the_cart_without_a_contact(
    client: TestClient, settings: Settings, shop: tuple[str, str]
) -> None:
    # Given a checkout where the buyer has not typed anything yet
    store_id, secret = shop
    checkout = fixture("shopify/checkout.json")
    checkout.update(email=None, customer=None, phone=None, shipping_address=None)
    checkout.update(billing_address=None)

    # When it is delivered
    r = shopify(client, store_id, secret, "checkouts/create", checkout)

    # Then the cart is recorded, at the cart stage, with nobody to contact yet
    assert r.status_code == 200, r.text
    apply_accepted(settings)
    row = cart(settings)
    assert row["customer_id"] is None
    assert row["checkout_stage"] == "cart"
    assert row["value"] == pytest.approx(398.0)
    assert count(settings, "customer") == 0


def test_phone_not_in_e164_is_dropped_without_error(
    client: TestClient, settings: Settings, shop: tuple[str, str]
) -> None:
    # Given a checkout whose phones lack a country code (as in Shopify's example addresses)
    store_id, secret = shop
    checkout = fixture("shopify/checkout.json")
    checkout["phone"] = "555-625-1199"

    # When it is delivered
    r = shopify(client, store_id, secret, "checkouts/create", checkout)

    # Then it is accepted; the email is kept and the phone dropped
    assert r.status_code == 200, r.text
    apply_accepted(settings)
    (customer,) = rows(settings, "SELECT email, phone, consent_email FROM customer")
    assert (customer.email, customer.phone, customer.consent_email) == (
        "example@email.com",
        None,
        False,
    )


def test_order_converts_the_checkout_cart_and_a_late_checkout_update_changes_nothing(
    client: TestClient, settings: Settings, shop: tuple[str, str]
) -> None:
    # Given a checkout, then its order
    store_id, secret = shop
    checkout = fixture("shopify/checkout.json")
    shopify(client, store_id, secret, "checkouts/create", checkout)
    r = shopify(client, store_id, secret, "orders/create", fixture("shopify/order.json"))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "duplicates": 0}

    # When Shopify sends the checkout's last update, now completed, after the order
    checkout.update(
        completed_at="2021-12-31T19:30:05-05:00", updated_at="2021-12-31T19:30:05-05:00"
    )
    late = shopify(client, store_id, secret, "checkouts/update", checkout)

    # Then the cart is converted by the order and stays converted
    assert late.json() == {"ignored": True}
    apply_accepted(settings)
    row = cart(settings)
    assert (row["status"], row["order_id"], row["order_value"]) == (
        "converted",
        "820982911946154508",
        pytest.approx(398.0),
    )
    assert count(settings, "event") == 2


def test_unknown_store_unhandled_topic_and_missing_secret(
    client: TestClient, settings: Settings, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    checkout = fixture("shopify/checkout.json")

    # Given a store with no webhook secret yet, a delivery is refused, naming the fix
    r = shopify(client, store_id, "anything-at-all-16", "checkouts/create", checkout)
    assert r.status_code == 401
    assert "nudge store webhook-secret" in r.json()["message"]

    # Given an unknown store id, a delivery is 404
    secret = with_secret(settings)
    r = shopify(client, "0" * 32, secret, "checkouts/create", checkout)
    assert r.status_code == 404 and r.json()["error"] == "unknown_store"

    # Given a topic Nudge does not handle, a signed delivery is answered 200, ignored
    r = shopify(client, store_id, secret, "products/update", {"id": 1})
    assert r.status_code == 200
    assert r.json()["ignored"] is True
    assert count(settings, "event") == count(settings, "cart") == 0
