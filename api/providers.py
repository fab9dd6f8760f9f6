"""What providers and browsers post back: Twilio status callbacks and inbound SMS (STOP,
HELP), and browsers' Web Push subscriptions.

Twilio's webhooks are accepted only with a valid ``X-Twilio-Signature``: HMAC-SHA1 with the
account's auth token over the URL Twilio called (``NUDGE_PUBLIC_URL`` + the path, as
customers and Twilio reach the API, also behind a proxy) and the form parameters. Anything
else is answered 403 and changes nothing.

**Which store an inbound STOP belongs to.** Nudge sends all SMS of an installation from one
Twilio number (``NUDGE_TWILIO_FROM``), so a reply cannot tell stores apart. A STOP therefore
opts the number out of SMS and KakaoTalk in *every* store that has a customer with that
phone: each gets a suppression (reason ``stop``), the customers' SMS consent is withdrawn,
and their scheduled SMS/KakaoTalk touches are skipped. A number no store knows changes
nothing here; Twilio itself refuses later sends to it (error 21610, which the SMS adapter
turns into a suppression). Installations that give each store its own number would map
``To`` to the store instead. START/UNSTOP do not lift a suppression: only new, explicit
consent from the storefront does (``store.events``). Twilio confirms STOP itself (Advanced
Opt-Out), so Nudge answers it with an empty TwiML response; HELP gets
``NUDGE_SMS_HELP_TEXT``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import Engine
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from api.errors import JSON, ApiError
from settings import Settings
from store.db import insert
from store.events import cart_t, customer_t, decision_t, message_t
from store.models import DecisionState, PushSubscription
from store.suppressions import suppress

logger = logging.getLogger(__name__)
push_t: sa.Table = PushSubscription.__table__  # type: ignore[attr-defined]

STATUS_PATH = "/v1/providers/twilio/status"
INBOUND_PATH = "/v1/providers/twilio/inbound"

#: Replies that opt a number out: Twilio's standard opt-out keywords, and Korean 수신거부.
#: Compared after removing spaces and trailing punctuation, case-insensitively.
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE", "수신거부"}
)
HELP_WORDS = frozenset({"HELP", "INFO", "도움말"})

#: Delivery statuses in the order a message goes through them; a late callback never moves
#: a message back (Twilio does not promise callbacks arrive in order).
STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
    "read": 5,
}
#: Delivery errors that say the number cannot take SMS at all: unknown handset, landline.
UNREACHABLE_FOR_GOOD = {"30005", "30006"}
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_WEBHOOK_BYTES = 64 * 1024
MAX_SUBSCRIPTION_BYTES = 8 * 1024


class _Form(dict[str, list[str]]):
    """Form fields with every value, as ``RequestValidator`` reads them (``getlist``)."""

    def getlist(self, name: str) -> list[str]:
        return self[name]

    def one(self, name: str) -> str:
        values = self.get(name)
        return values[0] if values else ""


class PushKeys(BaseModel):
    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=100)

    @field_validator("p256dh")
    @classmethod
    def _p256dh(cls, value: str) -> str:
        if len(_b64url(value)) != 65:
            raise ValueError("must be a base64url P-256 public key (65 bytes)")
        return value

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        if len(_b64url(value)) != 16:
            raise ValueError("must be a base64url 16-byte secret")
        return value


class PushSubscriptionJSON(BaseModel):
    """What ``PushSubscription.toJSON()`` gives in the browser (expirationTime is ignored)."""

    model_config = ConfigDict(extra="ignore")
    endpoint: str = Field(min_length=1, max_length=2048)
    keys: PushKeys


class PushSubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(min_length=1, max_length=200)
    subscription: PushSubscriptionJSON


def providers_router(
    settings: Settings, engine: Engine, store_id: Callable[..., Awaitable[str]]
) -> APIRouter:
    """Twilio's webhooks and push subscriptions; ``store_id`` authenticates a store's key."""
    router = APIRouter(tags=["providers"])
    public_url = settings.public_url.rstrip("/")

    async def twilio_form(request: Request, path: str) -> _Form:
        """The webhook's form, if its signature is valid; ApiError(403) otherwise."""
        body = await request.body()
        if len(body) > MAX_WEBHOOK_BYTES:
            raise ApiError(413, "too_large", f"body over {MAX_WEBHOOK_BYTES} bytes")
        form = _Form()
        for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            form.setdefault(name, []).append(value)
        signature = request.headers.get("x-twilio-signature", "")
        token = settings.twilio_auth_token
        url = public_url + path + (f"?{request.url.query}" if request.url.query else "")
        if not token:
            logger.warning("Twilio webhook refused: NUDGE_TWILIO_AUTH_TOKEN is not set")
            raise ApiError(403, "invalid_signature", "Twilio webhooks are not configured")
        if not signature or not RequestValidator(token).validate(url, form, signature):
            logger.warning("Twilio webhook to %s refused: invalid X-Twilio-Signature", path)
            raise ApiError(403, "invalid_signature", "X-Twilio-Signature is missing or invalid")
        return form

    @router.post(STATUS_PATH, status_code=204, summary="Twilio message status callback")
    async def twilio_status(request: Request) -> Response:
        form = await twilio_form(request, STATUS_PATH)
        await run_in_threadpool(
            record_status,
            form.one("MessageSid"),
            form.one("MessageStatus").lower(),
            form.one("ErrorCode"),
        )
        return Response(status_code=204)

    def record_status(sid: str, status: str, error_code: str) -> None:
        if not sid or status not in STATUS_RANK:
            return
        with engine.begin() as conn:
            m = conn.execute(
                sa.select(
                    message_t.c.id,
                    message_t.c.store_id,
                    message_t.c.channel,
                    message_t.c.recipient,
                    message_t.c.delivery_status,
                ).where(message_t.c.provider_id == sid)
            ).first()
            if m is None:
                logger.info("Status %r for a message Nudge does not know (%s)", status, sid)
                return
            if STATUS_RANK.get(m.delivery_status or "", -1) > STATUS_RANK[status]:
                return
            values: dict[str, Any] = {"delivery_status": status}
            if error_code and status in ("failed", "undelivered"):
                values["error"] = f"Twilio delivery error {error_code}"
            conn.execute(sa.update(message_t).where(message_t.c.id == m.id).values(values))
            if error_code in UNREACHABLE_FOR_GOOD and m.channel == "sms":
                suppress(
                    conn,
                    store_id=m.store_id,
                    channel="sms",
                    address=m.recipient,
                    reason="invalid_number",
                    at=datetime.now(UTC),
                )

    @router.post(INBOUND_PATH, summary="Twilio inbound SMS (STOP, HELP)")
    async def twilio_inbound(request: Request) -> Response:
        form = await twilio_form(request, INBOUND_PATH)
        keyword = _keyword(form.one("Body"))
        reply = MessagingResponse()
        if keyword in STOP_WORDS:
            stores = await run_in_threadpool(opt_out, form.one("From").strip())
            logger.info("Inbound STOP: number suppressed in %d store(s)", stores)
        elif keyword in HELP_WORDS:
            reply.message(settings.sms_help_text)
        return Response(str(reply), media_type="application/xml")

    def opt_out(phone: str) -> int:
        """Suppress ``phone`` on SMS and KakaoTalk in every store that knows it."""
        if not _E164.match(phone):
            return 0
        now = datetime.now(UTC)
        with engine.begin() as conn:
            customers = conn.execute(
                sa.select(customer_t.c.id, customer_t.c.store_id).where(customer_t.c.phone == phone)
            ).all()
            for c in customers:
                for channel in ("sms", "kakao"):
                    suppress(
                        conn,
                        store_id=c.store_id,
                        channel=channel,
                        address=phone,
                        reason="stop",
                        at=now,
                    )
            ids = [c.id for c in customers]
            if ids:
                conn.execute(
                    sa.update(customer_t)
                    .where(customer_t.c.id.in_(ids))
                    .values(consent_sms=False, updated_at=now)
                )
                carts = sa.select(cart_t.c.id).where(cart_t.c.customer_id.in_(ids))
                conn.execute(
                    sa.update(decision_t)
                    .where(
                        decision_t.c.cart_id.in_(carts),
                        decision_t.c.channel.in_(("sms", "kakao")),
                        decision_t.c.state == DecisionState.SCHEDULED,
                    )
                    .values(
                        state=DecisionState.SKIPPED, state_reason="unsubscribed", updated_at=now
                    )
                )
        return len({c.store_id for c in customers})

    @router.post(
        "/v1/push/subscriptions",
        status_code=201,
        summary="Register a browser's Web Push subscription for a customer",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PushSubscriptionIn.model_json_schema()}},
            }
        },
    )
    async def register_push(request: Request, store: str = Depends(store_id)) -> Response:
        body = await request.body()
        if len(body) > MAX_SUBSCRIPTION_BYTES:
            raise ApiError(413, "too_large", f"body over {MAX_SUBSCRIPTION_BYTES} bytes")
        if not body:
            raise ApiError(400, "empty_body", "the request body is empty; send JSON")
        try:
            sub = PushSubscriptionIn.model_validate_json(body)
        except ValidationError as exc:
            errors = list(exc.errors())
            if any(e.get("type") == "json_invalid" for e in errors):
                raise ApiError(400, "malformed_json", "body is not valid JSON") from None
            problems = [
                {
                    "field": ".".join(str(p) for p in e.get("loc", ())) or "(body)",
                    "message": str(e.get("msg", "invalid")).removeprefix("Value error, "),
                }
                for e in errors
            ]
            summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
            raise ApiError(422, "invalid_subscription", summary, errors=problems) from None
        endpoint = urlsplit(sub.subscription.endpoint)
        allowed = ("https",) if settings.environment == "production" else ("https", "http")
        if endpoint.scheme not in allowed or not endpoint.netloc:
            raise ApiError(
                422,
                "invalid_subscription",
                "subscription.endpoint must be an https URL",
                errors=[{"field": "subscription.endpoint", "message": "must be an https URL"}],
            )
        sub_id, created = await run_in_threadpool(save_subscription, store, sub)
        return JSON({"id": sub_id, "created": created}, status_code=201 if created else 200)

    def save_subscription(store: str, sub: PushSubscriptionIn) -> tuple[int, bool]:
        now = datetime.now(UTC)
        s = sub.subscription
        with engine.begin() as conn:
            dialect = conn.dialect.name
            # The subscription may come before any cart event names the customer.
            conn.execute(
                insert(customer_t, dialect)
                .values(store_id=store, external_id=sub.customer_id, created_at=now, updated_at=now)
                .on_conflict_do_nothing(index_elements=["store_id", "external_id"])
            )
            customer_id = conn.execute(
                sa.select(customer_t.c.id).where(
                    customer_t.c.store_id == store, customer_t.c.external_id == sub.customer_id
                )
            ).scalar_one()
            existed = conn.execute(
                sa.select(push_t.c.id).where(
                    push_t.c.store_id == store, push_t.c.endpoint == s.endpoint
                )
            ).first()
            values = {"customer_id": customer_id, "p256dh": s.keys.p256dh, "auth": s.keys.auth}
            conn.execute(
                insert(push_t, dialect)
                .values(store_id=store, endpoint=s.endpoint, created_at=now, **values)
                .on_conflict_do_update(index_elements=["store_id", "endpoint"], set_=values)
            )
            sub_id = conn.execute(
                sa.select(push_t.c.id).where(
                    push_t.c.store_id == store, push_t.c.endpoint == s.endpoint
                )
            ).scalar_one()
        return int(sub_id), existed is None

    return router


def _keyword(body: str) -> str:
    """A reply reduced to the form keywords are compared in: NFC, upper case, no spaces, no
    trailing punctuation ("Stop." and "stop all" are STOP and STOPALL)."""
    text = unicodedata.normalize("NFC", body).upper()
    text = "".join(text.split())
    return text.rstrip(".!?,;:'\"")


def _b64url(value: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return b""
