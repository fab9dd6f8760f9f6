"""The snippet's endpoint: a publishable key, allowed origins only, browser events only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient

from api.app import create_app
from senders.broker import setup_broker
from settings import Settings
from store.db import get_engine
from store.events import event_t
from store.stores import normalize_origin, publishable_key
from tests.factories import cart_event as any_cart_event
from tests.factories import order_event
from tests.pipeline import apply_accepted
from tests.webhook_helpers import count, rows

SHOP = "https://shop.example"


def cart_event(*args: Any, **kw: Any) -> dict[str, Any]:
    """A cart as the shop's pages send it: its restore link is on the shop's origin."""
    kw.setdefault("restore_url", SHOP + "/cart/restore/abc")
    return any_cart_event(*args, **kw)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    stub = setup_broker(settings, stub=True)
    assert isinstance(stub, StubBroker)
    with TestClient(create_app(settings, broker=stub)) as c:
        yield c


@pytest.fixture
def pk(settings: Settings, store_key: tuple[str, str]) -> str:
    """The publishable key of the ``store_key`` store, allowed on the shop's origin."""
    del store_key  # the store has to exist; the key is looked up by its name
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        return publishable_key(conn, name="Acme Outdoor", origins=[SHOP + ":443/"])[1]


def beacon(
    client: TestClient, key: str, events: list[dict[str, Any]], origin: str | None = SHOP
) -> Any:
    """What navigator.sendBeacon sends: text/plain, the key in the body, an Origin header."""
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    if origin:
        headers["Origin"] = origin
    body = json.dumps({"key": key, "events": events})
    return client.post("/v1/snippet/events", content=body, headers=headers)


def test_snippet_js_is_served(client: TestClient) -> None:
    r = client.get("/v1/snippet.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    assert "sendBeacon" in r.text and "data-key" in r.text


def test_beacon_from_an_allowed_origin_is_stored_once_under_a_web_id(
    client: TestClient, settings: Settings, pk: str
) -> None:
    # Given a cart event as the snippet sends it
    event = cart_event("browser-1", event_id="e-1")

    # When it is beaconed twice from the shop's pages
    first = beacon(client, pk, [event])
    again = beacon(client, pk, [event])

    # Then it is stored once, under a browser-only id, with CORS for that origin
    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": 1, "duplicates": 0}
    assert again.json() == {"accepted": 0, "duplicates": 1}
    assert first.headers["access-control-allow-origin"] == SHOP
    assert [r.event_id for r in rows(settings, "SELECT event_id FROM event")] == ["web:e-1"]
    assert apply_accepted(settings) == 1
    assert count(settings, "cart") == 1


@pytest.mark.parametrize("origin", [None, "https://evil.example", "http://shop.example"])
def test_other_origins_are_refused(
    client: TestClient, settings: Settings, pk: str, origin: str | None
) -> None:
    r = beacon(client, pk, [cart_event()], origin=origin)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in r.headers
    assert count(settings, "event") == 0


def test_orders_from_a_browser_are_refused(client: TestClient, settings: Settings, pk: str) -> None:
    # Given a browser claiming an order (which would fake a recovery)
    events = [cart_event(), order_event()]

    # When it is posted with the publishable key
    r = beacon(client, pk, events)

    # Then the whole request is refused and nothing is stored
    assert r.status_code == 403
    assert "order" in r.json()["message"]
    assert count(settings, "event") == count(settings, "cart") == 0


def test_the_keys_do_not_stand_in_for_each_other(
    client: TestClient, settings: Settings, pk: str, store_key: tuple[str, str]
) -> None:
    # The secret key is not a publishable key (and must never be put in a page)
    r = beacon(client, store_key[1], [cart_event()])
    assert r.status_code == 401
    # The publishable key cannot use the server API
    r = client.post("/v1/events", json=cart_event(), headers={"Authorization": f"Bearer {pk}"})
    assert r.status_code == 401
    # An unknown publishable key is refused
    assert beacon(client, "pk_" + "x" * 24, [cart_event()]).status_code == 401
    assert count(settings, "event") == 0


def test_json_with_the_key_in_the_query_and_its_preflight(
    client: TestClient, settings: Settings, pk: str
) -> None:
    # Given a page posting JSON (which browsers preflight) with the key in the query string
    url = f"/v1/snippet/events?key={pk}"
    preflight = client.options(
        url, headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == SHOP
    refused = client.options(url, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403

    # When it posts a contact with consent
    event = {
        "event_id": "c-1",
        "type": "contact.captured",
        "occurred_at": datetime.now(UTC).isoformat(),
        "customer": {"email": "Ana@Example.com", "consents": {"email": True}},
    }
    r = client.post(url, json={"events": [event]}, headers={"Origin": SHOP})

    # Then the contact is stored with its consent
    assert r.status_code == 202, r.text
    apply_accepted(settings)
    (customer,) = rows(settings, "SELECT email, consent_email FROM customer")
    assert (customer.email, customer.consent_email) == ("ana@example.com", True)


def test_a_browser_clock_ahead_is_not_trusted(
    client: TestClient, settings: Settings, pk: str
) -> None:
    # Given a browser whose clock is a day ahead
    ahead = datetime.now(UTC) + timedelta(days=1)

    # When it sends a cart event
    assert beacon(client, pk, [cart_event(occurred_at=ahead)]).status_code == 202

    # Then the event counts as happening now
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        at = conn.execute(sa.select(event_t.c.occurred_at)).scalar_one()
    assert abs((at - datetime.now(UTC)).total_seconds()) < 60


def test_invalid_events_are_refused_with_the_field_and_cors(
    client: TestClient, settings: Settings, pk: str
) -> None:
    event = cart_event()
    event["cart"]["currency"] = "dollars"
    r = beacon(client, pk, [event])
    assert r.status_code == 422
    assert "events.0.cart.currency" in r.json()["message"]
    assert r.headers["access-control-allow-origin"] == SHOP  # the page can read why
    assert count(settings, "event") == 0


def test_rate_limited_per_key_and_address(client: TestClient, settings: Settings, pk: str) -> None:
    # Given a browser sending as fast as it can
    statuses = [beacon(client, pk, [cart_event(f"c-{i}")]).status_code for i in range(31)]

    # Then the burst passes and the request after it is told when to come back
    assert statuses[:30] == [202] * 30
    r = beacon(client, pk, [cart_event("c-late")])
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert count(settings, "event") == 30


def test_origins_are_normalized() -> None:
    assert normalize_origin("https://Shop.Example:443/") == "https://shop.example"
    assert normalize_origin("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    with pytest.raises(ValueError, match="origin"):
        normalize_origin("https://shop.example/cart")
    with pytest.raises(ValueError, match="origin"):
        normalize_origin("javascript:alert(1)")


def test_a_restore_link_off_the_shops_origins_is_refused(
    client: TestClient, settings: Settings, pk: str
) -> None:
    # Tracked links redirect to the cart's restore link: from a browser, with a key anyone
    # can read, a link elsewhere would make Nudge's own emails an open redirect
    for url in ("https://evil.example/cart", "https://shop.example.evil.example/x"):
        r = beacon(client, pk, [cart_event(restore_url=url)])
        assert r.status_code == 422, r.text
        assert "restore_url" in r.json()["message"]
    assert count(settings, "event") == 0
    ok = beacon(client, pk, [cart_event(restore_url="https://SHOP.example:443/cart/1")])
    assert ok.status_code == 202, ok.text
