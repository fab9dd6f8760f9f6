"""Rendering messages from the cart they are about."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2

from senders import links
from senders.channels.base import Outgoing
from settings import Settings

_TEMPLATES = Path(__file__).parent / "templates"
# Currencies without minor units in everyday prices (ISO 4217 exponent 0).
_NO_MINOR = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD"})


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        # Templates ship with the code: no stat() of their files on every message.
        auto_reload=False,
    )


def money(amount: float, currency: str) -> str:
    if currency in _NO_MINOR:
        return f"{amount:,.0f} {currency}"
    return f"{amount:,.2f} {currency}"


def language(locale: str | None) -> str:
    """The template language for a customer's locale: Korean or English."""
    return "ko" if (locale or "").lower().startswith("ko") else "en"


def tracked(settings: Settings, message_id: str) -> dict[str, str]:
    """The signed links of one message: restore (click), open pixel and unsubscribe.

    UTM parameters are added at redirect time, from the message record (api/tracking.py).
    """
    base = settings.public_url.rstrip("/")
    secret = settings.link_secret
    return {
        "link": f"{base}/r/{links.sign(secret, message_id)}",
        "pixel": f"{base}/o/{links.sign(secret, message_id, 'open')}.gif",
        "unsubscribe": f"{base}/u/{links.sign(secret, message_id, 'unsubscribe')}",
    }


def reminder(
    *,
    channel: str,
    message_id: str,
    recipient: str,
    store: Any,
    cart: Any,
    customer: Any,
    coupon: str | None,
    discount_pct: float,
    settings: Settings,
) -> Outgoing:
    """The cart reminder for one channel, in the customer's language and the store's law."""
    from senders.compliance import Rules

    rules = Rules.for_store(store.country, store.rules)
    lang = language(customer.locale if customer is not None else None)
    urls = tracked(settings, message_id)
    total = float(cart.value)
    prefix = f"{rules.advertising_prefix} " if rules.advertising_prefix else ""
    if channel == "email":
        # Items as attributes (a template's ``item.name`` finds an attribute at once, where on a
        # dict it first fails getattr), each line's amount written out here, not by the template.
        items = [
            SimpleNamespace(
                **{
                    "image_url": None,
                    "url": None,
                    **item,
                    "line_total": money(item["price"] * item["quantity"], cart.currency),
                }
            )
            for item in cart.items
        ]
        variables: dict[str, Any] = {
            "store_name": store.name,
            "items": items,
            "total": total,
            "first_name": None,
            "coupon": coupon,
            "discount_pct": discount_pct,
            "ad_prefix": rules.advertising_prefix,
            "opt_out_notice": rules.opt_out_notice,
            "total_money": money(total, cart.currency),
            **urls,
        }
        subject = (
            f"{prefix}{store.name}: 장바구니에 상품이 남아 있어요"
            if lang == "ko"
            else f"{prefix}You left something in your cart at {store.name}"
        )
        env = _env()
        suffix = ".ko" if lang == "ko" else ""
        variables["subject"] = subject
        return Outgoing(
            message_id=message_id,
            channel="email",
            recipient=recipient,
            subject=subject,
            text=env.get_template(f"reminder{suffix}.txt").render(variables),
            html=env.get_template(f"reminder{suffix}.html").render(variables),
            url=urls["link"],
            headers={
                # RFC 8058 one-click unsubscribe: mail clients POST to the URL.
                "List-Unsubscribe": f"<{urls['unsubscribe']}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
    text = _short_text(
        lang,
        prefix,
        store.name,
        len(cart.items),
        money(total, cart.currency),
        coupon,
        discount_pct,
        urls,
        rules.opt_out_notice,
    )
    if channel == "push":
        title = f"{prefix}{store.name}"
        return Outgoing(
            message_id=message_id,
            channel="push",
            recipient=recipient,
            subject=title,
            text=text.split("\n")[1],
            url=urls["link"],
        )
    if channel in ("sms", "kakao"):
        return Outgoing(
            message_id=message_id,
            channel=channel,
            recipient=recipient,
            text=text,
            url=urls["link"],
            template="NUDGE_CART_REMINDER_KO" if lang == "ko" else "NUDGE_CART_REMINDER_EN",
            variables={
                "store": store.name,
                "count": str(len(cart.items)),
                "total": money(total, cart.currency),
                "coupon": coupon or "",
                "link": urls["link"],
                "unsubscribe": urls["unsubscribe"],
            },
            status_callback=f"{settings.public_url.rstrip('/')}/v1/providers/twilio/status",
        )
    raise ValueError(f"no template for channel {channel!r}")


def _short_text(
    lang: str,
    prefix: str,
    store: str,
    count: int,
    total: str,
    coupon: str | None,
    discount_pct: float,
    urls: Mapping[str, str],
    opt_out: str,
) -> str:
    """SMS / push / AlimTalk body. Line 2 is the push body."""
    if lang == "ko":
        offer = f" {discount_pct:.0f}% 할인 쿠폰 {coupon}" if coupon else ""
        return (
            f"{prefix}{store}\n장바구니에 상품 {count}개({total})가 남아 있어요.{offer}\n"
            f"{urls['link']}\n{opt_out} {urls['unsubscribe']}"
        )
    offer = f" Use {coupon} for {discount_pct:.0f}% off." if coupon else ""
    return (
        f"{prefix}{store}\nYou left {count} item{'s' if count != 1 else ''} ({total}) in your "
        f"cart.{offer}\n{urls['link']}\nReply STOP to opt out."
    )
