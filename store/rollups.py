"""Daily rollups the dashboard reads: sums per store, day and a few dimensions.

Summing a million decisions with their messages, outcomes, opens and clicks takes the
database seconds per question; the dashboard asks a dozen questions per page. So the sums are
kept here, per day, and recomputed for the days that can still change (``experiments.rollups``
owns the arithmetic); a page then sums a few thousand rows. Sums of squares and cross
products are kept so that any margin rate gives exact profits and variances:
``profit = m*revenue - discount - cost`` and
``sum profit^2 = m^2*revenue_sq - 2m*rev_cost + cost_sq`` with ``cost = discount + message
cost``.

Imported by :mod:`store.models` (so migrations and tests see the tables).
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from store.types import UTCDateTime


class RollupState(SQLModel, table=True):
    """When a store's rollups were last recomputed (a row exists once they were built)."""

    __tablename__ = "rollup_state"

    store_id: str = Field(foreign_key="store.id", primary_key=True, max_length=32)
    refreshed_at: datetime = Field(sa_type=UTCDateTime)
    full_at: datetime = Field(sa_type=UTCDateTime)  # the last rebuild of every day
    since: date | None = None  # the first day the last refresh recomputed (None: all)
    seconds: float = 0.0  # how long it took
    currency: str = Field(default="USD", max_length=3)  # the most common of the store's carts'


class RollupCartDay(SQLModel, table=True):
    """Abandoned carts by the day of their latest abandonment."""

    __tablename__ = "rollup_cart_day"
    __table_args__ = (sa.Index("ix_rollup_cart_day_store_day", "store_id", "day"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    day: date
    abandoned: int = 0


class RollupJourneyDay(SQLModel, table=True):
    """Journeys by the day of their first touch, that touch's arm and the cart's segments."""

    __tablename__ = "rollup_journey_day"
    __table_args__ = (sa.Index("ix_rollup_journey_day_store_day", "store_id", "day"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    day: date
    arm: str = Field(max_length=64)  # the first touch's arm ("holdout": nothing sent)
    channel: str = Field(max_length=16)  # the first touch's channel ("holdout" for none)
    device: str = Field(max_length=32)
    customer_type: str = Field(max_length=32)
    value_band: int  # index of the cart value band, in the store's currency
    checkout_stage: str = Field(max_length=32)
    journeys: int = 0
    messaged: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    recovered: int = 0  # converted after a message went out
    revenue: float = 0.0
    revenue_sq: float = 0.0
    recovered_revenue: float = 0.0
    discount: float = 0.0
    cost: float = 0.0
    rev_cost: float = 0.0  # sum revenue * (discount + cost)
    cost_sq: float = 0.0  # sum (discount + cost)^2


class RollupDecisionDay(SQLModel, table=True):
    """Touch decisions by day, arm, channel and state."""

    __tablename__ = "rollup_decision_day"
    __table_args__ = (sa.Index("ix_rollup_decision_day_store_day", "store_id", "day"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    day: date
    arm_key: str = Field(max_length=64)
    channel: str = Field(max_length=16)  # "" for none
    state: str = Field(max_length=16)
    reason: str = Field(max_length=64)  # "" for none
    decisions: int = 0
    sends: int = 0
    conversions: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0
    discount: float = 0.0
    message_cost: float = 0.0
    rev_cost: float = 0.0
    cost_sq: float = 0.0


class RollupMessageDay(SQLModel, table=True):
    """Messages by the day they were created, channel and status; failed ones also by
    reason, with the newest error text."""

    __tablename__ = "rollup_message_day"
    __table_args__ = (sa.Index("ix_rollup_message_day_store_day", "store_id", "day"),)

    id: int | None = Field(default=None, primary_key=True)
    store_id: str = Field(foreign_key="store.id", max_length=32)
    day: date
    channel: str = Field(max_length=16)
    status: str = Field(max_length=16)
    reason: str = Field(max_length=64)  # failed: the decision's reason or the error's kind
    error_kind: str = Field(max_length=16)  # "" for none
    messages: int = 0
    cost: float = 0.0
    opened: int = 0
    clicked: int = 0
    example: str | None = Field(default=None, max_length=500)  # the greatest error text
    last_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RollupExperimentCell(SQLModel, table=True):
    """An experiment's cells (``experiments.tallies``): per unit (decision or journey), day,
    arm label and segment."""

    __tablename__ = "rollup_experiment_cell"
    __table_args__ = (
        sa.Index("ix_rollup_experiment_cell_experiment_day", "experiment_id", "unit", "day"),
    )

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: str = Field(foreign_key="experiment.id", max_length=32)
    unit: str = Field(max_length=8)  # "decision" | "journey"
    day: date
    arm: str = Field(max_length=64)
    segment: str = Field(max_length=32)
    carts: int = 0
    sends: int = 0
    conversions: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0
    discount_cost: float = 0.0
    message_cost: float = 0.0
    profit: float = 0.0
    profit_sq: float = 0.0
    attributed_orders: int = 0
    attributed_revenue: float = 0.0
    w: float = 0.0
    wr: float = 0.0
    w2: float = 0.0
    w2r: float = 0.0
    w2r2: float = 0.0
    decisions: int = 0
