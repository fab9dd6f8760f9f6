"""Shopify and WooCommerce webhooks: their own payloads in, Nudge's events out.

``POST /v1/webhooks/shopify/{store_id}`` and ``POST /v1/webhooks/woocommerce/{store_id}``
verify the platform's signature (base64 HMAC-SHA256 of the raw body with the store's webhook
secret) before reading anything, map the payload onto :class:`store.schemas.EventIn` and hand
it to the same ingestor as ``/v1/events``. Event ids are derived from the delivery (Shopify's
webhook id) or from the resource's version (WooCommerce), so a redelivery is a duplicate.

Answers: 200 when stored (or deliberately ignored: ``{"ignored": true}``), 401 for a missing
or wrong signature, 404 for an unknown store, 4xx for a payload that cannot be mapped.
Nothing is stored on any failure.

Mapping choices (see docs/shopify.md and docs/woocommerce.md):

* A Shopify checkout is ``checkout.started`` once the buyer has given an email, a phone or a
  shipping address (the checkout form is under way), ``cart.updated`` before that. A checkout
  with ``completed_at`` is ignored: its order converts the cart, and a late checkout update
  must not bring a bought cart back to life.
* A WooCommerce order awaiting payment (``pending``, ``failed``) is an abandoned checkout:
  ``checkout.started`` with the order's payment link as the restore link. A paid or placed
  order (``processing``, ``completed``, ``on-hold``) is ``order.completed``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine

from api import storefront as sf
from api.errors import JSON, ApiError
from api.ingest import GroupIngestor
from settings import Settings
from store.models import Store

logger = logging.getLogger(__name__)
store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]

#: Largest webhook body read (an order with hundreds of line items stays well under).
MAX_WEBHOOK_BYTES = 2 * 1024 * 1024

SHOPIFY_TOPICS = ("checkouts/create", "checkouts/update", "orders/create")
WOO_TOPICS = ("order.created", "order.updated")
WOO_PAID = frozenset({"processing", "completed", "on-hold"})
WOO_UNPAID = frozenset({"pending", "failed"})

Mapped = list[dict[str, Any]]


class Unmappable(ValueError):
    """The payload lacks what any event needs (e.g. a checkout without a token)."""


# --- Shopify ------------------------------------------------------------------------------------


def _shopify_customer(payload: dict[str, Any]) -> dict[str, Any] | None:
    customer = payload.get("customer") if isinstance(payload.get("customer"), dict) else {}
    assert isinstance(customer, dict)
    shipping = payload.get("shipping_address") or {}
    billing = payload.get("billing_address") or {}
    out: dict[str, Any] = {}
    if sf.text(customer.get("id")):
        out["id"] = sf.text(customer.get("id"))
    contact_email = sf.email(payload.get("email")) or sf.email(customer.get("email"))
    if contact_email:
        out["email"] = contact_email
    for candidate in (
        payload.get("phone"),
        customer.get("phone"),
        shipping.get("phone") if isinstance(shipping, dict) else None,
        billing.get("phone") if isinstance(billing, dict) else None,
    ):
        if number := sf.phone(candidate):
            out["phone"] = number
            break
    if not out:
        return None
    locale = sf.text(payload.get("customer_locale"), 35)
    if locale:
        out["locale"] = locale
    consents: dict[str, bool] = {}
    for channel, flag, state in (
        ("email", "buyer_accepts_marketing", "email_marketing_consent"),
        ("sms", "buyer_accepts_sms_marketing", "sms_marketing_consent"),
    ):
        if isinstance(payload.get(flag), bool):
            consents[channel] = payload[flag]
        elif isinstance(customer.get(state), dict) and customer[state].get("state"):
            consents[channel] = customer[state]["state"] == "subscribed"
    if consents:
        out["consents"] = consents
    return out


def _shopify_items(line_items: Any) -> list[dict[str, Any]]:
    items = []
    for li in line_items if isinstance(line_items, list) else []:
        if not isinstance(li, dict):
            continue
        quantity = li.get("quantity")
        if not isinstance(quantity, int) or quantity < 1:
            continue
        sku = (
            sf.text(li.get("sku"))
            or (f"variant-{li['variant_id']}" if sf.text(li.get("variant_id")) else None)
            or (f"product-{li['product_id']}" if sf.text(li.get("product_id")) else None)
            or sf.text(li.get("key"))
            or "unknown"
        )
        items.append(
            {
                "sku": sku,
                "name": sf.text(li.get("title"), 500) or sf.text(li.get("name"), 500) or sku,
                "price": sf.money(li.get("price")) or 0.0,
                "quantity": quantity,
            }
        )
    return items


def shopify_events(
    topic: str, payload: dict[str, Any], *, event_id: str, fallback_at: datetime
) -> Mapped:
    """Nudge events for one Shopify webhook; empty when the topic or payload is not ours."""
    customer = _shopify_customer(payload)
    currency = sf.text(payload.get("currency") or payload.get("presentment_currency"), 3)
    if topic in ("checkouts/create", "checkouts/update"):
        if payload.get("completed_at"):
            return []
        cart_id = sf.text(payload.get("cart_token")) or sf.text(payload.get("token"))
        if cart_id is None:
            raise Unmappable("the checkout has neither cart_token nor token")
        items = _shopify_items(payload.get("line_items"))
        value = sf.money(payload.get("total_price"))
        cart: dict[str, Any] = {
            "id": cart_id,
            "currency": currency,
            "value": value if value is not None else sum(i["price"] * i["quantity"] for i in items),
            "items": items,
        }
        if restore := sf.text(payload.get("abandoned_checkout_url"), 2048):
            cart["restore_url"] = restore
        engaged = customer is not None and ("email" in customer or "phone" in customer)
        engaged = engaged or bool(payload.get("shipping_address"))
        event: dict[str, Any] = {
            "event_id": event_id,
            "type": "checkout.started" if engaged else "cart.updated",
            "occurred_at": sf.timestamp(payload.get("updated_at"))
            or sf.timestamp(payload.get("created_at"))
            or fallback_at,
            "cart": cart,
        }
    elif topic == "orders/create":
        cart_id = sf.text(payload.get("cart_token")) or sf.text(payload.get("checkout_token"))
        if cart_id is None and customer is None:
            return []  # e.g. a point-of-sale order with no customer: nothing to match it to
        order_id = sf.text(payload.get("id"))
        if order_id is None:
            raise Unmappable("the order has no id")
        value = sf.money(payload.get("total_price"))
        order: dict[str, Any] = {"id": order_id, "value": value or 0.0}
        codes = payload.get("discount_codes")
        if isinstance(codes, list) and codes and isinstance(codes[0], dict):
            if code := sf.text(codes[0].get("code"), 100):
                order["coupon_code"] = code
        event = {
            "event_id": event_id,
            "type": "order.completed",
            "occurred_at": sf.timestamp(payload.get("created_at"))
            or sf.timestamp(payload.get("processed_at"))
            or fallback_at,
            "order": order,
        }
        if cart_id is not None:
            event["cart"] = {"id": cart_id, "currency": currency, "value": value}
    else:
        return []
    if customer is not None:
        event["customer"] = customer
    return [event]


def shopify_event_id(request: Request, topic: str, body: bytes) -> str:
    """The delivery's id: the same on every retry of it, so a replay is a duplicate."""
    webhook_id = sf.text(request.headers.get("x-shopify-webhook-id"), 150)
    if webhook_id:
        return f"shopify:{webhook_id}"
    event_id = sf.text(request.headers.get("x-shopify-event-id"), 150)
    if event_id:
        return f"shopify:{topic}:{event_id}"
    return f"shopify:{topic}:{hashlib.sha256(body).hexdigest()[:40]}"


# --- WooCommerce --------------------------------------------------------------------------------


def _woo_customer(payload: dict[str, Any]) -> dict[str, Any] | None:
    billing = payload.get("billing") if isinstance(payload.get("billing"), dict) else {}
    shipping = payload.get("shipping") if isinstance(payload.get("shipping"), dict) else {}
    assert isinstance(billing, dict) and isinstance(shipping, dict)
    out: dict[str, Any] = {}
    # Keyed by email when there is one (as the snippet's identify() is), so a WooCommerce order
    # meets the carts the snippet recorded for the same shopper.
    if contact_email := sf.email(billing.get("email")):
        out["email"] = contact_email
    elif isinstance(payload.get("customer_id"), int) and payload["customer_id"] > 0:
        out["id"] = f"woo-customer-{payload['customer_id']}"
    for candidate in (billing.get("phone"), shipping.get("phone")):
        if number := sf.phone(candidate):
            out["phone"] = number
            break
    return out or None


def _woo_items(line_items: Any) -> list[dict[str, Any]]:
    items = []
    for li in line_items if isinstance(line_items, list) else []:
        if not isinstance(li, dict):
            continue
        quantity = li.get("quantity")
        if not isinstance(quantity, int) or quantity < 1:
            continue
        product = li.get("variation_id") or li.get("product_id")
        sku = sf.text(li.get("sku")) or (f"product-{product}" if product else None) or "unknown"
        price = sf.money(li.get("price"))
        if price is None:
            total = sf.money(li.get("total"))
            price = total / quantity if total is not None else 0.0
        items.append(
            {
                "sku": sku,
                "name": sf.text(li.get("name"), 500) or sku,
                "price": price,
                "quantity": quantity,
            }
        )
    return items


def woocommerce_events(topic: str, payload: dict[str, Any], *, fallback_at: datetime) -> Mapped:
    """Nudge events for one WooCommerce order webhook; empty when it is not ours."""
    if topic not in WOO_TOPICS:
        return []
    order_id = sf.text(payload.get("id"))
    if order_id is None:
        raise Unmappable("the order has no id")
    status = sf.text(payload.get("status")) or ""
    customer = _woo_customer(payload)
    currency = sf.text(payload.get("currency"), 3)
    value = sf.money(payload.get("total"))
    cart_id = f"woo-order-{order_id}"
    modified = sf.timestamp(payload.get("date_modified_gmt")) or sf.timestamp(
        payload.get("date_created_gmt")
    )
    if status in WOO_PAID:
        at = sf.timestamp(payload.get("date_paid_gmt")) or modified or fallback_at
        order: dict[str, Any] = {"id": order_id, "value": value or 0.0}
        coupons = payload.get("coupon_lines")
        if isinstance(coupons, list) and coupons and isinstance(coupons[0], dict):
            if code := sf.text(coupons[0].get("code"), 100):
                order["coupon_code"] = code
        # Ids fixed per order, not per delivery: order.created and order.updated for the same
        # paid order, or a redelivery, are duplicates.
        events: Mapped = [
            {
                "event_id": f"woo:order:{order_id}:paid",
                "type": "order.completed",
                "occurred_at": at,
                "cart": {"id": cart_id, "currency": currency, "value": value},
                "order": order,
            }
        ]
        if customer is not None:
            # The shopper's other open carts (e.g. recorded by the snippet) are bought too.
            events.append(
                {
                    "event_id": f"woo:order:{order_id}:paid:customer",
                    "type": "order.completed",
                    "occurred_at": at,
                    "customer": customer,
                    "order": order,
                }
            )
        return events
    if status in WOO_UNPAID:
        items = _woo_items(payload.get("line_items"))
        cart: dict[str, Any] = {
            "id": cart_id,
            "currency": currency,
            "value": value if value is not None else sum(i["price"] * i["quantity"] for i in items),
            "items": items,
        }
        if restore := sf.text(payload.get("payment_url"), 2048):
            cart["restore_url"] = restore
        at = modified or fallback_at
        event: dict[str, Any] = {
            "event_id": f"woo:order:{order_id}:{status}:{at.isoformat()}",
            "type": "checkout.started",
            "occurred_at": at,
            "cart": cart,
        }
        if customer is not None:
            event["customer"] = customer
        return [event]
    return []  # cancelled, refunded, drafts…: nothing to recover


# --- the routes ---------------------------------------------------------------------------------


def webhooks_router(settings: Settings, engine: Engine, ingestor: GroupIngestor) -> APIRouter:
    """The webhook routes; events go through ``ingestor`` like every other event."""
    del settings  # limits are the platforms', not the event API's
    router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

    def secret_of(store_id: str) -> str | None:
        if len(store_id) > 32:
            raise ApiError(404, "unknown_store", f"no store with id {store_id!r}")
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(store_t.c.webhook_secret).where(store_t.c.id == store_id)
            ).first()
        if row is None:
            raise ApiError(404, "unknown_store", f"no store with id {store_id!r}")
        return str(row.webhook_secret) if row.webhook_secret else None

    async def verified(request: Request, store_id: str, header: str, platform: str) -> bytes:
        body = await sf.read_body(request, MAX_WEBHOOK_BYTES)
        secret = await run_in_threadpool(secret_of, store_id)
        if secret is None:
            raise ApiError(
                401,
                "no_webhook_secret",
                "this store has no webhook secret yet; set it with "
                "'nudge store webhook-secret NAME'",
            )
        signature = request.headers.get(header)
        if not signature:
            raise ApiError(401, "unsigned", f"missing {header} header: {platform} signs webhooks")
        if not sf.signature_matches(secret, body, signature):
            logger.warning("%s webhook for store %s with a wrong signature", platform, store_id)
            raise ApiError(
                401,
                "bad_signature",
                f"{header} does not match the body signed with this store's webhook secret",
            )
        return body

    async def ingest(store_id: str, mapped: Callable[[], Mapped]) -> JSON:
        try:
            raw = mapped()
        except Unmappable as exc:
            raise ApiError(422, "unmappable", str(exc)) from None
        if not raw:
            return JSON({"ignored": True}, status_code=200)
        events = sf.to_events(raw)
        duplicates = await ingestor.submit(store_id, events)
        return JSON(
            {"accepted": len(events) - sum(duplicates), "duplicates": sum(duplicates)},
            status_code=200,
        )

    @router.post("/shopify/{store_id}", summary="Shopify checkout and order webhooks")
    async def shopify(store_id: str, request: Request) -> JSON:
        body = await verified(request, store_id, "X-Shopify-Hmac-Sha256", "Shopify")
        topic = (request.headers.get("x-shopify-topic") or "").strip().lower()
        if topic not in SHOPIFY_TOPICS:
            return JSON({"ignored": True, "topic": topic}, status_code=200)
        payload = sf.parse_json(body)
        if not isinstance(payload, dict):
            raise ApiError(422, "unmappable", f"a {topic} webhook body is a JSON object")
        fallback = sf.timestamp(request.headers.get("x-shopify-triggered-at")) or datetime.now(UTC)
        event_id = shopify_event_id(request, topic, body)
        return await ingest(
            store_id,
            lambda: shopify_events(topic, payload, event_id=event_id, fallback_at=fallback),
        )

    @router.post("/woocommerce/{store_id}", summary="WooCommerce order webhooks")
    async def woocommerce(store_id: str, request: Request) -> JSON:
        header = "X-WC-Webhook-Signature"
        unsigned = request.headers.get(header) is None
        if unsigned and request.headers.get("x-wc-webhook-topic") is None:
            # WooCommerce checks a new webhook's URL with an unsigned form post
            # "webhook_id=N" and wants a 200; it carries no data, so nothing is stored.
            body = await sf.read_body(request, MAX_WEBHOOK_BYTES)
            if body.startswith(b"webhook_id=") and len(body) < 64:
                await run_in_threadpool(secret_of, store_id)  # still 404 for an unknown store
                return JSON({"ping": True}, status_code=200)
        body = await verified(request, store_id, header, "WooCommerce")
        topic = (request.headers.get("x-wc-webhook-topic") or "").strip().lower()
        if topic not in WOO_TOPICS:
            return JSON({"ignored": True, "topic": topic}, status_code=200)
        payload = sf.parse_json(body)
        if not isinstance(payload, dict):
            raise ApiError(422, "unmappable", f"a {topic} webhook body is a JSON object")
        fallback = datetime.now(UTC)
        return await ingest(
            store_id, lambda: woocommerce_events(topic, payload, fallback_at=fallback)
        )

    return router
