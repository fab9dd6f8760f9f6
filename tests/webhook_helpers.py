"""Signed webhook deliveries as Shopify and WooCommerce send them, and what they left behind."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from httpx import Response

from settings import Settings
from store.db import get_engine
from store.stores import set_webhook_secret

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    """A fresh copy of a JSON payload under tests/fixtures/."""
    return copy.deepcopy(json.loads((FIXTURES / name).read_text()))


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def with_secret(settings: Settings, name: str = "Acme Outdoor") -> str:
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        return set_webhook_secret(conn, name=name)[1]


def shopify(
    client: TestClient,
    store_id: str,
    secret: str | None,
    topic: str,
    payload: dict[str, Any],
    *,
    webhook_id: str | None = None,
    signature: str | None = None,
) -> Response:
    """POST a delivery with Shopify's headers; signed with ``secret`` unless ``signature``."""
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "jsmith.myshopify.com",
        "X-Shopify-API-Version": "2025-01",
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": "2025-01-01T00:00:00.123456789Z",
    }
    if signature is not None:
        headers["X-Shopify-Hmac-Sha256"] = signature
    elif secret is not None:
        headers["X-Shopify-Hmac-Sha256"] = sign(secret, body)
    return client.post(f"/v1/webhooks/shopify/{store_id}", content=body, headers=headers)


def woocommerce(
    client: TestClient,
    store_id: str,
    secret: str | None,
    topic: str,
    payload: dict[str, Any],
    *,
    signature: str | None = None,
) -> Response:
    """POST a delivery with WooCommerce's headers (a new delivery id each time, as Woo does)."""
    body = json.dumps(payload).encode()
    resource, _, event = topic.partition(".")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "WooCommerce/8.5.2 Hookshot (WordPress/6.4.3)",
        "X-WC-Webhook-Source": "https://example.com/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": resource,
        "X-WC-Webhook-Event": event,
        "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": uuid.uuid4().hex,
    }
    if signature is not None:
        headers["X-WC-Webhook-Signature"] = signature
    elif secret is not None:
        headers["X-WC-Webhook-Signature"] = sign(secret, body)
    return client.post(f"/v1/webhooks/woocommerce/{store_id}", content=body, headers=headers)


def rows(settings: Settings, sql: str, **params: Any) -> list[Any]:
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def count(settings: Settings, table: str) -> int:
    return int(rows(settings, f'SELECT count(*) FROM "{table}"')[0][0])
