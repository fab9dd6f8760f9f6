"""The journey of an abandoned cart: detect, decide, send, follow up, close.

These functions hold the logic; ``senders.actors`` runs them on Dramatiq. Each takes a
:class:`Runtime` (settings, engine, the policy of a store, a clock) and returns the follow-ups
to put on the broker once its transaction has committed, so nothing is queued for a change
that was rolled back.

Sending lives in :mod:`senders.sending` (touches in batches, exactly once as far as the
providers allow); deciding, scheduling, the sweep and closing windows live here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from optimizer import Decision as PolicyDecision
from optimizer import Policy
from optimizer.features import SINCE_KEY
from senders import compliance
from senders.sql import among
from settings import Settings
from store import bulk
from store.db import insert
from store.events import cart_t, customer_t, decision_t, message_t, outcome_t
from store.models import CartStatus, DecisionState, MessageStatus, Store, new_id
from store.types import utcnow

logger = logging.getLogger(__name__)
store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FollowUp:
    """A message to put on the broker after commit."""

    actor: str  # "check_cart" | "send_touch" | "check_delivery"
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
    deliveries: int = 0  # messages whose provider is asked how they ended
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
        decided = _decide(conn, rt, [_Next(cart, journey, 1, now)], base=now, now=now)
        return schedule(conn, rt, decided, now)


# --- deciding --------------------------------------------------------------------------------


#: What deciding a next touch reads of a cart and of its customer (no items, and of the
#: timestamps only the abandonment's: each JSON document and timestamp read costs CPU per row).
_NEXT_CART_COLUMNS = [
    cart_t.c[name]
    for name in (
        "id",
        "store_id",
        "customer_id",
        "currency",
        "value",
        "status",
        "checkout_stage",
        "device",
        "journey",
        "abandoned_at",
    )
]
_CONTEXT_CUSTOMER_COLUMNS = [
    customer_t.c[name]
    for name in (
        "id",
        "store_id",
        "email",
        "phone",
        "timezone",
        "consent_email",
        "consent_sms",
        "consent_push",
        "consent_night",
    )
]


@dataclass(frozen=True)
class _Next:
    """A touch to decide: the cart (as read in this transaction), its journey and touch no.,
    and when the journey began (the cart's abandonment)."""

    cart: Any
    journey: int
    touch: int
    abandoned_at: datetime | None


def build_contexts(
    conn: sa.Connection,
    items: Sequence[_Next],
    customers: Mapping[int, Any],
    *,
    now: datetime,
    time_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """What the policy knows about each cart and its customer at its touch (three queries for
    any number of carts). ``time_scale``: how many times faster than real time the product's
    clock runs (see ``Settings.time_scale``)."""
    known = [c for c in customers.values() if c is not None]
    reach = compliance.reachable_many(conn, known)
    history: dict[int, tuple[int, int]] = {}
    if known:
        history = {
            row.customer_id: (int(row.converted), int(row.journeys))
            for row in conn.execute(
                sa.select(
                    cart_t.c.customer_id,
                    sa.func.count()
                    .filter(cart_t.c.status == CartStatus.CONVERTED)
                    .label("converted"),
                    sa.func.coalesce(sa.func.sum(cart_t.c.journey), 0).label("journeys"),
                )
                .where(among(conn, cart_t.c.customer_id, [c.id for c in known]))
                .group_by(cart_t.c.customer_id)
            )
        }
    contexts = []
    for item in items:
        cart = item.cart
        customer = customers.get(cart.customer_id) if cart.customer_id is not None else None
        channels: list[str] = []
        returning = False
        previous_abandons = max(0, item.journey - 1)
        local_hour = now.hour
        if customer is not None:
            channels = reach.get(customer.id, [])
            converted, journeys = history.get(customer.id, (0, 0))
            # The customer's other carts: this one is abandoned (not converted), and its own
            # journeys so far are counted by ``journey`` already.
            returning = converted > 0
            previous_abandons += journeys - item.journey
            if customer.timezone:
                local_hour = now.astimezone(ZoneInfo(customer.timezone)).hour
        since: dict[str, float] = {}
        if item.abandoned_at is not None:
            # In the product's time: a demo running time_scale times faster has seen
            # time_scale hours of journey for each real one.
            elapsed = (now - item.abandoned_at).total_seconds() * time_scale
            since[SINCE_KEY] = max(0.0, elapsed / 3600.0)
        contexts.append(
            {
                # Routes the persistent holdout (a stable hash per customer); not a feature.
                "customer_key": str(
                    cart.customer_id if cart.customer_id is not None else f"c{cart.id}"
                ),
                "cart_value": float(cart.value),
                "currency": cart.currency,
                "customer_type": "returning" if returning else "new",
                "device": cart.device or "desktop",
                "checkout_stage": cart.checkout_stage,
                "previous_abandons": previous_abandons,
                "channels": channels,
                "local_hour": local_hour,
                "touch": item.touch,
                **since,
            }
        )
    return contexts


def _decide(
    conn: sa.Connection, rt: Runtime, items: Sequence[_Next], *, base: datetime, now: datetime
) -> list[dict[str, Any]]:
    """Ask each store's policy for these touches and store its decisions (journeys whose
    policy has no further touch end here). Returns the decision rows stored."""
    wanted = [
        (item, policy)
        for item in items
        for policy in (rt.policy_for(item.cart.store_id),)
        if item.touch <= policy.max_touches
    ]
    if not wanted:
        return []
    customer_ids = {i.cart.customer_id for i, _ in wanted if i.cart.customer_id is not None}
    customers = (
        {
            c.id: c
            for c in conn.execute(
                sa.select(*_CONTEXT_CUSTOMER_COLUMNS).where(
                    among(conn, customer_t.c.id, customer_ids)
                )
            )
        }
        if customer_ids
        else {}
    )
    stores = {
        r.id: compliance.Rules.for_store(r.country, r.rules)
        for r in conn.execute(
            sa.select(store_t.c.id, store_t.c.country, store_t.c.rules).where(
                among(conn, store_t.c.id, {i.cart.store_id for i, _ in wanted})
            )
        )
    }
    contexts = build_contexts(
        conn, [i for i, _ in wanted], customers, now=now, time_scale=rt.settings.time_scale
    )
    rows: list[dict[str, Any]] = []
    for (item, policy), context in zip(wanted, contexts, strict=True):
        cart = item.cart
        chosen: PolicyDecision = policy.choose(context, now=now)
        arm = chosen.arm
        when = base + _real(rt, arm.delay_minutes * 60.0)
        customer = customers.get(cart.customer_id) if cart.customer_id is not None else None
        if customer is not None and not arm.is_holdout:
            when = compliance.next_allowed(
                when,
                timezone=customer.timezone,
                rules=stores[cart.store_id],
                night_consent=bool(customer.consent_night),
            )
        window_days = float(
            chosen.context.get("attribution_window_days") or rt.settings.attribution_window_days
        )
        rows.append(
            {
                "id": chosen.id if len(chosen.id) == 32 else new_id(),
                "store_id": cart.store_id,
                "cart_id": cart.id,
                "journey": item.journey,
                "touch": item.touch,
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
                "enqueued_at": None,
                "state": DecisionState.SKIPPED if arm.is_holdout else DecisionState.SCHEDULED,
                "state_reason": "holdout" if arm.is_holdout else None,
                "window_ends_at": now + _real(rt, 86400.0 * window_days),
                "updated_at": now,
            }
        )
        logger.info(
            "Cart %s touch %d: %s (propensity %.3f)",
            cart.id,
            item.touch,
            arm.key,
            chosen.propensity,
        )
    # A touch decided already (by a worker that settled the same send) is not decided twice.
    conflict = "ON CONFLICT (cart_id, journey, touch) DO NOTHING"
    returned = bulk.insert_rows(conn, decision_t, rows, conflict=conflict, returning=("id",))
    if conn.dialect.name == "postgresql":
        stored = {r[0] for r in returned}
    else:  # SQLite's executemany returns nothing: read back which went in
        ids = [r["id"] for r in rows]
        stored = set(
            conn.execute(
                sa.select(decision_t.c.id).where(among(conn, decision_t.c.id, ids))
            ).scalars()
        )
    return [r for r in rows if r["id"] in stored]


def _policy_name(policy: Policy, chosen: PolicyDecision) -> str:
    if chosen.context.get("experiment"):
        return "holdout" if chosen.context.get("holdout") else "experiment"
    default = getattr(policy, "default", policy)
    return type(default).__name__


def schedule(
    conn: sa.Connection, rt: Runtime, decisions: Iterable[Mapping[str, Any]], now: datetime
) -> list[FollowUp]:
    """Put due-soon sends on the broker (after commit); later ones wait for the sweep."""
    follow_ups = []
    for d in decisions:
        if d["state"] != DecisionState.SCHEDULED:
            continue
        wait = (d["scheduled_for"] - now).total_seconds()
        if wait <= rt.settings.broker_delay_horizon_seconds:
            follow_ups.append(FollowUp("send_touch", d["id"], _ms(wait)))
    if follow_ups:
        conn.execute(
            sa.update(decision_t)
            .where(among(conn, decision_t.c.id, [str(f.arg) for f in follow_ups]))
            .values(enqueued_at=now)
        )
    return follow_ups


def after_sent(
    conn: sa.Connection, rt: Runtime, decisions: Sequence[Any], now: datetime
) -> list[FollowUp]:
    """These touches went out (or may have): mark them sent and decide each journey's next
    touch, unless the cart was bought or changed meanwhile."""
    if not decisions:
        return []
    conn.execute(
        sa.update(decision_t)
        .where(among(conn, decision_t.c.id, [d.id for d in decisions]))
        .values(state=DecisionState.SENT, updated_at=now)
    )
    carts = {
        c.id: c
        for c in conn.execute(
            sa.select(*_NEXT_CART_COLUMNS).where(
                among(conn, cart_t.c.id, {d.cart_id for d in decisions})
            )
        )
    }
    following = [
        _Next(carts[d.cart_id], d.journey, d.touch + 1, carts[d.cart_id].abandoned_at)
        for d in decisions
        if carts[d.cart_id].status == CartStatus.ABANDONED and carts[d.cart_id].journey == d.journey
    ]
    return schedule(conn, rt, _decide(conn, rt, following, base=now, now=now), now)


# --- sending ---------------------------------------------------------------------------------


def send_touch(rt: Runtime, decision_id: str) -> list[FollowUp]:
    """Send one touch, at most once. Safe to run any number of times for the same decision.

    Raises TransientSendError when the provider said "later" (the touch is retried with the
    same message record), PermanentSendError when it refused for good (recorded, and the
    address suppressed if it says so). See :mod:`senders.sending`.
    """
    from senders.sending import send_touches

    report = send_touches(rt, [decision_id])
    if report.transient:
        raise report.transient[0]
    if report.refused:
        raise report.refused[0]
    return report.follow_ups


# --- the sweep -------------------------------------------------------------------------------


#: How many pages of due touches one sweep takes at most (``limit`` each).
DUE_PAGES = 20


def sweep(rt: Runtime, *, limit: int = 1000) -> SweepReport:
    """Everything time-driven that the broker is not trusted with. Idempotent; any worker may
    run it at any time.

    - carts idle past the abandonment time whose check got lost → check them;
    - touches due soon that are not on the broker → enqueue them;
    - sends whose worker died before hand-off → retry; during hand-off → mark uncertain;
    - messages whose provider reports later how they ended → ask it;
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
        # Due touches are many at busy times: taken in pages, so one sweep can put any
        # number on the broker (they travel in batches; see senders.actors.enqueue).
        for _ in range(DUE_PAGES):
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
                    .where(among(conn, decision_t.c.id, [r.id for r in due]))
                    .values(enqueued_at=now)
                )
            for row in due:
                wait = (row.scheduled_for - now).total_seconds()
                report.follow_ups.append(FollowUp("send_touch", row.id, _ms(wait)))
                report.sends += 1
            if len(due) < limit:
                break

        for decision_id in conn.execute(
            sa.select(message_t.c.decision_id)
            .where(message_t.c.status == MessageStatus.PREPARED, message_t.c.lease_until <= now)
            .limit(limit)
        ).scalars():
            report.follow_ups.append(FollowUp("send_touch", decision_id))
            report.reclaimed += 1

        from senders import delivery  # it builds on this module

        for message_id in delivery.due(conn, rt, now, limit):
            report.follow_ups.append(FollowUp("check_delivery", message_id))
            report.deliveries += 1

    report.uncertain, follow_ups = _settle_uncertain(rt, now, limit)
    report.follow_ups += follow_ups
    report.closed = close_windows(rt, now=now, limit=limit)
    return report


def _settle_uncertain(rt: Runtime, now: datetime, limit: int) -> tuple[int, list[FollowUp]]:
    """A worker died during hand-off: the provider may hold the message. Never send again;
    count it as sent (at the channel's usual price) and go on with the journey."""
    costs = rt.settings.message_costs()
    with rt.engine.begin() as conn:
        rows = conn.execute(
            sa.select(message_t.c.id, message_t.c.channel, message_t.c.decision_id)
            .where(message_t.c.status == MessageStatus.HANDOFF, message_t.c.lease_until <= now)
            .limit(limit)
        ).all()
        if not rows:
            return 0, []
        conn.execute(
            sa.update(message_t)
            .where(message_t.c.id == sa.bindparam("m"), message_t.c.status == MessageStatus.HANDOFF)
            .values(status=MessageStatus.UNCERTAIN, cost=sa.bindparam("cost")),
            [{"m": r.id, "cost": costs.get(r.channel, 0.0)} for r in rows],
        )
        for row in rows:
            logger.warning("Message %s: worker lost during hand-off; not re-sent", row.id)
        decisions = conn.execute(
            sa.select(decision_t).where(among(conn, decision_t.c.id, [r.decision_id for r in rows]))
        ).all()
        return len(rows), after_sent(conn, rt, decisions, now)


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
                .where(
                    among(conn, decision_t.c.id, pending),
                    decision_t.c.state == DecisionState.SCHEDULED,
                )
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
