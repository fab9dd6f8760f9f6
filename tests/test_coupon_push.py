"""Coupon codes created in the store's checkout (Shopify, WooCommerce) before the email.

Real database (SQLite and PostgreSQL), the real email adapter to aiosmtpd, and local HTTP
servers speaking Shopify's GraphQL Admin API and WooCommerce's REST API.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from typing import Any

import pytest
from typer.testing import CliRunner

from nudge.cli import app
from nudge.provider_sinks import ShopifyAdminSink, WooCommerceSink
from nudge.smtp_sink import SmtpSink, free_port
from optimizer import FixedSchedulePolicy
from senders import journey
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings
from store.db import get_engine
from store.events import apply_events
from store.schemas import EventIn
from tests.factories import cart_event, order_event
from tests.journeys import Clock, abandon, rows

runner = CliRunner()
SHOPIFY_TOKEN = "shpat_0123456789abcdef"
WOO_KEY, WOO_SECRET = "ck_0123456789", "cs_abcdef0123"


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink(free_port()) as s:
        yield s


@pytest.fixture
def shopify() -> Iterator[ShopifyAdminSink]:
    with ShopifyAdminSink(SHOPIFY_TOKEN) as s:
        yield s


@pytest.fixture
def rt(env: Any, settings: Settings, smtp: SmtpSink) -> journey.Runtime:
    assert settings.database_url
    s = env(smtp_port=smtp.port, public_url="https://nudge.example.com")
    policy = FixedSchedulePolicy(discount_pct=10.0)
    return journey.Runtime(
        settings=s,
        engine=get_engine(s.sqlalchemy_url),
        policy_for=lambda _store: policy,
        clock=Clock(),
    )


def configure(platform: str, url: str, credential: str) -> Any:
    return runner.invoke(
        app,
        ["store", "coupons", "Acme Outdoor", "--platform", platform, "--url", url],
        input=credential + "\n",
    )


def first_touch(rt: journey.Runtime, store_id: str, cart_id: str = "c-1") -> str:
    """The cart abandoned and its first touch due; the touch's decision id."""
    event = cart_event(cart_id, occurred_at=rt.clock(), event_id=f"e-{cart_id}")
    (touch,) = [f for f in abandon(rt, store_id, event) if f.actor == "send_touch"]
    return str(touch.arg)


def test_the_code_exists_in_shopify_before_the_email_offers_it(
    rt: journey.Runtime, smtp: SmtpSink, shopify: ShopifyAdminSink, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    result = configure("shopify", shopify.url, SHOPIFY_TOKEN)
    assert result.exit_code == 0, result.output
    assert SHOPIFY_TOKEN not in result.output

    known_when_mailed: list[set[str]] = []
    smtp.before_accept = lambda _m: known_when_mailed.append(set(shopify.discounts))
    journey.send_touch(rt, first_touch(rt, store_id))

    (mail,) = smtp.wait_for(1)
    (coupon,) = rows(rt, "coupon")
    assert coupon.code in mail.part("plain")
    assert known_when_mailed == [{coupon.code}]  # created in the shop before the email left
    created = shopify.discounts[coupon.code]
    assert (created.percent, created.usage_limit, created.once_per_customer) == (10.0, 1, True)
    assert created.ends_at == coupon.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert coupon.pushed_at is not None
    (request,) = shopify.exchanges
    assert request.path == "/admin/api/2025-10/graphql.json"

    # The shopper uses it at the Shopify checkout: the order names the code
    order = order_event("c-1", value=213.0)
    order["order"]["coupon_code"] = coupon.code
    with rt.engine.begin() as conn:
        apply_events(
            conn, store_id=store_id, events=[EventIn.model_validate(order)], now=rt.clock()
        )
    (coupon,) = rows(rt, "coupon")
    assert coupon.redeemed_at is not None


def test_a_throttled_or_lost_push_makes_the_email_wait_and_never_doubles_the_code(
    rt: journey.Runtime, smtp: SmtpSink, shopify: ShopifyAdminSink, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    assert configure("shopify", shopify.url, SHOPIFY_TOKEN).exit_code == 0
    touch = first_touch(rt, store_id)

    # Shopify's bucket is empty: 6 points short, refilled at 50 per second
    shopify.throttled(cost=10, available=4, restore_rate=50)
    with pytest.raises(TransientSendError) as info:
        journey.send_touch(rt, touch)
    assert info.value.retry_after == pytest.approx(0.12)
    assert smtp.messages == [] and shopify.discounts == {}
    (message,) = rows(rt, "message")
    assert message.status == "prepared"  # kept, with its code, for the retry

    # The retry: Shopify creates the code but the answer never arrives
    shopify.drop()
    with pytest.raises(TransientSendError):
        journey.send_touch(rt, touch)
    assert smtp.messages == [] and len(shopify.discounts) == 1

    # The next retry learns the shop has it (TAKEN) and sends, once
    journey.send_touch(rt, touch)
    journey.send_touch(rt, touch)  # a duplicate broker message changes nothing
    (mail,) = smtp.wait_for(1)
    (coupon,) = rows(rt, "coupon")
    assert list(shopify.discounts) == [coupon.code] and coupon.code in mail.part("plain")
    assert len(shopify.exchanges) == 3
    (message,) = rows(rt, "message")
    assert message.status == "sent"


def test_refused_credentials_send_no_email_with_a_dead_code(
    rt: journey.Runtime, smtp: SmtpSink, shopify: ShopifyAdminSink, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    assert configure("shopify", shopify.url, "shpat_revoked_token").exit_code == 0
    with pytest.raises(PermanentSendError):
        journey.send_touch(rt, first_touch(rt, store_id))
    assert smtp.messages == [] and shopify.discounts == {}
    (decision,) = [d for d in rows(rt, "decision") if d.arm_key != "holdout"]
    assert (decision.state, decision.state_reason) == ("failed", "coupon_unauthorized")
    (message,) = rows(rt, "message")
    assert message.status == "failed" and "shpat" not in (message.error or "")


def test_woocommerce_gets_the_code_and_its_lower_case_order_redeems_it(
    rt: journey.Runtime, smtp: SmtpSink, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    with WooCommerceSink(WOO_KEY, WOO_SECRET) as woo:
        assert configure("woocommerce", woo.url + "/", f"{WOO_KEY}:{WOO_SECRET}").exit_code == 0
        journey.send_touch(rt, first_touch(rt, store_id))
        (mail,) = smtp.wait_for(1)
        (coupon,) = rows(rt, "coupon")
        created = woo.coupons[coupon.code.lower()]  # WooCommerce keeps codes in lower case
        assert (created.percent, created.usage_limit, created.once_per_customer) == (10, 1, True)
        assert coupon.code in mail.part("plain")
    order = order_event("c-1", value=213.0)
    order["order"]["coupon_code"] = coupon.code.lower()  # as WooCommerce's order reports it
    with rt.engine.begin() as conn:
        apply_events(
            conn, store_id=store_id, events=[EventIn.model_validate(order)], now=rt.clock()
        )
    assert rows(rt, "coupon")[0].redeemed_at is not None


def test_configuration_is_checked_and_can_be_turned_off(
    rt: journey.Runtime, smtp: SmtpSink, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    refused = [
        configure("shopify", "http://my-shop.myshopify.com", SHOPIFY_TOKEN),  # not https
        configure("woocommerce", "https://shop.example", "just-a-password"),
        configure("magento", "https://shop.example", SHOPIFY_TOKEN),
        configure("shopify", "https://my-shop.myshopify.com", "short"),
    ]
    assert [r.exit_code for r in refused] == [1, 1, 1, 1]
    assert "https" in refused[0].output and "consumer_key" in refused[1].output
    unreachable = f"http://127.0.0.1:{free_port()}"
    assert configure("shopify", unreachable, SHOPIFY_TOKEN).exit_code == 0
    off = runner.invoke(app, ["store", "coupons", "Acme Outdoor", "--platform", "none"])
    assert off.exit_code == 0 and "no longer pushed" in off.output
    # Not pushed anywhere (the unreachable shop would have made it wait): sent at once
    journey.send_touch(rt, first_touch(rt, store_id))
    (mail,) = smtp.wait_for(1)
    (coupon,) = rows(rt, "coupon")
    assert coupon.pushed_at is None and coupon.code in mail.part("plain")
