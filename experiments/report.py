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
from datetime import date, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from experiments import lifecycle
from experiments.ope import OPEEstimate, WeightedSums, arm_value_from_sums
from experiments.roi import ProfitPoint, ROIRow, incremental_profit_path, roi_from_tallies
from experiments.stats import (
    ArmStats,
    LiftResult,
    Outcomes,
    SRMResult,
    arm_summary_from_totals,
    lift_from_totals,
    srm_check,
)
from experiments.tallies import COLUMNS, WEIGHTED, Tallies
from store.models import Decision, Outcome
from store.sql import day_of, flag, json_text, json_true

decision_t: sa.Table = Decision.__table__  # type: ignore[attr-defined]
outcome_t: sa.Table = Outcome.__table__  # type: ignore[attr-defined]

CONTROL = "holdout"  # the persistent holdout's label in the report
NOTHING = "send-nothing"  # the bandit's own send-nothing arm


def load(conn: sa.Connection, *, store_id: str, name: str) -> tuple[Any, Outcomes | None]:
    """The experiment row and the outcomes of its decided touches (None: no outcome yet)."""
    exp = lifecycle.get(conn, store_id=store_id, name=name)
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

    Per-arm statistics and off-policy values are per decision with a final outcome; the
    sample ratio check, the lift against the holdout, its path and ROI per journey (see
    :func:`summarize`); ``roi`` covers the requested days; ``traffic`` counts every
    decision, outcome or not, per arm and day.
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
    looks: list[date]  # days with final journeys: the sequential tests' looks
    incremental_profit: list[ProfitPoint]  # one per look
    traffic_days: list[date]
    traffic: dict[str, list[int]]  # arm label -> decisions per day of ``traffic_days``
    message: str | None = None

    @property
    def best_arm(self) -> str | None:
        """The arm with the highest probability of the best profit (see :func:`best_arm`)."""
        return best_arm({"arms": [_plain(a) for a in self.arms]})


def _labels(dialect: str) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    """A decision's arm label (:func:`load`'s) and segment (its context's device)."""
    d = decision_t
    label = sa.case(
        (json_true(d.c.context, "holdout", dialect), CONTROL),
        (d.c.arm_key == "holdout", NOTHING),
        else_=d.c.arm_key,
    )
    segment = sa.func.coalesce(json_text(d.c.context, "device", dialect), "unknown")
    return label, segment


def decision_cells(
    dialect: str, *, experiment_id: str, margin_rate: float, since: datetime | None = None
) -> sa.Select[Any]:
    """Cells of the experiment's decisions (decided from ``since`` on): day, arm, segment and
    :data:`experiments.tallies.COLUMNS`. Decisions without a final outcome count only in
    ``decisions``."""
    d, o = decision_t, outcome_t
    label, segment = _labels(dialect)
    resolved = o.c.id.is_not(None)
    day = day_of(d.c.decided_at, dialect)
    converted = o.c.converted.is_(True)
    sent = o.c.message_sent.is_(True)
    revenue = sa.case((converted, o.c.revenue), else_=0.0)
    profit = revenue * sa.literal(margin_rate, sa.Float) - o.c.discount_amount - o.c.message_cost
    w = sa.case((resolved, 1.0 / d.c.propensity), else_=0.0)
    wr = w * profit

    def _total(x: Any) -> Any:  # a cell of pending decisions has no outcome to sum
        return sa.func.coalesce(sa.func.sum(x), 0)

    where = [d.c.experiment_id == experiment_id]
    if since is not None:
        where.append(d.c.decided_at >= since)
    return (
        sa.select(
            day.label("day"),
            label.label("arm"),
            segment.label("segment"),
            sa.func.count(o.c.id).label("carts"),
            _total(flag(sent)).label("sends"),
            _total(flag(converted)).label("conversions"),
            _total(revenue).label("revenue"),
            _total(revenue * revenue).label("revenue_sq"),
            _total(o.c.discount_amount).label("discount_cost"),
            _total(o.c.message_cost).label("message_cost"),
            _total(profit).label("profit"),
            _total(profit * profit).label("profit_sq"),
            _total(flag(sa.and_(converted, sent))).label("attributed_orders"),
            _total(sa.case((sa.and_(converted, sent), o.c.revenue), else_=0.0)).label(
                "attributed_revenue"
            ),
            _total(w).label("w"),
            _total(wr).label("wr"),
            _total(w * w).label("w2"),
            _total(w * wr).label("w2r"),
            _total(wr * wr).label("w2r2"),
            sa.func.count().label("decisions"),
        )
        .select_from(d.outerjoin(o, o.c.decision_id == d.c.id))
        .where(*where)
        .group_by(day, label, segment)
    )


def journey_cells(
    dialect: str,
    *,
    experiment_id: str,
    margin_rate: float,
    first_touch: int = 1,
    since: datetime | None = None,
) -> sa.Select[Any]:
    """Cells of the experiment's journeys (first decided from ``since`` on), one journey
    counted once: the arm and segment of its first touch, its order once, the discounts and
    message costs of all its touches.

    A journey enters the experiment at ``first_touch`` (the experiment's touch, or 1); one
    already under way when the experiment started is left out. It is final once it ordered
    or every touch has its outcome; the others count only in ``decisions`` (here: journeys).
    The off-policy columns are 0: propensities belong to decisions, not journeys.
    """
    d, o = decision_t, outcome_t
    label, segment = _labels(dialect)
    first = d.c.touch == first_touch
    converted = o.c.converted.is_(True)
    where = [d.c.experiment_id == experiment_id]
    if since is not None:
        # later touches are decided after the first: from `since` on, all of them
        where.append(d.c.decided_at >= since)
    j = (
        sa.select(
            sa.func.min(d.c.decided_at).label("started"),
            sa.func.max(sa.case((first, label))).label("arm"),
            sa.func.max(sa.case((first, segment))).label("segment"),
            sa.func.count().label("n"),
            sa.func.count(o.c.id).label("n_out"),
            sa.func.max(flag(converted)).label("converted"),
            sa.func.max(flag(o.c.message_sent.is_(True))).label("sent"),
            sa.func.max(sa.case((converted, o.c.revenue), else_=0.0)).label("revenue"),
            sa.func.coalesce(sa.func.sum(o.c.discount_amount), 0.0).label("discount"),
            sa.func.coalesce(sa.func.sum(o.c.message_cost), 0.0).label("cost"),
        )
        .select_from(d.outerjoin(o, o.c.decision_id == d.c.id))
        .where(*where)
        .group_by(d.c.cart_id, d.c.journey)
        .having(sa.func.min(d.c.touch) == first_touch)
        .subquery("j")
    )
    final = sa.or_(j.c.converted == 1, j.c.n_out == j.c.n)
    ordered = sa.and_(final, j.c.converted == 1)
    attributed = sa.and_(ordered, j.c.sent == 1)
    revenue = sa.case((ordered, j.c.revenue), else_=0.0)
    discount = sa.case((final, j.c.discount), else_=0.0)
    cost = sa.case((final, j.c.cost), else_=0.0)
    profit = revenue * sa.literal(margin_rate, sa.Float) - discount - cost
    day = day_of(j.c.started, dialect)
    zero = sa.literal(0.0, sa.Float)
    return sa.select(
        day.label("day"),
        j.c.arm.label("arm"),
        j.c.segment.label("segment"),
        sa.func.sum(flag(final)).label("carts"),
        sa.func.sum(flag(sa.and_(final, j.c.sent == 1))).label("sends"),
        sa.func.sum(flag(ordered)).label("conversions"),
        sa.func.sum(revenue).label("revenue"),
        sa.func.sum(revenue * revenue).label("revenue_sq"),
        sa.func.sum(discount).label("discount_cost"),
        sa.func.sum(cost).label("message_cost"),
        sa.func.sum(profit).label("profit"),
        sa.func.sum(sa.case((final, profit * profit), else_=0.0)).label("profit_sq"),
        sa.func.sum(flag(attributed)).label("attributed_orders"),
        sa.func.sum(sa.case((attributed, j.c.revenue), else_=0.0)).label("attributed_revenue"),
        *(zero.label(c) for c in WEIGHTED),
        sa.func.count().label("decisions"),
    ).group_by(day, j.c.arm, j.c.segment)


UNITS = ("decision", "journey")


def tallies(
    conn: sa.Connection,
    *,
    experiment: Any,
    unit: str = "decision",
    since: datetime | None = None,
) -> Tallies:
    """The experiment's decisions (or journeys) summed in the database, one row per (day,
    arm, segment): :func:`decision_cells` or :func:`journey_cells`, labelled as :func:`load`
    labels rows (the persistent holdout ``holdout``, the bandit's send-nothing arm
    ``send-nothing``, the segment the context's device)."""
    dialect = conn.dialect.name
    margin = margin_of(experiment)
    if unit == "decision":
        query = decision_cells(
            dialect, experiment_id=experiment.id, margin_rate=margin, since=since
        )
    elif unit == "journey":
        query = journey_cells(
            dialect,
            experiment_id=experiment.id,
            margin_rate=margin,
            first_touch=experiment.touch or 1,
            since=since,
        )
    else:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
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
    exp = lifecycle.get(conn, store_id=store_id, name=name)
    return summarize(
        exp,
        tallies(conn, experiment=exp, unit="decision"),
        tallies(conn, experiment=exp, unit="journey"),
        seed=seed,
        start=start,
        end=end,
    )


def margin_of(experiment: Any) -> float:
    return float((experiment.economics or {}).get("margin_rate", 0.35))


def summarize(
    experiment: Any,
    decisions: Tallies,
    journeys: Tallies,
    *,
    seed: int = 0,
    start: date | None = None,
    end: date | None = None,
) -> ExperimentReport:
    """The report of an experiment row from its cells (pure: no database).

    Two units, each where it belongs:

    * **decisions** — each touch a bandit decided is one round with its own propensity: the
      per-arm statistics, the off-policy values and the traffic split;
    * **journeys** — the holdout is assigned per customer and leaves the whole journey
      alone, so it is compared with whole treated journeys (one order counted once, every
      touch's cost): the sample ratio check (every journey that entered, final or not), the
      lift, the incremental-profit path and ROI (final journeys).
    """
    exp = experiment
    for cells in (decisions, journeys):
        if len(cells) and cells.day.min() < 1:
            raise ValueError("summarize needs the cells' days (Tallies.day as date ordinals)")
    traffic_days = decisions.days()
    per_label: dict[str, dict[int, int]] = {}
    # One row per cell (day x arm x segment): a few hundred, never per decision.
    for label, day_, n in zip(
        decisions.arm.tolist(),
        decisions.day.tolist(),
        decisions.column("decisions").tolist(),
        strict=True,
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
        margin_rate=margin_of(exp),
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
    o = decisions.select(decisions.column("carts") > 0)
    if not len(o):
        return replace(base, message="no decision has an outcome yet")
    rng = np.random.default_rng(seed)
    totals = {str(k): v for k, v in o.totals_by(o.arm).items()}
    arms = arm_summary_from_totals(totals, rng=rng)

    # Sample ratio: every journey that entered the experiment, outcome or not.
    entered = journeys.column("decisions")
    held = int(entered[journeys.arm == CONTROL].sum())
    counts = {CONTROL: held, "treated": int(entered.sum()) - held}
    srm = srm_check(counts, {CONTROL: exp.holdout_share, "treated": 1 - exp.holdout_share})
    ab_srm = None
    if exp.mode == "ab":
        # Fixed weights promise a split of decisions; a skewed one means assignment or
        # logging is broken. (Arms a cart could not reach are not offered, so compare carts
        # that could reach all.) The arm "holdout" (send nothing) is labelled send-nothing.
        weights = exp.weights or {a: 1.0 for a in exp.arms if a != "holdout"}
        by_arm = decisions.sums_by(decisions.arm)
        col = COLUMNS.index("decisions")
        arm_counts = {
            a: int(by_arm[NOTHING if a == "holdout" else a][col])
            if (NOTHING if a == "holdout" else a) in by_arm
            else 0
            for a in weights
        }
        if sum(arm_counts.values()):
            ab_srm = srm_check(arm_counts, weights)

    # Lift, its path and ROI: final journeys, treated (any arm) against the holdout.
    jo = journeys.select(journeys.column("carts") > 0)
    is_control = jo.arm == CONTROL
    treated = sorted({str(a) for a in jo.arm.tolist()} - {CONTROL})
    control_journeys = int(jo.column("carts")[is_control].sum())
    looks = jo.days()
    lift, path = None, []
    if treated and control_journeys:
        t_looks, c_looks = jo.looks(~is_control, looks), jo.looks(is_control, looks)
        lift = lift_from_totals(t_looks, c_looks, treatment="+".join(treated), control=CONTROL)
        path = incremental_profit_path(t_looks, c_looks, looks=looks)
    roi = [
        row
        for group in (None, "channel", "segment")
        for row in roi_from_tallies(jo, holdout=CONTROL, group_by=group, start=start, end=end)
    ]
    # A bandit's raw arm means are biased by its adaptive allocation; the value of "always
    # this arm" is re-estimated from the logged propensities (self-normalised IPS), over the
    # decisions the experiment made (the persistent holdout was not randomised).
    decided = o.select(o.arm != CONTROL)
    n_decided = decided.total().carts
    weighted = {str(k): v for k, v in decided.weighted_by(decided.arm).items()}
    off_policy = {
        arm: arm_value_from_sums(weighted.get(arm, WeightedSums()), n_decided)
        for arm in sorted(set(totals) - {CONTROL})
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
