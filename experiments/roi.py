"""Return on investment: what recovery messages *added*, measured against the holdout.

Cart-recovery tools usually report "recovered revenue": every order placed after a message.
Many of those customers would have bought anyway. Nudge reports that number (as
``attributed_revenue``, so it can be compared with what other tools claim) next to the
**incremental** effect, estimated against the holdout (send nothing):

    incremental X = (mean X per treated cart - mean X per holdout cart) * treated carts

for X in conversions, revenue and profit (``revenue * margin - discount - message cost``),
with a Welch interval on the difference of means scaled the same way. The estimand is the
expected effect on a population like the treated carts (both samples' noise counts).

    ROI = incremental profit / (discount cost + message cost)

Incremental profit is already net of both costs, so this is the usual ``(gain - cost) / cost``:
ROI 2.0 means every dollar spent on messages and discounts came back plus two more. ``None``
when nothing was spent.

Assumptions, stated where the numbers are shown:
    * the holdout is assigned at random with a fixed share, independent of the cart (as the
      experiment's ``holdout share`` does); if a bandit chose the holdout adaptively, use
      :mod:`experiments.ope` instead;
    * one row per cart: with several touches per cart, pass one row per cart carrying the
      cart's outcome and the summed costs of its touches, or rates are per decision;
    * per channel, treated carts of a channel are compared with the whole holdout. Unless
      channels were randomised (``ab`` mode), a bandit sends each channel to the carts it
      suits, so a channel's figure mixes its effect with its audience.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Literal

import numpy as np

from experiments.stats import (
    HOLDOUT,
    ArmTotals,
    Estimate,
    Outcomes,
    difference_interval,
    lift_path,
)
from experiments.tallies import Tallies

GroupBy = Literal["channel", "segment"]
ALL = "all"


@dataclass(frozen=True)
class ROIRow:
    """ROI of one group (``"all"``, a channel or a segment) over a date range."""

    group: str
    treated_carts: int
    holdout_carts: int
    sends: int
    attributed_orders: int  # converted treated carts whose message went out
    attributed_revenue: float  # "recovered revenue" as other tools report it
    treated_conversion_rate: float | None
    holdout_conversion_rate: float | None
    incremental_conversions: Estimate | None
    incremental_revenue: Estimate | None
    incremental_profit: Estimate | None
    discount_cost: float
    message_cost: float
    roi: Estimate | None  # incremental profit / (discount + message cost)
    message: str | None = None

    @property
    def cost(self) -> float:
        return self.discount_cost + self.message_cost


def roi_report(
    outcomes: Outcomes,
    *,
    margin_rate: float,
    holdout: str = HOLDOUT,
    group_by: GroupBy | None = None,
    start: int | date | None = None,
    end: int | date | None = None,
    alpha: float = 0.05,
) -> list[ROIRow]:
    """ROI rows: one for everything, or one per channel / segment, over ``[start, end]``.

    Args:
        outcomes: decision rows (see the module notes on one row per cart).
        margin_rate: gross margin on revenue.
        holdout: the arm key of the holdout; every other arm counts as treated.
        group_by: ``None`` for one ``"all"`` row, ``"channel"`` (treated carts by channel,
            each against the whole holdout), or ``"segment"`` (treated and holdout both
            split by segment).
        start: first day included (a ``date`` or a day index as in ``Outcomes.day``).
        end: last day included.
        alpha: 1 - confidence level of the intervals.

    Example:
        >>> o = Outcomes.from_sequences(
        ...     arm=["email/60m/0%"] * 4 + ["holdout"] * 4,
        ...     converted=[True, True, False, False, True, False, False, False],
        ...     revenue=[100.0, 100.0, 0, 0, 100.0, 0, 0, 0],
        ...     message_cost=[1.0] * 4 + [0.0] * 4)
        >>> row = roi_report(o, margin_rate=0.5)[0]
        >>> row.attributed_revenue, row.incremental_revenue.value, row.roi.value
        (200.0, 100.0, 11.5)
    """
    if group_by == "segment" and outcomes.segment is None:
        raise ValueError("group_by='segment' needs Outcomes.segment")
    o = outcomes.in_days(start, end)
    return roi_from_tallies(
        Tallies.from_outcomes(o, margin_rate=margin_rate),
        holdout=holdout,
        group_by=group_by,
        alpha=alpha,
    )


def roi_from_tallies(
    tallies: Tallies,
    *,
    holdout: str = HOLDOUT,
    group_by: GroupBy | None = None,
    start: int | date | None = None,
    end: int | date | None = None,
    alpha: float = 0.05,
) -> list[ROIRow]:
    """:func:`roi_report` from cells of sufficient statistics (see :mod:`experiments.tallies`)."""
    if group_by not in (None, "channel", "segment"):
        raise ValueError(f"group_by must be None, 'channel' or 'segment', not {group_by!r}")
    o = tallies.in_days(start, end)
    treated = o.arm != holdout
    n = len(o)
    if group_by is None:
        t_lab = np.full(n, ALL)
        c_lab = t_lab
    elif group_by == "channel":
        t_lab = o.channel
        c_lab = np.full(n, ALL)
    else:
        t_lab = o.segment
        c_lab = o.segment
    t_cells, c_cells = o.select(treated), o.select(~treated)
    t_tot = t_cells.totals_by(t_lab[treated])
    c_tot = c_cells.totals_by(c_lab[~treated])
    a_tot = t_cells.attributed_by(t_lab[treated])
    groups = sorted(set(t_tot) | (set(c_tot) if group_by != "channel" else set()))
    if not groups:
        groups = [ALL]
    rows = []
    for g in groups:
        control = c_tot.get(ALL if group_by == "channel" else g, ArmTotals())
        rows.append(
            roi_from_totals(
                str(g), t_tot.get(g, ArmTotals()), control, a_tot.get(g, ArmTotals()), alpha=alpha
            )
        )
    return rows


def roi_from_totals(
    group: str, t: ArmTotals, c: ArmTotals, attributed: ArmTotals, *, alpha: float = 0.05
) -> ROIRow:
    """One ROI row from sufficient statistics: treated ``t``, holdout ``c``, and the treated
    decisions that converted after their message went out (``attributed``; only its
    ``conversions`` and ``revenue`` are read).

    Example:
        >>> t = ArmTotals(carts=4, sends=4, conversions=2, revenue=200.0, revenue_sq=20000.0,
        ...               message_cost=4.0, profit=96.0, profit_sq=4804.0)
        >>> c = ArmTotals(carts=4, conversions=1, revenue=100.0, revenue_sq=10000.0,
        ...               profit=50.0, profit_sq=2500.0)
        >>> roi_from_totals("all", t, c, ArmTotals(conversions=2, revenue=200.0)).roi.value
        11.5
    """
    cost = t.discount_cost + t.message_cost
    base = ROIRow(
        group=group,
        treated_carts=t.carts,
        holdout_carts=c.carts,
        sends=t.sends,
        attributed_orders=attributed.conversions,
        attributed_revenue=attributed.revenue,
        treated_conversion_rate=t.conversion_rate,
        holdout_conversion_rate=c.conversion_rate,
        incremental_conversions=None,
        incremental_revenue=None,
        incremental_profit=None,
        discount_cost=t.discount_cost,
        message_cost=t.message_cost,
        roi=None,
    )
    if t.carts < 2 or c.carts < 2:
        who = "treated carts" if t.carts < 2 else "holdout carts"
        return replace(base, message=f"fewer than 2 {who}: no incremental estimate")
    nt, nc = t.carts, c.carts
    pt, pc = t.conversions / nt, c.conversions / nc

    def scaled(mt: float, vt: float, mc: float, vc: float) -> Estimate:
        d, lo, hi, *_ = difference_interval(mt, vt / nt, mc, vc / nc, alpha=alpha)
        return Estimate(float(d) * nt, float(lo) * nt, float(hi) * nt)

    inc_conv = scaled(pt, pt * (1 - pt) * nt / (nt - 1), pc, pc * (1 - pc) * nc / (nc - 1))
    inc_rev = scaled(t.revenue / nt, t.revenue_var or 0.0, c.revenue / nc, c.revenue_var or 0.0)
    inc_prof = scaled(t.profit / nt, t.profit_var or 0.0, c.profit / nc, c.profit_var or 0.0)
    # The costs are observed totals, not estimates, so ROI's interval is the incremental
    # profit's divided by them.
    roi = (
        Estimate(inc_prof.value / cost, inc_prof.low / cost, inc_prof.high / cost)
        if cost > 0
        else None
    )
    notes = []
    if cost == 0:
        notes.append("no discount or message cost: ROI undefined")
    if inc_prof.low == inc_prof.high:
        notes.append("zero variance: the interval has width 0")
    return replace(
        base,
        incremental_conversions=inc_conv,
        incremental_revenue=inc_rev,
        incremental_profit=inc_prof,
        roi=roi,
        message="; ".join(notes) or None,
    )


@dataclass(frozen=True)
class ProfitPoint:
    """Cumulative incremental profit against the holdout up to one look (a day).

    ``value = (mean profit per treated cart - mean per holdout cart) * treated carts``, as
    :func:`roi_report` computes it, on the data up to this look; ``low``/``high`` its
    fixed-horizon interval (valid for this look alone) and ``cs_low``/``cs_high`` the
    always-valid confidence sequence (valid however many looks are taken), both scaled the
    same way. ``None`` until both groups have 2 carts.
    """

    look: int  # the look's label (e.g. a day's ordinal)
    treated_carts: int
    holdout_carts: int
    value: float | None
    low: float | None
    high: float | None
    cs_low: float | None
    cs_high: float | None


def incremental_profit_path(
    treated_looks: list[ArmTotals],
    holdout_looks: list[ArmTotals],
    *,
    looks: list[int] | None = None,
    alpha: float = 0.05,
) -> list[ProfitPoint]:
    """Cumulative incremental profit at every look, from per-look increments.

    Example:
        >>> t = [ArmTotals(carts=100, profit=700.0, profit_sq=24500.0)] * 2
        >>> c = [ArmTotals(carts=100, profit=350.0, profit_sq=12250.0)] * 2
        >>> [round(p.value) for p in incremental_profit_path(t, c)]
        [350, 700]
    """
    path = lift_path(treated_looks, holdout_looks, metric="profit", alpha=alpha)
    labels = list(range(len(treated_looks))) if looks is None else list(looks)
    if len(labels) != len(treated_looks):
        raise ValueError("looks must label every look")
    points = []
    for i, look in enumerate(labels):
        nt, nc = path.treatment_carts[i], path.control_carts[i]

        def scaled(x: float, nt: int = nt, ok: bool = nt >= 2 and nc >= 2) -> float | None:
            return x * nt if ok and np.isfinite(x) else None

        points.append(
            ProfitPoint(
                look=look,
                treated_carts=nt,
                holdout_carts=nc,
                value=scaled(path.difference[i]),
                low=scaled(path.low[i]),
                high=scaled(path.high[i]),
                cs_low=scaled(path.cs_low[i]),
                cs_high=scaled(path.cs_high[i]),
            )
        )
    return points
