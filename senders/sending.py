"""Sending touches, many at a time: claim, re-check, render, hand off, record.

A batch of due touches (one Dramatiq message) goes through four steps, and every guarantee of
a single send holds for each touch in it:

1. **Claim**, in one transaction. The touches' decision rows are locked (``FOR UPDATE SKIP
   LOCKED``: another worker's claim is never waited on, what it holds is looked at again a
   moment later), and so are their customers, so no two workers claim touches of one customer
   at once. Everything is checked with set-based queries — bought? cart changed? contact and
   consent? suppressed? frequency caps (counting what this batch claims)? quiet hours? — and
   each touch that may go out gets its message row, the idempotency record: ``prepared``, a
   lease and an attempt number. A touch with a record is never claimed afresh; one whose
   lease ran out before any hand-off is taken over (attempt number + 1).
2. **Render** each message, outside any transaction.
3. **Hand off**, one message after the other over one connection per channel (SMTP, HTTP
   keep-alive). ``prepare`` (SMTP: MAIL, RCPT, and DATA up to the server's 354 where it
   pipelines: nothing counts before the data's final dot) is safe to repeat. Then a single
   conditional ``UPDATE`` moves the record from ``prepared`` to ``handoff`` only if this
   attempt still owns it and, at that moment, the cart is unbought and unchanged, the
   address is the customer's, consented and not suppressed (quiet hours are checked just
   before, in Python; caps cannot change meanwhile, since only claims add to them). Only if
   that row changed is ``deliver`` (SMTP: the message data) called. The last look comes after
   the provider has accepted the recipient, not alongside: a crash or a stall while it
   decides must leave the record ``prepared``, to be sent later, not lost in ``handoff``.
4. **Record**, in one transaction: sent; refused for good (the address suppressed when the
   provider says so); "later" (the lease released, retried with the same record); stopped
   at the last look. The journeys that went on get their next touch decided.

A crash during 1 or 2 leaves nothing, or ``prepared`` records that are taken over when their
leases end. A crash during 3 leaves the message whose DATA was under way, and those delivered
since, in ``handoff``: never sent again (at most once; the sweep settles them as
``uncertain``). The rest are ``prepared`` and go out later. No touch is lost, none goes twice.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from senders import compliance, coupon_push, coupons, render
from senders.channels import Outgoing, SendResult, open_channel
from senders.errors import PermanentSendError, TransientSendError
from senders.journey import FollowUp, Runtime, _ms, _real, after_sent
from senders.sql import among
from store import bulk
from store.events import cart_t, customer_t, decision_t, event_t, message_t
from store.models import (
    CartStatus,
    DecisionState,
    MessageStatus,
    PushSubscription,
    Store,
    new_id,
)
from store.sql import json_text
from store.suppressions import normalise, suppress
from store.types import UTCDateTime

logger = logging.getLogger(__name__)
store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]
push_t: sa.Table = PushSubscription.__table__  # type: ignore[attr-defined]

#: A touch due within this many seconds goes now (a duplicate message or clock skew may bring
#: it a moment early); one due later is put back on the broker for its time.
EARLY_SECONDS = 1.0
#: During a batch, the provider's ids of the messages sent are written at least this often
#: (the rest of the record waits for the batch's end).
NAME_SECONDS = 0.25
#: How the logs name the channels.
_CHANNEL_NAMES = {"email": "Email", "sms": "SMS", "push": "Push", "kakao": "KakaoTalk"}
#: A touch whose decision row another worker holds right now is looked at again this much later.
LOCKED_RETRY_MS = 1000

# The columns the send path reads: not the decision's context, nor the timestamps it never
# looks at (each JSON document and timestamp read costs CPU per row, for every send).
_DECISION_COLUMNS = [
    decision_t.c[name]
    for name in (
        "id",
        "store_id",
        "cart_id",
        "journey",
        "touch",
        "channel",
        "discount_pct",
        "scheduled_for",
        "state",
    )
]
_CART_COLUMNS = [
    cart_t.c[name]
    for name in (
        "id",
        "store_id",
        "external_id",
        "customer_id",
        "currency",
        "value",
        "items",
        "status",
        "journey",
    )
]
_CUSTOMER_COLUMNS = [c for c in customer_t.c if c.name not in ("created_at", "updated_at")]


@dataclass
class SendReport:
    """What a batch did. ``follow_ups`` go on the broker; ``transient`` errors ask for a retry
    of the touches they concern (their records wait, leases released)."""

    follow_ups: list[FollowUp] = field(default_factory=list)
    sent: int = 0
    stopped: int = 0  # not sent, and rightly: bought, opted out, capped, quiet hours…
    uncertain: int = 0  # the connection was lost during the hand-off: never re-sent
    transient: list[TransientSendError] = field(default_factory=list)
    refused: list[PermanentSendError] = field(default_factory=list)  # for good: recorded

    @property
    def failed(self) -> int:
        return len(self.refused)

    @property
    def retry_after(self) -> float | None:
        """The longest wait a provider asked for (seconds), if any did."""
        hints = [e.retry_after for e in self.transient if e.retry_after is not None]
        return max(hints) if hints else None


@dataclass(frozen=True)
class _Send:
    """One claimed touch: everything its hand-off needs, read in the claiming transaction."""

    decision: Any
    cart: Any
    customer: Any
    store: Any
    rules: compliance.Rules
    message_id: str
    attempt: int  # the record's attempt number when claimed: who owns the send
    address: str  # what the record keeps: email, phone, or "push:<subscription id>"
    payload: str  # what the channel gets: the address, or the subscription's JSON
    contact: str  # what the last look compares: the address, or the push endpoint
    coupon: str | None


@dataclass
class _Facts:
    """What the checks need about a set of touches, read with one query per table."""

    carts: dict[int, Any]
    customers: dict[int, Any]
    stores: dict[str, Any]
    rules: dict[str, compliance.Rules]
    subscriptions: dict[int, Any]  # customer id -> newest push subscription
    suppressed: set[tuple[str, str, str]]
    recent: dict[int, list[tuple[str, str, datetime]]]  # what counts against the caps

    def customer_of(self, decision: Any) -> Any:
        cart = self.carts[decision.cart_id]
        return self.customers.get(cart.customer_id) if cart.customer_id is not None else None


def send_touches(rt: Runtime, decision_ids: Sequence[str]) -> SendReport:
    """Send these touches, each at most once. Safe to run any number of times, in any number
    of workers at once, for the same touches."""
    report = SendReport()
    ids = list(dict.fromkeys(decision_ids))
    if not ids:
        return report
    with rt.engine.begin() as conn:
        sends = _claim(conn, rt, ids, rt.clock(), report)
    if sends:
        _hand_off(rt, sends, report)
    if len(ids) > 1 or report.failed or report.transient or report.uncertain:
        logger.info(
            "Touches: %d sent, %d stopped, %d refused, %d to retry, %d uncertain (of %d)",
            report.sent,
            report.stopped,
            report.failed,
            len(report.transient),
            report.uncertain,
            len(ids),
        )
    return report


# --- 1. claim --------------------------------------------------------------------------------


def _claim(
    conn: sa.Connection, rt: Runtime, ids: list[str], now: datetime, report: SendReport
) -> list[_Send]:
    s = rt.settings
    pg = conn.dialect.name == "postgresql"
    query = (
        sa.select(*_DECISION_COLUMNS)
        .where(among(conn, decision_t.c.id, ids))
        .order_by(decision_t.c.id)
    )
    if pg:
        query = query.with_for_update(skip_locked=True)
    rows = conn.execute(query).all()
    if len(rows) < len(ids):
        _look_again(conn, [i for i in ids if i not in {r.id for r in rows}], report)

    fresh, resumed = [], []
    for d in rows:
        if d.state == DecisionState.SCHEDULED:
            wait = (d.scheduled_for - now).total_seconds()
            if wait > EARLY_SECONDS:  # early: come back at the right time
                if wait <= s.broker_delay_horizon_seconds:
                    report.follow_ups.append(FollowUp("send_touch", d.id, _ms(wait)))
                continue
            fresh.append(d)
        elif d.state == DecisionState.SENDING:
            resumed.append(d)  # a retry, or a crashed worker's send
    if resumed:
        # Taken over only if its lease ran out before anything was handed to the provider.
        expired = {
            r.decision_id
            for r in conn.execute(
                sa.select(message_t.c.decision_id).where(
                    among(conn, message_t.c.decision_id, [d.id for d in resumed]),
                    message_t.c.status == MessageStatus.PREPARED,
                    message_t.c.lease_until <= now,
                )
            )
        }
        resumed = [d for d in resumed if d.id in expired]
    todo = fresh + resumed
    if not todo:
        return []

    facts, busy = _load(conn, rt, todo, now, lock=pg)
    # A moment later: touches of customers another worker is claiming for right now, and of
    # carts or customers with events accepted but not applied yet (an order, a withdrawn
    # consent: the applier is about to say so).
    later = {d.id for d in todo if facts.carts[d.cart_id].customer_id in busy}
    later |= _awaiting_events(conn, todo, facts)
    if later:
        report.follow_ups += [FollowUp("send_touch", i, LOCKED_RETRY_MS) for i in sorted(later)]
        fresh = [d for d in fresh if d.id not in later]
        resumed = [d for d in resumed if d.id not in later]

    lease = now + timedelta(seconds=s.send_lease_seconds)
    owned: dict[str, tuple[str, int, str]] = {}  # decision -> (message id, attempt, recipient)
    if resumed:
        for r in conn.execute(
            sa.update(message_t)
            .where(
                among(conn, message_t.c.decision_id, [d.id for d in resumed]),
                message_t.c.status == MessageStatus.PREPARED,
                message_t.c.lease_until <= now,
            )
            .values(attempts=message_t.c.attempts + 1, lease_until=lease)
            .returning(
                message_t.c.decision_id,
                message_t.c.id,
                message_t.c.attempts,
                message_t.c.recipient,
            )
        ):
            owned[r.decision_id] = (r.id, r.attempts, r.recipient)
        resumed = [d for d in resumed if d.id in owned]
    for d in fresh:
        owned[d.id] = (new_id(), 1, "")

    day = _real(rt, 86400.0)
    accepted: list[tuple[Any, str]] = []  # (decision, address)
    postponed: list[tuple[Any, datetime]] = []
    stopped: list[tuple[Any, str]] = []
    for d in sorted(fresh + resumed, key=lambda d: (d.scheduled_for, d.id)):
        message_id = owned[d.id][0]
        obstacle = _obstacle(d, facts, message_id, now, day)
        if isinstance(obstacle, datetime):
            postponed.append((d, obstacle))
        elif obstacle is not None:
            stopped.append((d, obstacle))
        else:
            customer = facts.customer_of(d)
            address = _recipient(d.channel, customer, facts.subscriptions.get(customer.id))[0]
            accepted.append((d, address))
            # What this batch claims counts against the caps of its next touches.
            facts.recent[customer.id].append((message_id, d.channel, now))

    claimed = {d.id for d in resumed}
    _postpone(
        conn,
        rt,
        [(d, owned[d.id][0] if d.id in claimed else None, t) for d, t in postponed],
        now,
        report,
    )
    _stop(
        conn,
        [(d, owned[d.id][0] if d.id in claimed else None, why) for d, why in stopped],
        now,
        report,
    )

    new = [(d, address) for d, address in accepted if d.id not in claimed]
    if new:
        conn.execute(
            sa.update(decision_t)
            .where(among(conn, decision_t.c.id, [d.id for d, _ in new]))
            .values(state=DecisionState.SENDING, updated_at=now)
        )
        # The idempotency records: from here on these touches are never started afresh.
        bulk.insert_rows(
            conn,
            message_t,
            [
                {
                    "id": owned[d.id][0],
                    "decision_id": d.id,
                    "store_id": d.store_id,
                    "channel": d.channel,
                    "recipient": address,
                    "status": MessageStatus.PREPARED,
                    "cost": 0.0,
                    "attempts": 1,
                    "created_at": now,
                    "lease_until": lease,
                }
                for d, address in new
            ],
        )
    moved = [(d, a) for d, a in accepted if d.id in claimed and owned[d.id][2] != a]
    if moved:  # the customer's address changed since the first attempt: the record follows
        conn.execute(
            sa.update(message_t)
            .where(message_t.c.id == sa.bindparam("m"))
            .values(recipient=sa.bindparam("address")),
            [{"m": owned[d.id][0], "address": a} for d, a in moved],
        )
    codes = coupons.mint_many(conn, s, [d for d, _ in accepted if d.discount_pct > 0], now)

    sends = []
    for d, _ in accepted:
        customer = facts.customer_of(d)
        address, payload, contact = _recipient(
            d.channel, customer, facts.subscriptions.get(customer.id)
        )
        message_id, attempt, _ = owned[d.id]
        sends.append(
            _Send(
                decision=d,
                cart=facts.carts[d.cart_id],
                customer=customer,
                store=facts.stores[d.store_id],
                rules=facts.rules[d.store_id],
                message_id=message_id,
                attempt=attempt,
                address=address,
                payload=payload,
                contact=contact,
                coupon=codes.get(d.id),
            )
        )
    return sends


def _awaiting_events(conn: sa.Connection, decisions: Sequence[Any], facts: _Facts) -> set[str]:
    """The touches whose cart or customer an accepted, not yet applied event names.

    The API answers 202 before the worker's applier turns an event into cart and customer
    rows (``senders.applier``), so an order can be accepted a moment before its cart shows
    it. The pending events are few (the applier drains them within a fraction of a second)
    and are read through their partial index; the store is matched here, not in SQL, where
    SQLite would prefer the index of every event of the store.
    """
    dialect = conn.dialect.name
    payload = event_t.c.payload
    rows = conn.execute(
        sa.select(
            event_t.c.store_id,
            json_text(payload, "cart.id", dialect),
            json_text(payload, "customer.id", dialect),
            json_text(payload, "customer.email", dialect),
            json_text(payload, "customer.phone", dialect),
        ).where(event_t.c.applied_at.is_(None))
    ).all()
    if not rows:
        return set()
    stores = {d.store_id for d in decisions}
    carts: set[tuple[str, str]] = set()
    people: set[tuple[str, str, str]] = set()  # (store, "id" | "email" | "phone", value)
    for store_id, cart, customer, email, phone in rows:
        if store_id not in stores:
            continue
        if cart:
            carts.add((store_id, cart))
        for kind, value in (("id", customer), ("email", email), ("phone", phone)):
            if value:
                people.add((store_id, kind, value))
    waiting = set()
    for d in decisions:
        cart = facts.carts[d.cart_id]
        customer = facts.customers.get(cart.customer_id)
        named = (d.store_id, cart.external_id) in carts or (
            customer is not None
            and any(
                (d.store_id, kind, value) in people
                for kind, value in (
                    ("id", customer.external_id),
                    ("email", customer.email),
                    ("phone", customer.phone),
                )
                if value
            )
        )
        if named:
            waiting.add(d.id)
    return waiting


def _look_again(conn: sa.Connection, missing: list[str], report: SendReport) -> None:
    """Decisions not read: unknown, or locked by another worker (then: a moment later)."""
    exist = set(
        conn.execute(
            sa.select(decision_t.c.id).where(among(conn, decision_t.c.id, missing))
        ).scalars()
    )
    for decision_id in missing:
        if decision_id in exist:
            report.follow_ups.append(FollowUp("send_touch", decision_id, LOCKED_RETRY_MS))
        else:
            logger.warning("Decision %s not found", decision_id)


def _load(
    conn: sa.Connection, rt: Runtime, decisions: Sequence[Any], now: datetime, *, lock: bool
) -> tuple[_Facts, set[int]]:
    """The facts for these touches, and the customers another transaction holds (when
    ``lock``: the customers are locked for this transaction, skipping those held)."""
    carts = {
        c.id: c
        for c in conn.execute(
            sa.select(*_CART_COLUMNS).where(
                among(conn, cart_t.c.id, {d.cart_id for d in decisions})
            )
        )
    }
    customer_ids = {c.customer_id for c in carts.values() if c.customer_id is not None}
    customers: dict[int, Any] = {}
    if customer_ids:
        query = sa.select(*_CUSTOMER_COLUMNS).where(among(conn, customer_t.c.id, customer_ids))
        if lock:
            query = query.order_by(customer_t.c.id).with_for_update(skip_locked=True)
        customers = {c.id: c for c in conn.execute(query)}
    busy = customer_ids - set(customers)
    stores = {
        r.id: r
        for r in conn.execute(
            sa.select(
                store_t.c.id,
                store_t.c.name,
                store_t.c.country,
                store_t.c.rules,
                store_t.c.coupon_platform,
                store_t.c.coupon_api_url,
                store_t.c.coupon_api_token,
            ).where(among(conn, store_t.c.id, {d.store_id for d in decisions}))
        )
    }
    pushing = {
        carts[d.cart_id].customer_id
        for d in decisions
        if d.channel == "push" and carts[d.cart_id].customer_id in customers
    }
    subscriptions = compliance.push_subscriptions(conn, pushing)
    candidates = []
    for d in decisions:
        customer = customers.get(carts[d.cart_id].customer_id)
        if customer is not None:
            contact = _contact(d.channel, customer, subscriptions.get(customer.id))
            if contact:
                candidates.append((d.store_id, d.channel, contact))
    facts = _Facts(
        carts=carts,
        customers=customers,
        stores=stores,
        rules={r.id: compliance.Rules.for_store(r.country, r.rules) for r in stores.values()},
        subscriptions=subscriptions,
        suppressed=compliance.suppressed_among(conn, candidates),
        recent=compliance.recent_messages(conn, customers, since=now - 7 * _real(rt, 86400.0)),
    )
    return facts, busy


def _contact(channel: str, customer: Any, subscription: Any) -> str | None:
    """Where ``channel`` would reach the customer, consented or not."""
    if channel == "email":
        return customer.email  # type: ignore[no-any-return]
    if channel in ("sms", "kakao"):
        return customer.phone  # type: ignore[no-any-return]
    if channel == "push" and subscription is not None:
        return subscription.endpoint  # type: ignore[no-any-return]
    return None


def _recipient(channel: str, customer: Any, subscription: Any) -> tuple[str, str, str]:
    """(what the record keeps, what the channel gets, what the last look compares)."""
    if channel == "push":
        info = {
            "endpoint": subscription.endpoint,
            "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
        }
        return f"push:{subscription.id}", orjson.dumps(info).decode(), subscription.endpoint
    contact = _contact(channel, customer, subscription)
    assert contact is not None
    return contact, contact, contact


def _obstacle(
    d: Any, facts: _Facts, message_id: str, now: datetime, day: timedelta
) -> str | datetime | None:
    """Why this touch must not go out now (a reason), when it may (a time), or None."""
    cart = facts.carts[d.cart_id]
    if cart.status == CartStatus.CONVERTED:
        return "ordered"
    if cart.status != CartStatus.ABANDONED or cart.journey != d.journey:
        return "cart_changed"
    customer = facts.customer_of(d)
    if customer is None:
        return "no_contact"
    contact = _contact(d.channel, customer, facts.subscriptions.get(customer.id))
    if not contact:
        return "no_contact"
    if compliance.contact_for(d.channel, customer, contact) is None:
        return "no_consent"
    if (d.store_id, d.channel, normalise(d.channel, contact)) in facts.suppressed:
        return "suppressed"
    rules = facts.rules[d.store_id]
    counted = [(c, at) for m, c, at in facts.recent[customer.id] if m != message_id]
    cap = compliance.cap_hit(counted, d.channel, now=now, rules=rules, day=day)
    if cap is not None:
        return cap
    allowed = compliance.next_allowed(
        now, timezone=customer.timezone, rules=rules, night_consent=bool(customer.consent_night)
    )
    return allowed if allowed > now else None


def _postpone(
    conn: sa.Connection,
    rt: Runtime,
    items: Sequence[tuple[Any, str | None, datetime]],
    now: datetime,
    report: SendReport,
) -> None:
    """Quiet hours: the same touches, at the first allowed minute. A record of a send never
    handed over is dropped, so the touch is claimed afresh then."""
    if not items:
        return
    records = [m for _, m, _ in items if m is not None]
    if records:
        conn.execute(sa.delete(message_t).where(among(conn, message_t.c.id, records)))
    horizon = rt.settings.broker_delay_horizon_seconds
    rows = []
    for d, _, until in items:
        wait = (until - now).total_seconds()
        queued = wait <= horizon
        if queued:
            report.follow_ups.append(FollowUp("send_touch", d.id, _ms(wait)))
        rows.append({"d": d.id, "until": until, "queued": now if queued else None})
        logger.info("Touch %s postponed out of quiet hours", d.id)
    conn.execute(
        sa.update(decision_t)
        .where(decision_t.c.id == sa.bindparam("d"))
        .values(
            state=DecisionState.SCHEDULED,
            scheduled_for=sa.bindparam("until"),
            enqueued_at=sa.bindparam("queued"),
            updated_at=now,
        ),
        rows,
    )
    report.stopped += len(items)


def _stop(
    conn: sa.Connection,
    items: Sequence[tuple[Any, str | None, str]],
    now: datetime,
    report: SendReport,
) -> None:
    """These touches end with a reason; their records (nothing was handed over) are void."""
    if not items:
        return
    records = [m for _, m, _ in items if m is not None]
    if records:
        conn.execute(
            sa.update(message_t)
            .where(among(conn, message_t.c.id, records))
            .values(status=MessageStatus.VOID)
        )
    conn.execute(
        sa.update(decision_t)
        .where(decision_t.c.id == sa.bindparam("d"))
        .values(state=sa.bindparam("state"), state_reason=sa.bindparam("reason"), updated_at=now),
        [
            {
                "d": d.id,
                "state": DecisionState.VOID
                if why in ("ordered", "cart_changed")
                else DecisionState.SKIPPED,
                "reason": why,
            }
            for d, _, why in items
        ],
    )
    for d, _, why in items:
        logger.info("Touch %s not sent: %s", d.id, why)
    report.stopped += len(items)


# --- 2 and 3. render, hand off ---------------------------------------------------------------


@dataclass
class _Outcome:
    """What the hand-offs did since the last record."""

    sent: list[tuple[_Send, SendResult]] = field(default_factory=list)
    failed: list[tuple[_Send, PermanentSendError]] = field(default_factory=list)
    released: list[tuple[_Send, TransientSendError]] = field(default_factory=list)
    late: list[_Send] = field(default_factory=list)  # the last look said no
    named: int = 0  # how many of ``sent`` have their provider id written already
    since: float = field(default_factory=time.monotonic)

    def naming_due(self) -> bool:
        """A provider's status callback names the message by the provider's id: a batch
        writes the ids of what it sent at least every NAME_SECONDS, not only at its end."""
        return len(self.sent) > self.named and time.monotonic() - self.since >= NAME_SECONDS


def _hand_off(rt: Runtime, sends: Sequence[_Send], report: SendReport) -> None:
    outcome = _Outcome()
    by_channel: dict[str, list[_Send]] = defaultdict(list)
    try:
        for send in _with_live_coupons(rt, sends, outcome, report):
            by_channel[send.decision.channel].append(send)
        with _LastLook(rt) as last_look:
            for name, group in by_channel.items():
                _hand_off_channel(rt, name, group, last_look, outcome, report)
    finally:
        # Whatever happened, what is known is recorded; what is not stays in its record's
        # state (prepared: retried when the lease ends; handoff: never re-sent).
        _record(rt, outcome, report)


def _with_live_coupons(
    rt: Runtime, sends: Sequence[_Send], outcome: _Outcome, report: SendReport
) -> list[_Send]:
    """The sends whose coupon the store's checkout knows (or that carry none, or whose store
    has no discount API): a code must exist there before a message offers it."""
    wanted = [(s.store, s.coupon) for s in sends if s.coupon and s.store.coupon_platform]
    if not wanted:
        return list(sends)
    failures = coupon_push.publish(
        rt.engine, wanted, timeout=rt.settings.coupon_push_timeout_seconds, now=rt.clock()
    )
    ready = []
    for send in sends:
        failure = failures.get(send.coupon or "")
        if failure is None:
            ready.append(send)
        elif failure.transient:
            wait = TransientSendError(f"coupon push: {failure}", retry_after=failure.retry_after)
            report.transient.append(wait)
            outcome.released.append((send, wait))
        else:
            outcome.failed.append(
                (send, PermanentSendError(f"coupon push: {failure}", reason=failure.reason))
            )
    return ready


def _hand_off_channel(
    rt: Runtime,
    name: str,
    group: list[_Send],
    last_look: _LastLook,
    outcome: _Outcome,
    report: SendReport,
) -> None:
    with open_channel(name, rt.settings) as channel:
        for i, send in enumerate(group):
            if outcome.naming_due():
                _name(rt, outcome)
            try:
                # Quiet hours first: a message prepared and then not sent may cost the
                # connection (a pipelined SMTP envelope has begun its DATA).
                now = rt.clock()
                quiet = compliance.next_allowed(
                    now,
                    timezone=send.customer.timezone,
                    rules=send.rules,
                    night_consent=bool(send.customer.consent_night),
                )
                if quiet > now:
                    outcome.late.append(send)
                    continue
                channel.prepare(_render(rt, send))
                if not last_look(send, rt.clock()):
                    outcome.late.append(send)
                    continue
                try:
                    result = channel.deliver()
                except ConnectionError as exc:
                    # The provider may hold it: the record stays in hand-off, never re-sent.
                    logger.warning("Message %s: %s; not sent again", send.message_id, exc)
                    report.uncertain += 1
                    # A provider that hangs or drops connections would make every message
                    # after this one as uncertain: those wait for the retry instead.
                    rest = group[i + 1 :]
                    if rest:
                        wait = TransientSendError(f"{name} provider lost the connection: {exc}")
                        report.transient.append(wait)
                        outcome.released += [(later, wait) for later in rest]
                    return
                outcome.sent.append((send, result))
            except PermanentSendError as exc:
                outcome.failed.append((send, exc))
            except TransientSendError as exc:
                report.transient.append(exc)
                if exc.this_message_only:
                    outcome.released.append((send, exc))
                    continue
                # The provider is down, overloaded or rate limiting: the rest wait too.
                outcome.released += [(later, exc) for later in group[i:]]
                logger.warning(
                    "%s provider said later (%s); %d touches wait for the retry",
                    name,
                    exc,
                    len(group) - i,
                )
                return


def _render(rt: Runtime, send: _Send) -> Outgoing:
    d = send.decision
    return render.reminder(
        channel=d.channel,
        message_id=send.message_id,
        recipient=send.payload,
        store=send.store,
        cart=send.cart,
        customer=send.customer,
        coupon=send.coupon,
        discount_pct=d.discount_pct,
        settings=rt.settings,
    )


def _last_look_sql(channel: str) -> sa.TextClause:
    """``prepared`` → ``handoff``, only for the owning attempt and only if, right now, the cart
    is unbought and unchanged, and the contact is the customer's, consented, not suppressed."""
    if channel == "push":
        consent = "consent_push"
        contact = (
            "EXISTS (SELECT 1 FROM pushsubscription p"
            " WHERE p.customer_id = u.id AND p.endpoint = :contact)"
        )
    elif channel == "email":
        consent, contact = "consent_email", "u.email = :contact"
    else:  # sms, and kakao with its SMS fallback
        consent, contact = "consent_sms", "u.phone = :contact"
    return sa.text(
        f"UPDATE message SET status = '{MessageStatus.HANDOFF}', lease_until = :lease"
        f" WHERE id = :message AND status = '{MessageStatus.PREPARED}' AND attempts = :attempt"
        " AND EXISTS (SELECT 1 FROM cart c WHERE c.id = :cart"
        f" AND c.status = '{CartStatus.ABANDONED}' AND c.journey = :journey)"
        " AND NOT EXISTS (SELECT 1 FROM suppression s WHERE s.store_id = :store"
        " AND s.channel = :channel AND s.address = :suppressed_as)"
        f" AND EXISTS (SELECT 1 FROM customer u WHERE u.id = :customer AND u.{consent}"
        f" AND {contact})"
    ).bindparams(sa.bindparam("lease", type_=UTCDateTime()))


_LAST_LOOK = {channel: _last_look_sql(channel) for channel in compliance.CHANNELS}
# The same, as psycopg takes it: run on the driver's cursor, it costs half as much CPU; with
# positional parameters (psycopg need not reorder a dict's on every call).
_PG: sa.Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
_PARAM = re.compile(r"%\((\w+)\)s")


def _positional(statement: sa.TextClause) -> tuple[str, tuple[str, ...]]:
    """(SQL with ``%s`` placeholders, the parameters' names in their order)."""
    sql = str(statement.compile(dialect=_PG))
    return _PARAM.sub("%s", sql), tuple(_PARAM.findall(sql))


_LAST_LOOK_PG = {channel: _positional(statement) for channel, statement in _LAST_LOOK.items()}


class _LastLook:
    """The last look before the point of no return, and the hand-off mark: one statement,
    committed at once (so a crash right after leaves the record in hand-off)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.conn: sa.Connection | None = None
        self.cursor: Any = None  # one psycopg cursor for the batch's last looks

    def __enter__(self) -> _LastLook:
        if self.rt.engine.dialect.name == "postgresql":
            self.conn = self.rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            raw = self.conn.connection.driver_connection
            assert raw is not None
            self.cursor = raw.cursor()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self.cursor is not None:
            self.cursor.close()
        if self.conn is not None:
            self.conn.close()

    def __call__(self, send: _Send, now: datetime) -> bool:
        d = send.decision
        params = {
            "lease": now + timedelta(seconds=self.rt.settings.send_lease_seconds),
            "message": send.message_id,
            "attempt": send.attempt,
            "cart": d.cart_id,
            "journey": d.journey,
            "store": d.store_id,
            "channel": d.channel,
            "suppressed_as": normalise(d.channel, send.contact),
            "customer": send.customer.id,
            "contact": send.contact,
        }
        if self.cursor is not None:
            sql, names = _LAST_LOOK_PG[d.channel]
            self.cursor.execute(sql, [params[name] for name in names])
            return bool(self.cursor.rowcount == 1)
        with self.rt.engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE … COMMIT
            return conn.execute(_LAST_LOOK[d.channel], params).rowcount == 1


# --- 4. record -------------------------------------------------------------------------------


def _name(rt: Runtime, outcome: _Outcome) -> None:
    """Write the provider's ids of the messages sent since the last time (still in hand-off:
    a crash now changes nothing), so a status callback finds its message."""
    fresh = outcome.sent[outcome.named :]
    with rt.engine.begin() as conn:  # one statement, not one a message
        bulk.update_rows(
            conn,
            message_t,
            "id",
            [{"id": s.message_id, "provider_id": r.provider_id[:255]} for s, r in fresh],
        )
    outcome.named = len(outcome.sent)
    outcome.since = time.monotonic()


def _record(rt: Runtime, outcome: _Outcome, report: SendReport) -> None:
    if not (outcome.sent or outcome.failed or outcome.released or outcome.late):
        return
    with rt.engine.begin() as conn:
        now = rt.clock()
        if outcome.sent:
            _record_sent(conn, rt, outcome.sent, now, report)
        for send, exc in outcome.failed:
            _fail(conn, send, exc, now)
            report.refused.append(exc)
        if outcome.released:
            conn.execute(
                sa.update(message_t)
                .where(
                    message_t.c.id == sa.bindparam("m"),
                    message_t.c.attempts == sa.bindparam("a"),
                    sa.or_(
                        message_t.c.status == MessageStatus.PREPARED,
                        message_t.c.status == MessageStatus.HANDOFF,
                    ),
                )
                .values(
                    # The provider said no without keeping a copy: a retry cannot double.
                    status=MessageStatus.PREPARED,
                    lease_until=now,
                    error_kind="transient",
                    error=sa.bindparam("error"),
                ),
                [
                    {"m": s.message_id, "a": s.attempt, "error": str(exc)[:500]}
                    for s, exc in outcome.released
                ],
            )
        if outcome.late:
            _look_once_more(conn, rt, outcome.late, now, report)


def _record_sent(
    conn: sa.Connection,
    rt: Runtime,
    sent: Sequence[tuple[_Send, SendResult]],
    now: datetime,
    report: SendReport,
) -> None:
    ids = [s.message_id for s, _ in sent]
    # A batch that outlived its leases may find a message settled as uncertain by the sweep
    # (which decided the journey's next touch already): it is sent, and nothing more.
    settled = set(
        conn.execute(
            sa.select(message_t.c.id).where(
                among(conn, message_t.c.id, ids), message_t.c.status == MessageStatus.UNCERTAIN
            )
        ).scalars()
    )
    # One statement for the batch, not one a message; only records still in hand-off (or
    # settled as uncertain meanwhile) become sent.
    bulk.update_rows(
        conn,
        message_t,
        "id",
        [
            {
                "id": s.message_id,
                "status": MessageStatus.SENT,
                "provider_id": r.provider_id[:255],
                "cost": r.cost,
                "detail": r.detail,
                "sent_at": now,
                "next_check_at": None
                if r.check_after is None
                else now + timedelta(seconds=r.check_after),
            }
            for s, r in sent
        ],
        where=f"\"message\".status IN ('{MessageStatus.HANDOFF}', '{MessageStatus.UNCERTAIN}')",
    )
    for s, _ in sent:
        d = s.decision
        logger.info(
            "%s sent for cart %s touch %d (message %s)",
            _CHANNEL_NAMES.get(d.channel, d.channel),
            d.cart_id,
            d.touch,
            s.message_id,
        )
    report.sent += len(sent)
    going_on = [s.decision for s, _ in sent if s.message_id not in settled]
    report.follow_ups += after_sent(conn, rt, going_on, now)


def _fail(conn: sa.Connection, send: _Send, exc: PermanentSendError, now: datetime) -> None:
    """The provider refused for good: record it, and suppress the address if it says so."""
    d = send.decision
    conn.execute(
        sa.update(message_t)
        .where(message_t.c.id == send.message_id, message_t.c.attempts == send.attempt)
        .values(status=MessageStatus.FAILED, error=str(exc)[:500], error_kind="permanent")
    )
    conn.execute(
        sa.update(decision_t)
        .where(decision_t.c.id == d.id)
        .values(state=DecisionState.FAILED, state_reason=exc.reason[:64], updated_at=now)
    )
    logger.info("Touch %s refused by the provider: %s", d.id, exc.reason)
    if exc.suppress:
        address = send.contact
        if d.channel == "push":
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


def _look_once_more(
    conn: sa.Connection, rt: Runtime, late: Sequence[_Send], now: datetime, report: SendReport
) -> None:
    """The last look said no: why? (Bought, opted out, quiet hours…, or another attempt took
    the send over.) The touch ends, waits, or — if nothing stands in its way any more — is
    retried with its record."""
    records = {
        r.id: r
        for r in conn.execute(
            sa.select(message_t.c.id, message_t.c.status, message_t.c.attempts).where(
                among(conn, message_t.c.id, [s.message_id for s in late])
            )
        )
    }
    mine = [
        s
        for s in late
        if (r := records.get(s.message_id)) is not None
        and r.status == MessageStatus.PREPARED
        and r.attempts == s.attempt
    ]
    if not mine:
        return
    decisions = [s.decision for s in mine]
    facts, _ = _load(conn, rt, decisions, now, lock=False)
    day = _real(rt, 86400.0)
    postponed, stopped, again = [], [], []
    for s in mine:
        obstacle = _obstacle(s.decision, facts, s.message_id, now, day)
        if isinstance(obstacle, datetime):
            postponed.append((s.decision, s.message_id, obstacle))
        elif obstacle is not None:
            stopped.append((s.decision, s.message_id, obstacle))
        else:
            again.append(s)
    _postpone(conn, rt, postponed, now, report)
    _stop(conn, stopped, now, report)
    if again:  # e.g. a new address just before the hand-off: sent again from the claim
        conn.execute(
            sa.update(message_t)
            .where(among(conn, message_t.c.id, [s.message_id for s in again]))
            .values(lease_until=now)
        )
        report.follow_ups += [FollowUp("send_touch", s.decision.id) for s in again]
