"""An experiment's report: the database's decisions and outcomes through ``experiments.stats``.

The same function feeds ``nudge experiment report`` (and ``--json``), so every surface shows
the same numbers. The control is the *persistent* holdout only (customers the experiment
never messages); a bandit's own "send nothing" choices are an arm like the others.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import numpy as np
import sqlalchemy as sa

from experiments.lifecycle import ExperimentNotFound, experiment_t
from experiments.ope import arm_value_ips
from experiments.roi import roi_report
from experiments.stats import Outcomes, arm_summary, lift_vs_holdout, srm_check
from store.models import Decision, Outcome

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


def report(
    conn: sa.Connection,
    *,
    store_id: str,
    name: str,
    seed: int = 0,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, Any]:
    """Everything a growth team asks of an experiment, as JSON-able data.

    ``start``/``end`` (inclusive, by decision day) limit the ROI rows to a date range.
    """
    exp, outcomes = load(conn, store_id=store_id, name=name)
    margin = float((exp.economics or {}).get("margin_rate", 0.35))
    head = {
        "experiment": exp.name,
        "mode": exp.mode,
        "status": exp.status,
        "holdout_share": exp.holdout_share,
        "winner": exp.winner,
    }
    if outcomes is None:
        return {**head, "message": "no decision has an outcome yet", "arms": []}
    rng = np.random.default_rng(seed)
    arms = arm_summary(outcomes, margin_rate=margin, rng=rng)
    treated = sorted({a.arm for a in arms} - {CONTROL})
    counts = {CONTROL: int(np.sum(outcomes.arm == CONTROL))}
    counts["treated"] = int(len(outcomes.arm) - counts[CONTROL])
    srm = srm_check(counts, {CONTROL: exp.holdout_share, "treated": 1 - exp.holdout_share})
    ab_srm = None
    if exp.mode == "ab":
        # Fixed weights promise a split; a skewed one means assignment or logging is broken.
        # (Arms a cart could not reach are not offered, so compare carts that could reach all.)
        weights = exp.weights or {a: 1.0 for a in exp.arms if a != "holdout"}
        arm_counts = {a: int(np.sum(outcomes.arm == a)) for a in weights}
        if sum(arm_counts.values()):
            ab_srm = srm_check(arm_counts, weights)
    lift = (
        lift_vs_holdout(outcomes, treatment=treated, margin_rate=margin, holdout=CONTROL)
        if treated and counts[CONTROL]
        else None
    )
    roi = [
        row
        for group in (None, "channel", "segment")
        for row in roi_report(
            outcomes, margin_rate=margin, holdout=CONTROL, group_by=group, start=start, end=end
        )
    ]
    # A bandit's raw arm means are biased by its adaptive allocation; the value of "always
    # this arm" is re-estimated from the logged propensities (self-normalised IPS), over the
    # carts the experiment decided (the persistent holdout was not randomised).
    decided = outcomes.select(outcomes.arm != CONTROL)
    off_policy = {
        arm: _plain(arm_value_ips(decided, arm, margin_rate=margin))
        for arm in treated
        if len(decided.arm)
    }
    return {
        **head,
        "arms": [_plain(a) for a in arms],
        "off_policy_profit_per_cart": off_policy,
        "lift_vs_holdout": _plain(lift) if lift is not None else None,
        "srm": _plain(srm),
        "srm_ab": _plain(ab_srm) if ab_srm is not None else None,
        "roi": [_plain(r) for r in roi],
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
