"""Experiments: the list and each experiment's statistics (with the experiments issue).

Until experiments exist, the page says how to create one and shows the arms the store's
policy has been using, with experiments.stats' per-arm numbers.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import context, data
from ui import format as fmt
from ui.i18n import t

f = context.filters()
cur = f.currency
st.title(t("experiments.title"))
st.info(t("experiments.empty"), icon=":material/science:")

arms = data.arm_stats(f.url, f.store.id, f.start, f.end, f.margin_rate)
st.subheader(t("experiments.arms"))
if not arms:
    st.caption(t("experiments.no_decisions"))
    st.stop()


def _interval(est: object, show: object) -> str:
    if est is None:
        return "—"
    return f"{show(est.low)} … {show(est.high)}"  # type: ignore[attr-defined,operator]


table = pd.DataFrame(
    {
        t("col.arm"): [a.arm for a in arms],
        t("col.carts"): [a.carts for a in arms],
        t("col.sends"): [a.sends for a in arms],
        t("col.conversions"): [a.conversions for a in arms],
        t("col.rate"): [
            fmt.pct(a.conversion_rate.value if a.conversion_rate else None) for a in arms
        ],
        t("col.rate_ci"): [_interval(a.conversion_rate, fmt.pct) for a in arms],
        t("col.profit_per_cart"): [
            fmt.money(a.profit_per_cart.value if a.profit_per_cart else None, cur) for a in arms
        ],
        t("col.prob_best"): [fmt.pct(a.prob_best_profit) for a in arms],
        t("col.expected_loss"): [
            fmt.money(a.expected_loss_profit, cur) if a.expected_loss_profit is not None else "—"
            for a in arms
        ],
    }
)
st.dataframe(table, hide_index=True, width="stretch")
st.caption(t("experiments.arms_note"))
