"""Tracked links: restore clicks, the open pixel, and one-click unsubscribe (RFC 8058).

Every token is signed (``senders.links``) and names a message; the destination is looked up
from that message's cart, so no token can redirect anywhere but the store's restore URL.
"""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine

from api.errors import ApiError
from senders import links
from settings import Settings
from store.events import cart_t, customer_t, decision_t, message_t
from store.models import Click, DecisionState, Open
from store.suppressions import suppress

click_t: sa.Table = Click.__table__  # type: ignore[attr-defined]
open_t: sa.Table = Open.__table__  # type: ignore[attr-defined]

# The smallest transparent GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def with_utm(url: str, *, channel: str, touch: int) -> str:
    """``url`` with Nudge's UTM parameters added (the store's own parameters win)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in {
        "utm_source": "nudge",
        "utm_medium": channel,
        "utm_campaign": "cart_recovery",
        "utm_content": f"touch{touch}",
    }.items():
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


def tracking_router(settings: Settings, engine: Engine) -> APIRouter:
    router = APIRouter(tags=["tracking"])
    secret = settings.link_secret

    def _message(conn: sa.Connection, message_id: str) -> Any:
        return conn.execute(
            sa.select(
                message_t.c.id,
                message_t.c.store_id,
                message_t.c.channel,
                message_t.c.recipient,
                decision_t.c.touch,
                cart_t.c.restore_url,
                cart_t.c.customer_id,
            )
            .select_from(
                message_t.join(decision_t, decision_t.c.id == message_t.c.decision_id).join(
                    cart_t, cart_t.c.id == decision_t.c.cart_id
                )
            )
            .where(message_t.c.id == message_id)
        ).first()

    def click(token: str) -> str | None:
        message_id = links.verify(secret, token)
        if message_id is None:
            return None
        with engine.begin() as conn:
            m = _message(conn, message_id)
            if m is None or not m.restore_url:
                return None
            conn.execute(sa.insert(click_t).values(message_id=m.id, clicked_at=datetime.now(UTC)))
        return with_utm(m.restore_url, channel=m.channel, touch=m.touch)

    @router.get("/r/{token}", summary="A tracked restore link: records the click, redirects")
    async def restore(token: str) -> Response:
        url = await run_in_threadpool(click, token)
        if url is None:
            raise ApiError(404, "unknown_link", "this link is not valid (or its cart is gone)")
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})

    def opened(token: str) -> None:
        message_id = links.verify(secret, token, "open")
        if message_id is None:
            return
        with engine.begin() as conn:
            if _message(conn, message_id) is not None:
                conn.execute(
                    sa.insert(open_t).values(message_id=message_id, opened_at=datetime.now(UTC))
                )

    @router.get("/o/{token}.gif", summary="The open pixel", include_in_schema=False)
    async def pixel(token: str) -> Response:
        await run_in_threadpool(opened, token)
        # Always the pixel, valid token or not: an image tag must not show a broken image.
        return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})

    def unsubscribe(token: str) -> bool:
        message_id = links.verify(secret, token, "unsubscribe")
        if message_id is None:
            return False
        now = datetime.now(UTC)
        with engine.begin() as conn:
            m = _message(conn, message_id)
            if m is None:
                return False
            channels = ["sms", "kakao"] if m.channel in ("sms", "kakao") else [m.channel]
            for channel in channels:
                suppress(
                    conn,
                    store_id=m.store_id,
                    channel=channel,
                    address=m.recipient,
                    reason="unsubscribe",
                    at=now,
                )
            if m.customer_id is not None:
                consent = {"email": "consent_email", "push": "consent_push"}.get(
                    m.channel, "consent_sms"
                )
                conn.execute(
                    sa.update(customer_t)
                    .where(customer_t.c.id == m.customer_id)
                    .values({consent: False, "updated_at": now})
                )
                # Every pending touch of this customer on these channels ends now.
                carts = sa.select(cart_t.c.id).where(cart_t.c.customer_id == m.customer_id)
                conn.execute(
                    sa.update(decision_t)
                    .where(
                        decision_t.c.cart_id.in_(carts),
                        decision_t.c.channel.in_(channels),
                        decision_t.c.state == DecisionState.SCHEDULED,
                    )
                    .values(
                        state=DecisionState.SKIPPED, state_reason="unsubscribed", updated_at=now
                    )
                )
        return True

    @router.get("/u/{token}", response_class=HTMLResponse, summary="Unsubscribe page")
    async def unsubscribe_page(token: str) -> HTMLResponse:
        if links.verify(secret, token, "unsubscribe") is None:
            raise ApiError(404, "unknown_link", "this unsubscribe link is not valid")
        action = html.escape(f"/u/{token}")
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>"
            "<body style='font-family:sans-serif;max-width:30em;margin:3em auto'>"
            "<h1>Unsubscribe</h1><p>Stop cart reminders to this address?</p>"
            f"<form method=post action='{action}'><button type=submit>Unsubscribe</button>"
            "</form></body>"
        )

    @router.post("/u/{token}", response_class=HTMLResponse, summary="One-click unsubscribe")
    async def unsubscribe_post(token: str) -> HTMLResponse:
        # RFC 8058: mail clients POST "List-Unsubscribe=One-Click" here; a person's form the
        # same. Either way the address is suppressed at once.
        if not await run_in_threadpool(unsubscribe, token):
            raise ApiError(404, "unknown_link", "this unsubscribe link is not valid")
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>Unsubscribed</title>"
            "<body style='font-family:sans-serif;max-width:30em;margin:3em auto'>"
            "<h1>You are unsubscribed</h1><p>You will get no more cart reminders.</p></body>"
        )

    return router
