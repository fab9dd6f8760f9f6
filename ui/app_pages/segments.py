"""Segments: the overview's numbers by device, new/returning, cart value, checkout stage and
channel, and the arm the policy chose most for each."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from experiments.stats import Estimate
from ui import charts, context, data
from ui import format as fmt
from ui.i18n import bound, t

f = context.filters()
tr = bound()  # t() for format_func: in the language of this run
cur = f.currency
st.title(t("segments.title"))
dimension = (
    st.segmented_control(
        t("segments.dimension"),
        options=list(data.DIMENSIONS),
        format_func=lambda d: tr(f"dim.{d}"),
        default="device",
        key="dimension",
    )
    or "device"
)

groups = data.segment_groups(f.url, f.store.id, f.start, f.end, dimension, f.margin_rate, cur)
if not groups:
    st.info(t("empty.no_carts"), icon=":material/shopping_cart_off:")
    st.stop()
arms = data.segment_arms(f.url, f.store.id, f.start, f.end, dimension, cur)
top = arms.drop_duplicates("segment").set_index("segment") if not arms.empty else None


def _preferred(segment: str) -> str:
    if top is None or segment not in top.index:
        return "—"
    row = top.loc[segment]
    return f"{row['arm']} ({fmt.pct(float(row['share']), 0)})"


rows = []
for segment, (treated, holdout) in groups.items():  # one per segment: a handful
    est = data.incremental(treated, holdout, group=segment)
    rows.append(
        {
            "segment": segment,
            "treated_carts": treated.carts,
            "holdout_carts": holdout.carts,
            "sends": treated.sends,
            "treated": est.treated_conversion_rate,
            "holdout": est.holdout_conversion_rate,
            "recovered": treated.recovered,
            "recovered_revenue": treated.recovered_revenue,
            "inc_orders": est.incremental_conversions,
            "inc_profit": est.incremental_profit,
            "preferred": _preferred(segment),
        }
    )
frame = pd.DataFrame(rows)


def _show(x: float, money: bool) -> str:
    return fmt.money(x, cur) if money else f"{x:,.1f}"


def _est(e: Estimate | None, money: bool) -> str:
    if e is None:
        return "—"
    return f"{_show(e.value, money)} ({_show(e.low, money)} … {_show(e.high, money)})"


st.dataframe(
    pd.DataFrame(
        {
            t("col.segment"): frame["segment"],
            t("col.treated"): frame["treated_carts"],
            t("col.holdout"): frame["holdout_carts"],
            t("col.sends"): frame["sends"],
            t("col.treated_rate"): frame["treated"].map(fmt.pct),
            t("col.holdout_rate"): frame["holdout"].map(fmt.pct),
            t("col.recovered"): frame["recovered"],
            t("col.recovered_revenue"): frame["recovered_revenue"].map(lambda x: fmt.money(x, cur)),
            t("col.inc_orders"): frame["inc_orders"].map(lambda e: _est(e, money=False)),
            t("col.inc_profit"): frame["inc_profit"].map(lambda e: _est(e, money=True)),
            t("col.preferred"): frame["preferred"],
        }
    ),
    hide_index=True,
    width="stretch",
)
st.caption(t("segments.note"))
st.subheader(t("segments.chart"))
st.altair_chart(
    charts.segment_rates(
        frame[["segment", "treated", "holdout"]].astype({"treated": float, "holdout": float})
    ),
    width="stretch",
)
