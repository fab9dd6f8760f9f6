"""What the dashboard shows, as aggregate SQL: the database groups and sums, Python only
formats the handful of rows that come back.

Every query filters by store first and then by a time column, so it can run on an index
``(store_id, <time>)`` (see the indexes listed in the UI's README notes / report). Results are
cached with short TTLs (``st.cache_data``): a morning review by several people costs the
database one query per minute, not one per click.

The unit of the headline numbers is the **journey** (one abandonment of one cart, its touches
and its order), not the decision: an order is attributed to every open decision of the cart,
so summing per decision would count one order once per touch. A journey belongs to the range
in which its first touch was decided, and to the holdout when that touch chose the holdout arm.

Statistics come from :mod:`experiments` (sufficient statistics are computed here in SQL and
handed over as :class:`experiments.stats.ArmTotals`), so the dashboard, the CLI report and the
API compute every interval the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.engine import Engine

from experiments import roi as roi_mod
from experiments.stats import HOLDOUT, ArmStats, ArmTotals, arm_summary_from_totals
from settings import Settings
from store.db import get_engine
from store.models import (
    Cart,
    Click,
    Decision,
    Message,
    MessageStatus,
    Open,
    Outcome,
    Store,
    Suppression,
)
from store.sql import day_of, json_number, json_text
from store.sql import flag as _flag
from ui import format as fmt

logger = logging.getLogger(__name__)

cart_t: sa.Table = Cart.__table__  # type: ignore[attr-defined]
click_t: sa.Table = Click.__table__  # type: ignore[attr-defined]
decision_t: sa.Table = Decision.__table__  # type: ignore[attr-defined]
message_t: sa.Table = Message.__table__  # type: ignore[attr-defined]
open_t: sa.Table = Open.__table__  # type: ignore[attr-defined]
outcome_t: sa.Table = Outcome.__table__  # type: ignore[attr-defined]
store_t: sa.Table = Store.__table__  # type: ignore[attr-defined]
suppression_t: sa.Table = Suppression.__table__  # type: ignore[attr-defined]

#: Aggregates: a minute old at most. Recent sends and the queue: a few seconds.
TTL_AGGREGATE = 60
TTL_RECENT = 10
TTL_QUEUE = 5
TTL_STORES = 300

#: Message statuses that count as "went out" (an uncertain hand-off may have been delivered,
#: and is charged, as ``senders.journey`` does).
SENT_STATUSES = (MessageStatus.SENT, MessageStatus.UNCERTAIN)

#: Segment dimensions: the decision context key each reads (``None``: not from the context).
DIMENSIONS: dict[str, str | None] = {
    "device": "device",
    "customer_type": "customer_type",
    "cart_value": "cart_value",
    "checkout_stage": "checkout_stage",
    "channel": None,
}


def engine(url: str) -> Engine:
    return get_engine(url)


# --- stores ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreInfo:
    id: str
    name: str
    country: str
    rules: dict[str, Any]
    currency: str


@st.cache_data(ttl=TTL_STORES, show_spinner=False)
def stores(url: str) -> list[StoreInfo]:
    """Every store with its currency (the most common of its carts; USD before any cart)."""
    eng = engine(url)
    with eng.connect() as conn:
        rows = conn.execute(
            sa.select(store_t.c.id, store_t.c.name, store_t.c.country, store_t.c.rules).order_by(
                store_t.c.name
            )
        ).all()
        result = []
        for r in rows:  # one row per store: a handful, never per cart
            currency = conn.execute(
                sa.select(cart_t.c.currency)
                .where(cart_t.c.store_id == r.id)
                .group_by(cart_t.c.currency)
                .order_by(sa.func.count().desc())
                .limit(1)
            ).scalar()
            result.append(
                StoreInfo(r.id, r.name, r.country, dict(r.rules or {}), currency or "USD")
            )
    return result


# --- journeys: the cohort behind the headline numbers ----------------------------------------


def _journeys(
    dialect: str,
    store_id: str,
    start: datetime,
    end: datetime,
    *,
    dimension: str | None = None,
    currency: str = "USD",
) -> sa.Subquery:
    """One row per journey started in ``[start, end)``: its arm, funnel flags, money."""
    d, m, o = decision_t, message_t, outcome_t
    sent = m.c.status.in_(SENT_STATUSES)
    converted = o.c.converted.is_(True)
    first = d.c.touch == 1
    opened = sa.exists().where(open_t.c.message_id == m.c.id)
    clicked = sa.exists().where(click_t.c.message_id == m.c.id)
    cols: list[Any] = [
        d.c.cart_id,
        d.c.journey,
        sa.func.max(sa.case((first, d.c.arm_key))).label("arm"),
        sa.func.min(d.c.decided_at).label("started"),
        sa.func.max(_flag(sent)).label("messaged"),
        sa.func.max(_flag(sa.and_(sent, opened))).label("opened"),
        sa.func.max(_flag(sa.and_(sent, clicked))).label("clicked"),
        sa.func.max(_flag(converted)).label("converted"),
        sa.func.max(_flag(sa.and_(converted, o.c.message_sent.is_(True)))).label("recovered"),
        sa.func.max(sa.case((converted, o.c.revenue), else_=0.0)).label("revenue"),
        sa.func.coalesce(sa.func.sum(o.c.discount_amount), 0.0).label("discount"),
        sa.func.coalesce(sa.func.sum(sa.case((sent, m.c.cost), else_=0.0)), 0.0).label("cost"),
    ]
    if dimension is not None:
        cols.append(
            sa.func.max(sa.case((first, _segment(dimension, dialect, currency)))).label("seg")
        )
    return (
        sa.select(*cols)
        .select_from(
            d.outerjoin(m, m.c.decision_id == d.c.id).outerjoin(o, o.c.decision_id == d.c.id)
        )
        # Later touches of a journey are decided after its first: from `start` on, all of them;
        # HAVING keeps the journeys whose first touch falls in the range.
        .where(d.c.store_id == store_id, d.c.decided_at >= start)
        .group_by(d.c.cart_id, d.c.journey)
        .having(sa.and_(sa.func.min(d.c.touch) == 1, sa.func.min(d.c.decided_at) < end))
        .subquery("j")
    )


def _segment(dimension: str, dialect: str, currency: str) -> sa.ColumnElement[Any]:
    d = decision_t
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {sorted(DIMENSIONS)}, not {dimension!r}")
    if dimension == "channel":
        return sa.func.coalesce(d.c.channel, HOLDOUT)
    if dimension == "cart_value":
        value = json_number(d.c.context, "cart_value", dialect)
        labels = fmt.band_labels(currency)
        edges = fmt.band_edges(currency)
        whens = [(value < edge, label) for edge, label in zip(edges, labels, strict=False)]
        return sa.case(*whens, else_=labels[-1])
    key = DIMENSIONS[dimension]
    assert key is not None
    return sa.func.coalesce(json_text(d.c.context, key, dialect), "unknown")


def _totals_columns(j: sa.Subquery, margin_rate: float) -> list[Any]:
    margin = sa.literal(margin_rate, sa.Float)
    profit = j.c.revenue * margin - j.c.discount - j.c.cost
    return [
        sa.func.count().label("carts"),
        sa.func.coalesce(sa.func.sum(j.c.messaged), 0).label("sends"),
        sa.func.coalesce(sa.func.sum(j.c.opened), 0).label("opened"),
        sa.func.coalesce(sa.func.sum(j.c.clicked), 0).label("clicked"),
        sa.func.coalesce(sa.func.sum(j.c.converted), 0).label("conversions"),
        sa.func.coalesce(sa.func.sum(j.c.recovered), 0).label("recovered"),
        sa.func.coalesce(sa.func.sum(j.c.revenue), 0.0).label("revenue"),
        sa.func.coalesce(sa.func.sum(j.c.revenue * j.c.revenue), 0.0).label("revenue_sq"),
        sa.func.coalesce(
            sa.func.sum(sa.case((j.c.recovered == 1, j.c.revenue), else_=0.0)), 0.0
        ).label("recovered_revenue"),
        sa.func.coalesce(sa.func.sum(j.c.discount), 0.0).label("discount_cost"),
        sa.func.coalesce(sa.func.sum(j.c.cost), 0.0).label("message_cost"),
        sa.func.coalesce(sa.func.sum(profit), 0.0).label("profit"),
        sa.func.coalesce(sa.func.sum(profit * profit), 0.0).label("profit_sq"),
    ]


@dataclass(frozen=True)
class Group:
    """Journey totals of one group (treated or holdout, within a segment or overall)."""

    carts: int = 0
    sends: int = 0
    opened: int = 0
    clicked: int = 0
    conversions: int = 0
    recovered: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0
    recovered_revenue: float = 0.0
    discount_cost: float = 0.0
    message_cost: float = 0.0
    profit: float = 0.0
    profit_sq: float = 0.0

    @classmethod
    def from_row(cls, row: Any) -> Group:
        values: dict[str, Any] = {
            f: (int if isinstance(getattr(cls, f), int) else float)(getattr(row, f) or 0)
            for f in cls.__dataclass_fields__
        }
        return cls(**values)

    def __add__(self, other: Group) -> Group:
        return Group(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def totals(self) -> ArmTotals:
        return ArmTotals(
            carts=self.carts,
            sends=self.sends,
            conversions=self.conversions,
            revenue=self.revenue,
            revenue_sq=self.revenue_sq,
            discount_cost=self.discount_cost,
            message_cost=self.message_cost,
            profit=self.profit,
            profit_sq=self.profit_sq,
        )

    def attributed(self) -> ArmTotals:
        """The recovered journeys, as ``experiments.roi`` counts attributed orders."""
        return ArmTotals(
            carts=self.recovered, conversions=self.recovered, revenue=self.recovered_revenue
        )


@dataclass(frozen=True)
class Overview:
    abandoned: int  # carts whose latest abandonment falls in the range
    treated: Group
    holdout: Group

    @property
    def journeys(self) -> Group:
        return self.treated + self.holdout


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def overview(
    url: str, store_id: str, start: datetime, end: datetime, margin_rate: float
) -> Overview:
    eng = engine(url)
    j = _journeys(eng.dialect.name, store_id, start, end)
    is_holdout = _flag(j.c.arm == HOLDOUT)
    with eng.connect() as conn:
        abandoned = conn.execute(
            sa.select(sa.func.count()).where(
                cart_t.c.store_id == store_id,
                cart_t.c.abandoned_at >= start,
                cart_t.c.abandoned_at < end,
                cart_t.c.journey > 0,
            )
        ).scalar_one()
        rows = conn.execute(
            sa.select(is_holdout.label("holdout"), *_totals_columns(j, margin_rate)).group_by(
                is_holdout
            )
        ).all()
    groups = {int(r.holdout): Group.from_row(r) for r in rows}
    return Overview(int(abandoned), groups.get(0, Group()), groups.get(1, Group()))


def incremental(treated: Group, holdout: Group, group: str = "all") -> roi_mod.ROIRow:
    """Incremental orders, revenue and profit against the holdout, and ROI: the arithmetic of
    :func:`experiments.roi.roi_from_totals`, fed with totals the database summed."""
    return roi_mod.roi_from_totals(group, treated.totals(), holdout.totals(), treated.attributed())


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def daily(url: str, store_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Per day (UTC) of the first touch: journeys, messaged, clicked, ordered, revenue."""
    eng = engine(url)
    j = _journeys(eng.dialect.name, store_id, start, end)
    day = day_of(j.c.started, eng.dialect.name)
    query = (
        sa.select(
            day.label("day"),
            sa.func.count().label("abandoned"),
            sa.func.sum(j.c.messaged).label("messaged"),
            sa.func.sum(j.c.clicked).label("clicked"),
            sa.func.sum(j.c.converted).label("ordered"),
            sa.func.sum(j.c.revenue).label("revenue"),
        )
        .group_by(day)
        .order_by(day)
    )
    with eng.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    if frame.empty:
        return pd.DataFrame(
            columns=["day", "abandoned", "messaged", "clicked", "ordered", "revenue"]
        )
    frame["day"] = pd.to_datetime(frame["day"])
    return frame.astype({"abandoned": int, "messaged": int, "clicked": int, "ordered": int})


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def spend_by_channel(url: str, store_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Per channel: messages that went out, their cost, and the discounts redeemed."""
    d, m, o = decision_t, message_t, outcome_t
    sent = m.c.status.in_(SENT_STATUSES)
    channel = sa.func.coalesce(m.c.channel, d.c.channel)
    query = (
        sa.select(
            channel.label("channel"),
            sa.func.sum(_flag(sent)).label("sends"),
            sa.func.coalesce(sa.func.sum(sa.case((sent, m.c.cost), else_=0.0)), 0.0).label(
                "message_cost"
            ),
            sa.func.coalesce(sa.func.sum(o.c.discount_amount), 0.0).label("discount_cost"),
        )
        .select_from(
            d.outerjoin(m, m.c.decision_id == d.c.id).outerjoin(o, o.c.decision_id == d.c.id)
        )
        .where(
            d.c.store_id == store_id,
            d.c.decided_at >= start,
            d.c.decided_at < end,
            d.c.channel.is_not(None),
        )
        .group_by(channel)
        .order_by(channel)
    )
    eng = engine(url)
    with eng.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    if frame.empty:
        return pd.DataFrame(columns=["channel", "sends", "message_cost", "discount_cost"])
    return frame.astype({"sends": int, "message_cost": float, "discount_cost": float})


# --- segments ----------------------------------------------------------------------------------


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def segment_groups(
    url: str,
    store_id: str,
    start: datetime,
    end: datetime,
    dimension: str,
    margin_rate: float,
    currency: str,
) -> dict[str, tuple[Group, Group]]:
    """Per segment of ``dimension``: (treated, holdout) journey totals."""
    eng = engine(url)
    j = _journeys(eng.dialect.name, store_id, start, end, dimension=dimension, currency=currency)
    is_holdout = _flag(j.c.arm == HOLDOUT)
    query = sa.select(
        j.c.seg.label("segment"), is_holdout.label("holdout"), *_totals_columns(j, margin_rate)
    ).group_by(j.c.seg, is_holdout)
    with eng.connect() as conn:
        rows = conn.execute(query).all()
    out: dict[str, list[Group]] = {}
    for r in rows:  # one row per (segment, holdout): a handful
        pair = out.setdefault(str(r.segment), [Group(), Group()])
        pair[int(r.holdout)] = Group.from_row(r)
    if dimension == "channel":
        # A holdout journey has no channel: each channel is compared with the whole holdout
        # (as experiments.roi does per channel).
        control = out.pop(HOLDOUT, [Group(), Group()])
        whole = control[0] + control[1]
        return {seg: (pair[0], whole) for seg, pair in out.items()}
    order = fmt.band_labels(currency) if dimension == "cart_value" else sorted(out)
    return {seg: (out[seg][0], out[seg][1]) for seg in order if seg in out}


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def segment_arms(
    url: str, store_id: str, start: datetime, end: datetime, dimension: str, currency: str
) -> pd.DataFrame:
    """Per segment and arm: first-touch decisions (what the policy chose, and how often)."""
    eng = engine(url)
    d = decision_t
    seg = _segment(dimension, eng.dialect.name, currency)
    query = (
        sa.select(seg.label("segment"), d.c.arm_key.label("arm"), sa.func.count().label("n"))
        .where(
            d.c.store_id == store_id,
            d.c.decided_at >= start,
            d.c.decided_at < end,
            d.c.touch == 1,
        )
        .group_by(seg, d.c.arm_key)
    )
    with eng.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    if frame.empty:
        return pd.DataFrame(columns=["segment", "arm", "n", "share"])
    frame["share"] = frame["n"] / frame.groupby("segment")["n"].transform("sum")
    return frame.sort_values(["segment", "n"], ascending=[True, False], ignore_index=True)


# --- arms (per decision, as experiments.stats counts them) -------------------------------------


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def arm_stats(
    url: str, store_id: str, start: datetime, end: datetime, margin_rate: float
) -> list[ArmStats]:
    """Per-arm statistics of the decisions in the range (``experiments.stats``)."""
    d, m, o = decision_t, message_t, outcome_t
    sent = m.c.status.in_(SENT_STATUSES)
    converted = o.c.converted.is_(True)
    margin = sa.literal(margin_rate, sa.Float)
    revenue = sa.case((converted, o.c.revenue), else_=0.0)
    discount = sa.func.coalesce(o.c.discount_amount, 0.0)
    cost = sa.case((sent, m.c.cost), else_=0.0)
    profit = revenue * margin - discount - cost
    query = (
        sa.select(
            d.c.arm_key.label("arm"),
            sa.func.count().label("carts"),
            sa.func.sum(_flag(sent)).label("sends"),
            sa.func.sum(_flag(converted)).label("conversions"),
            sa.func.sum(revenue).label("revenue"),
            sa.func.sum(revenue * revenue).label("revenue_sq"),
            sa.func.sum(discount).label("discount_cost"),
            sa.func.sum(cost).label("message_cost"),
            sa.func.sum(profit).label("profit"),
            sa.func.sum(profit * profit).label("profit_sq"),
        )
        .select_from(
            d.outerjoin(m, m.c.decision_id == d.c.id).outerjoin(o, o.c.decision_id == d.c.id)
        )
        .where(d.c.store_id == store_id, d.c.decided_at >= start, d.c.decided_at < end)
        .group_by(d.c.arm_key)
        .order_by(d.c.arm_key)
    )
    eng = engine(url)
    with eng.connect() as conn:
        rows = conn.execute(query).all()
    totals = {
        r.arm: ArmTotals(
            carts=int(r.carts),
            sends=int(r.sends or 0),
            conversions=int(r.conversions or 0),
            revenue=float(r.revenue or 0),
            revenue_sq=float(r.revenue_sq or 0),
            discount_cost=float(r.discount_cost or 0),
            message_cost=float(r.message_cost or 0),
            profit=float(r.profit or 0),
            profit_sq=float(r.profit_sq or 0),
        )
        for r in rows
    }
    if not totals:
        return []
    # A fixed seed: the same data shows the same probabilities on every rerun.
    return arm_summary_from_totals(totals, rng=np.random.default_rng(0), n_draws=10_000)


# --- messages ----------------------------------------------------------------------------------


@st.cache_data(ttl=TTL_RECENT, show_spinner=False)
def messages_by_status(url: str, store_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Per channel and status: messages, cost, opened, clicked (created in the range)."""
    m = message_t
    opened = sa.exists().where(open_t.c.message_id == m.c.id)
    clicked = sa.exists().where(click_t.c.message_id == m.c.id)
    query = (
        sa.select(
            m.c.channel,
            m.c.status,
            sa.func.count().label("messages"),
            sa.func.coalesce(sa.func.sum(m.c.cost), 0.0).label("cost"),
            sa.func.sum(_flag(opened)).label("opened"),
            sa.func.sum(_flag(clicked)).label("clicked"),
        )
        .where(m.c.store_id == store_id, m.c.created_at >= start, m.c.created_at < end)
        .group_by(m.c.channel, m.c.status)
        .order_by(m.c.channel, m.c.status)
    )
    eng = engine(url)
    with eng.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    if frame.empty:
        return pd.DataFrame(columns=["channel", "status", "messages", "cost", "opened", "clicked"])
    return frame.astype({"messages": int, "opened": int, "clicked": int, "cost": float})


@st.cache_data(ttl=TTL_RECENT, show_spinner=False)
def recent_messages(
    url: str, store_id: str, start: datetime, end: datetime, limit: int = 50
) -> pd.DataFrame:
    """The newest messages with their opens and clicks; recipients masked."""
    m, d = message_t, decision_t
    opens = sa.select(sa.func.count()).where(open_t.c.message_id == m.c.id).scalar_subquery()
    clicks = sa.select(sa.func.count()).where(click_t.c.message_id == m.c.id).scalar_subquery()
    query = (
        sa.select(
            m.c.created_at,
            m.c.channel,
            m.c.recipient,
            d.c.touch,
            d.c.arm_key,
            m.c.status,
            m.c.delivery_status,
            m.c.cost,
            opens.label("opens"),
            clicks.label("clicks"),
            m.c.error,
        )
        .select_from(m.join(d, d.c.id == m.c.decision_id))
        .where(m.c.store_id == store_id, m.c.created_at >= start, m.c.created_at < end)
        .order_by(m.c.created_at.desc())
        .limit(limit)
    )
    eng = engine(url)
    with eng.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    if not frame.empty:
        frame["recipient"] = frame["recipient"].map(fmt.mask_address)
    return frame


@st.cache_data(ttl=TTL_RECENT, show_spinner=False)
def failures(url: str, store_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Failed sends by channel and reason (the decision's ``state_reason``), with the newest
    error text of each."""
    m, d = message_t, decision_t
    reason = sa.func.coalesce(d.c.state_reason, m.c.error_kind, "unknown")
    query = (
        sa.select(
            m.c.channel,
            reason.label("reason"),
            sa.func.max(m.c.error_kind).label("error_kind"),
            sa.func.count().label("messages"),
            sa.func.max(m.c.error).label("example"),
            sa.func.max(m.c.created_at).label("last"),
        )
        .select_from(m.join(d, d.c.id == m.c.decision_id))
        .where(
            m.c.store_id == store_id,
            m.c.created_at >= start,
            m.c.created_at < end,
            m.c.status == MessageStatus.FAILED,
        )
        .group_by(m.c.channel, reason)
        .order_by(sa.func.count().desc())
    )
    eng = engine(url)
    with eng.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all())


@st.cache_data(ttl=TTL_RECENT, show_spinner=False)
def skipped(url: str, store_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Touches that were not sent, by state and reason (holdout, no consent, cap, ordered…)."""
    d = decision_t
    query = (
        sa.select(
            d.c.state,
            sa.func.coalesce(d.c.state_reason, "—").label("reason"),
            sa.func.count().label("touches"),
        )
        .where(
            d.c.store_id == store_id,
            d.c.decided_at >= start,
            d.c.decided_at < end,
            d.c.state.in_(("skipped", "void")),
        )
        .group_by(d.c.state, d.c.state_reason)
        .order_by(sa.func.count().desc())
    )
    eng = engine(url)
    with eng.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all())


@st.cache_data(ttl=TTL_RECENT, show_spinner=False)
def suppressions(
    url: str, store_id: str, start: datetime, end: datetime, limit: int = 50
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per channel and reason: count; the newest suppressions, addresses masked)."""
    s = suppression_t
    where = (s.c.store_id == store_id, s.c.created_at >= start, s.c.created_at < end)
    by_reason = (
        sa.select(s.c.channel, s.c.reason, sa.func.count().label("addresses"))
        .where(*where)
        .group_by(s.c.channel, s.c.reason)
        .order_by(sa.func.count().desc())
    )
    recent = (
        sa.select(s.c.created_at, s.c.channel, s.c.address, s.c.reason)
        .where(*where)
        .order_by(s.c.created_at.desc())
        .limit(limit)
    )
    eng = engine(url)
    with eng.connect() as conn:
        counts = pd.DataFrame(conn.execute(by_reason).mappings().all())
        latest = pd.DataFrame(conn.execute(recent).mappings().all())
    if not latest.empty:
        latest["address"] = latest["address"].map(fmt.mask_address)
    return counts, latest


# --- the queue and the workers -----------------------------------------------------------------


@dataclass(frozen=True)
class QueueHealth:
    """Dramatiq's Redis keys for the worker queue (see dramatiq/brokers/redis/dispatch.lua):

    ``<ns>:<queue>`` is the list of ready message ids and ``<ns>:<queue>.msgs`` the hash of
    every message not yet acked (ready + being worked on); ``.DQ`` the same for delayed
    messages; ``.XQ`` a sorted set of dead-lettered ones; ``<ns>:__heartbeats__`` a sorted set
    of broker ids by their last call (a worker polls every second or so; the API only when it
    enqueues), and ``<ns>:sweep-lock`` is held by the worker that runs the sweep.
    """

    available: bool
    error: str | None = None
    ready: int = 0
    in_progress: int = 0
    delayed: int = 0
    dead: int = 0
    live_brokers: int = 0  # heartbeats within dramatiq's 60 s timeout
    last_heartbeat_s: float | None = None  # seconds since the newest heartbeat
    sweeping: bool = False
    details: dict[str, int] = field(default_factory=dict)


#: Dramatiq's own heartbeat timeout: a broker silent longer is considered dead.
HEARTBEAT_TIMEOUT_MS = 60_000


@st.cache_data(ttl=TTL_QUEUE, show_spinner=False)
def queue_health(redis_url: str | None, data_dir: str, namespace: str) -> QueueHealth:
    from pathlib import Path

    import redis

    from senders.actors import QUEUE
    from senders.broker import redis_client

    if redis_url is None and not (Path(data_dir) / "redis.db.settings").exists():
        # The embedded Redis runs while a worker or the demo does; the dashboard does not
        # start one of its own just to find it empty.
        return QueueHealth(available=False, error="embedded Redis not running")
    settings = Settings(redis_url=redis_url, data_dir=Path(data_dir), redis_namespace=namespace)
    base = f"{namespace}:{QUEUE}"
    try:
        client = redis_client(settings)
        pipe = client.pipeline(transaction=False)
        pipe.llen(base)
        pipe.hlen(f"{base}.msgs")
        pipe.hlen(f"{base}.DQ.msgs")
        pipe.zcard(f"{base}.XQ")
        pipe.time()
        pipe.pttl(f"{namespace}:sweep-lock")
        ready, unacked, delayed, dead, server_time, lock_ttl = pipe.execute()
        sec, usec = server_time[0], server_time[1]
        now_ms = int(sec) * 1000 + int(usec) // 1000
        beats: list[tuple[bytes, float]] = client.zrangebyscore(  # type: ignore[assignment]
            f"{namespace}:__heartbeats__", now_ms - HEARTBEAT_TIMEOUT_MS, "+inf", withscores=True
        )
    except (redis.RedisError, OSError) as exc:
        return QueueHealth(available=False, error=f"{type(exc).__name__}: {exc}"[:200])
    newest = max((score for _, score in beats), default=None)
    return QueueHealth(
        available=True,
        ready=int(ready),
        in_progress=max(0, int(unacked) - int(ready)),
        delayed=int(delayed),
        dead=int(dead),
        live_brokers=len(beats),
        last_heartbeat_s=None if newest is None else max(0.0, (now_ms - newest) / 1000.0),
        sweeping=int(lock_ttl) > 0,
    )


def clear_caches() -> None:
    """Forget every cached query (the refresh button, and tests between databases)."""
    st.cache_data.clear()
