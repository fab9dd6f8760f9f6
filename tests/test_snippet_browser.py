"""The one-line snippet in a real browser (Debian's headless Chromium, over CDP).

A shop page on its own origin loads ``/v1/snippet.js`` from the real API (uvicorn on a free
port), queues a cart before the script has loaded, meets the exit-intent form, identifies the
shopper, changes the cart and leaves — and every event is in the database, sent by ``fetch``
or, on leaving, by ``navigator.sendBeacon``. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from api.app import create_app
from senders.broker import setup_broker
from settings import Settings
from store.db import get_engine
from store.stores import publishable_key
from tests.browser import Chromium
from tests.live import serve
from tests.pipeline import applier_running
from tests.processes import eventually
from tests.services import free_port
from tests.webhook_helpers import rows

ARTIFACTS = Path(__file__).parent / "artifacts"
TENT = {"sku": "TENT-2P", "name": "Two-person tent", "price": 189, "quantity": 1}
MUG = {"sku": "MUG-TI", "name": "Titanium mug", "price": 24.5, "quantity": 2}

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Acme Outdoor</title>
<script>
  window.nudge = window.nudge || [];
  nudge.push(["cart", {currency: "USD", items: [%(tent)s],
                       restore_url: location.origin + "/cart/restore/abc"}]);
</script>
<script src="%(api)s/v1/snippet.js" data-key="%(key)s" data-exit-intent async></script>
</head>
<body style="font-family:sans-serif"><h1>Acme Outdoor</h1><p>Your cart: a two-person tent.</p>
</body></html>
"""


@contextmanager
def shop_site(html: dict[str, str]) -> Iterator[str]:
    """A storefront on its own origin serving ``html["page"]`` (filled in once the origin,
    and so the key, is known); yields the origin."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html["page"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def items_of(value: Any) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else list(json.loads(value))


@pytest.mark.usefixtures("store_key")
def test_snippet_tracks_the_cart_captures_the_email_and_beacons_on_leaving(
    settings: Settings,
) -> None:
    broker = setup_broker(settings, stub=True)
    assert isinstance(broker, StubBroker)
    with serve(create_app(settings, broker=broker)) as api, applier_running(settings):
        html = {"page": ""}
        with shop_site(html) as origin, Chromium() as browser:
            # Given a store whose snippet key allows the shop's origin, and the shop's page
            # with the one-line snippet (and a cart queued before the snippet loaded)
            with get_engine(settings.sqlalchemy_url).begin() as conn:
                _, key, _ = publishable_key(conn, name="Acme Outdoor", origins=[origin])
            html["page"] = PAGE % {"api": api, "key": key, "tent": json.dumps(TENT)}
            page = browser.page()

            # When the shopper opens the page
            page.navigate(origin + "/product/tent")
            eventually(lambda: page.evaluate("!!(window.nudge && window.nudge.ready)"), 10)
            page.evaluate("nudge.flush()", await_promise=True)

            # Then the queued cart is in the database, anonymous for now
            def cart() -> Any:
                found = rows(settings, "SELECT * FROM cart")
                return found[0] if found else None

            first = eventually(cart, 10, lambda: f"no cart; console: {page.console}")
            assert items_of(first.items) == [TENT]
            assert first.value == 189.0 and first.customer_id is None
            assert first.restore_url == origin + "/cart/restore/abc"

            # When the pointer leaves the page, the exit-intent form shows
            page.evaluate(
                "document.dispatchEvent(new MouseEvent('mouseout', {clientY: -1, bubbles: true}))"
            )
            assert page.evaluate("!!document.getElementById('nudge-exit')")
            dialect = get_engine(settings.sqlalchemy_url).dialect.name
            page.screenshot(ARTIFACTS / f"snippet-exit-intent-{dialect}.png")
            # and the shopper leaves an email, ticking the consent box
            page.evaluate(
                "document.getElementById('nudge-exit-email').value = 'Ana@Example.com';"
                "document.getElementById('nudge-exit-consent').checked = true;"
                "document.querySelector('#nudge-exit button[type=submit]').click();"
            )

            # Then the contact and its consent are stored, and the cart now belongs to it
            def contact() -> Any:
                found = rows(settings, "SELECT * FROM customer WHERE email = 'ana@example.com'")
                return found[0] if found else None

            customer = eventually(contact, 10, lambda: f"no contact; console: {page.console}")
            assert bool(customer.consent_email) is True
            eventually(lambda: cart().customer_id == customer.id, 10)

            # When the page identifies the shopper's phone through the JS API
            page.evaluate(
                "nudge.identify({phone: '+14155550123', consents: {sms: true}});nudge.flush()",
                await_promise=True,
            )
            # Then it is added to the same customer
            eventually(lambda: contact().phone == "+14155550123", 10)
            assert bool(contact().consent_sms) is True

            # When a mug is added and the shopper leaves before the snippet's next send
            page.evaluate(
                f"nudge.cart({{currency: 'USD', items: [{json.dumps(TENT)}, {json.dumps(MUG)}]}})"
            )
            page.navigate("about:blank")

            # Then the beacon sent on page hide brought the new cart
            eventually(lambda: cart().value == 238.0, 10, lambda: f"{cart()} {page.console}")
            assert items_of(cart().items) == [TENT, MUG]

    # And everything came in under browser-only event ids, one cart, one customer
    events = rows(settings, "SELECT event_id, type FROM event")
    assert all(e.event_id.startswith("web:") for e in events)
    assert {e.type for e in events} == {"cart.updated", "contact.captured"}
    assert len(rows(settings, "SELECT id FROM cart")) == 1
    assert len(rows(settings, "SELECT id FROM customer")) == 1
