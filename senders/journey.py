"""The journey of an abandoned cart: detect, decide, send, follow up, close.

These functions hold the logic; ``senders.actors`` runs them on Dramatiq. Each takes a
:class:`Runtime` (settings, engine, the policy of a store, a clock) and returns the follow-ups
to put on the broker once its transaction has committed, so nothing is queued for a change
that was rolled back.

Exactly-once, as far as email allows: a send is claimed by a conditional UPDATE, its message
row (the idempotency record) is written before the provider is called, and the hand-off is
recorded right before DATA. A crash before the hand-off is retried after the lease expires; a
crash during it is never retried (at most once), because the provider may already hold the
message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from optimizer import Decision as PolicyDecision
from optimizer import Policy
from senders import compliance, coupons, render
from senders.channels import open_channel
from senders.channels.email import COST_PER_EMAIL
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings
from store.db import insert
from store.events import cart_t, customer_t, decision_t, message_t, outcome_t
from store.models import CartStatus, DecisionState, MessageStatus, PushSubscription, Store, new_id
from store.suppressions import suppress
from store.types import utcnow

logger = logging.getLogger(__name__)
store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]
push_t: sa.Table = PushSubscription.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FollowUp:
    """A message to put on the broker after commit."""

    actor: str  # "check_cart" | "send_touch"
    arg: int | str
    delay_ms: int = 0


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    policy_for: Callable[[str], Policy]
    clock: Callable[[], datetime] = utcnow


@dataclass
class SweepReport:
    checks: int = 0
    sends: int = 0
    reclaimed: int = 0
    uncertain: int = 0
    closed: int = 0
    follow_ups: list[FollowUp] = field(default_factory=list)


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))


def _real(rt: Runtime, seconds: float) -> timedelta:
    return timedelta(seconds=rt.settings.scaled(seconds))


def _lock(conn: sa.Connection, query: sa.Select[Any]) -> Any:
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).first()


# --- abandonment -----------------------------------------------------------------------------


def check_cart(rt: Runtime, cart_id: int) -> list[FollowUp]:
    """Abandon the cart if it has been idle long enough; otherwise look again when it will be."""
    now = rt.clock()
    idle = _real(rt, rt.settings.abandon_after_seconds)
    with rt.engine.begin() as conn:
        cart = _lock(conn, sa.select(cart_t).where(cart_t.c.id == cart_id))
        if cart is None or cart.status != CartStatus.ACTIVE:
            if cart is not None and cart.check_pending:
                conn.execute(
                    sa.update(cart_t).where(cart_t.c.id == cart_id).values(check_pending=False)
                )
            return []
        due = cart.last_activity_at + idle
        if now < due:
            # The cart changed since this check was scheduled: wait for the new idle time.
            return [FollowUp("check_cart", cart_id, _ms((due - now).total_seconds()))]
        journey = cart.journey + 1
        conn.execute(
            sa.update(cart_t)
            .where(cart_t.c.id == cart_id)
            .values(
                status=CartStatus.ABANDONED,
                abandoned_at=now,
                journey=journey,
                check_pending=False,
            )
        )
        logger.info("Cart %s abandoned (journey %d, value %.2f)", cart_id, journey, cart.value)
        decision = _decide(conn, rt, cart, journey=journey, touch=1, base=now, now=now)
    return _schedule(rt, decision, now)


# --- deciding --------------------------------------------------------------------------------


def build_context(
    conn: sa.Connection, cart: Any, customer: Any, *, journey: int, touch: int, now: datetime
) -> dict[str, Any]:
    """What the policy knows about this cart and its customer at this touch."""
    channels: list[str] = []
    returning = False
    previous_abandons = max(0, journey - 1)
    local_hour = now.hour
    if customer is not None:
        channels = compliance.reachable_channels(conn, store_id=cart.store_id, customer=customer)
        others = conn.execute(
            sa.select(
                sa.func.count().filter(cart_t.c.status == CartStatus.CONVERTED),
                sa.func.coalesce(sa.func.sum(cart_t.c.journey), 0),
            ).where(cart_t.c.customer_id == customer.id, cart_t.c.id != cart.id)
        ).one()
        returning = others[0] > 0
        previous_abandons += int(others[1])
        if customer.timezone:
            local_hour = now.astimezone(ZoneInfo(customer.timezone)).hour
    return {
        # Routes the persistent holdout (a stable hash per customer); not a model feature.
        "customer_key": str(cart.customer_id if cart.customer_id is not None else f"c{cart.id}"),
        "cart_value": float(cart.value),
        "currency": cart.currency,
        "customer_type": "returning" if returning else "new",
        "device": cart.device or "desktop",
        "checkout_stage": cart.checkout_stage,
        "previous_abandons": previous_abandons,
        "channels": channels,
        "local_hour": local_hour,
        "touch": touch,
    }


def _decide(
    conn: sa.Connection,
    rt: Runtime,
    cart: Any,
    *,
    journey: int,
    touch: int,
    base: datetime,
    now: datetime,
) -> dict[str, Any] | None:
    """Ask the store's policy for this touch and store its decision. None: journey is over."""
    policy = rt.policy_for(cart.store_id)
    if touch > policy.max_touches:
        return None
    customer = None
    if cart.customer_id is not None:
        customer = conn.execute(
            sa.select(customer_t).where(customer_t.c.id == cart.customer_id)
        ).first()
    context = build_context(conn, cart, customer, journey=journey, touch=touch, now=now)
    chosen: PolicyDecision = policy.choose(context, now=now)
    arm = chosen.arm
    when = base + _real(rt, arm.delay_minutes * 60.0)
    if customer is not None and not arm.is_holdout:
        store = conn.execute(
            sa.select(store_t.c.country, store_t.c.rules).where(store_t.c.id == cart.store_id)
        ).one()
        when = compliance.next_allowed(
            when,
            timezone=customer.timezone,
            rules=compliance.Rules.for_store(store.country, store.rules),
            night_consent=bool(customer.consent_night),
        )
    row: dict[str, Any] = {
        "id": chosen.id if len(chosen.id) == 32 else new_id(),
        "store_id": cart.store_id,
        "cart_id": cart.id,
        "journey": journey,
        "touch": touch,
        "policy": _policy_name(policy, chosen),
        "experiment_id": chosen.context.get("experiment"),
        "arm_key": arm.key,
        "channel": arm.channel,
        "delay_minutes": arm.delay_minutes,
        "discount_pct": arm.discount_pct,
        "propensity": chosen.propensity,
        "context": dict(chosen.context) if chosen.context else context,
        "decided_at": now,
        "scheduled_for": when,
        "state": DecisionState.SKIPPED if arm.is_holdout else DecisionState.SCHEDULED,
        "state_reason": "holdout" if arm.is_holdout else None,
        "window_ends_at": now
        + _real(
            rt,
            86400.0
            * float(
                chosen.context.get("attribution_window_days") or rt.settings.attribution_window_days
            ),
        ),
        "updated_at": now,
    }
    conn.execute(sa.insert(decision_t).values(**row))
    logger.info(
        "Cart %s touch %d: %s (propensity %.3f)", cart.id, touch, arm.key, chosen.propensity
    )
    return row


def _policy_name(policy: Policy, chosen: PolicyDecision) -> str:
    if chosen.context.get("experiment"):
        return "holdout" if chosen.context.get("holdout") else "experiment"
    default = getattr(policy, "default", policy)
    return type(default).__name__


def _schedule(rt: Runtime, decision: dict[str, Any] | None, now: datetime) -> list[FollowUp]:
    """Put a due-soon send on the broker; later ones wait in the database for the sweep."""
    if decision is None or decision["state"] != DecisionState.SCHEDULED:
        return []
    wait = (decision["scheduled_for"] - now).total_seconds()
    if wait > rt.settings.broker_delay_horizon_seconds:
        return []
    with rt.engine.begin() as conn:
        conn.execute(
            sa.update(decision_t).where(decision_t.c.id == decision["id"]).values(enqueued_at=now)
        )
    return [FollowUp("send_touch", decision["id"], _ms(wait))]


# --- sending ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Send:
    """Everything a hand-off needs, read in the claiming transaction."""

    decision: Any
    cart: Any
    customer: Any
    store: Any
    message_id: str
    recipient: str
    coupon: str | None


def send_touch(rt: Runtime, decision_id: str) -> list[FollowUp]:
    """Send one touch, at most once. Safe to run any number of times for the same decision."""
    s = rt.settings
    now = rt.clock()
    with rt.engine.begin() as conn:
        d = _lock(conn, sa.select(decision_t).where(decision_t.c.id == decision_id))
        if d is None:
            logger.warning("Decision %s not found", decision_id)
            return []
        if d.state == DecisionState.SCHEDULED:
            wait = (d.scheduled_for - now).total_seconds()
            if wait > 1.0:  # early (a duplicate or a clock skew): come back at the right time
                return (
                    []
                    if wait > s.broker_delay_horizon_seconds
                    else [FollowUp("send_touch", decision_id, _ms(wait))]
                )
            message_id = new_id()
        elif d.state == DecisionState.SENDING:
            # A retry, or a crashed worker's send: take it over only if its lease ran out
            # before anything was handed to the provider.
            claimed = conn.execute(
                sa.update(message_t)
                .where(
                    message_t.c.decision_id == decision_id,
                    message_t.c.status == MessageStatus.PREPARED,
                    message_t.c.lease_until <= now,
                )
                .values(
                    attempts=message_t.c.attempts + 1,
                    lease_until=now + timedelta(seconds=s.send_lease_seconds),
                )
                .returning(message_t.c.id)
            ).first()
            if claimed is None:
                return []
            message_id = claimed.id
        else:
            return []  # sent, skipped, void or failed already

        cart = conn.execute(sa.select(cart_t).where(cart_t.c.id == d.cart_id)).one()
        customer = _customer(conn, cart.customer_id)
        store = conn.execute(sa.select(store_t).where(store_t.c.id == d.store_id)).one()
        obstacle = _obstacle(conn, rt, d, cart, customer, store, now)
        if isinstance(obstacle, datetime):  # quiet hours: same touch, later
            claimed_id = message_id if d.state == DecisionState.SENDING else None
            return _postpone(conn, rt, d, claimed_id, obstacle, now)
        if obstacle is not None:
            if d.state == DecisionState.SENDING:
                _void_message(conn, decision_id, message_id, obstacle, now)
            else:
                conn.execute(
                    sa.update(decision_t)
                    .where(decision_t.c.id == decision_id)
                    .values(state=_state_for(obstacle), state_reason=obstacle, updated_at=now)
                )
            logger.info("Touch %s not sent: %s", decision_id, obstacle)
            return []

        recipient = _recipient(conn, d.channel, customer)
        if d.state == DecisionState.SCHEDULED:
            conn.execute(
                sa.update(decision_t)
                .where(decision_t.c.id == decision_id)
                .values(state=DecisionState.SENDING, updated_at=now)
            )
            # The idempotency record: from here on this touch is never started twice.
            conn.execute(
                sa.insert(message_t).values(
                    id=message_id,
                    decision_id=decision_id,
                    store_id=d.store_id,
                    channel=d.channel,
                    recipient=recipient.address,
                    status=MessageStatus.PREPARED,
                    cost=0.0,
                    attempts=1,
                    created_at=now,
                    lease_until=now + timedelta(seconds=s.send_lease_seconds),
                )
            )
        code = coupons.mint(conn, rt.settings, d, now) if d.discount_pct > 0 else None
        send = _Send(d, cart, customer, store, message_id, recipient.payload, code)

    return _deliver(rt, send)


def _state_for(reason: str) -> str:
    return DecisionState.VOID if reason in ("ordered", "cart_changed") else DecisionState.SKIPPED


def _customer(conn: sa.Connection, customer_id: int | None) -> Any:
    if customer_id is None:
        return None
    return conn.execute(sa.select(customer_t).where(customer_t.c.id == customer_id)).first()


@dataclass(frozen=True)
class _Recipient:
    address: str  # what the message record keeps (email, phone, "push:<subscription id>")
    payload: str  # what the channel gets (for push: the subscription's JSON)


def _recipient(conn: sa.Connection, channel: str, customer: Any) -> _Recipient:
    if channel == "push":
        sub = conn.execute(
            sa.select(push_t)
            .where(push_t.c.customer_id == customer.id)
            .order_by(push_t.c.id.desc())
            .limit(1)
        ).one()
        subscription = {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}
        return _Recipient(f"push:{sub.id}", orjson.dumps(subscription).decode())
    address = customer.email if channel == "email" else customer.phone
    return _Recipient(address, address)


def _obstacle(
    conn: sa.Connection, rt: Runtime, d: Any, cart: Any, customer: Any, store: Any, now: datetime
) -> str | datetime | None:
    """Why this touch must not go out now (a reason), when it may (a time), or None.

    Checked when the send is claimed and, for what can change in a moment (an order, an
    unsubscribe), again right before the hand-off.
    """
    if cart.status == CartStatus.CONVERTED:
        return "ordered"
    if cart.status != CartStatus.ABANDONED or cart.journey != d.journey:
        return "cart_changed"
    if customer is None:
        return "no_contact"
    if d.channel not in compliance.reachable_channels(conn, store_id=d.store_id, customer=customer):
        push = (
            d.channel == "push"
            and conn.execute(
                sa.select(push_t.c.id).where(push_t.c.customer_id == customer.id)
            ).first()
        )
        has_contact = {
            "email": customer.email,
            "sms": customer.phone,
            "kakao": customer.phone,
            "push": push,
        }.get(d.channel)
        if not has_contact:
            return "no_contact"
        if compliance.contact_for(d.channel, customer, "x") is None:
            return "no_consent"
        return "suppressed"
    rules = compliance.Rules.for_store(store.country, store.rules)
    cap = compliance.cap_reached(
        conn,
        customer_id=customer.id,
        channel=d.channel,
        now=now,
        rules=rules,
        day=_real(rt, 86400.0),
    )
    if cap is not None:
        return cap
    allowed = compliance.next_allowed(
        now, timezone=customer.timezone, rules=rules, night_consent=bool(customer.consent_night)
    )
    return allowed if allowed > now else None


def _deliver(rt: Runtime, send: _Send) -> list[FollowUp]:
    s = rt.settings
    d, message_id = send.decision, send.message_id
    outgoing = render.reminder(
        channel=d.channel,
        message_id=message_id,
        recipient=send.recipient,
        store=send.store,
        cart=send.cart,
        customer=send.customer,
        coupon=send.coupon,
        discount_pct=d.discount_pct,
        settings=s,
    )
    with open_channel(d.channel, s) as channel:
        try:
            channel.prepare(outgoing)
        except TransientSendError:
            _release(rt, message_id)
            raise
        except PermanentSendError as exc:
            _fail(rt, send, exc)
            raise
        # Last look before the point of no return: an order or an opt-out meanwhile?
        with rt.engine.begin() as conn:
            now = rt.clock()
            cart = conn.execute(sa.select(cart_t).where(cart_t.c.id == d.cart_id)).one()
            customer = _customer(conn, cart.customer_id)
            obstacle = _obstacle(conn, rt, d, cart, customer, send.store, now)
            if isinstance(obstacle, datetime):
                return _postpone(conn, rt, d, message_id, obstacle, now)
            if obstacle is not None:
                _void_message(conn, d.id, message_id, obstacle, now)
                logger.info("Touch %s stopped before hand-off: %s", d.id, obstacle)
                return []
            conn.execute(
                sa.update(message_t)
                .where(message_t.c.id == message_id)
                .values(status=MessageStatus.HANDOFF)
            )
        try:
            sent = channel.deliver()
        except TransientSendError:
            # The provider said no without keeping a copy, so a retry cannot double.
            with rt.engine.begin() as conn:
                conn.execute(
                    sa.update(message_t)
                    .where(message_t.c.id == message_id)
                    .values(
                        status=MessageStatus.PREPARED,
                        lease_until=rt.clock(),
                        error_kind="transient",
                    )
                )
            raise
        except PermanentSendError as exc:
            _fail(rt, send, exc)
            raise
        # A ConnectionError here leaves the message in hand-off: the sweep marks it uncertain.

    now = rt.clock()
    with rt.engine.begin() as conn:
        conn.execute(
            sa.update(message_t)
            .where(message_t.c.id == message_id)
            .values(
                status=MessageStatus.SENT,
                provider_id=sent.provider_id,
                cost=sent.cost,
                detail=sent.detail,
                sent_at=now,
            )
        )
        next_decision = _after_sent(conn, rt, d, now)
    logger.info(
        "%s sent for cart %s touch %d (message %s)",
        d.channel.capitalize() if d.channel != "sms" else "SMS",
        d.cart_id,
        d.touch,
        message_id,
    )
    return _schedule(rt, next_decision, now)


def _after_sent(conn: sa.Connection, rt: Runtime, d: Any, now: datetime) -> Any:
    conn.execute(
        sa.update(decision_t)
        .where(decision_t.c.id == d.id)
        .values(state=DecisionState.SENT, updated_at=now)
    )
    cart = conn.execute(sa.select(cart_t).where(cart_t.c.id == d.cart_id)).one()
    if cart.status != CartStatus.ABANDONED or cart.journey != d.journey:
        return None
    return _decide(conn, rt, cart, journey=d.journey, touch=d.touch + 1, base=now, now=now)


def _release(rt: Runtime, message_id: str) -> None:
    with rt.engine.begin() as conn:
        conn.execute(
            sa.update(message_t)
            .where(message_t.c.id == message_id, message_t.c.status == MessageStatus.PREPARED)
            .values(lease_until=rt.clock())
        )


def _fail(rt: Runtime, send: _Send, exc: PermanentSendError) -> None:
    """The provider refused for good: record it, and suppress the address if it says so."""
    now = rt.clock()
    d = send.decision
    with rt.engine.begin() as conn:
        conn.execute(
            sa.update(message_t)
            .where(message_t.c.id == send.message_id)
            .values(status=MessageStatus.FAILED, error=str(exc)[:500], error_kind="permanent")
        )
        conn.execute(
            sa.update(decision_t)
            .where(decision_t.c.id == d.id)
            .values(state=DecisionState.FAILED, state_reason=exc.reason[:64], updated_at=now)
        )
        if exc.suppress:
            address = send.recipient
            if d.channel == "push":
                address = orjson.loads(send.recipient)["endpoint"]
                conn.execute(sa.delete(push_t).where(push_t.c.endpoint == address))
            # A phone number refused on SMS is refused on KakaoTalk's SMS fallback too.
            for channel in ("sms", "kakao") if d.channel in ("sms", "kakao") else (d.channel,):
                suppress(
                    conn,
                    store_id=d.store_id,
                    channel=channel,
                    address=address,
                    reason=exc.reason,
                    at=now,
                )


def _void_message(
    conn: sa.Connection, decision_id: str, message_id: str, reason: str, now: datetime
) -> None:
    """Nothing was handed over, and the touch ends with ``reason``."""
    conn.execute(
        sa.update(message_t).where(message_t.c.id == message_id).values(status=MessageStatus.VOID)
    )
    conn.execute(
        sa.update(decision_t)
        .where(decision_t.c.id == decision_id)
        .values(state=_state_for(reason), state_reason=reason, updated_at=now)
    )


def _postpone(
    conn: sa.Connection,
    rt: Runtime,
    d: Any,
    message_id: str | None,
    until: datetime,
    now: datetime,
) -> list[FollowUp]:
    """Quiet hours: the same touch, at the first allowed minute. A claimed (never handed over)
    message record is dropped so the touch can be claimed afresh then."""
    if message_id is not None:
        conn.execute(sa.delete(message_t).where(message_t.c.id == message_id))
    conn.execute(
        sa.update(decision_t)
        .where(decision_t.c.id == d.id)
        .values(
            state=DecisionState.SCHEDULED, scheduled_for=until, enqueued_at=None, updated_at=now
        )
    )
    logger.info("Touch %s postponed out of quiet hours", d.id)
    wait = (until - now).total_seconds()
    if wait > rt.settings.broker_delay_horizon_seconds:
        return []
    return [FollowUp("send_touch", d.id, _ms(wait))]


# --- the sweep -------------------------------------------------------------------------------


def sweep(rt: Runtime, *, limit: int = 1000) -> SweepReport:
    """Everything time-driven that the broker is not trusted with. Idempotent; any worker may
    run it at any time.

    - carts idle past the abandonment time whose check got lost → check them;
    - touches due soon that are not on the broker → enqueue them;
    - sends whose worker died before hand-off → retry; during hand-off → mark uncertain;
    - attribution windows that closed without an order → record the non-conversion.
    """
    s = rt.settings
    now = rt.clock()
    report = SweepReport()
    grace = timedelta(seconds=max(2 * s.sweep_interval_seconds, 5.0))
    with rt.engine.begin() as conn:
        overdue = conn.execute(
            sa.select(cart_t.c.id)
            .where(
                cart_t.c.status == CartStatus.ACTIVE,
                cart_t.c.last_activity_at < now - _real(rt, s.abandon_after_seconds) - grace,
            )
            .limit(limit)
        ).scalars()
        for cart_id in overdue:
            report.follow_ups.append(FollowUp("check_cart", cart_id))
            report.checks += 1

        horizon = now + timedelta(seconds=s.sweep_interval_seconds)
        stale = now - timedelta(seconds=s.send_lease_seconds)
        due = conn.execute(
            sa.select(decision_t.c.id, decision_t.c.scheduled_for)
            .where(
                decision_t.c.state == DecisionState.SCHEDULED,
                decision_t.c.scheduled_for <= horizon,
                sa.or_(decision_t.c.enqueued_at.is_(None), decision_t.c.enqueued_at < stale),
            )
            .limit(limit)
        ).all()
        if due:
            conn.execute(
                sa.update(decision_t)
                .where(decision_t.c.id.in_([r.id for r in due]))
                .values(enqueued_at=now)
            )
        for row in due:
            wait = (row.scheduled_for - now).total_seconds()
            report.follow_ups.append(FollowUp("send_touch", row.id, _ms(wait)))
            report.sends += 1

        for decision_id in conn.execute(
            sa.select(message_t.c.decision_id)
            .where(message_t.c.status == MessageStatus.PREPARED, message_t.c.lease_until <= now)
            .limit(limit)
        ).scalars():
            report.follow_ups.append(FollowUp("send_touch", decision_id))
            report.reclaimed += 1

    report.uncertain = _settle_uncertain(rt, now, limit)
    report.closed = close_windows(rt, now=now, limit=limit)
    return report


def _settle_uncertain(rt: Runtime, now: datetime, limit: int) -> int:
    """A worker died during hand-off: the provider may hold the message. Never send again."""
    settled = 0
    with rt.engine.begin() as conn:
        rows = conn.execute(
            sa.select(message_t.c.id, message_t.c.decision_id)
            .where(message_t.c.status == MessageStatus.HANDOFF, message_t.c.lease_until <= now)
            .limit(limit)
        ).all()
        for row in rows:
            conn.execute(
                sa.update(message_t)
                .where(message_t.c.id == row.id)
                .values(status=MessageStatus.UNCERTAIN, cost=COST_PER_EMAIL)
            )
            d = conn.execute(sa.select(decision_t).where(decision_t.c.id == row.decision_id)).one()
            logger.warning("Message %s: worker lost during hand-off; not re-sent", row.id)
            _after_sent(conn, rt, d, now)
            settled += 1
    return settled


def close_windows(rt: Runtime, *, now: datetime, limit: int = 1000) -> int:
    """Record a non-conversion for every decision whose window closed without an order."""
    with rt.engine.begin() as conn:
        rows = conn.execute(
            sa.select(
                decision_t.c.id,
                decision_t.c.store_id,
                decision_t.c.state,
                message_t.c.status,
                message_t.c.cost,
            )
            .select_from(
                decision_t.outerjoin(message_t, message_t.c.decision_id == decision_t.c.id)
            )
            .where(
                decision_t.c.window_ends_at < now,
                ~sa.exists().where(outcome_t.c.decision_id == decision_t.c.id),
            )
            .limit(limit)
        ).all()
        if not rows:
            return 0
        pending = [r.id for r in rows if r.state == DecisionState.SCHEDULED]
        if pending:
            conn.execute(
                sa.update(decision_t)
                .where(decision_t.c.id.in_(pending), decision_t.c.state == DecisionState.SCHEDULED)
                .values(state=DecisionState.VOID, state_reason="window_closed", updated_at=now)
            )
        stmt = insert(outcome_t, conn.dialect.name).on_conflict_do_nothing(
            index_elements=["decision_id"]
        )
        conn.execute(stmt, list(_non_conversions(rows, now)))
    return len(rows)


def _non_conversions(rows: Iterable[Any], now: datetime) -> Iterable[dict[str, Any]]:
    for r in rows:
        sent = r.status in (MessageStatus.SENT, MessageStatus.UNCERTAIN)
        yield {
            "decision_id": r.id,
            "store_id": r.store_id,
            "converted": False,
            "order_id": None,
            "revenue": 0.0,
            "discount_amount": 0.0,
            "message_sent": sent,
            "message_cost": float(r.cost or 0.0) if sent else 0.0,
            "resolved_at": now,
        }
