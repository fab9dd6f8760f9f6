"""The decision core of Nudge: pure Python + numpy/scipy, no database, queue or HTTP.

Example:
    >>> from datetime import datetime, timezone
    >>> from optimizer import Arm, Economics, ThompsonPolicy
    >>> arms = [Arm(60, "email"), Arm(30, "sms", 10.0), Arm.holdout()]
    >>> policy = ThompsonPolicy(arms, Economics(margin_rate=0.35), seed=7)
    >>> now = datetime(2025, 1, 6, tzinfo=timezone.utc)
    >>> ctx = {"cart_value": 80.0, "channels": ["email"], "touch": 1}
    >>> d = policy.choose(ctx, now=now)
    >>> d.arm.channel in ("email", None)
    True
    >>> policy.record(d, converted=False, order_value=0.0, message_sent=True, at=now)
"""

from optimizer.arms import CHANNELS, Arm, Decision, Economics
from optimizer.baselines import EpsilonGreedyPolicy, HoldoutPolicy, UniformRandomPolicy
from optimizer.bernoulli import lai_robbins_bound, thompson_bernoulli_regret
from optimizer.policy import FixedSchedulePolicy, Policy
from optimizer.scenario import Scenario, load_scenario, shipped_scenarios
from optimizer.simulate import (
    POLICIES,
    Comparison,
    OraclePolicy,
    RunResult,
    compare,
    draw_carts,
    make_policy,
    run_policy,
    write_regret_png,
)
from optimizer.thompson import Prior, ThompsonPolicy

__all__ = [
    "CHANNELS",
    "POLICIES",
    "Arm",
    "Comparison",
    "Decision",
    "Economics",
    "EpsilonGreedyPolicy",
    "FixedSchedulePolicy",
    "HoldoutPolicy",
    "OraclePolicy",
    "Policy",
    "Prior",
    "RunResult",
    "Scenario",
    "ThompsonPolicy",
    "UniformRandomPolicy",
    "compare",
    "draw_carts",
    "lai_robbins_bound",
    "load_scenario",
    "make_policy",
    "run_policy",
    "shipped_scenarios",
    "thompson_bernoulli_regret",
    "write_regret_png",
]
