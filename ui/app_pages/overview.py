"""Overview: what was abandoned, reached and recovered, and what the messages added."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from experiments.stats import Estimate
from ui import charts, context, data
from ui import format as fmt
from ui.i18n import t

f = context.filters()
cur = f.currency
st.title(t("overview.title"))
last_day = f.end - timedelta(days=1)  # `end` is exclusive
st.caption(f"{f.store.name} · {f.start:%Y-%m-%d} – {last_day:%Y-%m-%d} UTC")

ov = data.overview(f.url, f.store.id, f.start, f.end, f.margin_rate)
everyone = ov.journeys
if ov.abandoned == 0 and everyone.carts == 0:
    st.info(t("empty.no_carts"), icon=":material/shopping_cart_off:")
    st.stop()

c = st.columns(4)
c[0].metric(t("m.abandoned"), fmt.count(ov.abandoned), help=t("m.abandoned.help"))
c[1].metric(t("m.reached"), fmt.count(everyone.sends), help=t("m.reached.help"))
c[2].metric(t("m.recovered"), fmt.count(ov.treated.recovered), help=t("m.recovered.help"))
c[3].metric(t("m.recovered_revenue"), fmt.money(ov.treated.recovered_revenue, cur))

row = data.incremental(ov.treated, ov.holdout)
spend = ov.treated.message_cost + ov.treated.discount_cost


def _show(x: float, money: bool) -> str:
    return fmt.money(x, cur) if money else f"{x:,.1f}"


def _estimate(column: DeltaGenerator, label: str, est: Estimate | None, money: bool) -> None:
    if est is None:
        column.metric(label, "—")
        return
    column.metric(label, _show(est.value, money))
    column.caption(t("m.interval", low=_show(est.low, money), high=_show(est.high, money)))


c = st.columns(4)
_estimate(c[0], t("m.inc_orders"), row.incremental_conversions, money=False)
_estimate(c[1], t("m.inc_revenue"), row.incremental_revenue, money=True)
_estimate(c[2], t("m.inc_profit"), row.incremental_profit, money=True)
c[3].metric(t("m.roi"), fmt.ratio(row.roi.value if row.roi else None), help=t("m.roi.help"))
c[3].metric(t("m.spend"), fmt.money(spend, cur), help=t("m.spend.help"))
st.caption(
    t(
        "overview.holdout_note",
        treated=fmt.count(row.treated_carts),
        t_rate=fmt.pct(row.treated_conversion_rate),
        holdout=fmt.count(row.holdout_carts),
        h_rate=fmt.pct(row.holdout_conversion_rate),
    )
)
if row.message:
    st.caption(t("overview.note", reason=row.message))

left, right = st.columns(2)
with left:
    st.subheader(t("overview.funnel"))
    st.altair_chart(
        charts.funnel(
            {
                "abandoned": everyone.carts,
                "messaged": everyone.sends,
                "opened": everyone.opened,
                "clicked": everyone.clicked,
                "ordered": everyone.conversions,
            }
        ),
        width="stretch",
    )
with right:
    st.subheader(t("overview.spend"))
    by_channel = data.spend_by_channel(f.url, f.store.id, f.start, f.end)
    if by_channel.empty:
        st.info(t("empty.no_messages"))
    else:
        if (by_channel["message_cost"] + by_channel["discount_cost"]).sum() > 0:
            st.altair_chart(charts.spend(by_channel, cur), width="stretch")
        else:
            st.caption(t("overview.no_spend"))
        st.dataframe(
            by_channel.assign(
                message_cost=by_channel["message_cost"].map(lambda x: fmt.money(x, cur)),
                discount_cost=by_channel["discount_cost"].map(lambda x: fmt.money(x, cur)),
            ).rename(
                columns={
                    "channel": t("col.channel"),
                    "sends": t("col.sends"),
                    "message_cost": t("col.message_cost"),
                    "discount_cost": t("col.discount_cost"),
                }
            ),
            hide_index=True,
            width="stretch",
        )

st.subheader(t("overview.trend"))
# Every day of the range, so quiet days show as zeros rather than gaps.
days = pd.date_range(f.start.date(), last_day.date(), freq="D", name="day")
daily = data.daily(f.url, f.store.id, f.start, f.end).set_index("day").reindex(days, fill_value=0)
st.altair_chart(charts.trend(daily.reset_index()), width="stretch")
