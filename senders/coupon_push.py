"""Coupon codes pushed to the store's checkout before the message that carries them goes out.

A code Nudge mints (``senders.coupons``) is worth nothing at a checkout that does not know
it. For a store with a discount API configured (``nudge store coupons``), each code is
created there first — single use, once per customer, the coupon's percentage off every item,
valid until the coupon expires — and only then is the message handed to its channel:

- Shopify: the GraphQL Admin API's ``discountCodeBasicCreate``
  (``POST {shop}/admin/api/2025-10/graphql.json``, ``X-Shopify-Access-Token``);
- WooCommerce: the REST API's ``POST {site}/wp-json/wc/v3/coupons`` (consumer key and
  secret, HTTP Basic).

A push is safe to repeat: a code the store already has (a push whose answer was lost, or a
crash before ``pushed_at`` was written) counts as pushed. What the store says decides the
message's fate: rate limited, unavailable, or no answer — the message waits for the retry
(its record keeps the code); credentials refused or the code rejected — the message is not
sent (a code that does not work is worse than no message), and the reason is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from senders.coupons import coupon_t
from senders.sql import among

logger = logging.getLogger(__name__)

PLATFORMS = ("shopify", "woocommerce")
SHOPIFY_API_VERSION = "2025-10"

_SHOPIFY_CREATE = """
mutation discountCodeBasicCreate($basicCodeDiscount: DiscountCodeBasicInput!) {
  discountCodeBasicCreate(basicCodeDiscount: $basicCodeDiscount) {
    codeDiscountNode { id }
    userErrors { field code message }
  }
}
""".strip()


@dataclass(frozen=True)
class CouponToPush:
    store: Any  # the store row (platform, url, token)
    code: str
    discount_pct: float
    starts_at: datetime
    expires_at: datetime


class CouponPushError(Exception):
    """The store did not take the code. ``transient``: try again later (same code)."""

    def __init__(
        self, message: str, *, transient: bool, reason: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.reason = reason
        self.retry_after = retry_after


def publish(
    engine: Engine, wanted: Sequence[tuple[Any, str]], *, timeout: float, now: datetime
) -> dict[str, CouponPushError]:
    """Push the codes their store does not have yet; the failures, by code.

    ``wanted``: (store row, code) pairs. ``pushed_at`` is read first and written for each
    code the store confirmed, so a retry pushes only the rest. A store's pushes stop at its
    first transient failure (it is down or rate limiting us): its remaining codes fail with
    the same error and wait for the retry.
    """
    stores = {code: store for store, code in wanted if store.coupon_platform in PLATFORMS}
    if not stores:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                coupon_t.c.code,
                coupon_t.c.discount_pct,
                coupon_t.c.created_at,
                coupon_t.c.expires_at,
            ).where(among(conn, coupon_t.c.code, list(stores)), coupon_t.c.pushed_at.is_(None))
        ).all()
    coupons = [
        CouponToPush(stores[r.code], r.code, r.discount_pct, r.created_at, r.expires_at)
        for r in rows
    ]
    failures: dict[str, CouponPushError] = {}
    pushed: list[str] = []
    down: dict[str, CouponPushError] = {}  # store id -> the error that stopped its pushes
    with httpx.Client(timeout=timeout) as client:
        for coupon in coupons:
            stopped = down.get(coupon.store.id)
            if stopped is not None:
                failures[coupon.code] = stopped
                continue
            try:
                _push(client, coupon)
            except CouponPushError as exc:
                failures[coupon.code] = exc
                if exc.transient:
                    down[coupon.store.id] = exc
                logger.warning(
                    "Coupon push to %s failed (%s): %s",
                    coupon.store.coupon_platform,
                    exc.reason,
                    exc,
                )
                continue
            pushed.append(coupon.code)
    if pushed:
        with engine.begin() as conn:
            conn.execute(
                sa.update(coupon_t)
                .where(among(conn, coupon_t.c.code, pushed))
                .values(pushed_at=now)
            )
        logger.info("Pushed %d coupon code(s) to the stores' checkouts", len(pushed))
    return failures


def _push(client: httpx.Client, coupon: CouponToPush) -> None:
    store = coupon.store
    try:
        if store.coupon_platform == "shopify":
            _push_shopify(client, coupon)
        else:
            _push_woocommerce(client, coupon)
    except httpx.HTTPError as exc:
        # No answer: the store may have created it; the retry finds out ("already exists").
        raise CouponPushError(
            f"no answer from the store ({type(exc).__name__})",
            transient=True,
            reason="coupon_store_unreachable",
        ) from None


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


def _by_status(response: httpx.Response, platform: str) -> None:
    """Raise for the answers both APIs give alike."""
    status = response.status_code
    if status in (401, 403):
        raise CouponPushError(
            f"{platform} refused the credentials ({status})",
            transient=False,
            reason="coupon_unauthorized",
        )
    if status == 429 or status >= 500:
        raise CouponPushError(
            f"{platform} said later ({status})",
            transient=True,
            reason="coupon_store_busy",
            retry_after=_retry_after(response),
        )


def _push_shopify(client: httpx.Client, coupon: CouponToPush) -> None:
    store = coupon.store
    url = f"{store.coupon_api_url.rstrip('/')}/admin/api/{SHOPIFY_API_VERSION}/graphql.json"
    discount = {
        "title": f"Nudge {coupon.code}",
        "code": coupon.code,
        "startsAt": _iso(coupon.starts_at),
        "endsAt": _iso(coupon.expires_at),
        "usageLimit": 1,
        "appliesOncePerCustomer": True,
        "context": {"all": "ALL"},
        "customerGets": {
            "value": {"percentage": round(coupon.discount_pct / 100.0, 4)},
            "items": {"all": True},
        },
    }
    response = client.post(
        url,
        json={"query": _SHOPIFY_CREATE, "variables": {"basicCodeDiscount": discount}},
        headers={"X-Shopify-Access-Token": store.coupon_api_token or ""},
    )
    _by_status(response, "Shopify")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or response.status_code != 200:
        raise CouponPushError(
            f"Shopify answered {response.status_code} without a GraphQL result",
            transient=False,
            reason="coupon_rejected",
        )
    errors = answer.get("errors") or []
    if errors:
        codes = {str((e.get("extensions") or {}).get("code")) for e in errors}
        if "THROTTLED" in codes:
            raise CouponPushError(
                "Shopify throttled the request",
                transient=True,
                reason="coupon_store_busy",
                retry_after=_shopify_wait(answer),
            )
        raise CouponPushError(
            f"Shopify: {'; '.join(str(e.get('message')) for e in errors)[:300]}",
            transient=False,
            reason="coupon_rejected",
        )
    created = (answer.get("data") or {}).get("discountCodeBasicCreate") or {}
    user_errors = created.get("userErrors") or []
    if any(e.get("code") == "TAKEN" for e in user_errors):
        return  # pushed before (its answer was lost): the store has it
    if user_errors or not (created.get("codeDiscountNode") or {}).get("id"):
        raise CouponPushError(
            f"Shopify: {'; '.join(str(e.get('message')) for e in user_errors)[:300]}",
            transient=False,
            reason="coupon_rejected",
        )


def _shopify_wait(answer: dict[str, Any]) -> float | None:
    """Seconds until the leaky bucket holds the request's cost again."""
    cost = (answer.get("extensions") or {}).get("cost") or {}
    status = cost.get("throttleStatus") or {}
    try:
        missing = float(cost["requestedQueryCost"]) - float(status["currentlyAvailable"])
        return max(missing, 0.0) / float(status["restoreRate"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _push_woocommerce(client: httpx.Client, coupon: CouponToPush) -> None:
    store = coupon.store
    key, _, secret = (store.coupon_api_token or "").partition(":")
    response = client.post(
        f"{store.coupon_api_url.rstrip('/')}/wp-json/wc/v3/coupons",
        json={
            "code": coupon.code,
            "discount_type": "percent",
            "amount": f"{coupon.discount_pct:g}",
            "date_expires_gmt": _iso(coupon.expires_at).removesuffix("Z"),
            "usage_limit": 1,
            "usage_limit_per_user": 1,
            "individual_use": True,
            "description": "Nudge: single-use cart reminder coupon",
        },
        auth=(key, secret),
    )
    _by_status(response, "WooCommerce")
    if response.status_code in (200, 201):
        return
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if isinstance(answer, dict) and answer.get("code") == (
        "woocommerce_rest_coupon_code_already_exists"
    ):
        return  # pushed before: the store has it
    message = answer.get("message") if isinstance(answer, dict) else None
    raise CouponPushError(
        f"WooCommerce answered {response.status_code}: {str(message)[:300]}",
        transient=False,
        reason="coupon_rejected",
    )
