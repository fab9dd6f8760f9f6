"""Experiments: the store's experiments with their status, and one experiment in detail.

Every number comes from ``experiments.report`` (the same report as ``nudge experiment report``
and ``/v1/experiments/{name}/report``); this page only lays it out. Actions go through
``experiments.lifecycle``, each after a confirmation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pandas as pd
import streamlit as st

from experiments.lifecycle import ExperimentError
from experiments.report import NOTHING, ExperimentReport
from experiments.stats import ArmStats, Estimate, posterior_densities
from store.models import ExperimentStatus
from ui import charts, context, data
from ui import format as fmt
from ui.i18n import bound, t

f = context.filters()
tr = bound()  # t() for format_func: in the language of this run
cur = f.currency
ACTIONS = ("start", "pause", "stop", "promote")
ALPHA = 0.05


def money(x: float | None) -> str:
    return fmt.money(x, cur)


def interval(est: Estimate | None, show: Callable[[float], str]) -> str:
    if est is None:
        return "—"
    return f"{show(est.low)} … {show(est.high)}"


def arm_table(arms: list[ArmStats]) -> None:
    """Per arm: carts, sends, conversions, rate and profit per cart with their intervals,
    probability of the best profit and its expected loss."""
    st.dataframe(
        pd.DataFrame(
            {
                t("col.arm"): [a.arm for a in arms],
                t("col.carts"): [a.carts for a in arms],
                t("col.sends"): [a.sends for a in arms],
                t("col.conversions"): [a.conversions for a in arms],
                t("col.rate"): [
                    fmt.pct(a.conversion_rate.value if a.conversion_rate else None) for a in arms
                ],
                t("col.rate_ci"): [interval(a.conversion_rate, fmt.pct) for a in arms],
                t("col.profit_per_cart"): [
                    money(a.profit_per_cart.value if a.profit_per_cart else None) for a in arms
                ],
                t("col.profit_ci"): [interval(a.profit_per_cart, money) for a in arms],
                t("col.prob_best"): [fmt.pct(a.prob_best_profit) for a in arms],
                t("col.expected_loss"): [money(a.expected_loss_profit) for a in arms],
            }
        ),
        hide_index=True,
        width="stretch",
    )


def arms_in_use() -> None:
    """Before any experiment: the arms the store's policy used, per decision."""
    arms = data.arm_stats(f.url, f.store.id, f.start, f.end, f.margin_rate)
    st.subheader(t("experiments.arms"))
    if not arms:
        st.caption(t("experiments.no_decisions"))
        return
    arm_table(arms)
    st.caption(t("experiments.arms_note"))


st.title(t("experiments.title"))
rows = data.experiments(f.url, f.store.id)
if not rows:
    st.info(t("experiments.empty"), icon=":material/science:")
    arms_in_use()
    st.stop()

# --- the list ----------------------------------------------------------------------------------

st.subheader(t("experiments.list"))
st.dataframe(
    pd.DataFrame(
        {
            t("col.experiment"): [r.name for r in rows],
            t("col.status"): [t(f"status.{r.status}") for r in rows],
            t("col.mode"): [t(f"mode.{r.mode}") for r in rows],
            t("col.arms"): [", ".join(a for a in r.arms if a != "holdout") for r in rows],
            t("col.holdout"): [fmt.pct(r.holdout_share, 0) for r in rows],
            t("col.window"): [r.attribution_window_days for r in rows],
            t("col.started"): [f"{r.started_at:%Y-%m-%d}" if r.started_at else "—" for r in rows],
            t("col.decisions"): [r.decisions for r in rows],
            t("col.winner"): [r.winner or "—" for r in rows],
        }
    ),
    hide_index=True,
    width="stretch",
)

by_name = {r.name: r for r in rows}
if st.session_state.get("experiment") not in by_name:
    # A link may name one (?experiment=…); otherwise the running one, or the newest.
    asked = st.query_params.get("experiment")
    running = [r.name for r in rows if r.status == ExperimentStatus.RUNNING]
    st.session_state["experiment"] = asked if asked in by_name else (running or [rows[0].name])[0]
name: str = st.selectbox(
    t("experiments.pick"),
    options=list(by_name),
    format_func=lambda n: f"{n} ({tr(f'status.{by_name[n].status}')})",
    key="experiment",
)
st.query_params["experiment"] = name
exp = by_name[name]
last_day = (f.end - timedelta(days=1)).date()
rep: ExperimentReport = data.experiment_report(f.url, f.store.id, name, f.start.date(), last_day)

# --- head and actions --------------------------------------------------------------------------

st.header(name, divider="gray")
flash = st.session_state.pop("flash", None)
if flash:
    st.success(flash, icon=":material/check_circle:")
st.caption(
    f"**{t(f'status.{exp.status}')}** · "
    + t(
        "experiments.head",
        mode=t(f"mode.{exp.mode}"),
        holdout=fmt.pct(exp.holdout_share, 0),
        window=exp.attribution_window_days,
        touch=t("experiments.every_touch")
        if exp.touch is None
        else t("experiments.touch_n", n=exp.touch),
        started=f"{exp.started_at:%Y-%m-%d}" if exp.started_at else t("experiments.not_started"),
    )
)
if exp.winner:
    st.info(t("experiments.winner", arm=exp.winner), icon=":material/emoji_events:")


def allowed(action: str) -> bool:
    status = exp.status
    if action == "start":
        return status in (ExperimentStatus.DRAFT, ExperimentStatus.PAUSED)
    if action == "pause":
        return status == ExperimentStatus.RUNNING
    if action == "stop":
        return status != ExperimentStatus.STOPPED
    return not (status == ExperimentStatus.STOPPED and exp.winner)  # promote


def confirm(action: str) -> None:
    """The confirmation box of a pending action: confirm carries it out, cancel forgets it."""
    arm = None
    with st.container(border=True):
        if action == "promote":
            options = list(exp.arms)
            best = rep.best_arm
            arm = st.selectbox(
                t("promote.arm"),
                options=options,
                index=options.index(best) if best in options else 0,
                format_func=lambda a: tr("promote.best", arm=a) if a == best else a,
                key="promote_arm",
            )
            st.warning(t("confirm.promote", name=name, arm=arm), icon=":material/warning:")
        else:
            st.warning(t(f"confirm.{action}", name=name), icon=":material/warning:")
        yes, no, _ = st.columns([1, 1, 4])
        if yes.button(t("confirm.yes"), key="confirm_yes", type="primary"):
            st.session_state.pop("pending", None)
            try:
                data.act_on_experiment(f.url, f.store.id, name, action, arm)
            except ExperimentError as exc:
                st.error(str(exc))
                return
            st.session_state["flash"] = (
                t("act.promoted", arm=arm, name=name)
                if action == "promote"
                else t("act.done", name=name, status=t(f"status.{_target(action)}"))
            )
            st.rerun()
        if no.button(t("confirm.no"), key="confirm_no"):
            st.session_state.pop("pending", None)
            st.rerun()


def _target(action: str) -> str:
    return {
        "start": ExperimentStatus.RUNNING,
        "pause": ExperimentStatus.PAUSED,
        "stop": ExperimentStatus.STOPPED,
    }[action]


buttons = st.columns(len(ACTIONS) + 2)
for column, action in zip(buttons, ACTIONS, strict=False):
    if column.button(t(f"act.{action}"), key=f"act_{action}", disabled=not allowed(action)):
        st.session_state["pending"] = (name, action)
pending = st.session_state.get("pending")
if pending and pending[0] == name and allowed(pending[1]):
    confirm(pending[1])
else:
    st.caption(t("exp.actions_note"))

# --- before outcomes ---------------------------------------------------------------------------

decided = sum(sum(v) for v in rep.traffic.values())
if not rep.arms:
    if decided == 0:
        st.info(t("experiments.no_decisions_yet"), icon=":material/hourglass_empty:")
    else:
        st.info(
            t(
                "experiments.no_outcomes",
                decisions=fmt.count(decided),
                days=exp.attribution_window_days,
            ),
            icon=":material/hourglass_top:",
        )
        st.subheader(t("exp.traffic"))
        st.altair_chart(charts.traffic_share(rep.traffic_days, rep.traffic), width="stretch")
    st.stop()

# --- warnings and headline ---------------------------------------------------------------------

if rep.srm is not None and rep.srm.flagged:
    carts = sum(a.carts for a in rep.arms)
    held = next((a.carts for a in rep.arms if a.arm == "holdout"), 0)
    st.error(
        t(
            "exp.srm",
            observed=fmt.pct(held / carts if carts else None),
            expected=fmt.pct(rep.holdout_share),
            p=f"{rep.srm.p_value:.2g}",
        ),
        icon=":material/report:",
    )
if rep.srm_ab is not None and rep.srm_ab.flagged:
    st.error(t("exp.srm_ab", p=f"{rep.srm_ab.p_value:.2g}"), icon=":material/report:")

head = st.columns(4)
head[0].metric(t("m.decisions"), fmt.count(decided), help=t("m.decisions.help"))
head[0].caption(f"{t('m.resolved')}: {fmt.count(sum(a.carts for a in rep.arms))}")
last = rep.incremental_profit[-1] if rep.incremental_profit else None
head[1].metric(t("m.exp_inc_profit"), money(last.value if last else None))
if last is not None and last.cs_low is not None and last.cs_high is not None:
    head[1].caption(t("m.cs", low=money(last.cs_low), high=money(last.cs_high)))
profit_lift = rep.lift.profit_per_cart if rep.lift is not None else None
head[2].metric(
    t("m.avp"),
    f"{profit_lift.always_valid_p:.3f}" if profit_lift is not None else "—",
    help=t("m.avp.help"),
)
# The best arm's key ("holdout" = send nothing) as the arm table labels it
best_label = NOTHING if rep.best_arm == "holdout" else rep.best_arm
best = next((a for a in rep.arms if a.arm == best_label), None)
head[3].metric(t("m.best"), best_label or "—")
if best is not None:
    head[3].caption(f"{t('col.prob_best')} {fmt.pct(best.prob_best_profit)}")
if rep.srm is not None and not rep.srm.flagged and rep.srm.p_value is not None:
    st.caption(t("exp.srm_ok", p=f"{rep.srm.p_value:.2f}"))

# --- arms --------------------------------------------------------------------------------------

st.subheader(t("exp.arms"))
arms = rep.arms
arm_table(arms)
st.caption(t("exp.arms_note"))

left, right = st.columns(2)
with left:
    st.subheader(t("exp.posterior"))
    metric = (
        st.segmented_control(
            t("exp.metric"),
            options=["profit", "conversion"],
            format_func=lambda m: tr(f"exp.metric.{m}"),
            default="profit",
            key="posterior_metric",
        )
        or "profit"
    )
    densities = posterior_densities(arms, metric=metric)
    if densities:
        st.altair_chart(charts.posterior(densities, metric, cur), width="stretch")
with right:
    st.subheader(t("exp.traffic"))
    st.altair_chart(charts.traffic_share(rep.traffic_days, rep.traffic), width="stretch")
    st.caption(t("exp.traffic_note"))


def _day(ordinal: int) -> date:
    return date.fromordinal(ordinal)


left, right = st.columns(2)
with left:
    st.subheader(t("exp.incremental"))
    points = pd.DataFrame(
        [
            {
                "day": _day(p.look),
                "value": p.value,
                "low": p.low,
                "high": p.high,
                "cs_low": p.cs_low,
                "cs_high": p.cs_high,
            }
            for p in rep.incremental_profit
            if p.value is not None
        ]
    )
    if not points.empty:
        st.altair_chart(charts.incremental_profit(points, cur), width="stretch")
    st.caption(t("exp.incremental_note"))
with right:
    st.subheader(t("exp.sequential"))
    if profit_lift is not None:
        st.altair_chart(
            charts.p_values(rep.looks, list(profit_lift.always_valid_p_history), ALPHA),
            width="stretch",
        )
    elif rep.lift is not None and rep.lift.message:
        st.caption(rep.lift.message)
    st.caption(t("exp.sequential_note", alpha=ALPHA))

# --- off-policy --------------------------------------------------------------------------------

if rep.off_policy:
    st.subheader(t("exp.ope"))
    raw = {a.arm: a.profit_per_cart.value if a.profit_per_cart else None for a in arms}
    ope = rep.off_policy
    st.dataframe(
        pd.DataFrame(
            {
                t("col.arm"): list(ope),
                t("col.raw_mean"): [money(raw.get(a)) for a in ope],
                t("col.ope_value"): [money(e.value) for e in ope.values()],
                t("col.profit_ci"): [
                    f"{money(e.low)} … {money(e.high)}" if e.low is not None else "—"
                    for e in ope.values()
                ],
                t("col.ess"): [round(e.effective_sample_size, 1) for e in ope.values()],
                t("col.note"): [e.message or "" for e in ope.values()],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    st.caption(t("exp.ope_note"))

# --- ROI in the date range ---------------------------------------------------------------------

st.subheader(t("exp.roi"))
st.dataframe(
    pd.DataFrame(
        {
            t("col.group"): [r.group for r in rep.roi],
            t("col.treated_carts"): [r.treated_carts for r in rep.roi],
            t("col.holdout_carts"): [r.holdout_carts for r in rep.roi],
            t("col.sends"): [r.sends for r in rep.roi],
            t("col.attributed_orders"): [r.attributed_orders for r in rep.roi],
            t("col.attributed_revenue"): [money(r.attributed_revenue) for r in rep.roi],
            t("col.inc_revenue"): [
                money(r.incremental_revenue.value if r.incremental_revenue else None)
                for r in rep.roi
            ],
            t("col.inc_profit"): [
                money(r.incremental_profit.value if r.incremental_profit else None) for r in rep.roi
            ],
            t("col.profit_ci"): [interval(r.incremental_profit, money) for r in rep.roi],
            t("col.roi"): [fmt.ratio(r.roi.value if r.roi else None) for r in rep.roi],
            t("col.note"): [r.message or "" for r in rep.roi],
        }
    ),
    hide_index=True,
    width="stretch",
)
st.caption(t("exp.roi_note", name=name))
