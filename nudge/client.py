"""A small Python client for Nudge's event API, for a shop's backend.

Every event gets its ``event_id`` when it is built, and keeps it through every retry, so a
retried request is stored once (the API answers it as a duplicate). Retries back off
exponentially on connection errors, 5xx and 429 (honouring ``Retry-After``), never on other
4xx: those are mistakes a retry cannot fix, raised as :class:`NudgeError` with the API's reason.

Example::

    from nudge.client import NudgeClient

    with NudgeClient("https://nudge.example.com", "sk_...") as nudge:
        nudge.cart_updated(
            "cart-1001",
            currency="USD",
            items=[{"sku": "TENT-2P", "name": "Two-person tent", "price": 189.0, "quantity": 1}],
            restore_url="https://shop.example/cart/restore/abc",
            customer={"email": "jane@example.com", "consents": {"email": True}},
        )
        nudge.order_completed("o-1", 189.0, cart_id="cart-1001")
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, NotRequired, TypedDict

import httpx
import orjson

logger = logging.getLogger(__name__)

#: The API's limits per batch request (see settings.max_batch_events / max_batch_bytes).
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 500 * 1024


class Item(TypedDict):
    sku: str
    name: str
    price: float
    quantity: int
    image_url: NotRequired[str]
    url: NotRequired[str]


class Consents(TypedDict, total=False):
    email: bool
    sms: bool
    push: bool
    night: bool


class Customer(TypedDict, total=False):
    """At least one of ``id``, ``email``, ``phone`` (E.164)."""

    id: str
    email: str
    phone: str
    locale: str
    timezone: str
    consents: Consents


Device = Literal["mobile", "desktop", "tablet"]
Event = dict[str, Any]


@dataclass(frozen=True)
class Sent:
    """One event's answer: stored now, or stored before (``duplicate``)."""

    event_id: str
    duplicate: bool


class NudgeError(Exception):
    """The API refused a request (4xx), or retries ran out (``status`` of the last answer,
    ``None`` when the last attempt got no answer)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.errors = errors or []


class NudgeUnavailable(NudgeError):
    """Every attempt failed with a connection error, 5xx or 429."""


def new_event(
    type: str,
    *,
    cart: Mapping[str, Any] | None = None,
    customer: Customer | Mapping[str, Any] | None = None,
    order: Mapping[str, Any] | None = None,
    device: Device | None = None,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
) -> Event:
    """An event in the API's shape, with a fresh ``event_id`` unless one is given."""
    at = occurred_at or datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    event: Event = {
        "event_id": event_id or uuid.uuid4().hex,
        "type": type,
        "occurred_at": at.isoformat(),
    }
    if cart is not None:
        event["cart"] = {k: v for k, v in cart.items() if v is not None}
    if customer is not None:
        event["customer"] = dict(customer)
    if order is not None:
        event["order"] = {k: v for k, v in order.items() if v is not None}
    if device is not None:
        event["context"] = {"device": device}
    return event


class NudgeClient:
    """Sends events to a Nudge API with the store's secret key.

    Args:
        base_url: where the API is, e.g. ``https://nudge.example.com``.
        api_key: the store's secret key (``sk_…``, from ``nudge store create``).
        timeout: seconds per attempt.
        max_retries: attempts after the first, on connection errors, 5xx and 429.
        backoff: the first retry's wait in seconds; doubled each time, with jitter.
        max_backoff: the longest wait between attempts, ``Retry-After`` included.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "User-Agent": "nudge-python/0.1",
            },
        )

    def __enter__(self) -> NudgeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- typed events ---------------------------------------------------------------------------

    def cart_updated(
        self,
        cart_id: str,
        *,
        currency: str,
        items: Sequence[Item],
        value: float | None = None,
        restore_url: str | None = None,
        customer: Customer | None = None,
        device: Device | None = None,
        occurred_at: datetime | None = None,
        event_id: str | None = None,
    ) -> Sent:
        """The cart changed (items, value); ``value`` defaults to the items' sum."""
        cart = _cart(cart_id, currency, items, value, restore_url)
        return self.send(
            new_event(
                "cart.updated",
                cart=cart,
                customer=customer,
                device=device,
                occurred_at=occurred_at,
                event_id=event_id,
            )
        )

    def checkout_started(
        self,
        cart_id: str,
        *,
        currency: str,
        items: Sequence[Item],
        value: float | None = None,
        restore_url: str | None = None,
        customer: Customer | None = None,
        device: Device | None = None,
        occurred_at: datetime | None = None,
        event_id: str | None = None,
    ) -> Sent:
        """The shopper reached the checkout with this cart."""
        cart = _cart(cart_id, currency, items, value, restore_url)
        return self.send(
            new_event(
                "checkout.started",
                cart=cart,
                customer=customer,
                device=device,
                occurred_at=occurred_at,
                event_id=event_id,
            )
        )

    def contact_captured(
        self,
        customer: Customer,
        *,
        occurred_at: datetime | None = None,
        event_id: str | None = None,
    ) -> Sent:
        """The shopper gave a contact (and, in ``consents``, what they agreed to)."""
        return self.send(
            new_event(
                "contact.captured", customer=customer, occurred_at=occurred_at, event_id=event_id
            )
        )

    def order_completed(
        self,
        order_id: str,
        value: float,
        *,
        cart_id: str | None = None,
        customer: Customer | None = None,
        coupon_code: str | None = None,
        occurred_at: datetime | None = None,
        event_id: str | None = None,
    ) -> Sent:
        """An order was placed: converts ``cart_id`` (or the customer's open carts)."""
        if cart_id is None and customer is None:
            raise ValueError("an order needs a cart_id or a customer to match it to")
        return self.send(
            new_event(
                "order.completed",
                cart={"id": cart_id} if cart_id is not None else None,
                customer=customer,
                order={"id": order_id, "value": value, "coupon_code": coupon_code},
                occurred_at=occurred_at,
                event_id=event_id,
            )
        )

    # --- sending --------------------------------------------------------------------------------

    def send(self, event: Event) -> Sent:
        """Send one event (given an ``event_id`` first if it has none)."""
        event.setdefault("event_id", uuid.uuid4().hex)
        body = self._post("/v1/events", orjson.dumps(event))
        return Sent(event["event_id"], bool(body.get("duplicate")))

    def batch(self, events: Sequence[Event]) -> list[Sent]:
        """Send many events, in requests of at most 500 events and 500 KB; one result each."""
        results: list[Sent] = []
        for chunk in _chunks(events):
            body = self._post("/v1/events/batch", orjson.dumps({"events": chunk}))
            results += [
                Sent(e["event_id"], bool(r.get("duplicate")))
                for e, r in zip(chunk, body["results"], strict=True)
            ]
        return results

    def _post(self, path: str, content: bytes) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                response = self._http.post(path, content=content)
            except httpx.TransportError as exc:
                # Connection refused or dropped, timeout: the request may or may not have been
                # stored; the same event ids make the retry safe either way.
                if attempt >= self.max_retries:
                    raise NudgeUnavailable(
                        f"{path}: no answer after {attempt + 1} attempts ({exc!r})"
                    ) from exc
                wait = self._wait(attempt, None)
                logger.info("Retrying %s in %.2f s after %r", path, wait, exc)
            else:
                status = response.status_code
                if status < 400:
                    return dict(response.json())
                retryable = status == 429 or status >= 500
                if not retryable:
                    raise _error(response)
                if attempt >= self.max_retries:
                    raise NudgeUnavailable(
                        f"{path}: {status} after {attempt + 1} attempts: {_message(response)}",
                        status=status,
                        code=_json(response).get("error"),
                    )
                wait = self._wait(attempt, response.headers.get("retry-after"))
                logger.info("Retrying %s in %.2f s after HTTP %d", path, wait, status)
            time.sleep(wait)
            attempt += 1

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        told = _retry_after(retry_after)
        if told is not None:
            return min(told, self.max_backoff)
        # Jitter: clients that failed together do not all come back together.
        return random.uniform(0.5, 1.0) * min(self.max_backoff, self.backoff * 2.0**attempt)


def _cart(
    cart_id: str,
    currency: str,
    items: Sequence[Item],
    value: float | None,
    restore_url: str | None,
) -> dict[str, Any]:
    if value is None:
        value = round(sum(i["price"] * i["quantity"] for i in items), 2)
    return {
        "id": cart_id,
        "currency": currency,
        "value": value,
        "items": [dict(i) for i in items],
        "restore_url": restore_url,
    }


def _chunks(events: Sequence[Event]) -> Iterator[list[Event]]:
    chunk: list[Event] = []
    size = 0
    for event in events:
        event.setdefault("event_id", uuid.uuid4().hex)
        n = len(orjson.dumps(event)) + 1
        if chunk and (len(chunk) >= MAX_BATCH_EVENTS or size + n > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(event)
        size += n
    if chunk:
        yield chunk


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _message(response: httpx.Response) -> str:
    return str(_json(response).get("message") or response.text[:200] or response.reason_phrase)


def _error(response: httpx.Response) -> NudgeError:
    body = _json(response)
    return NudgeError(
        f"HTTP {response.status_code}: {_message(response)}",
        status=response.status_code,
        code=body.get("error"),
        errors=body.get("errors"),
    )
