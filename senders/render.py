"""Rendering messages from the cart they are about."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

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


def reminder_email(
    *,
    message_id: str,
    sender: str,
    recipient: str,
    store_name: str,
    items: Sequence[Mapping[str, Any]],
    total: float,
    currency: str,
    link: str,
) -> EmailMessage:
    """The cart-reminder email, HTML and plain text, with a stable Message-ID.

    The Message-ID is derived from Nudge's message id (the idempotency key), so a provider or a
    mailbox that sees the same message twice can tell.
    """
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
    email = EmailMessage()
    email["Subject"] = subject
    email["From"] = sender
    email["To"] = recipient
    email["Date"] = formatdate(localtime=False)
    domain = sender.rpartition("@")[2].rstrip(">") or "nudge.localhost"
    email["Message-ID"] = f"<{message_id}@{domain}>"
    email["X-Nudge-Message"] = message_id
    email.set_content(env.get_template("reminder.txt").render(variables))
    email.add_alternative(env.get_template("reminder.html").render(variables), subtype="html")
    return email
