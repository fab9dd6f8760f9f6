"""What a storefront sends: the event schema, validated before anything is stored."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EventType = Literal["cart.updated", "checkout.started", "contact.captured", "order.completed"]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
CART_EVENTS = frozenset({"cart.updated", "checkout.started"})

# Deliberately plain: a syntactic check that catches typos and garbage, not an RFC parser.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class _In(BaseModel):
    # Unknown keys are ignored (storefronts send more than we read); missing or wrong ones fail.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


def _http_url(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{field} must be an absolute http(s) URL")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class ItemIn(_In):
    sku: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=500)
    price: float = Field(ge=0)
    quantity: int = Field(ge=1, le=100_000)
    image_url: str | None = Field(default=None, max_length=2048)
    url: str | None = Field(default=None, max_length=2048)

    _finite_price = field_validator("price")(_finite)

    @field_validator("image_url", "url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _http_url(value, "item url")


class CartIn(_In):
    id: str = Field(min_length=1, max_length=200)
    currency: str | None = Field(default=None, description="ISO 4217, e.g. USD, KRW")
    value: float | None = Field(default=None, ge=0)
    items: list[ItemIn] | None = Field(default=None, max_length=500)
    restore_url: str | None = Field(default=None, max_length=2048)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is not None and not _CURRENCY.match(value):
            raise ValueError("must be a three-letter ISO 4217 code in capitals, e.g. USD")
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: float | None) -> float | None:
        return None if value is None else _finite(value)

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
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)
    consents: ConsentsIn | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("is not an email address")
        return value.lower() if value else value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is not None and not _E164.match(value):
            raise ValueError("must be in E.164 form, e.g. +821012345678")
        return value

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
    value: float = Field(ge=0)
    coupon_code: str | None = Field(default=None, max_length=100)

    _finite_value = field_validator("value")(_finite)


class ContextIn(_In):
    device: Literal["mobile", "desktop", "tablet"] | None = None


class EventIn(_In):
    event_id: str = Field(min_length=1, max_length=200)
    type: EventType
    occurred_at: datetime
    cart: CartIn | None = None
    customer: CustomerIn | None = None
    order: OrderIn | None = None
    context: ContextIn | None = None

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must include a time zone, e.g. 2026-11-23T12:00:00Z")
        return value

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
