"""Altair charts of the dashboard; every title and axis through :func:`ui.i18n.t`."""

from __future__ import annotations

from datetime import date

import altair as alt
import pandas as pd

from experiments.stats import Density
from ui.i18n import t

FUNNEL_STEPS = ("abandoned", "messaged", "opened", "clicked", "ordered")


def funnel(counts: dict[str, int]) -> alt.LayerChart:
    frame = pd.DataFrame(
        {
            "step": [t(f"funnel.{s}") for s in FUNNEL_STEPS],
            "journeys": [counts[s] for s in FUNNEL_STEPS],
            "order": list(range(len(FUNNEL_STEPS))),
        }
    )
    top = max(1, counts["abandoned"])
    frame["share"] = frame["journeys"] / top
    base = alt.Chart(frame).encode(
        y=alt.Y("step:N", sort=alt.SortField("order"), title=None),
        x=alt.X("journeys:Q", title=t("col.journeys")),
        tooltip=[
            alt.Tooltip("step:N", title=t("col.step")),
            alt.Tooltip("journeys:Q", title=t("col.journeys")),
            alt.Tooltip("share:Q", format=".1%", title=t("col.share")),
        ],
    )
    bars = base.mark_bar(color="#4C78A8")
    labels = base.mark_text(align="left", dx=4).encode(text=alt.Text("share:Q", format=".1%"))
    chart: alt.LayerChart = (bars + labels).properties(height=220)
    return chart


def trend(daily: pd.DataFrame) -> alt.Chart:
    series = ["abandoned", "messaged", "clicked", "ordered"]
    names = {s: t(f"funnel.{s}") for s in series}
    long = daily.melt(id_vars=["day"], value_vars=series, var_name="series", value_name="n")
    long["series"] = long["series"].map(names)
    chart: alt.Chart = (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("day:T", title=t("col.day")),
            y=alt.Y("n:Q", title=t("col.journeys")),
            color=alt.Color("series:N", title=t("col.series"), sort=[names[s] for s in series]),
            tooltip=[
                alt.Tooltip("day:T", title=t("col.day")),
                alt.Tooltip("series:N", title=t("col.series")),
                alt.Tooltip("n:Q", title=t("col.count")),
            ],
        )
        .properties(height=260)
    )
    return chart


def spend(by_channel: pd.DataFrame, currency: str) -> alt.Chart:
    kinds = {"message_cost": t("col.message_cost"), "discount_cost": t("col.discount_cost")}
    long = by_channel.melt(
        id_vars=["channel"], value_vars=list(kinds), var_name="kind", value_name="amount"
    )
    long["kind"] = long["kind"].map(kinds)
    chart: alt.Chart = (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("channel:N", title=t("col.channel")),
            y=alt.Y("amount:Q", title=f"{t('col.amount')} ({currency})", stack=True),
            color=alt.Color("kind:N", title=t("col.kind")),
            tooltip=[
                alt.Tooltip("channel:N", title=t("col.channel")),
                alt.Tooltip("kind:N", title=t("col.kind")),
                alt.Tooltip("amount:Q", format=",.2f", title=t("col.amount")),
            ],
        )
        .properties(height=220)
    )
    return chart


def segment_rates(frame: pd.DataFrame) -> alt.Chart:
    """Grouped bars: treated vs holdout conversion per segment."""
    long = frame.melt(
        id_vars=["segment"], value_vars=["treated", "holdout"], var_name="group", value_name="rate"
    )
    names = {"treated": t("col.treated"), "holdout": t("col.holdout")}
    long["group"] = long["group"].map(names)
    chart: alt.Chart = (
        alt.Chart(long.dropna())
        .mark_bar()
        .encode(
            x=alt.X("segment:N", title=t("col.segment"), sort=list(frame["segment"])),
            xOffset=alt.XOffset("group:N"),
            y=alt.Y("rate:Q", title=t("col.rate"), axis=alt.Axis(format="%")),
            color=alt.Color("group:N", title=None),
            tooltip=[
                alt.Tooltip("segment:N", title=t("col.segment")),
                alt.Tooltip("group:N", title=" "),
                alt.Tooltip("rate:Q", format=".1%", title=t("col.rate")),
            ],
        )
        .properties(height=240)
    )
    return chart


# --- experiments -------------------------------------------------------------------------------


def posterior(densities: list[Density], metric: str, currency: str) -> alt.Chart:
    """Each arm's posterior density, overlaid (``experiments.stats.posterior_densities``)."""
    frame = pd.DataFrame(
        [(d.arm, x, y) for d in densities for x, y in zip(d.x, d.y, strict=True)],
        columns=["arm", "x", "density"],
    )
    axis = (
        alt.Axis(format="%", title=t("col.rate"))
        if metric == "conversion"
        else alt.Axis(title=f"{t('col.profit_per_cart')} ({currency})")
    )
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_area(opacity=0.35, line=True)
        .encode(
            x=alt.X("x:Q", axis=axis),
            y=alt.Y("density:Q", title=t("col.density"), stack=None),
            color=alt.Color("arm:N", title=t("col.arm")),
            tooltip=[
                alt.Tooltip("arm:N", title=t("col.arm")),
                alt.Tooltip("x:Q", format=".1%" if metric == "conversion" else ",.2f"),
            ],
        )
        .properties(height=260)
    )
    return chart


def traffic_share(days: list[date], traffic: dict[str, list[int]]) -> alt.Chart:
    """Share of the day's decisions per arm, stacked to 100%."""
    frame = pd.DataFrame(
        [
            (day, arm, n)
            for arm, counts in traffic.items()
            for day, n in zip(days, counts, strict=True)
        ],
        columns=["day", "arm", "decisions"],
    )
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_area()
        .encode(
            x=alt.X("day:T", title=t("col.day")),
            y=alt.Y(
                "decisions:Q",
                stack="normalize",
                axis=alt.Axis(format="%"),
                title=t("col.traffic_share"),
            ),
            color=alt.Color("arm:N", title=t("col.arm")),
            tooltip=[
                alt.Tooltip("day:T", title=t("col.day")),
                alt.Tooltip("arm:N", title=t("col.arm")),
                alt.Tooltip("decisions:Q", title=t("col.decisions")),
            ],
        )
        .properties(height=260)
    )
    return chart


def incremental_profit(points: pd.DataFrame, currency: str) -> alt.LayerChart:
    """Cumulative incremental profit per day: the always-valid band, the one-look interval,
    the estimate, and zero."""
    base = alt.Chart(points).encode(x=alt.X("day:T", title=t("col.day")))
    money_title = f"{t('col.inc_profit')} ({currency})"
    band = base.mark_area(opacity=0.18, color="#4C78A8").encode(
        y=alt.Y("cs_low:Q", title=money_title), y2="cs_high:Q"
    )
    interval = base.mark_area(opacity=0.3, color="#4C78A8").encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True, color="#1F4E79").encode(
        y="value:Q",
        tooltip=[
            alt.Tooltip("day:T", title=t("col.day")),
            alt.Tooltip("value:Q", format=",.2f", title=t("col.inc_profit")),
            alt.Tooltip("low:Q", format=",.2f", title=t("chart.interval_low")),
            alt.Tooltip("high:Q", format=",.2f", title=t("chart.interval_high")),
            alt.Tooltip("cs_low:Q", format=",.2f", title=t("chart.cs_low")),
            alt.Tooltip("cs_high:Q", format=",.2f", title=t("chart.cs_high")),
        ],
    )
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="#888", strokeDash=[4, 4])
    chart: alt.LayerChart = (band + interval + line + zero.encode(y="y:Q")).properties(height=260)
    return chart


def p_values(days: list[date], p: list[float], alpha: float = 0.05) -> alt.LayerChart:
    """The always-valid p-value at each daily look, with the significance line."""
    frame = pd.DataFrame({"day": days, "p": p})
    line = (
        alt.Chart(frame)
        .mark_line(point=True, interpolate="step-after")
        .encode(
            x=alt.X("day:T", title=t("col.day")),
            y=alt.Y("p:Q", title=t("col.always_valid_p"), scale=alt.Scale(domain=[0, 1])),
            tooltip=[
                alt.Tooltip("day:T", title=t("col.day")),
                alt.Tooltip("p:Q", format=".4f", title="p"),
            ],
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"alpha": [alpha]}))
        .mark_rule(color="#C44E52", strokeDash=[4, 4])
        .encode(y="alpha:Q")
    )
    chart: alt.LayerChart = (line + rule).properties(height=260)
    return chart
