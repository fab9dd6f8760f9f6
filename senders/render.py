"""Rendering messages from the cart they are about."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from senders.channels.base import Outgoing

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
    )


def money(amount: float, currency: str) -> str:
    if currency in _NO_MINOR:
        return f"{amount:,.0f} {currency}"
    return f"{amount:,.2f} {currency}"


def email_reminder(
    *,
    message_id: str,
    recipient: str,
    store_name: str,
    items: Sequence[Mapping[str, Any]],
    total: float,
    currency: str,
    link: str,
) -> Outgoing:
    """The cart-reminder email: HTML and plain text listing the cart and the tracked link."""
    subject = f"You left something in your cart at {store_name}"
    variables = {
        "subject": subject,
        "store_name": store_name,
        "items": [{"image_url": None, "url": None, **item} for item in items],
        "total": total,
        "link": link,
        "first_name": None,
        "money": lambda amount: money(amount, currency),
    }
    env = _env()
    return Outgoing(
        message_id=message_id,
        channel="email",
        recipient=recipient,
        subject=subject,
        text=env.get_template("reminder.txt").render(variables),
        html=env.get_template("reminder.html").render(variables),
        url=link,
    )
