"""Realistic event payloads, as a storefront would post them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


def daytime_zone(at: datetime | None = None) -> str:
    """An IANA zone where it is early afternoon now, so quiet hours never hold a test up.

    (Tests of quiet hours set their own zones and clocks.)
    """
    hour = (at or datetime.now(UTC)).hour
    offset = (13 - hour + 12) % 24 - 12  # UTC offset in -12..+11 putting local time at 13:xx
    # Etc/GMT zones have inverted signs: Etc/GMT-5 is UTC+5.
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def cart_event(
    cart_id: str = "c-1001",
    *,
    type: str = "cart.updated",
    email: str | None = "jane@example.com",
    consent: bool = True,
    value: float | None = None,
    items: list[dict[str, Any]] | None = None,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
    customer_id: str = "cust-1",
    restore_url: str = "https://shop.example.com/cart/restore/abc",
    timezone: str | None = None,
) -> dict[str, Any]:
    items = items or [
        {
            "sku": "TENT-2P",
            "name": "Two-person tent",
            "price": 189.0,
            "quantity": 1,
            "image_url": "https://cdn.example.com/tent.jpg",
            "url": "https://shop.example.com/p/tent",
        },
        {"sku": "MUG-TI", "name": "Titanium mug", "price": 24.5, "quantity": 2},
    ]
    event: dict[str, Any] = {
        "event_id": event_id or uuid.uuid4().hex,
        "type": type,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "cart": {
            "id": cart_id,
            "currency": "USD",
            "value": value if value is not None else sum(i["price"] * i["quantity"] for i in items),
            "items": items,
            "restore_url": restore_url,
        },
    }
    if email is not None:
        event["customer"] = {
            "id": customer_id,
            "email": email,
            "locale": "en-US",
            "timezone": timezone or daytime_zone(occurred_at),
            "consents": {"email": consent},
        }
    return event


def order_event(
    cart_id: str = "c-1001",
    *,
    order_id: str = "o-1",
    value: float = 238.0,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id or uuid.uuid4().hex,
        "type": "order.completed",
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "cart": {"id": cart_id},
        "order": {"id": order_id, "value": value},
    }
