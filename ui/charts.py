"""Altair charts of the dashboard; every title and axis through :func:`ui.i18n.t`."""

from __future__ import annotations

import altair as alt
import pandas as pd

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
