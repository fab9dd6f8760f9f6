"""Storefront events: accepted once, then applied to carts and customers, orders attributed.

Two steps, as in Segment's or RudderStack's pipelines. :class:`EventLog` is what the API
does before it answers 202: one insert of the validated events, idempotent on
``(store, event_id)`` (a repeat is answered ``duplicate``). :func:`apply_pending`, run by the
worker's applier (``senders.applier``), then applies them in the order they were accepted
and stamps them applied; anything a crash left unapplied is simply still pending.
:func:`apply_events` does both at once for callers that need the effects now.

Applying happens in the caller's transaction, whole or not at all. An event older than what a
cart already reflects is kept but changes nothing (deliveries arrive out of order).

Built for throughput: a call handles many events with a fixed number of statements — one
insert of the events, one upsert of their customers, one read of their carts, one write of
the carts — each prepared once and executed with many parameter sets. The per-event state
machine runs in Python on the carts read.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from store import bulk, suppressions
from store.db import BUSY_TIMEOUT_MS, WriteLocked, insert
from store.models import (
    Cart,
    CartStatus,
    Coupon,
    Customer,
    Decision,
    DecisionState,
    Event,
    Message,
    MessageStatus,
    Outcome,
)
from store.schemas import EventIn

logger = logging.getLogger(__name__)

cart_t: sa.Table = Cart.__table__  # type: ignore[attr-defined]
customer_t: sa.Table = Customer.__table__  # type: ignore[attr-defined]
event_t: sa.Table = Event.__table__  # type: ignore[attr-defined]
decision_t: sa.Table = Decision.__table__  # type: ignore[attr-defined]
message_t: sa.Table = Message.__table__  # type: ignore[attr-defined]
outcome_t: sa.Table = Outcome.__table__  # type: ignore[attr-defined]
coupon_t: sa.Table = Coupon.__table__  # type: ignore[attr-defined]

_STAGES = {"cart": 0, "checkout": 1, "payment": 2}
_CONTACT = ("email", "phone", "locale", "timezone")
_CONSENTS = ("email", "sms", "push", "night")
# Columns an event may change on an existing cart (written back in one statement shape).
_CART_MUTABLE = (
    "customer_id",
    "currency",
    "value",
    "items",
    "restore_url",
    "status",
    "checkout_stage",
    "device",
    "last_event_at",
    "last_activity_at",
    "version",
    "check_pending",
    "converted_at",
    "order_id",
    "order_value",
)


@dataclass
class Applied:
    """What a call did, for the caller to act on after commit."""

    duplicates: list[bool] = field(default_factory=list)
    # Carts that need an abandonment check scheduled: cart id → last activity.
    checks: dict[int, datetime] = field(default_factory=dict)
    conversions: int = 0
    outcomes: list[str] = field(default_factory=list)  # decision ids given a converted outcome


@dataclass
class Drained:
    """What one :func:`apply_pending` call did."""

    events: int = 0  # pending events read (and now stamped applied)
    invalid: int = 0  # of which no longer valid: kept, but not applied
    applied: list[Applied] = field(default_factory=list)  # one per store


@dataclass
class _Cart:
    row: dict[str, Any]
    new: bool = False
    dirty: bool = False
    was_abandoned_void: bool = False
    needs_check: bool = False


_CUSTOMER_CONFLICT = (
    "ON CONFLICT (store_id, external_id) DO UPDATE SET "
    # An absent field (NULL) keeps what is stored: events carry what they know, not everything.
    + ", ".join(
        f"{col} = coalesce(excluded.{col}, customer.{col})"
        for col in (*_CONTACT, *(f"consent_{c}" for c in _CONSENTS))
    )
    + ", updated_at = excluded.updated_at"
)


_EVENT_CONFLICT = "ON CONFLICT (store_id, event_id) DO NOTHING"

#: A run of events of one store: (store id, events in order).
Run = tuple[str, Sequence[EventIn]]


def _append(
    raw: Any, dialect: str, runs: Sequence[Run], now: datetime, *, applied: bool
) -> list[list[bool]]:
    """Insert each run's events once, on a driver connection in a transaction; each run's
    duplicate flags. A repeat of an event id of the same store within the call is a
    duplicate too (the first one is stored)."""
    first: dict[tuple[str, str], int] = {}
    keys: list[tuple[str, str]] = []
    stores: list[str] = []
    events: list[EventIn] = []
    for store_id, run in runs:
        for e in run:
            key = (store_id, e.event_id)
            if key not in first:
                first[key] = len(keys)
                stores.append(store_id)
                events.append(e)
            keys.append(key)
    if dialect == "postgresql":
        inserted = _insert_pg(raw, stores, events, now, applied=applied)
    else:
        rows = [
            {
                "store_id": store_id,
                "event_id": e.event_id,
                "type": e.type,
                "occurred_at": e.occurred_at,
                "received_at": now,
                # The validated event as JSON, serialised by pydantic-core at once.
                "payload": orjson.Fragment(e.model_dump_json(exclude_none=True)),
                "applied_at": now if applied else None,
            }
            for store_id, e in zip(stores, events, strict=True)
        ]
        flags = bulk.insert_each_sqlite(raw, event_t, rows, conflict=_EVENT_CONFLICT)
        inserted = {(s, e.event_id) for s, e, ok in zip(stores, events, flags, strict=True) if ok}
    duplicates = [not (k in inserted and first[k] == i) for i, k in enumerate(keys)]
    out: list[list[bool]] = []
    start = 0
    for _, run in runs:
        out.append(duplicates[start : start + len(run)])
        start += len(run)
    return out


#: The events travel as one JSON array, serialised by pydantic-core in one call, and
#: PostgreSQL takes it apart; each event's store is found by its position (``width_bucket``
#: over the positions where each store's run starts). Per event, Python does nothing but
#: the duplicate bookkeeping: building rows and arrays per event cost more than validating
#: it. The columns read from the JSON are those of the validated event (``occurred_at``
#: always carries its offset).
_INSERT_PG = (
    "INSERT INTO event (store_id, event_id, type, occurred_at, received_at, applied_at, payload) "
    "SELECT (%(stores)s::text[])[width_bucket(u.n, %(starts)s::int8[])], u.p->>'event_id', "
    "u.p->>'type', (u.p->>'occurred_at')::timestamptz, "
    "%(now)s::timestamptz, %(applied_at)s::timestamptz, u.p "
    "FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS u(p, n) "
    f"{_EVENT_CONFLICT} RETURNING store_id, event_id"
)
_EVENTS_JSON: TypeAdapter[list[EventIn]] = TypeAdapter(list[EventIn])


def _insert_pg(
    raw: Any, stores: list[str], events: list[EventIn], now: datetime, *, applied: bool
) -> set[tuple[str, str]]:
    """Insert the events (of ``stores``, one each, in runs) in one statement; (store, event
    id) of those inserted."""
    if not events:
        return set()
    runs: list[str] = []
    starts: list[int] = []
    for n, store_id in enumerate(stores, start=1):
        if not runs or runs[-1] != store_id:
            runs.append(store_id)
            starts.append(n)
    params = {
        "stores": runs,
        "starts": starts,
        "now": now,
        "applied_at": now if applied else None,
        "events": _EVENTS_JSON.dump_json(events, exclude_none=True).decode(),
    }
    with raw.cursor() as cursor:
        cursor.execute(_INSERT_PG, params)
        return {(store_id, event_id) for store_id, event_id in cursor}


def _record(
    conn: sa.Connection,
    store_id: str,
    events: Sequence[EventIn],
    now: datetime,
    *,
    applied: bool,
) -> list[bool]:
    """Store each event once (in the caller's transaction); whether each was a duplicate."""
    raw = conn.connection.driver_connection
    return _append(raw, conn.dialect.name, [(store_id, events)], now, applied=applied)[0]


# --- the calls ---------------------------------------------------------------------------------


class EventLog:
    """Accepting events: storing them once each, to be applied later by :func:`apply_pending`.

    This is all the API does before it answers. It writes many requests' events at once, in
    a transaction of its own on the driver connection: it runs once per group of requests,
    where SQLAlchemy's connection and transaction machinery cost more than the insert."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._pooled: Any = None  # the pool's connection, kept from one group to the next
        self._timeout = BUSY_TIMEOUT_MS  # its SQLite busy timeout (ms)

    def append(self, runs: Sequence[Run], now: datetime, *, wait: bool = True) -> list[list[bool]]:
        """Store the runs' events, to be applied later; each run's duplicate flags.

        ``wait=False``: on SQLite, raise :class:`store.db.WriteLocked` at once if another
        connection holds the write lock, instead of waiting for it.

        The connection is kept for the next call (no pool checkout, no liveness ping per
        group) until :meth:`release`; one that fails is discarded.
        """
        if self._pooled is None:
            self._pooled = self.engine.raw_connection()
            self._timeout = BUSY_TIMEOUT_MS
            if self.dialect == "postgresql":
                # The whole group is one INSERT, atomic on its own: in autocommit it is one
                # round trip, where BEGIN, INSERT and COMMIT would be three.
                self._pooled.driver_connection.autocommit = True
        raw: Any = self._pooled.driver_connection
        try:
            if self.dialect == "sqlite":
                return self._sqlite(raw, runs, now, wait)
            return _append(raw, self.dialect, runs, now, applied=False)
        except WriteLocked:
            raise
        except BaseException:
            pooled, self._pooled = self._pooled, None
            pooled.invalidate()
            raise

    def release(self) -> None:
        """Give the connection back to the pool (when there is nothing more to write)."""
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            # As the pool lends them.
            if self.dialect == "postgresql":
                pooled.driver_connection.autocommit = False
            elif self._timeout != BUSY_TIMEOUT_MS:
                pooled.driver_connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            pooled.close()

    def _sqlite(self, raw: Any, runs: Sequence[Run], now: datetime, wait: bool) -> list[list[bool]]:
        # The busy timeout is per connection: 0 while this one is held for writes that must
        # not wait; the usual one whenever it waits, and when it goes back to the pool.
        timeout = BUSY_TIMEOUT_MS if wait else 0
        if self._timeout != timeout:
            raw.execute(f"PRAGMA busy_timeout={timeout}")
            self._timeout = timeout
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if wait or "locked" not in str(exc):
                raise
            raise WriteLocked(str(exc)) from None
        try:
            duplicates = _append(raw, self.dialect, runs, now, applied=False)
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
        return duplicates


def apply_events(
    conn: sa.Connection, *, store_id: str, events: Sequence[EventIn], now: datetime
) -> Applied:
    """Store and apply ``events`` (in order) for one store at once, in the caller's
    transaction: for callers that need the effects now (seeding, tests, benchmarks)."""
    duplicates = _record(conn, store_id, events, now, applied=True)
    fresh = [e for e, dup in zip(events, duplicates, strict=True) if not dup]
    applied = _apply(conn, store_id, fresh, now)
    applied.duplicates = duplicates
    return applied


#: Only one applier at a time, cluster-wide, so events apply in the order they were accepted.
_APPLY_LOCK = 0x6E75_6467  # "nudg"


def apply_pending(conn: sa.Connection, *, now: datetime, limit: int = 2000) -> Drained | None:
    """Apply the oldest accepted events not applied yet (up to ``limit``), in the order they
    were accepted, in the caller's transaction, and stamp them applied.

    Returns ``None`` when another transaction is applying right now (PostgreSQL; on SQLite the
    write lock taken at BEGIN already makes appliers take turns).
    """
    if (
        conn.dialect.name == "postgresql"
        and not conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_APPLY_LOCK))).scalar()
    ):
        return None
    # The oldest pending ids first, then their payloads: asked for in one go, PostgreSQL's
    # planner (its statistics lagging a fast-growing backlog) rendered every pending payload
    # as text before sorting — 350 ms a batch at 80,000 pending instead of 35.
    oldest = (
        sa.select(event_t.c.id)
        .where(event_t.c.applied_at.is_(None))
        .order_by(event_t.c.id)
        .limit(limit)
        .subquery()
    )
    rows = conn.execute(
        sa.select(event_t.c.id, event_t.c.store_id, sa.cast(event_t.c.payload, sa.Text))
        .join(oldest, oldest.c.id == event_t.c.id)
        .order_by(event_t.c.id)
    ).all()
    drained = Drained(events=len(rows))
    if not rows:
        return drained
    # Stores share nothing, so each store's events apply together, in their own order.
    by_store: dict[str, list[EventIn]] = {}
    for row_id, store_id, payload in rows:
        try:
            event = EventIn.model_validate_json(payload)
        except ValidationError as exc:
            # Valid when accepted, so only a schema change between versions gets here. Kept
            # (it is stored) but not applied, rather than blocking everything behind it.
            logger.warning(
                "Accepted event %d no longer validates (%s); not applied",
                row_id,
                ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()),
            )
            drained.invalid += 1
            continue
        by_store.setdefault(store_id, []).append(event)
    for store_id, events in by_store.items():
        drained.applied.append(_apply(conn, store_id, events, now))
    bulk.update_rows(conn, event_t, "id", [{"id": r[0], "applied_at": now} for r in rows])
    return drained


def _apply(conn: sa.Connection, store_id: str, fresh: Sequence[EventIn], now: datetime) -> Applied:
    """Apply new events of one store, in order."""
    dialect = conn.dialect.name
    applied = Applied()
    if not fresh:
        return applied

    # 1. Customers: one upsert for all, fields merged in event order.
    customer_ids = _upsert_customers(conn, dialect, store_id, fresh, now)
    for e in fresh:
        if e.type == "contact.captured" and e.customer is not None:
            _renewed_consent(conn, store_id, e, customer_ids[e.customer.key])

    # 2. Carts: read once, apply every event in memory, write back once.
    carts = _load_carts(conn, dialect, store_id, fresh, customer_ids)
    conversions: list[tuple[_Cart, EventIn, datetime]] = []
    for e in fresh:
        # A clock running ahead at the shop must not push abandonment into the future.
        at = min(e.occurred_at, now)
        customer_id = customer_ids.get(e.customer.key) if e.customer else None
        if e.type == "order.completed":
            for cart in _order_targets(carts, store_id, e, customer_id, at, now):
                conversions.append((cart, e, at))
        elif e.cart is not None:
            _cart_activity(carts, store_id, e, customer_id, at, now)
    _write_carts(conn, store_id, list(carts.values()))

    # 3. What follows from the new states.
    voided = [c.row["id"] for c in carts.values() if c.was_abandoned_void]
    if voided:
        _void_pending(conn, voided, reason="cart_activity", now=now)
    for cart, e, at in conversions:
        assert e.order is not None
        applied.conversions += 1
        if cart.row["journey"] > 0:  # only an abandoned cart has decisions to settle
            _void_pending(conn, [cart.row["id"]], reason="ordered", now=now)
            applied.outcomes += record_conversion(
                conn,
                cart_id=cart.row["id"],
                order_id=e.order.id,
                order_value=e.order.value,
                coupon_code=e.order.coupon_code,
                at=at,
                now=now,
            )
    for cart in carts.values():
        if cart.needs_check:
            applied.checks[cart.row["id"]] = cart.row["last_activity_at"]
    return applied


def _upsert_customers(
    conn: sa.Connection, dialect: str, store_id: str, events: Sequence[EventIn], now: datetime
) -> dict[str, int]:
    merged: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.customer is None:
            continue
        c = e.customer
        row = merged.setdefault(
            c.key,
            {
                "store_id": store_id,
                "external_id": c.key,
                "created_at": now,
                "updated_at": now,
                **dict.fromkeys(_CONTACT),
                **{f"consent_{k}": None for k in _CONSENTS},
            },
        )
        for k in _CONTACT:
            if getattr(c, k) is not None:
                row[k] = getattr(c, k)
        if c.consents is not None:
            for k in _CONSENTS:
                if getattr(c.consents, k) is not None:
                    row[f"consent_{k}"] = getattr(c.consents, k)
    if not merged:
        return {}
    rows = list(merged.values())
    keys = [r["external_id"] for r in rows]
    returned = bulk.insert_rows(
        conn, customer_t, rows, conflict=_CUSTOMER_CONFLICT, returning=("id", "external_id")
    )
    if dialect != "postgresql":
        returned = list(
            conn.execute(
                sa.select(customer_t.c.id, customer_t.c.external_id).where(
                    customer_t.c.store_id == store_id, customer_t.c.external_id.in_(keys)
                )
            )
        )
    return {external_id: int(pk) for pk, external_id in returned}


def _renewed_consent(conn: sa.Connection, store_id: str, e: EventIn, customer_id: int) -> None:
    """An explicit new consent (a contact.captured event granting a channel) lifts an older
    suppression of that address. Consent flags riding along on cart events never do: a
    storefront repeating stale flags must not undo an unsubscribe."""
    assert e.customer is not None
    if e.customer.consents is None:
        return
    granted = [c for c in ("email", "sms") if getattr(e.customer.consents, c) is True]
    if not granted:
        return
    row = conn.execute(
        sa.select(customer_t.c.email, customer_t.c.phone).where(customer_t.c.id == customer_id)
    ).one()
    for channel in granted:
        address = row.email if channel == "email" else row.phone
        if address is None:
            continue
        for suppressed_channel in ("sms", "kakao") if channel == "sms" else ("email",):
            suppressions.lift(
                conn,
                store_id=store_id,
                channel=suppressed_channel,
                address=address,
                consented_at=e.occurred_at,
            )


def _load_carts(
    conn: sa.Connection,
    dialect: str,
    store_id: str,
    events: Sequence[EventIn],
    customer_ids: dict[str, int],
) -> dict[str, _Cart]:
    external = {e.cart.id for e in events if e.cart is not None}
    by_customer = {
        customer_ids[e.customer.key]
        for e in events
        if e.type == "order.completed" and e.cart is None and e.customer is not None
    }
    if dialect == "postgresql":
        return _load_carts_pg(conn, store_id, sorted(external), sorted(by_customer))
    clauses: list[sa.ColumnElement[bool]] = []
    if external:
        clauses.append(cart_t.c.external_id.in_(sorted(external)))
    if by_customer:
        clauses.append(
            sa.and_(
                cart_t.c.customer_id.in_(sorted(by_customer)),
                cart_t.c.status.in_([CartStatus.ACTIVE, CartStatus.ABANDONED]),
            )
        )
    if not clauses:
        return {}
    query = sa.select(cart_t).where(cart_t.c.store_id == store_id, sa.or_(*clauses))
    # All rows at once: iterating the result fetches them one by one.
    return {r.external_id: _Cart(dict(r._mapping)) for r in conn.execute(query).all()}


def _load_carts_pg(
    conn: sa.Connection, store_id: str, external: list[str], by_customer: list[int]
) -> dict[str, _Cart]:
    """:func:`_load_carts` on PostgreSQL, locking the rows read.

    The external ids are joined as an ``unnest``-ed array, so each is one probe of the
    ``(store_id, external_id)`` index. Asked as ``store_id = … AND external_id = ANY(…)``,
    the planner, whose statistics lag a burst of new carts, read every cart of the store by
    the store index and compared each with the whole array: with the dead versions a drain's
    updates leave behind, 270 ms per 2,000 events, two thirds of the applier's time.
    """
    carts: dict[str, _Cart] = {}
    if external:
        keys = (
            sa.func.unnest(sa.bindparam(None, external, type_=postgresql.ARRAY(sa.String)))
            .table_valued("external_id")
            .render_derived(name="k")
        )
        query = (
            sa.select(cart_t)
            .join(keys, cart_t.c.external_id == keys.c.external_id)
            .where(cart_t.c.store_id == store_id)
            .with_for_update(of=cart_t)
        )
        carts.update((r.external_id, _Cart(dict(r._mapping))) for r in conn.execute(query).all())
    if by_customer:
        query = (
            sa.select(cart_t)
            .where(
                cart_t.c.store_id == store_id,
                cart_t.c.customer_id
                == sa.any_(sa.bindparam(None, by_customer, type_=postgresql.ARRAY(sa.Integer))),
                cart_t.c.status.in_([CartStatus.ACTIVE, CartStatus.ABANDONED]),
            )
            .with_for_update()
        )
        carts.update((r.external_id, _Cart(dict(r._mapping))) for r in conn.execute(query).all())
    return carts


def _new_cart(store_id: str, external_id: str, at: datetime, e: EventIn, now: datetime) -> _Cart:
    return _Cart(
        {
            "id": None,
            "store_id": store_id,
            "external_id": external_id,
            "customer_id": None,
            "currency": "USD",
            "value": 0.0,
            "items": [],
            "restore_url": None,
            "status": CartStatus.ACTIVE,
            "checkout_stage": "cart",
            "device": None,
            "last_event_at": e.occurred_at,
            "last_activity_at": at,
            "version": 0,
            "check_pending": False,
            "journey": 0,
            "abandoned_at": None,
            "converted_at": None,
            "order_id": None,
            "order_value": None,
            "created_at": now,
        },
        new=True,
    )


def _cart_activity(
    carts: dict[str, _Cart],
    store_id: str,
    e: EventIn,
    customer_id: int | None,
    at: datetime,
    now: datetime,
) -> None:
    assert e.cart is not None
    cart = carts.get(e.cart.id)
    if cart is None:
        cart = carts[e.cart.id] = _new_cart(store_id, e.cart.id, at, e, now)
    else:
        row = cart.row
        if e.occurred_at <= row["last_event_at"]:
            return  # older than what the cart already shows: stored, not applied
        if row["status"] == CartStatus.CONVERTED and (
            row["converted_at"] is None or e.occurred_at <= row["converted_at"]
        ):
            return
    row = cart.row
    c = e.cart
    for name in ("currency", "value", "restore_url"):
        if getattr(c, name) is not None:
            row[name] = getattr(c, name)
    if c.items is not None:
        row["items"] = [i.model_dump(mode="json", exclude_none=True) for i in c.items]
    if customer_id is not None:
        row["customer_id"] = customer_id
    if e.context is not None and e.context.device is not None:
        row["device"] = e.context.device
    stage = "checkout" if e.type == "checkout.started" else "cart"
    if _STAGES[stage] > _STAGES.get(row["checkout_stage"], 0):
        row["checkout_stage"] = stage
    if row["status"] == CartStatus.ABANDONED:
        # The shopper is back: the journey for the last abandonment stops here. Another
        # abandonment will start a new one.
        cart.was_abandoned_void = True
    if not row["check_pending"] or row["status"] != CartStatus.ACTIVE:
        row["check_pending"] = True
        cart.needs_check = True
    row["status"] = CartStatus.ACTIVE
    row["last_event_at"] = e.occurred_at
    row["last_activity_at"] = max(row["last_activity_at"], at)
    row["version"] += 1
    cart.dirty = True


def _order_targets(
    carts: dict[str, _Cart],
    store_id: str,
    e: EventIn,
    customer_id: int | None,
    at: datetime,
    now: datetime,
) -> list[_Cart]:
    """Convert the order's cart (or the customer's open carts); return those converted."""
    assert e.order is not None
    if e.cart is not None:
        cart = carts.get(e.cart.id)
        if cart is None:
            # An order for a cart Nudge never saw: remember it so late cart events stay inert.
            cart = carts[e.cart.id] = _new_cart(store_id, e.cart.id, at, e, now)
            cart.row.update(
                customer_id=customer_id,
                currency=e.cart.currency or "USD",
                value=e.cart.value if e.cart.value is not None else e.order.value,
            )
        targets = [cart]
    else:
        targets = [
            c
            for c in carts.values()
            if c.row["customer_id"] == customer_id and c.row["status"] != CartStatus.CONVERTED
        ]
    converted = []
    for cart in targets:
        row = cart.row
        if row["status"] == CartStatus.CONVERTED:
            continue  # a second order on a converted cart is not a second recovery
        row.update(
            status=CartStatus.CONVERTED,
            converted_at=at,
            order_id=e.order.id,
            order_value=e.order.value,
            last_event_at=max(row["last_event_at"], e.occurred_at),
            version=row["version"] + 1,
            check_pending=False,
        )
        cart.needs_check = False
        cart.dirty = True
        converted.append(cart)
    return converted


def _write_carts(conn: sa.Connection, store_id: str, carts: Sequence[_Cart]) -> None:
    new = [c for c in carts if c.new]
    if new:
        rows = [{k: v for k, v in c.row.items() if k != "id"} for c in new]
        by_external = {c.row["external_id"]: c for c in new}
        returned = bulk.insert_rows(conn, cart_t, rows, returning=("id", "external_id"))
        if conn.dialect.name != "postgresql":
            returned = list(
                conn.execute(
                    sa.select(cart_t.c.id, cart_t.c.external_id).where(
                        cart_t.c.store_id == store_id,
                        cart_t.c.external_id.in_(list(by_external)),
                    )
                )
            )
        for pk, external_id in returned:
            by_external[external_id].row["id"] = pk
    changed = [c for c in carts if c.dirty and not c.new]
    bulk.update_rows(
        conn,
        cart_t,
        "id",
        [{"id": c.row["id"], **{k: c.row[k] for k in _CART_MUTABLE}} for c in changed],
    )


def _redeem(
    conn: sa.Connection, cart_id: int, code: str, order_id: str, at: datetime
) -> tuple[str, float] | None:
    """Mark the coupon used; returns (decision id, discount %) if it belongs to this cart."""
    row = conn.execute(
        sa.select(coupon_t.c.id, coupon_t.c.decision_id, coupon_t.c.discount_pct)
        .select_from(coupon_t.join(decision_t, decision_t.c.id == coupon_t.c.decision_id))
        .where(
            decision_t.c.cart_id == cart_id,
            sa.func.upper(coupon_t.c.code) == code.strip().upper(),
            coupon_t.c.redeemed_at.is_(None),
            coupon_t.c.expires_at >= at,
        )
    ).first()
    if row is None:
        return None
    conn.execute(
        sa.update(coupon_t).where(coupon_t.c.id == row.id).values(redeemed_at=at, order_id=order_id)
    )
    return str(row.decision_id), float(row.discount_pct)


def _void_pending(conn: sa.Connection, cart_ids: list[int], *, reason: str, now: datetime) -> None:
    conn.execute(
        sa.update(decision_t)
        .where(decision_t.c.cart_id.in_(cart_ids), decision_t.c.state == DecisionState.SCHEDULED)
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
    coupon_code: str | None = None,
) -> list[str]:
    """Give every open decision of the cart whose window covers ``at`` a converted outcome.

    A coupon code on the order that one of these decisions minted (unused, unexpired) is
    redeemed, and that decision's outcome carries the discount given.
    """
    redeemed = _redeem(conn, cart_id, coupon_code, order_id, at) if coupon_code else None
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
                discount_amount=(
                    round(order_value * redeemed[1] / 100.0, 2)
                    if redeemed and redeemed[0] == row.id
                    else 0.0
                ),
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
