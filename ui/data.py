"""What the dashboard shows: sums the database keeps per day (:mod:`store.rollups`), read
with small aggregate queries; Python only formats the handful of rows that come back.

Summing a million decisions with their messages and outcomes on every page view takes the
database seconds per question, so :mod:`experiments.rollups` keeps daily sums per store and
recomputes the days that can still change: synchronously the first time a store is shown,
then by the worker (``nudge worker``) and in the background here when they are older than
:func:`rollup_max_age` (and at once with the sidebar's refresh button). The lists of single
rows (recent sends, suppressions) are read live through ``(store_id, created_at)`` indexes.
Results are cached with short TTLs (``st.cache_data``).

The unit of the headline numbers is the **journey** (one abandonment of one cart, its touches
and its order), not the decision: an order is attributed to every open decision of the cart,
so summing per decision would count one order once per touch. A journey belongs to the day
on which its first touch was decided, and to the holdout when that touch was a holdout nobody
chose: an experiment's persistent holdout, or the holdout arm outside experiments (a bandit
choosing to send nothing is one of its treatments).

Statistics come from :mod:`experiments` (sufficient statistics are summed here and handed
over as :class:`experiments.stats.ArmTotals`, experiment cells as
:class:`experiments.tallies.Tallies`), so the dashboard, the CLI report and the API compute
every interval the same way.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.engine import Engine

from experiments import lifecycle, rollups
from experiments import report as exp_report
from experiments import roi as roi_mod
from experiments.stats import HOLDOUT, ArmStats, ArmTotals, arm_summary_from_totals
from experiments.tallies import Tallies
from settings import Settings
from store.db import get_engine
from store.models import MessageStatus, Suppression
from store.sql import flag as _flag
from ui import format as fmt

logger = logging.getLogger(__name__)

suppression_t: sa.Table = Suppression.__table__  # type: ignore[attr-defined]
# The tables the rollups and the lifecycle already hold handles of
click_t, decision_t = rollups.click_t, rollups.decision_t
message_t, open_t = rollups.message_t, rollups.open_t
store_t = lifecycle.store_t

#: Aggregates: a minute old at most. Recent sends and the queue: a few seconds.
TTL_AGGREGATE = 60
TTL_RECENT = 10
TTL_QUEUE = 5
TTL_STORES = 300


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
    """Every store with its currency (the most common of its carts, as the rollups last
    found it; USD before any cart)."""
    s, r = store_t, rollups.state_t
    with engine(url).connect() as conn:
        rows = conn.execute(
            sa.select(s.c.id, s.c.name, s.c.country, s.c.rules, r.c.currency)
            .select_from(s.outerjoin(r, r.c.store_id == s.c.id))
            .order_by(s.c.name)
        ).all()
        return [  # one row per store: a handful, never per cart
            StoreInfo(
                row.id,
                row.name,
                row.country,
                dict(row.rules or {}),
                row.currency or rollups.store_currency(conn, row.id),
            )
            for row in rows
        ]


# --- rollups -------------------------------------------------------------------------------------

#: How old a store's rollups may be before a page view refreshes them (the worker keeps them
#: younger than that; see ``experiments.rollups.max_age``).
rollup_max_age = rollups.max_age
ROLLUP_MAX_AGE = rollups.MAX_AGE


_refreshing: set[tuple[str, str]] = set()
_refreshing_lock = threading.Lock()


def refresh_rollups(url: str, store_id: str, window_days: float, *, full: bool = False) -> None:
    """Recompute the store's rollups now (``experiments.rollups.refresh``) and forget the
    cached queries that read them."""
    with engine(url).begin() as conn:
        rollups.refresh(
            conn, store_id=store_id, now=datetime.now(UTC), window_days=window_days, full=full
        )
    clear_caches()


def ensure_rollups(
    url: str, store_id: str, window_days: float, max_age: timedelta = ROLLUP_MAX_AGE
) -> datetime:
    """The time the store's rollups were computed: built now if they never were, refreshed in
    the background (this view reads the current ones) when older than ``max_age``."""
    with engine(url).connect() as conn:
        current = rollups.state(conn, store_id)
    now = datetime.now(UTC)
    if current is None:
        refresh_rollups(url, store_id, window_days)
        return now
    if now - current.refreshed_at > max_age:
        key = (url, store_id)
        with _refreshing_lock:
            if key in _refreshing:
                return current.refreshed_at  # type: ignore[no-any-return]
            _refreshing.add(key)

        def run() -> None:
            try:
                refresh_rollups(url, store_id, window_days)
            except Exception:  # a background thread has nobody to raise to: log it
                logger.exception("Refreshing the rollups of store %s failed", store_id)
            finally:
                with _refreshing_lock:
                    _refreshing.discard(key)

        threading.Thread(target=run, name=f"rollups-{store_id}", daemon=True).start()
    return current.refreshed_at  # type: ignore[no-any-return]


# --- journeys: the cohort behind the headline numbers ----------------------------------------

jday_t = rollups.journey_day_t
dday_t = rollups.decision_day_t
mday_t = rollups.message_day_t


def _days(table: sa.Table, store_id: str, start: datetime, end: datetime) -> list[Any]:
    """Rows of the store's rollup ``table`` for the UTC days of ``[start, end)``."""
    return [table.c.store_id == store_id, table.c.day >= start.date(), table.c.day < end.date()]


def _segment_column(dimension: str) -> sa.ColumnElement[Any]:
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {sorted(DIMENSIONS)}, not {dimension!r}")
    column = "value_band" if dimension == "cart_value" else dimension
    return jday_t.c[column]


def _totals_columns(margin_rate: float) -> list[Any]:
    """A group's journey totals, profit for ``margin_rate`` from the stored sums:
    ``sum profit^2 = m^2 revenue_sq - 2 m rev_cost + cost_sq``."""
    j = jday_t
    m = sa.literal(margin_rate, sa.Float)

    def total(x: Any, name: str) -> Any:
        return sa.func.coalesce(sa.func.sum(x), 0).label(name)

    return [
        total(j.c.journeys, "carts"),
        total(j.c.messaged, "sends"),
        total(j.c.opened, "opened"),
        total(j.c.clicked, "clicked"),
        total(j.c.converted, "conversions"),
        total(j.c.recovered, "recovered"),
        total(j.c.revenue, "revenue"),
        total(j.c.revenue_sq, "revenue_sq"),
        total(j.c.recovered_revenue, "recovered_revenue"),
        total(j.c.discount, "discount_cost"),
        total(j.c.cost, "message_cost"),
        total(j.c.revenue * m - j.c.discount - j.c.cost, "profit"),
        total(m * m * j.c.revenue_sq - 2 * m * j.c.rev_cost + j.c.cost_sq, "profit_sq"),
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
    is_holdout = _flag(jday_t.c.arm == HOLDOUT)
    with engine(url).connect() as conn:
        cday = rollups.cart_day_t
        abandoned = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(cday.c.abandoned), 0)).where(
                *_days(cday, store_id, start, end)
            )
        ).scalar_one()
        rows = conn.execute(
            sa.select(is_holdout.label("holdout"), *_totals_columns(margin_rate))
            .where(*_days(jday_t, store_id, start, end))
            .group_by(is_holdout)
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
    j = jday_t
    query = (
        sa.select(
            j.c.day,
            sa.func.sum(j.c.journeys).label("abandoned"),
            sa.func.sum(j.c.messaged).label("messaged"),
            sa.func.sum(j.c.clicked).label("clicked"),
            sa.func.sum(j.c.converted).label("ordered"),
            sa.func.sum(j.c.revenue).label("revenue"),
        )
        .where(*_days(j, store_id, start, end))
        .group_by(j.c.day)
        .order_by(j.c.day)
    )
    with engine(url).connect() as conn:
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
    d = dday_t
    query = (
        sa.select(
            d.c.channel,
            sa.func.sum(d.c.sends).label("sends"),
            sa.func.coalesce(sa.func.sum(d.c.message_cost), 0.0).label("message_cost"),
            sa.func.coalesce(sa.func.sum(d.c.discount), 0.0).label("discount_cost"),
        )
        .where(*_days(d, store_id, start, end), d.c.channel != "")
        .group_by(d.c.channel)
        .order_by(d.c.channel)
    )
    with engine(url).connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    if frame.empty:
        return pd.DataFrame(columns=["channel", "sends", "message_cost", "discount_cost"])
    return frame.astype({"sends": int, "message_cost": float, "discount_cost": float})


# --- segments ----------------------------------------------------------------------------------


def _segment_label(dimension: str, value: Any, currency: str) -> str:
    if dimension == "cart_value":
        return fmt.band_labels(currency)[int(value)]
    return str(value)


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
    seg = _segment_column(dimension)
    is_holdout = _flag(jday_t.c.arm == HOLDOUT)
    query = (
        sa.select(seg.label("segment"), is_holdout.label("holdout"), *_totals_columns(margin_rate))
        .where(*_days(jday_t, store_id, start, end))
        .group_by(seg, is_holdout)
    )
    with engine(url).connect() as conn:
        rows = conn.execute(query).all()
    out: dict[str, list[Group]] = {}
    for r in rows:  # one row per (segment, holdout): a handful
        pair = out.setdefault(_segment_label(dimension, r.segment, currency), [Group(), Group()])
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
    seg = _segment_column(dimension)
    query = (
        sa.select(seg.label("segment"), jday_t.c.arm, sa.func.sum(jday_t.c.journeys).label("n"))
        .where(*_days(jday_t, store_id, start, end))
        .group_by(seg, jday_t.c.arm)
    )
    with engine(url).connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    if frame.empty:
        return pd.DataFrame(columns=["segment", "arm", "n", "share"])
    frame["segment"] = [_segment_label(dimension, v, currency) for v in frame["segment"]]
    frame["n"] = frame["n"].astype(int)
    frame["share"] = frame["n"] / frame.groupby("segment")["n"].transform("sum")
    return frame.sort_values(["segment", "n"], ascending=[True, False], ignore_index=True)


# --- arms (per decision, as experiments.stats counts them) -------------------------------------


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def arm_stats(
    url: str, store_id: str, start: datetime, end: datetime, margin_rate: float
) -> list[ArmStats]:
    """Per-arm statistics of the decisions in the range (``experiments.stats``)."""
    d = dday_t
    m = sa.literal(margin_rate, sa.Float)
    query = (
        sa.select(
            d.c.arm_key.label("arm"),
            sa.func.sum(d.c.decisions).label("carts"),
            sa.func.sum(d.c.sends).label("sends"),
            sa.func.sum(d.c.conversions).label("conversions"),
            sa.func.sum(d.c.revenue).label("revenue"),
            sa.func.sum(d.c.revenue_sq).label("revenue_sq"),
            sa.func.sum(d.c.discount).label("discount_cost"),
            sa.func.sum(d.c.message_cost).label("message_cost"),
            sa.func.sum(d.c.revenue * m - d.c.discount - d.c.message_cost).label("profit"),
            sa.func.sum(m * m * d.c.revenue_sq - 2 * m * d.c.rev_cost + d.c.cost_sq).label(
                "profit_sq"
            ),
        )
        .where(*_days(d, store_id, start, end))
        .group_by(d.c.arm_key)
        .order_by(d.c.arm_key)
    )
    with engine(url).connect() as conn:
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


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def messages_by_status(url: str, store_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Per channel and status: messages, cost, opened, clicked (created in the range)."""
    m = mday_t
    query = (
        sa.select(
            m.c.channel,
            m.c.status,
            sa.func.sum(m.c.messages).label("messages"),
            sa.func.coalesce(sa.func.sum(m.c.cost), 0.0).label("cost"),
            sa.func.sum(m.c.opened).label("opened"),
            sa.func.sum(m.c.clicked).label("clicked"),
        )
        .where(*_days(m, store_id, start, end))
        .group_by(m.c.channel, m.c.status)
        .order_by(m.c.channel, m.c.status)
    )
    with engine(url).connect() as conn:
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


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def failures(url: str, store_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Failed sends by channel and reason (the decision's ``state_reason``), with the newest
    error text of each."""
    m = mday_t
    messages = sa.func.sum(m.c.messages)
    query = (
        sa.select(
            m.c.channel,
            m.c.reason,
            sa.func.max(sa.func.nullif(m.c.error_kind, "")).label("error_kind"),
            messages.label("messages"),
            sa.func.max(m.c.example).label("example"),
            sa.func.max(m.c.last_at).label("last"),
        )
        .where(*_days(m, store_id, start, end), m.c.status == MessageStatus.FAILED)
        .group_by(m.c.channel, m.c.reason)
        .order_by(messages.desc())
    )
    with engine(url).connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    if not frame.empty:
        frame["messages"] = frame["messages"].astype(int)
    return frame


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def skipped(url: str, store_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Touches that were not sent, by state and reason (holdout, no consent, cap, ordered…)."""
    d = dday_t
    touches = sa.func.sum(d.c.decisions)
    query = (
        sa.select(d.c.state, d.c.reason, touches.label("touches"))
        .where(*_days(d, store_id, start, end), d.c.state.in_(("skipped", "void")))
        .group_by(d.c.state, d.c.reason)
        .order_by(touches.desc())
    )
    with engine(url).connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    if not frame.empty:
        frame["reason"] = frame["reason"].replace("", "—")
        frame["touches"] = frame["touches"].astype(int)
    return frame


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


# --- experiments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentRow:
    """One line of the experiments list."""

    id: str
    name: str
    status: str
    mode: str
    arms: tuple[str, ...]
    holdout_share: float
    attribution_window_days: float
    touch: int | None
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    winner: str | None
    decisions: int


@st.cache_data(ttl=TTL_RECENT, show_spinner=False)
def experiments(url: str, store_id: str) -> list[ExperimentRow]:
    """The store's experiments, newest first, with how many touches each decided."""
    cells = rollups.experiment_cell_t
    with engine(url).connect() as conn:
        rows = lifecycle.list_experiments(conn, store_id=store_id)
        if not rows:
            return []
        counts: dict[str, int] = dict(
            conn.execute(
                sa.select(cells.c.experiment_id, sa.func.sum(cells.c.decisions))
                .where(cells.c.experiment_id.in_([r.id for r in rows]), cells.c.unit == "decision")
                .group_by(cells.c.experiment_id)
            ).all()
        )
    return [
        ExperimentRow(
            id=r.id,
            name=r.name,
            status=r.status,
            mode=r.mode,
            arms=tuple(r.arms),
            holdout_share=float(r.holdout_share),
            attribution_window_days=float(r.attribution_window_days),
            touch=r.touch,
            created_at=r.created_at,
            started_at=r.started_at,
            stopped_at=r.stopped_at,
            winner=r.winner,
            decisions=int(counts.get(r.id) or 0),
        )
        for r in rows
    ]


@st.cache_data(ttl=TTL_AGGREGATE, show_spinner=False)
def experiment_report(
    url: str, store_id: str, name: str, first_day: date, last_day: date
) -> exp_report.ExperimentReport:
    """The experiment's report (``experiments.report.summarize``, as the CLI and the API
    compute it) from its stored cells; ROI over ``[first_day, last_day]``, everything else
    over the whole experiment."""
    with engine(url).connect() as conn:
        exp = lifecycle.get(conn, store_id=store_id, name=name)
        cells = {
            unit: Tallies.from_rows(rollups.experiment_cells(conn, experiment_id=exp.id, unit=unit))
            for unit in exp_report.UNITS
        }
    return exp_report.summarize(
        exp, cells["decision"], cells["journey"], start=first_day, end=last_day
    )


def experiment_spec(url: str, store_id: str, name: str) -> lifecycle.Spec:
    with engine(url).connect() as conn:
        return lifecycle.spec_of(lifecycle.get(conn, store_id=store_id, name=name))


def act_on_experiment(
    url: str, store_id: str, name: str, action: str, arm: str | None = None
) -> None:
    """start / pause / stop / promote (``arm``), as ``nudge experiment …`` does; raises
    :class:`experiments.lifecycle.ExperimentError` with the reason when it cannot."""
    now = datetime.now(UTC)
    with engine(url).begin() as conn:
        if action == "promote":
            if arm is None:
                raise lifecycle.ExperimentError("pick the arm to promote")
            lifecycle.promote(conn, store_id=store_id, name=name, arm_key=arm, now=now)
        else:
            lifecycle.transition(conn, store_id=store_id, name=name, action=action, now=now)
    clear_caches()


def save_experiment(
    url: str, store_id: str, editing: str | None, spec: lifecycle.Spec
) -> dict[str, Any]:
    """Create ``spec`` (``editing`` None) or change the experiment ``editing`` to it, with the
    lifecycle's validation (its :class:`~experiments.lifecycle.ExperimentError` says why not)."""
    now = datetime.now(UTC)
    with engine(url).begin() as conn:
        if editing is None:
            row = lifecycle.create(conn, store_id=store_id, spec=spec, now=now)
        else:
            row = lifecycle.update(conn, store_id=store_id, name=editing, spec=spec, now=now)
    clear_caches()
    return row


# --- messaging rules ---------------------------------------------------------------------------


def save_rules(url: str, store_id: str, country: str, overrides: dict[str, Any]) -> None:
    """Store the messaging rules that differ from the country's preset (empty: the preset).

    Raises ``ValueError`` saying what is wrong; nothing is stored then.
    """
    from senders.compliance import PRESETS, Rules

    rules = Rules.for_store(country, overrides)  # unknown keys, bad times: ValueError
    if (rules.quiet_start is None) != (rules.quiet_end is None):
        raise ValueError("quiet hours need both a start and an end")
    if rules.quiet_start is not None and rules.quiet_start == rules.quiet_end:
        raise ValueError("quiet hours must start and end at different times")
    for key in ("sms_per_day", "messages_per_week"):
        value = getattr(rules, key)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"{key} must be a whole number of 0 or more, or empty for no cap")
    preset = PRESETS.get(country.upper(), PRESETS["US"])
    stored = {}
    for key, value in overrides.items():
        if value != getattr(preset, key):
            stored[key] = value.strftime("%H:%M") if hasattr(value, "strftime") else value
    with engine(url).begin() as conn:
        conn.execute(sa.update(store_t).where(store_t.c.id == store_id).values(rules=stored))
    clear_caches()
