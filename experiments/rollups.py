"""Keep the dashboard's daily rollups (:mod:`store.rollups`) up to date.

:func:`refresh` recomputes a store's rollups for the days that can still change and leaves
older days alone: a journey's touches, messages and outcomes keep arriving until its last
touch's attribution window closes, so the days within ``window + MARGIN_DAYS`` of today are
recomputed every time, and every day once every ``FULL_EVERY`` (late opens and clicks). Each
refresh replaces those days' rows in one transaction, so readers see either the old or the
new sums, never half of them.

The sums are the ones the dashboard used to compute on every page view:

* **journeys** (one abandonment of one cart, its touches and its order) by the day of their
  first touch, that touch's arm and the cart's segments — an order is counted once per
  journey, not once per touch it is attributed to; the arm is ``holdout`` for a holdout
  nobody chose (an experiment's persistent holdout, or the holdout arm outside experiments)
  and ``send-nothing`` for a bandit's choice to send nothing;
* **decisions** by day, arm, channel and state (per-arm statistics, spend, skipped touches);
* **messages** by the day they were created, channel and status, with opens and clicks;
* each experiment's cells, per decision and per journey (:mod:`experiments.report`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from experiments.lifecycle import experiment_t, store_t
from experiments.report import (
    CONTROL,
    NOTHING,
    UNITS,
    decision_cells,
    journey_cells,
    margin_of,
)
from experiments.tallies import COLUMNS
from store.models import Cart, Click, Decision, Message, MessageStatus, Open, Outcome
from store.rollups import (
    RollupCartDay,
    RollupDecisionDay,
    RollupExperimentCell,
    RollupJourneyDay,
    RollupMessageDay,
    RollupState,
)
from store.sql import day_of, flag, json_number, json_text, json_true

logger = logging.getLogger(__name__)

cart_t: sa.Table = Cart.__table__  # type: ignore[attr-defined]
click_t: sa.Table = Click.__table__  # type: ignore[attr-defined]
decision_t: sa.Table = Decision.__table__  # type: ignore[attr-defined]
message_t: sa.Table = Message.__table__  # type: ignore[attr-defined]
open_t: sa.Table = Open.__table__  # type: ignore[attr-defined]
outcome_t: sa.Table = Outcome.__table__  # type: ignore[attr-defined]
state_t: sa.Table = RollupState.__table__  # type: ignore[attr-defined]
cart_day_t: sa.Table = RollupCartDay.__table__  # type: ignore[attr-defined]
journey_day_t: sa.Table = RollupJourneyDay.__table__  # type: ignore[attr-defined]
decision_day_t: sa.Table = RollupDecisionDay.__table__  # type: ignore[attr-defined]
message_day_t: sa.Table = RollupMessageDay.__table__  # type: ignore[attr-defined]
experiment_cell_t: sa.Table = RollupExperimentCell.__table__  # type: ignore[attr-defined]

#: Message statuses that count as "went out" (an uncertain hand-off may have been delivered,
#: and is charged, as ``senders.journey`` does).
SENT_STATUSES = (MessageStatus.SENT, MessageStatus.UNCERTAIN)
#: Days past the longest attribution window that are still recomputed: the touches after the
#: first (up to three days later with the default schedule) and a late sweep.
MARGIN_DAYS = 4
#: Every day is recomputed this often (opens and clicks can come weeks later).
FULL_EVERY = timedelta(hours=24)
#: Cart value bands, in US dollars; a currency worth far less scales them (1 USD ≈ 1,350 KRW
#: ≈ 150 JPY: round factors keep the band labels readable).
BAND_EDGES_USD = (50.0, 100.0, 250.0)
_BAND_SCALE = {"KRW": 1000.0, "JPY": 100.0, "VND": 25000.0, "HUF": 300.0, "TWD": 30.0}


def band_edges(currency: str) -> tuple[float, ...]:
    """Upper edges of the cart value bands in ``currency`` (the last band is open).

    Example:
        >>> band_edges("USD"), band_edges("KRW")
        ((50.0, 100.0, 250.0), (50000.0, 100000.0, 250000.0))
    """
    scale = _BAND_SCALE.get(currency.upper(), 1.0)
    return tuple(edge * scale for edge in BAND_EDGES_USD)


def store_currency(conn: sa.Connection, store_id: str) -> str:
    """The store's currency: the most common of its carts' (USD before any cart)."""
    currency = conn.execute(
        sa.select(cart_t.c.currency)
        .where(cart_t.c.store_id == store_id)
        .group_by(cart_t.c.currency)
        .order_by(sa.func.count().desc(), cart_t.c.currency)
        .limit(1)
    ).scalar()
    return str(currency or "USD")


#: Rollups older than this are refreshed (by the worker, or by a page view that finds them
#: so); divided by ``NUDGE_TIME_SCALE`` (the demo's journeys run 1,200x faster), down to
#: ``MIN_AGE``.
MAX_AGE = timedelta(minutes=5)
MIN_AGE = timedelta(seconds=10)


def max_age(time_scale: float) -> timedelta:
    """How old a store's rollups may be before they are refreshed.

    Example:
        >>> max_age(1.0), max_age(1200.0)
        (datetime.timedelta(seconds=300), datetime.timedelta(seconds=10))
    """
    return max(MIN_AGE, MAX_AGE / max(1.0, time_scale))


def stale_stores(conn: sa.Connection, *, now: datetime, older_than: timedelta) -> list[str]:
    """The stores with decisions whose rollups were never built or are older than that."""
    decided = sa.exists().where(decision_t.c.store_id == store_t.c.id)
    fresh = sa.exists().where(
        state_t.c.store_id == store_t.c.id, state_t.c.refreshed_at > now - older_than
    )
    query = sa.select(store_t.c.id).where(decided, ~fresh).order_by(store_t.c.id)
    return list(conn.execute(query).scalars())


@dataclass(frozen=True)
class Refreshed:
    store_id: str
    since: date | None  # None: every day
    seconds: float


def state(conn: sa.Connection, store_id: str) -> Any:
    """The store's :class:`store.rollups.RollupState` row (None: never built)."""
    return conn.execute(sa.select(state_t).where(state_t.c.store_id == store_id)).first()


def refresh(
    conn: sa.Connection,
    *,
    store_id: str,
    now: datetime,
    window_days: float = 7.0,
    full: bool = False,
) -> Refreshed:
    """Recompute the store's rollups for the days that can still change (every day when
    ``full``, when they were never built, or when the last full rebuild is ``FULL_EVERY``
    old). Run it in a transaction: the old rows go and the new ones come at once.

    Args:
        window_days: the attribution window of decisions outside experiments (the settings'
            default); experiments' own windows are read from their rows.
    """
    started = time.perf_counter()
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # One refresher per store at a time (dashboards may run side by side); SQLite
        # serialises writers anyway.
        conn.execute(
            sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("nudge-rollup:" + store_id)))
        )
        # A reporting job, not a request: room to hash and group in memory (the default
        # 4 MB spills the journeys' GROUP BY to disk), and no JIT compilation, which costs
        # more than it saves on these scans.
        conn.execute(sa.text("SET LOCAL work_mem = '64MB'"))
        conn.execute(sa.text("SET LOCAL jit = off"))
    before = state(conn, store_id)
    experiments = conn.execute(
        sa.select(experiment_t).where(experiment_t.c.store_id == store_id)
    ).all()
    longest = max([window_days, *(float(e.attribution_window_days) for e in experiments)])
    rebuild = full or before is None or now - before.full_at >= FULL_EVERY
    since: date | None = None
    if not rebuild:
        since = (now - timedelta(days=longest + MARGIN_DAYS)).date()
    since_at = None if since is None else datetime.combine(since, datetime.min.time(), UTC)
    currency = store_currency(conn, store_id)
    for table, query in (
        (cart_day_t, _cart_days(dialect, store_id, since_at)),
        (journey_day_t, _journey_days(dialect, store_id, since_at, currency)),
        (decision_day_t, _decision_days(dialect, store_id, since_at)),
        (message_day_t, _message_days(dialect, store_id, since_at)),
    ):
        stale = table.c.store_id == store_id
        conn.execute(
            sa.delete(table).where(stale if since is None else stale & (table.c.day >= since))
        )
        _insert(conn, table, query, store_id=store_id)
    for exp in experiments:
        ended = exp.stopped_at
        if (
            since is not None
            and ended is not None
            and ended.date() + timedelta(days=float(exp.attribution_window_days) + MARGIN_DAYS)
            < since
        ):
            continue  # stopped long ago: its days are final
        _refresh_experiment(conn, exp, since, since_at)
    seconds = round(time.perf_counter() - started, 3)
    values = {
        "refreshed_at": now,
        "full_at": now if rebuild else before.full_at,
        "since": since,
        "seconds": seconds,
        "currency": currency,
    }
    if before is None:
        conn.execute(sa.insert(state_t).values(store_id=store_id, **values))
    else:
        conn.execute(sa.update(state_t).where(state_t.c.store_id == store_id).values(**values))
    logger.info(
        "Rollups of store %s refreshed from %s in %.2f s", store_id, since or "the start", seconds
    )
    return Refreshed(store_id, since, seconds)


def _insert(conn: sa.Connection, table: sa.Table, query: sa.Select[Any], **fixed: str) -> None:
    sub = query.subquery()
    names = list(fixed) + [c.name for c in sub.c]
    select = sa.select(*(sa.literal(v, sa.String).label(k) for k, v in fixed.items()), *sub.c)
    conn.execute(sa.insert(table).from_select(names, select))


def _refresh_experiment(
    conn: sa.Connection, exp: Any, since: date | None, since_at: datetime | None
) -> None:
    dialect = conn.dialect.name
    t = experiment_cell_t
    stale = t.c.experiment_id == exp.id
    conn.execute(sa.delete(t).where(stale if since is None else stale & (t.c.day >= since)))
    margin = margin_of(exp)
    for unit in UNITS:
        query = (
            decision_cells(dialect, experiment_id=exp.id, margin_rate=margin, since=since_at)
            if unit == "decision"
            else journey_cells(
                dialect,
                experiment_id=exp.id,
                margin_rate=margin,
                first_touch=exp.touch or 1,
                since=since_at,
            )
        )
        _insert(conn, t, query, experiment_id=exp.id, unit=unit)


# --- what is summed ------------------------------------------------------------------------------


def _since(column: Any, since_at: datetime | None) -> list[sa.ColumnElement[bool]]:
    return [] if since_at is None else [column >= since_at]


def _opened_messages() -> sa.Subquery:
    return sa.select(open_t.c.message_id).group_by(open_t.c.message_id).subquery("opened")


def _clicked_messages() -> sa.Subquery:
    return sa.select(click_t.c.message_id).group_by(click_t.c.message_id).subquery("clicked")


def _journey_days(
    dialect: str, store_id: str, since_at: datetime | None, currency: str
) -> sa.Select[Any]:
    d, m, o = decision_t, message_t, outcome_t
    opened_m, clicked_m = _opened_messages(), _clicked_messages()
    sent = m.c.status.in_(SENT_STATUSES)
    converted = o.c.converted.is_(True)
    first = d.c.touch == 1
    value = json_number(d.c.context, "cart_value", dialect)
    band = sa.case(
        *((value < edge, i) for i, edge in enumerate(band_edges(currency))),
        else_=len(band_edges(currency)),
    )

    def context(key: str) -> sa.ColumnElement[Any]:
        return sa.func.max(
            sa.case((first, sa.func.coalesce(json_text(d.c.context, key, dialect), "unknown")))
        )

    cost = sa.case((sent, m.c.cost), else_=0.0)
    # The control is the holdout nobody chose: an experiment's persistent holdout, or the
    # holdout arm outside experiments. A bandit choosing to send nothing is a treatment like
    # its other arms (as in the experiment report).
    arm = sa.case(
        (json_true(d.c.context, "holdout", dialect), CONTROL),
        (sa.and_(d.c.arm_key == CONTROL, d.c.experiment_id.is_not(None)), NOTHING),
        else_=d.c.arm_key,
    )
    j = (
        sa.select(
            sa.func.min(d.c.decided_at).label("started"),
            sa.func.max(sa.case((first, arm))).label("arm"),
            sa.func.max(sa.case((first, sa.func.coalesce(d.c.channel, arm)))).label("channel"),
            context("device").label("device"),
            context("customer_type").label("customer_type"),
            context("checkout_stage").label("checkout_stage"),
            sa.func.max(sa.case((first, band))).label("value_band"),
            sa.func.max(flag(sent)).label("messaged"),
            sa.func.max(flag(sa.and_(sent, opened_m.c.message_id.is_not(None)))).label("opened"),
            sa.func.max(flag(sa.and_(sent, clicked_m.c.message_id.is_not(None)))).label("clicked"),
            sa.func.max(flag(converted)).label("converted"),
            sa.func.max(flag(sa.and_(converted, o.c.message_sent.is_(True)))).label("recovered"),
            sa.func.max(sa.case((converted, o.c.revenue), else_=0.0)).label("revenue"),
            (
                sa.func.coalesce(sa.func.sum(o.c.discount_amount), 0.0)
                + sa.func.coalesce(sa.func.sum(cost), 0.0)
            ).label("spent"),
            sa.func.coalesce(sa.func.sum(o.c.discount_amount), 0.0).label("discount"),
            sa.func.coalesce(sa.func.sum(cost), 0.0).label("cost"),
        )
        .select_from(
            d.outerjoin(m, m.c.decision_id == d.c.id)
            .outerjoin(o, o.c.decision_id == d.c.id)
            .outerjoin(opened_m, opened_m.c.message_id == m.c.id)
            .outerjoin(clicked_m, clicked_m.c.message_id == m.c.id)
        )
        # Later touches of a journey are decided after its first: from `since` on, all of
        # them; HAVING keeps the journeys whose first touch is in the range.
        .where(d.c.store_id == store_id, *_since(d.c.decided_at, since_at))
        .group_by(d.c.cart_id, d.c.journey)
        .having(sa.func.min(d.c.touch) == 1)
        .subquery("j")
    )
    day = day_of(j.c.started, dialect)
    keys = [j.c.arm, j.c.channel, j.c.device, j.c.customer_type, j.c.value_band]
    keys.append(j.c.checkout_stage)
    return sa.select(
        day.label("day"),
        *keys,
        sa.func.count().label("journeys"),
        sa.func.sum(j.c.messaged).label("messaged"),
        sa.func.sum(j.c.opened).label("opened"),
        sa.func.sum(j.c.clicked).label("clicked"),
        sa.func.sum(j.c.converted).label("converted"),
        sa.func.sum(j.c.recovered).label("recovered"),
        sa.func.sum(j.c.revenue).label("revenue"),
        sa.func.sum(j.c.revenue * j.c.revenue).label("revenue_sq"),
        sa.func.sum(sa.case((j.c.recovered == 1, j.c.revenue), else_=0.0)).label(
            "recovered_revenue"
        ),
        sa.func.sum(j.c.discount).label("discount"),
        sa.func.sum(j.c.cost).label("cost"),
        sa.func.sum(j.c.revenue * j.c.spent).label("rev_cost"),
        sa.func.sum(j.c.spent * j.c.spent).label("cost_sq"),
    ).group_by(day, *keys)


def _decision_days(dialect: str, store_id: str, since_at: datetime | None) -> sa.Select[Any]:
    d, m, o = decision_t, message_t, outcome_t
    sent = m.c.status.in_(SENT_STATUSES)
    converted = o.c.converted.is_(True)
    revenue = sa.case((converted, o.c.revenue), else_=0.0)
    discount = sa.func.coalesce(o.c.discount_amount, 0.0)
    cost = sa.case((sent, m.c.cost), else_=0.0)
    spent = discount + cost
    day = day_of(d.c.decided_at, dialect)
    channel = sa.func.coalesce(m.c.channel, d.c.channel, "")
    reason = sa.func.coalesce(d.c.state_reason, "")
    return (
        sa.select(
            day.label("day"),
            d.c.arm_key,
            channel.label("channel"),
            d.c.state,
            reason.label("reason"),
            sa.func.count().label("decisions"),
            sa.func.sum(flag(sent)).label("sends"),
            sa.func.sum(flag(converted)).label("conversions"),
            sa.func.sum(revenue).label("revenue"),
            sa.func.sum(revenue * revenue).label("revenue_sq"),
            sa.func.sum(discount).label("discount"),
            sa.func.sum(cost).label("message_cost"),
            sa.func.sum(revenue * spent).label("rev_cost"),
            sa.func.sum(spent * spent).label("cost_sq"),
        )
        .select_from(
            d.outerjoin(m, m.c.decision_id == d.c.id).outerjoin(o, o.c.decision_id == d.c.id)
        )
        .where(d.c.store_id == store_id, *_since(d.c.decided_at, since_at))
        .group_by(day, d.c.arm_key, channel, d.c.state, reason)
    )


def _message_days(dialect: str, store_id: str, since_at: datetime | None) -> sa.Select[Any]:
    m, d = message_t, decision_t
    opened_m, clicked_m = _opened_messages(), _clicked_messages()
    day = day_of(m.c.created_at, dialect)
    failed = m.c.status == MessageStatus.FAILED
    reason = sa.case(
        (failed, sa.func.coalesce(d.c.state_reason, m.c.error_kind, "unknown")), else_=""
    )
    kind = sa.func.coalesce(m.c.error_kind, "")
    return (
        sa.select(
            day.label("day"),
            m.c.channel,
            m.c.status,
            reason.label("reason"),
            kind.label("error_kind"),
            sa.func.count().label("messages"),
            sa.func.coalesce(sa.func.sum(m.c.cost), 0.0).label("cost"),
            sa.func.sum(flag(opened_m.c.message_id.is_not(None))).label("opened"),
            sa.func.sum(flag(clicked_m.c.message_id.is_not(None))).label("clicked"),
            sa.func.max(m.c.error).label("example"),
            sa.func.max(m.c.created_at).label("last_at"),
        )
        .select_from(
            m.join(d, d.c.id == m.c.decision_id)
            .outerjoin(opened_m, opened_m.c.message_id == m.c.id)
            .outerjoin(clicked_m, clicked_m.c.message_id == m.c.id)
        )
        .where(m.c.store_id == store_id, *_since(m.c.created_at, since_at))
        .group_by(day, m.c.channel, m.c.status, reason, kind)
    )


def _cart_days(dialect: str, store_id: str, since_at: datetime | None) -> sa.Select[Any]:
    c = cart_t
    day = day_of(c.c.abandoned_at, dialect)
    return (
        sa.select(day.label("day"), sa.func.count().label("abandoned"))
        .where(
            c.c.store_id == store_id,
            c.c.abandoned_at.is_not(None),
            c.c.journey > 0,
            *_since(c.c.abandoned_at, since_at),
        )
        .group_by(day)
    )


# --- reading -------------------------------------------------------------------------------------


def experiment_cells(conn: sa.Connection, *, experiment_id: str, unit: str) -> list[Any]:
    """The stored cells of an experiment (rows for :meth:`Tallies.from_rows`)."""
    t = experiment_cell_t
    return list(
        conn.execute(
            sa.select(t.c.day, t.c.arm, t.c.segment, *(t.c[c] for c in COLUMNS)).where(
                t.c.experiment_id == experiment_id, t.c.unit == unit
            )
        )
        .mappings()
        .all()
    )
