"""An experiment's report: the database's decisions and outcomes through ``experiments.stats``.

The database sums the experiment's decisions into cells (:func:`tallies`, one ``GROUP BY``);
every statistic is computed from those cells (:func:`summarize`). The same report feeds the
dashboard, ``nudge experiment report`` (and ``--json``) and ``/v1/experiments/{name}/report``,
so every surface shows the same numbers. The control is the *persistent* holdout only
(customers the experiment never messages); a bandit's own "send nothing" choices are an arm
like the others.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import numpy as np
import sqlalchemy as sa

from experiments.lifecycle import ExperimentNotFound, experiment_t
from experiments.ope import OPEEstimate, WeightedSums, arm_value_from_sums
from experiments.roi import ProfitPoint, ROIRow, incremental_profit_path, roi_from_tallies
from experiments.stats import (
    ArmStats,
    ArmTotals,
    LiftResult,
    Outcomes,
    SRMResult,
    arm_summary_from_totals,
    lift_from_totals,
    srm_check,
)
from experiments.tallies import Tallies
from store.models import Decision, Outcome
from store.sql import day_of, flag, json_text, json_true

decision_t: sa.Table = Decision.__table__  # type: ignore[attr-defined]
outcome_t: sa.Table = Outcome.__table__  # type: ignore[attr-defined]

CONTROL = "holdout"  # the persistent holdout's label in the report
NOTHING = "send-nothing"  # the bandit's own send-nothing arm


def load(conn: sa.Connection, *, store_id: str, name: str) -> tuple[Any, Outcomes | None]:
    """The experiment row and the outcomes of its decided touches (None: no outcome yet)."""
    exp = conn.execute(
        sa.select(experiment_t).where(
            experiment_t.c.store_id == store_id, experiment_t.c.name == name
        )
    ).first()
    if exp is None:
        raise ExperimentNotFound(f"no experiment named {name!r} in this store")
    rows = conn.execute(
        sa.select(
            decision_t.c.arm_key,
            decision_t.c.propensity,
            decision_t.c.context,
            decision_t.c.decided_at,
            outcome_t.c.converted,
            outcome_t.c.revenue,
            outcome_t.c.discount_amount,
            outcome_t.c.message_cost,
            outcome_t.c.message_sent,
        )
        .select_from(decision_t.join(outcome_t, outcome_t.c.decision_id == decision_t.c.id))
        .where(decision_t.c.experiment_id == exp.id)
    ).all()
    if not rows:
        return exp, None

    def label(r: Any) -> str:
        if r.context.get("holdout"):
            return CONTROL
        return NOTHING if r.arm_key == "holdout" else str(r.arm_key)

    return exp, Outcomes.from_sequences(
        arm=[label(r) for r in rows],
        converted=[bool(r.converted) for r in rows],
        revenue=[float(r.revenue) if r.converted else 0.0 for r in rows],
        discount_cost=[float(r.discount_amount) for r in rows],
        message_cost=[float(r.message_cost) for r in rows],
        propensity=[float(r.propensity) for r in rows],
        sent=[bool(r.message_sent) for r in rows],
        segment=[str(r.context.get("device", "unknown")) for r in rows],
        day=[r.decided_at.date() for r in rows],
        holdout=CONTROL,
    )


@dataclass(frozen=True)
class ExperimentReport:
    """Everything a growth team asks of an experiment (the dashboard shows all of it; the CLI
    and the API send :func:`report`, the same numbers as JSON).

    Statistics (arms, lift, SRM, off-policy values) cover every decision with a final
    outcome; ``roi`` covers the requested days; ``traffic`` counts every decision, outcome or
    not, per arm and look (day).
    """

    experiment: str
    mode: str
    status: str
    holdout_share: float
    winner: str | None
    margin_rate: float
    arms: list[ArmStats]
    lift: LiftResult | None
    srm: SRMResult | None
    srm_ab: SRMResult | None
    roi: list[ROIRow]
    off_policy: dict[str, OPEEstimate]
    looks: list[date]  # the days with outcomes: the sequential tests' looks
    incremental_profit: list[ProfitPoint]  # one per look
    traffic_days: list[date]
    traffic: dict[str, list[int]]  # arm label -> decisions per day of ``traffic_days``
    message: str | None = None

    @property
    def best_arm(self) -> str | None:
        """The arm with the highest probability of the best profit (see :func:`best_arm`)."""
        return best_arm({"arms": [_plain(a) for a in self.arms]})


def tallies(conn: sa.Connection, *, experiment_id: str, margin_rate: float) -> Tallies:
    """The experiment's decisions summed in the database, one row per (day, arm, segment).

    One pass over the experiment's decisions (its index) joined to their outcomes; the
    labels are :func:`load`'s: the persistent holdout is ``holdout``, the bandit's own
    send-nothing arm ``send-nothing``, the segment the context's device.
    """
    d, o = decision_t, outcome_t
    dialect = conn.dialect.name
    resolved = o.c.id.is_not(None)
    label = sa.case(
        (json_true(d.c.context, "holdout", dialect), CONTROL),
        (d.c.arm_key == "holdout", NOTHING),
        else_=d.c.arm_key,
    ).label("arm")
    segment = sa.func.coalesce(json_text(d.c.context, "device", dialect), "unknown")
    day = day_of(d.c.decided_at, dialect).label("day")
    converted = o.c.converted.is_(True)
    sent = o.c.message_sent.is_(True)
    revenue = sa.case((converted, o.c.revenue), else_=0.0)
    profit = revenue * sa.literal(margin_rate, sa.Float) - o.c.discount_amount - o.c.message_cost
    w = sa.case((resolved, 1.0 / d.c.propensity), else_=0.0)
    wr = w * profit
    query = (
        sa.select(
            day,
            label,
            segment.label("segment"),
            sa.func.count(o.c.id).label("carts"),
            sa.func.sum(flag(sent)).label("sends"),
            sa.func.sum(flag(converted)).label("conversions"),
            sa.func.sum(revenue).label("revenue"),
            sa.func.sum(revenue * revenue).label("revenue_sq"),
            sa.func.sum(o.c.discount_amount).label("discount_cost"),
            sa.func.sum(o.c.message_cost).label("message_cost"),
            sa.func.sum(profit).label("profit"),
            sa.func.sum(profit * profit).label("profit_sq"),
            sa.func.sum(flag(sa.and_(converted, sent))).label("attributed_orders"),
            sa.func.sum(sa.case((sa.and_(converted, sent), o.c.revenue), else_=0.0)).label(
                "attributed_revenue"
            ),
            sa.func.sum(w).label("w"),
            sa.func.sum(wr).label("wr"),
            sa.func.sum(w * w).label("w2"),
            sa.func.sum(w * wr).label("w2r"),
            sa.func.sum(wr * wr).label("w2r2"),
            sa.func.count().label("decisions"),
        )
        .select_from(d.outerjoin(o, o.c.decision_id == d.c.id))
        .where(d.c.experiment_id == experiment_id)
        .group_by(day, label, segment)
    )
    return Tallies.from_rows(r._asdict() for r in conn.execute(query))


def build(
    conn: sa.Connection,
    *,
    store_id: str,
    name: str,
    seed: int = 0,
    start: date | None = None,
    end: date | None = None,
) -> ExperimentReport:
    """The report of the store's experiment ``name``, from :func:`tallies`.

    ``start``/``end`` (inclusive, by decision day) limit the ROI rows to a date range.
    """
    exp = conn.execute(
        sa.select(experiment_t).where(
            experiment_t.c.store_id == store_id, experiment_t.c.name == name
        )
    ).first()
    if exp is None:
        raise ExperimentNotFound(f"no experiment named {name!r} in this store")
    margin = margin_of(exp)
    cells = tallies(conn, experiment_id=exp.id, margin_rate=margin)
    return summarize(exp, cells, seed=seed, start=start, end=end)


def margin_of(experiment: Any) -> float:
    return float((experiment.economics or {}).get("margin_rate", 0.35))


def summarize(
    experiment: Any,
    cells: Tallies,
    *,
    seed: int = 0,
    start: date | None = None,
    end: date | None = None,
) -> ExperimentReport:
    """The report of an experiment row from its cells (pure: no database)."""
    exp = experiment
    margin = margin_of(exp)
    if len(cells) and cells.day.min() < 1:
        raise ValueError("summarize needs the cells' days (Tallies.day as date ordinals)")
    traffic_days = cells.days()
    per_label: dict[str, dict[int, int]] = {}
    # One row per cell (day x arm x segment): a few hundred, never per decision.
    for label, day_, n in zip(
        cells.arm.tolist(), cells.day.tolist(), cells.column("decisions").tolist(), strict=True
    ):
        per_day = per_label.setdefault(str(label), {})
        per_day[day_] = per_day.get(day_, 0) + int(n)
    traffic = {
        label: [per_label[label].get(d, 0) for d in traffic_days] for label in sorted(per_label)
    }
    base = ExperimentReport(
        experiment=exp.name,
        mode=exp.mode,
        status=exp.status,
        holdout_share=float(exp.holdout_share),
        winner=exp.winner,
        margin_rate=margin,
        arms=[],
        lift=None,
        srm=None,
        srm_ab=None,
        roi=[],
        off_policy={},
        looks=[],
        incremental_profit=[],
        traffic_days=[date.fromordinal(d) for d in traffic_days],
        traffic=traffic,
    )
    o = cells.select(cells.column("carts") > 0)
    if not len(o):
        return replace(base, message="no decision has an outcome yet")
    rng = np.random.default_rng(seed)
    totals = {str(k): v for k, v in o.totals_by(o.arm).items()}
    arms = arm_summary_from_totals(totals, rng=rng)
    treated = sorted(set(totals) - {CONTROL})
    control_carts = totals[CONTROL].carts if CONTROL in totals else 0
    counts = {
        CONTROL: control_carts,
        "treated": sum(t.carts for t in totals.values()) - control_carts,
    }
    srm = srm_check(counts, {CONTROL: exp.holdout_share, "treated": 1 - exp.holdout_share})
    ab_srm = None
    if exp.mode == "ab":
        # Fixed weights promise a split; a skewed one means assignment or logging is broken.
        # (Arms a cart could not reach are not offered, so compare carts that could reach all.)
        weights = exp.weights or {a: 1.0 for a in exp.arms if a != "holdout"}
        # The arm "holdout" (send nothing) is labelled send-nothing here.
        arm_counts = {
            a: totals.get(NOTHING if a == "holdout" else a, ArmTotals()).carts for a in weights
        }
        if sum(arm_counts.values()):
            ab_srm = srm_check(arm_counts, weights)
    looks = o.days()
    is_control = o.arm == CONTROL
    t_looks = o.looks(~is_control, looks)
    c_looks = o.looks(is_control, looks)
    lift = (
        lift_from_totals(t_looks, c_looks, treatment="+".join(treated), control=CONTROL)
        if treated and control_carts
        else None
    )
    path = (
        incremental_profit_path(t_looks, c_looks, looks=looks) if treated and control_carts else []
    )
    roi = [
        row
        for group in (None, "channel", "segment")
        for row in roi_from_tallies(o, holdout=CONTROL, group_by=group, start=start, end=end)
    ]
    # A bandit's raw arm means are biased by its adaptive allocation; the value of "always
    # this arm" is re-estimated from the logged propensities (self-normalised IPS), over the
    # carts the experiment decided (the persistent holdout was not randomised).
    decided = o.select(~is_control)
    n_decided = decided.total().carts
    weighted = {str(k): v for k, v in decided.weighted_by(decided.arm).items()}
    off_policy = {
        arm: arm_value_from_sums(weighted.get(arm, WeightedSums()), n_decided)
        for arm in treated
        if n_decided
    }
    return replace(
        base,
        arms=arms,
        lift=lift,
        srm=srm,
        srm_ab=ab_srm,
        roi=roi,
        off_policy=off_policy,
        looks=[date.fromordinal(d) for d in looks],
        incremental_profit=path,
    )


def report(
    conn: sa.Connection,
    *,
    store_id: str,
    name: str,
    seed: int = 0,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, Any]:
    """:func:`build`'s report as JSON-able data (``nudge experiment report --json``, the API).

    ``start``/``end`` (inclusive, by decision day) limit the ROI rows to a date range.
    """
    return as_json(build(conn, store_id=store_id, name=name, seed=seed, start=start, end=end))


def as_json(r: ExperimentReport) -> dict[str, Any]:
    head = {
        "experiment": r.experiment,
        "mode": r.mode,
        "status": r.status,
        "holdout_share": r.holdout_share,
        "winner": r.winner,
    }
    if not r.arms:
        return {**head, "message": r.message or "no data", "arms": []}
    return {
        **head,
        "arms": [_plain(a) for a in r.arms],
        "off_policy_profit_per_cart": {k: _plain(v) for k, v in r.off_policy.items()},
        "lift_vs_holdout": _plain(r.lift) if r.lift is not None else None,
        "srm": _plain(r.srm),
        "srm_ab": _plain(r.srm_ab) if r.srm_ab is not None else None,
        "roi": [_plain(x) for x in r.roi],
        "looks": [d.isoformat() for d in r.looks],
        "incremental_profit_path": [
            {**_plain(p), "look": date.fromordinal(p.look).isoformat()}
            for p in r.incremental_profit
        ],
        "traffic": {
            "days": [d.isoformat() for d in r.traffic_days],
            "decisions": r.traffic,
        },
    }


def best_arm(summary: dict[str, Any]) -> str | None:
    """The arm with the highest probability of the best profit (conversion if unknown)."""
    candidates = [a for a in summary.get("arms", []) if a["arm"] not in (CONTROL,)]
    if not candidates:
        return None

    def score(a: dict[str, Any]) -> float:
        p = a.get("prob_best_profit")
        return float(p if p is not None else a.get("prob_best_conversion") or 0.0)

    arm = str(max(candidates, key=score)["arm"])
    return "holdout" if arm == NOTHING else arm


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
