"""Experiment statistics for Nudge: pure functions of arrays pulled from the database.

* :mod:`experiments.stats` — :class:`Outcomes` (one row per decision), sufficient statistics
  that pool by addition, per-arm summaries (intervals, posteriors, probability of being best),
  lift against the holdout with always-valid p-values, sample ratio mismatch;
* :mod:`experiments.sequential` — mSPRT / asymptotic confidence-sequence primitives;
* :mod:`experiments.ope` — off-policy values (IPS, SNIPS, doubly robust);
* :mod:`experiments.roi` — attributed vs incremental revenue and profit, ROI.
"""

from experiments.ope import (
    OPEEstimate,
    OPEReport,
    arm_value_ips,
    cross_fit_reward_model,
    doubly_robust,
    ips,
    policy_value,
    snips,
)
from experiments.roi import ROIRow, roi_report
from experiments.stats import (
    HOLDOUT,
    ArmStats,
    ArmTotals,
    Estimate,
    LiftResult,
    MetricLift,
    Outcomes,
    SRMResult,
    arm_summary,
    arm_summary_from_totals,
    lift_from_totals,
    lift_vs_holdout,
    srm_check,
    tally,
)

__all__ = [
    "HOLDOUT",
    "ArmStats",
    "ArmTotals",
    "Estimate",
    "LiftResult",
    "MetricLift",
    "OPEEstimate",
    "OPEReport",
    "Outcomes",
    "ROIRow",
    "SRMResult",
    "arm_summary",
    "arm_summary_from_totals",
    "arm_value_ips",
    "cross_fit_reward_model",
    "doubly_robust",
    "ips",
    "lift_from_totals",
    "lift_vs_holdout",
    "policy_value",
    "roi_report",
    "snips",
    "srm_check",
    "tally",
]
