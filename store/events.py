"""Applying storefront events: stored once, carts and customers upserted, orders attributed.

Everything for one request happens in the caller's transaction, so a request either applies
whole or leaves nothing behind. Events are idempotent on ``(store, event_id)``; an event older
than what a cart already reflects is kept but changes nothing (deliveries arrive out of order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from store.db import insert
from store.models import (
    Cart,
    CartStatus,
    Customer,
    Decision,
    DecisionState,
    Event,
    Message,
    MessageStatus,
    Outcome,
)
from store.schemas import CustomerIn, EventIn

cart_t: sa.Table = Cart.__table__  # type: ignore[attr-defined]
customer_t: sa.Table = Customer.__table__  # type: ignore[attr-defined]
event_t: sa.Table = Event.__table__  # type: ignore[attr-defined]
decision_t: sa.Table = Decision.__table__  # type: ignore[attr-defined]
message_t: sa.Table = Message.__table__  # type: ignore[attr-defined]
outcome_t: sa.Table = Outcome.__table__  # type: ignore[attr-defined]

_STAGES = {"cart": 0, "checkout": 1, "payment": 2}


@dataclass
class Applied:
    """What a batch of events did, for the caller to act on after commit."""

    duplicates: list[bool] = field(default_factory=list)
    # Carts that need an abandonment check scheduled: (cart id, last activity).
    checks: dict[int, datetime] = field(default_factory=dict)
    conversions: int = 0
    outcomes: list[str] = field(default_factory=list)  # decision ids given a converted outcome


def apply_events(
    conn: sa.Connection, *, store_id: str, events: Sequence[EventIn], now: datetime
) -> Applied:
    """Store and apply ``events`` for one store, in the caller's transaction."""
    applied = Applied()
    for event in events:
        applied.duplicates.append(not _apply_one(conn, store_id, event, now, applied))
    return applied


def _apply_one(
    conn: sa.Connection, store_id: str, event: EventIn, now: datetime, applied: Applied
) -> bool:
    stored = conn.execute(
        insert(event_t, conn.dialect.name)
        .values(
            store_id=store_id,
            event_id=event.event_id,
            type=event.type,
            occurred_at=event.occurred_at,
            received_at=now,
            payload=event.model_dump(mode="json", exclude_none=True),
        )
        .on_conflict_do_nothing(index_elements=["store_id", "event_id"])
        .returning(event_t.c.id)
    ).first()
    if stored is None:
        return False  # seen before: accepted, never applied twice

    # A clock running ahead at the shop must not push abandonment into the future.
    at = min(event.occurred_at, now)
    customer_id = _upsert_customer(conn, store_id, event.customer, now) if event.customer else None

    if event.type == "order.completed":
        _apply_order(conn, store_id, event, customer_id, at, now, applied)
    elif event.cart is not None:
        _apply_cart_activity(conn, store_id, event, customer_id, at, now, applied)
    return True


def _upsert_customer(
    conn: sa.Connection, store_id: str, customer: CustomerIn, now: datetime
) -> int:
    values: dict[str, Any] = {
        k: v
        for k, v in {
            "email": customer.email,
            "phone": customer.phone,
            "locale": customer.locale,
            "timezone": customer.timezone,
        }.items()
        if v is not None
    }
    if customer.consents is not None:
        for channel, granted in customer.consents.model_dump(exclude_none=True).items():
            values[f"consent_{channel}"] = granted
    stmt = insert(customer_t, conn.dialect.name).values(
        store_id=store_id, external_id=customer.key, created_at=now, updated_at=now, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["store_id", "external_id"],
        set_={**{k: stmt.excluded[k] for k in values}, "updated_at": now},
    ).returning(customer_t.c.id)
    return int(conn.execute(stmt).scalar_one())


def _lock_cart(conn: sa.Connection, store_id: str, external_id: str) -> Any:
    query = sa.select(cart_t).where(
        cart_t.c.store_id == store_id, cart_t.c.external_id == external_id
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).first()


def _apply_cart_activity(
    conn: sa.Connection,
    store_id: str,
    event: EventIn,
    customer_id: int | None,
    at: datetime,
    now: datetime,
    applied: Applied,
) -> None:
    assert event.cart is not None
    cart_in = event.cart
    snapshot: dict[str, Any] = {}
    if cart_in.currency is not None:
        snapshot["currency"] = cart_in.currency
    if cart_in.value is not None:
        snapshot["value"] = cart_in.value
    if cart_in.items is not None:
        snapshot["items"] = [i.model_dump(mode="json", exclude_none=True) for i in cart_in.items]
    if cart_in.restore_url is not None:
        snapshot["restore_url"] = cart_in.restore_url
    if customer_id is not None:
        snapshot["customer_id"] = customer_id
    if event.context is not None and event.context.device is not None:
        snapshot["device"] = event.context.device
    stage = "checkout" if event.type == "checkout.started" else "cart"

    row = _lock_cart(conn, store_id, cart_in.id)
    if row is None:
        cart_id = conn.execute(
            sa.insert(cart_t)
            .values(
                store_id=store_id,
                external_id=cart_in.id,
                status=CartStatus.ACTIVE,
                checkout_stage=stage,
                last_event_at=event.occurred_at,
                last_activity_at=at,
                version=1,
                check_pending=True,
                journey=0,
                created_at=now,
                **snapshot,
            )
            .returning(cart_t.c.id)
        ).scalar_one()
        applied.checks[cart_id] = at
        return

    if event.occurred_at <= row.last_event_at:
        return  # older than what the cart already shows: stored, not applied
    if row.status == CartStatus.CONVERTED and (
        row.converted_at is None or event.occurred_at <= row.converted_at
    ):
        return
    changes: dict[str, Any] = {
        **snapshot,
        "last_event_at": event.occurred_at,
        "last_activity_at": max(row.last_activity_at, at),
        "version": row.version + 1,
        "status": CartStatus.ACTIVE,
    }
    if _STAGES[stage] > _STAGES.get(row.checkout_stage, 0):
        changes["checkout_stage"] = stage
    if row.status == CartStatus.ABANDONED:
        # The shopper is back: the journey for the last abandonment stops here. Another
        # abandonment will start a new one.
        _void_pending(conn, row.id, reason="cart_activity", now=now)
    if not row.check_pending or row.status != CartStatus.ACTIVE:
        changes["check_pending"] = True
        applied.checks[row.id] = changes["last_activity_at"]
    conn.execute(sa.update(cart_t).where(cart_t.c.id == row.id).values(**changes))


def _apply_order(
    conn: sa.Connection,
    store_id: str,
    event: EventIn,
    customer_id: int | None,
    at: datetime,
    now: datetime,
    applied: Applied,
) -> None:
    assert event.order is not None
    order = event.order
    if event.cart is not None:
        row = _lock_cart(conn, store_id, event.cart.id)
        if row is None:
            # An order for a cart Nudge never saw: remember it so late cart events stay inert.
            conn.execute(
                sa.insert(cart_t).values(
                    store_id=store_id,
                    external_id=event.cart.id,
                    customer_id=customer_id,
                    currency=event.cart.currency or "USD",
                    value=event.cart.value if event.cart.value is not None else order.value,
                    items=[],
                    status=CartStatus.CONVERTED,
                    last_event_at=event.occurred_at,
                    last_activity_at=at,
                    converted_at=at,
                    order_id=order.id,
                    order_value=order.value,
                    created_at=now,
                )
            )
            return
        carts = [row]
    else:
        carts = list(
            conn.execute(
                sa.select(cart_t).where(
                    cart_t.c.store_id == store_id,
                    cart_t.c.customer_id == customer_id,
                    cart_t.c.status.in_([CartStatus.ACTIVE, CartStatus.ABANDONED]),
                )
            )
        )
    for cart in carts:
        if cart.status == CartStatus.CONVERTED:
            continue  # a second order on a converted cart is not a second recovery
        conn.execute(
            sa.update(cart_t)
            .where(cart_t.c.id == cart.id)
            .values(
                status=CartStatus.CONVERTED,
                converted_at=at,
                order_id=order.id,
                order_value=order.value,
                last_event_at=max(cart.last_event_at, event.occurred_at),
                version=cart.version + 1,
            )
        )
        applied.conversions += 1
        _void_pending(conn, cart.id, reason="ordered", now=now)
        applied.outcomes += record_conversion(
            conn, cart_id=cart.id, order_id=order.id, order_value=order.value, at=at, now=now
        )


def _void_pending(conn: sa.Connection, cart_id: int, *, reason: str, now: datetime) -> None:
    conn.execute(
        sa.update(decision_t)
        .where(decision_t.c.cart_id == cart_id, decision_t.c.state == DecisionState.SCHEDULED)
        .values(state=DecisionState.VOID, state_reason=reason, updated_at=now)
    )


def record_conversion(
    conn: sa.Connection,
    *,
    cart_id: int,
    order_id: str,
    order_value: float,
    at: datetime,
    now: datetime,
) -> list[str]:
    """Give every open decision of the cart whose window covers ``at`` a converted outcome."""
    rows = conn.execute(
        sa.select(decision_t.c.id, decision_t.c.store_id, message_t.c.status, message_t.c.cost)
        .select_from(decision_t.outerjoin(message_t, message_t.c.decision_id == decision_t.c.id))
        .where(
            decision_t.c.cart_id == cart_id,
            decision_t.c.decided_at <= at,
            decision_t.c.window_ends_at >= at,
            ~sa.exists().where(outcome_t.c.decision_id == decision_t.c.id),
        )
    ).all()
    recorded = []
    for row in rows:
        sent = row.status in (MessageStatus.SENT, MessageStatus.UNCERTAIN)
        inserted = conn.execute(
            insert(outcome_t, conn.dialect.name)
            .values(
                decision_id=row.id,
                store_id=row.store_id,
                converted=True,
                order_id=order_id,
                revenue=order_value,
                # Coupons (and so discounts actually redeemed) arrive with the channels work.
                discount_amount=0.0,
                message_sent=sent,
                message_cost=float(row.cost or 0.0) if sent else 0.0,
                resolved_at=now,
            )
            .on_conflict_do_nothing(index_elements=["decision_id"])
            .returning(outcome_t.c.decision_id)
        ).first()
        if inserted is not None:
            recorded.append(row.id)
    return recorded
