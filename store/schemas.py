"""What a storefront sends: the event schema, validated before anything is stored."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

EventType = Literal["cart.updated", "checkout.started", "contact.captured", "order.completed"]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
CART_EVENTS = frozenset({"cart.updated", "checkout.started"})

# Deliberately plain: a syntactic check that catches typos and garbage, not an RFC parser.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")

# Checks pydantic-core runs natively (no Python call per field): validation is most of what
# accepting an event costs. ``api.errors`` words their failures for people with ``MESSAGES``.
Email = Annotated[str, StringConstraints(max_length=320, to_lower=True, pattern=_EMAIL.pattern)]
Phone = Annotated[str, StringConstraints(max_length=32, pattern=_E164.pattern)]
Currency = Annotated[str, StringConstraints(pattern=_CURRENCY.pattern)]

#: What those checks say when they fail, by the pattern or the pydantic error type.
MESSAGES = {
    _EMAIL.pattern: "is not an email address",
    _E164.pattern: "must be in E.164 form, e.g. +821012345678",
    _CURRENCY.pattern: "must be a three-letter ISO 4217 code in capitals, e.g. USD",
    "timezone_aware": "must include a time zone, e.g. 2026-11-23T12:00:00Z",
    "finite_number": "must be a finite number",
}


class _In(BaseModel):
    # Unknown keys are ignored (storefronts send more than we read); missing or wrong ones fail.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


# URLs of the usual shape, which urlsplit would take apart into an http(s) scheme and a plain
# host without fail; anything else is checked by urlsplit itself (its parse is what redirects
# use later). Several times cheaper per event than urlsplit.
_PLAIN_HTTP_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(?::[0-9]*)?(?:[/?#]|\Z)")


def _http_url(value: str | None, field: str) -> str | None:
    if value is None or _PLAIN_HTTP_URL.match(value):
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{field} must be an absolute http(s) URL")
    return value


class ItemIn(_In):
    sku: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=500)
    price: float = Field(ge=0, allow_inf_nan=False)
    quantity: int = Field(ge=1, le=100_000)
    image_url: str | None = Field(default=None, max_length=2048)
    url: str | None = Field(default=None, max_length=2048)

    @field_validator("image_url", "url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _http_url(value, "item url")


class CartIn(_In):
    id: str = Field(min_length=1, max_length=200)
    currency: Currency | None = Field(default=None, description="ISO 4217, e.g. USD, KRW")
    value: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    items: list[ItemIn] | None = Field(default=None, max_length=500)
    restore_url: str | None = Field(default=None, max_length=2048)

    @field_validator("restore_url")
    @classmethod
    def _restore(cls, value: str | None) -> str | None:
        return _http_url(value, "restore_url")


class ConsentsIn(_In):
    email: bool | None = None
    sms: bool | None = None
    push: bool | None = None
    night: bool | None = None


class CustomerIn(_In):
    id: str | None = Field(default=None, min_length=1, max_length=200)
    email: Email | None = None
    phone: Phone | None = None
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)
    consents: ConsentsIn | None = None

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not an IANA time zone, e.g. Asia/Seoul") from None
        return value

    @model_validator(mode="after")
    def _identified(self) -> CustomerIn:
        if not (self.id or self.email or self.phone):
            raise ValueError("customer needs at least one of id, email or phone")
        return self

    @property
    def key(self) -> str:
        """The store's id for this customer, or one derived from the contact given."""
        if self.id:
            return self.id
        return f"email:{self.email}" if self.email else f"phone:{self.phone}"


class OrderIn(_In):
    id: str = Field(min_length=1, max_length=200)
    value: float = Field(ge=0, allow_inf_nan=False)
    coupon_code: str | None = Field(default=None, max_length=100)


class ContextIn(_In):
    device: Literal["mobile", "desktop", "tablet"] | None = None


class EventIn(_In):
    event_id: str = Field(min_length=1, max_length=200)
    type: EventType
    occurred_at: AwareDatetime
    cart: CartIn | None = None
    customer: CustomerIn | None = None
    order: OrderIn | None = None
    context: ContextIn | None = None

    @model_validator(mode="after")
    def _shape(self) -> EventIn:
        if self.type in CART_EVENTS:
            if self.cart is None:
                raise ValueError(f"{self.type} needs a cart")
            missing = [f for f in ("currency", "value", "items") if getattr(self.cart, f) is None]
            if missing:
                raise ValueError(f"{self.type} needs cart.{', cart.'.join(missing)}")
        elif self.type == "contact.captured":
            if self.customer is None:
                raise ValueError("contact.captured needs a customer")
        elif self.type == "order.completed":
            if self.order is None:
                raise ValueError("order.completed needs an order")
            if self.cart is None and self.customer is None:
                raise ValueError("order.completed needs a cart or a customer to match it to")
        return self


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1)


class EventResult(BaseModel):
    accepted: bool = True
    duplicate: bool = False


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    results: list[EventResult]
