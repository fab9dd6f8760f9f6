"""The tables of Nudge. Alembic migrations own the schema; these classes describe it.

Every timestamp is timezone-aware UTC (:class:`store.types.UTCDateTime`). Primary keys are
integers where rows are many and internal (events, carts, customers), hex UUIDs where they
travel (stores, decisions, messages).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from store.types import JSONType, UTCDateTime, utcnow

# Constraint names that Alembic can find again on SQLite and PostgreSQL alike.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return uuid.uuid4().hex


class CartStatus:
    ACTIVE = "active"
    ABANDONED = "abandoned"
    CONVERTED = "converted"


class DecisionState:
    SCHEDULED = "scheduled"  # waiting for its time
    SENDING = "sending"  # a message row exists: the send is under way (or crashed)
    SENT = "sent"  # the message went out
    SKIPPED = "skipped"  # nothing to send: holdout arm, or no consent/contact at send time
    VOID = "void"  # cancelled: the customer ordered or changed the cart first
    FAILED = "failed"  # the provider refused it for good


class MessageStatus:
    PREPARED = "prepared"  # idempotency record written; nothing handed to the provider yet
    HANDOFF = "handoff"  # the provider is being given the message right now
    SENT = "sent"  # the provider accepted it
    UNCERTAIN = "uncertain"  # a worker died during hand-off; never re-sent (at most once)
    FAILED = "failed"  # the provider refused it for good
    VOID = "void"  # the customer ordered between preparation and hand-off


class Store(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(max_length=200, sa_column_kwargs={"unique": True})
    # sha256 of the secret API key; the key itself is shown once and never stored.
    api_key_hash: str = Field(max_length=64, index=True, sa_column_kwargs={"unique": True})
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # ISO 3166 country whose messaging law applies (KR adds "(광고)" and 21:00–08:00 quiet hours).
    country: str = Field(default="US", max_length=2)
    # Compliance rules (quiet hours, frequency caps); see senders.compliance.Rules for the shape.
    # Empty: the country's preset.
    rules: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    # The arm a promoted experiment left as the store's default (None: the 1h/24h/72h schedule).
    default_arm: str | None = Field(default=None, max_length=64)
    # Signs Shopify/WooCommerce webhooks (HMAC-SHA256 of the body). A shared secret, so it is
    # kept as-is (verifying needs it); never logged, never sent back by the API.
    webhook_secret: str | None = Field(default=None, max_length=200)
    # The JS snippet's key ("pk_..."). Public by design (it is in every page's HTML) and only
    # good for posting cart and contact events from the allowed origins, so it is kept as-is.
    publishable_key: str | None = Field(
        default=None, max_length=64, index=True, sa_column_kwargs={"unique": True}
    )
    # Origins ("https://shop.example") whose pages may use the publishable key.
    allowed_origins: list[str] = Field(default_factory=list, sa_type=JSONType)
    # Where the store's checkout learns Nudge's coupon codes (senders.coupon_push):
    # "shopify" or "woocommerce", the shop's base URL, and its API credential (a Shopify
    # Admin API access token, or WooCommerce's "consumer_key:consumer_secret"). A secret
    # the pushes need as-is, so kept as-is; never logged, never sent back by the API.
    # None: codes are not pushed (the store must honour them some other way).
    coupon_platform: str | None = Field(default=None, max_length=16)
    coupon_api_url: str | None = Field(default=None, max_length=2048)
    coupon_api_token: str | None = Field(default=None, max_length=500)


class ExperimentStatus:
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class Experiment(SQLModel, table=True):
    """A store's experiment over touch decisions: a bandit, or a fixed-weight A/B test.

    A persistent holdout share of customers (by a stable hash, never adapted, never messaged)
    measures what would have happened anyway.
    """

    __table_args__ = (sa.UniqueConstraint("store_id", "name"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    store_id: str = Field(foreign_key="store.id", max_length=32, index=True)
    name: str = Field(max_length=200)
    mode: str = Field(default="bandit", max_length=8)  # "bandit" | "ab"
    status: str = Field(default=ExperimentStatus.DRAFT, max_length=16)
    # Arm keys (optimizer.Arm.key), the send-nothing arm included.
    arms: list[str] = Field(default_factory=list, sa_type=JSONType)
    # ab mode: arm key -> weight (normalised over the feasible arms at decision time).
    weights: dict[str, float] = Field(default_factory=dict, sa_type=JSONType)
    holdout_share: float = 0.10
    attribution_window_days: float = 7.0
    # {"max_discount_pct": .., "max_touches": .., "daily_sms_budget": ..}
    guardrails: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    # {"margin_rate": .., "message_cost": {channel: cost}}
    economics: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    # Which touch it decides; None: every touch. One running experiment per store and touch.
    touch: int | None = None
    seed: int = 0
    winner: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PolicyState(SQLModel, table=True):
    """A bandit's learned posterior, shared by every worker through the database.

    Updated by compare-and-swap on ``version``: a worker folds the outcomes after
    ``last_outcome_id`` into the state it read, and writes only if nobody wrote since.
    """

    experiment_id: str = Field(foreign_key="experiment.id", primary_key=True, max_length=32)
    version: int = 0
    state: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    last_outcome_id: int = 0
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Customer(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("store_id", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    external_id: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)
    # None: never stated, which counts as no. Consent is never assumed.
    consent_email: bool | None = None
    consent_sms: bool | None = None
    consent_push: bool | None = None
    consent_night: bool | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Cart(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("store_id", "external_id"),
        sa.Index("ix_cart_status_last_activity", "status", "last_activity_at"),
        sa.Index("ix_cart_store_abandoned_at", "store_id", "abandoned_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    external_id: str = Field(max_length=200)
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True)
    currency: str = Field(default="USD", max_length=3)
    value: float = 0.0
    items: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    restore_url: str | None = Field(default=None, max_length=2048)
    status: str = Field(default=CartStatus.ACTIVE, max_length=16)
    checkout_stage: str = Field(default="cart", max_length=16)
    device: str | None = Field(default=None, max_length=16)
    # occurred_at of the newest event applied; older events arriving late change nothing.
    last_event_at: datetime = Field(sa_type=UTCDateTime)
    # When the shopper last touched the cart (what abandonment is measured from).
    last_activity_at: datetime = Field(sa_type=UTCDateTime)
    # Bumped by every change; an abandonment check holds the version it was scheduled for.
    version: int = 1
    # An abandonment check is on the broker for this cart; no need to schedule another.
    check_pending: bool = False
    # How many times this cart was abandoned; a journey of touches per abandonment.
    journey: int = 0
    abandoned_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    converted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    order_id: str | None = Field(default=None, max_length=200)
    order_value: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


_PENDING = sa.text("applied_at IS NULL")


class Event(SQLModel, table=True):
    """A storefront event, stored once per (store, event_id) when the API accepts it.

    The API only appends; a worker applies accepted events to carts and customers in the
    order they were accepted (``senders.applier``) and stamps ``applied_at``.
    """

    __table_args__ = (
        sa.UniqueConstraint("store_id", "event_id"),
        # The events not applied yet, oldest first: what the applier reads. Partial, so it
        # stays as small as the backlog.
        sa.Index("ix_event_pending", "id", sqlite_where=_PENDING, postgresql_where=_PENDING),
    )

    id: int | None = Field(default=None, primary_key=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    event_id: str = Field(max_length=200)
    type: str = Field(max_length=32)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    # None: accepted, not applied yet.
    applied_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Decision(SQLModel, table=True):
    """One touch of one journey: what the policy chose and what became of it."""

    __table_args__ = (
        sa.UniqueConstraint("cart_id", "journey", "touch"),
        sa.Index("ix_decision_state_scheduled_for", "state", "scheduled_for"),
        # Reports and the dashboard read a store's decisions by date.
        sa.Index("ix_decision_store_decided_at", "store_id", "decided_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    cart_id: int = Field(foreign_key="cart.id", index=True)
    journey: int
    touch: int
    policy: str = Field(max_length=64)
    experiment_id: str | None = Field(
        default=None, foreign_key="experiment.id", max_length=32, index=True
    )
    arm_key: str = Field(max_length=64)
    channel: str | None = Field(default=None, max_length=16)
    delay_minutes: int = 0
    discount_pct: float = 0.0
    propensity: float
    context: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    decided_at: datetime = Field(sa_type=UTCDateTime)
    scheduled_for: datetime = Field(sa_type=UTCDateTime)
    # When the sweep last put this decision on the broker (so it is not queued every sweep).
    enqueued_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    state: str = Field(default=DecisionState.SCHEDULED, max_length=16)
    state_reason: str | None = Field(default=None, max_length=64)
    window_ends_at: datetime = Field(sa_type=UTCDateTime, index=True)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Message(SQLModel, table=True):
    """The idempotency record of a send: written before the provider is called."""

    __table_args__ = (
        sa.Index("ix_message_status_lease_until", "status", "lease_until"),
        sa.Index("ix_message_store_created_at", "store_id", "created_at"),
        sa.Index("ix_message_next_check_at", "next_check_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    decision_id: str = Field(foreign_key="decision.id", max_length=32, unique=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    channel: str = Field(max_length=16)
    recipient: str = Field(max_length=320)
    status: str = Field(default=MessageStatus.PREPARED, max_length=16)
    provider_id: str | None = Field(default=None, max_length=255)
    cost: float = 0.0
    attempts: int = 1
    error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Until then the current attempt owns the send; after it, a crash is assumed.
    lease_until: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # "permanent" (refused for good: no retry, maybe suppressed) or "transient" (retried).
    error_kind: str | None = Field(default=None, max_length=16)
    # What the provider reported later (delivered, undelivered, failed…), via its callbacks.
    delivery_status: str | None = Field(default=None, max_length=32)
    # e.g. SMS segments and encoding, or an AlimTalk fallback to SMS.
    detail: str | None = Field(default=None, max_length=200)
    # When to ask the provider how the message ended (AlimTalk reports a fallback to SMS
    # later); None: nothing to ask.
    next_check_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Suppression(SQLModel, table=True):
    """An address that must not be contacted on a channel: unsubscribed, STOP, bounced, gone.

    Only new, explicit consent lifts it (see ``store.events``)."""

    __table_args__ = (sa.UniqueConstraint("store_id", "channel", "address"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    channel: str = Field(max_length=16)
    address: str = Field(max_length=2048)  # email (lower case), E.164 phone, push endpoint
    reason: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PushSubscription(SQLModel, table=True):
    """A browser's Web Push subscription (endpoint + keys), removed when the service says 410."""

    __table_args__ = (sa.UniqueConstraint("store_id", "endpoint"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    endpoint: str = Field(max_length=2048)
    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Coupon(SQLModel, table=True):
    """A unique, single-use code minted for one decision's discount."""

    __table_args__ = (sa.UniqueConstraint("store_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    decision_id: str = Field(foreign_key="decision.id", max_length=32, unique=True)
    code: str = Field(max_length=32)
    discount_pct: float
    expires_at: datetime = Field(sa_type=UTCDateTime)
    redeemed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    order_id: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # When the store's discount API confirmed the code (None: not pushed, or no API).
    pushed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Open(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(foreign_key="message.id", max_length=32, index=True)
    opened_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Click(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(foreign_key="message.id", max_length=32, index=True)
    clicked_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Outcome(SQLModel, table=True):
    """The one final outcome of a decision: an order in its window, or the window closing."""

    id: int | None = Field(default=None, primary_key=True)
    decision_id: str = Field(foreign_key="decision.id", max_length=32, unique=True)
    store_id: str = Field(foreign_key="store.id", max_length=32, index=True)
    converted: bool
    order_id: str | None = Field(default=None, max_length=200)
    revenue: float = 0.0
    discount_amount: float = 0.0
    message_sent: bool = False
    message_cost: float = 0.0
    resolved_at: datetime = Field(sa_type=UTCDateTime)


# The dashboard's daily rollups live in their own module; importing it registers the tables.
from store.rollups import (  # noqa: E402, F401
    RollupCartDay,
    RollupDecisionDay,
    RollupExperimentCell,
    RollupJourneyDay,
    RollupMessageDay,
    RollupState,
)
